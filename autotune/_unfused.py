"""Where the step's own jaxpr would fill the budget: the place of the first compile.

The split (`autotune._split`) draws the line of need through one compile;
its error grows with the distance from that compile to the answer. A
ResNet-18's compile at batch 88 puts the answer five candidates high (at
small batches its programs keep other values live at the peak); the one at
2,872 puts it on the right candidate (benchmarks/first-compile.md). A compile
costs the same at any batch on a described GPU, so the first one is best
made as large as it may be while it fits.

This module says how large, from the trace alone: the step's jaxpr run in
its own order, every value kept from the equation that makes it to its last
use (calls inlined; loops and branches as single equations), gives the bytes
live at each equation, those with a dimension that is a multiple of the
batch and the rest. XLA fuses most of those values away, moves the rest and
adds its own (layouts, convolution workspaces): XLA's answer was 0.63
(VGG16) to 15.9 (a decoder under remat) times the batch at which that need
meets the budget, on a described H100 (benchmarks/first-compile.md). The
first compile aims at half of it. Only compiles decide; this places one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from jax.extend import core as jax_core

from autotune._arguments import INPUT_BATCH, ArgumentLeaf

# The first compile aims at this fraction of the unfused boundary.
MARGIN = 0.5
# Calls whose body runs once, in line: their values are the step's own.
_CALLS = frozenset(
    {"jit", "pjit", "closed_call", "core_call", "remat2", "checkpoint",
     "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"}
)  # fmt: skip
_BODIES = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def boundary(
    jaxpr: Any, batch: int, leaves: Sequence[ArgumentLeaf], local_batch: int, budget: int
) -> float | None:
    """The batch at which the arguments and the bytes live along `jaxpr`
    (traced at `batch`) first exceed `budget` on one device; None where it
    cannot say (no equation, or too little budget for the fixed bytes).

    `leaves` are the step's arguments as one device holds them and
    `local_batch` one device's share of `batch`.
    """
    if batch <= 0 or local_batch <= 0:
        return None
    fixed = sum(leaf.nbytes for leaf in leaves if leaf.kind != INPUT_BATCH)
    inputs = sum(leaf.nbytes for leaf in leaves if leaf.kind == INPUT_BATCH)
    share = local_batch / batch  # the part of a value that follows the batch one device holds
    best: float | None = None
    for rest, follows in live_bytes(jaxpr, batch):
        room = budget - fixed - rest
        if room < 0:
            return None
        slope = (inputs + follows * share) / batch
        if slope > 0:
            best = min(best if best is not None else math.inf, room / slope)
    return best


def live_bytes(jaxpr: Any, batch: int) -> list[tuple[int, int]]:
    """(bytes that do not follow the batch, bytes that do) live at each
    equation of `jaxpr` (a ClosedJaxpr), calls inlined."""
    inner = jaxpr.jaxpr
    names: dict[Any, Any] = {}
    events = list(_flat(inner, names))
    last: dict[Any, int] = {}
    for i, (reads, _) in enumerate(events):
        for var in reads:
            last[var] = i
    for var in inner.outvars:
        var = None if isinstance(var, jax_core.Literal) else names.get(var, var)
        if var is not None:
            last[var] = len(events)
    freed: dict[int, list[Any]] = {}
    for var, i in last.items():
        freed.setdefault(i, []).append(var)
    arguments = set(inner.invars) | set(inner.constvars)
    live = [0, 0]
    profile = []
    for i, (_, writes) in enumerate(events):
        for var in writes:
            if var in last:
                live[_follows(var, batch)] += _nbytes(var)
        profile.append((live[0], live[1]))
        for var in freed.get(i, ()):
            if var not in arguments:
                live[_follows(var, batch)] -= _nbytes(var)
    return profile


def _flat(jaxpr: Any, names: dict[Any, Any]) -> Iterable[tuple[list[Any], list[Any]]]:
    """(variables read, variables written) of each equation, in order; the
    bodies of calls inlined, their variables renamed to the caller's."""

    def name(var: Any) -> Any:
        return None if isinstance(var, jax_core.Literal) else names.get(var, var)

    for eqn in jaxpr.eqns:
        body = _body(eqn)
        if body is None:
            yield [v for v in map(name, eqn.invars) if v is not None], list(eqn.outvars)
            continue
        within = dict(zip(body.invars, map(name, eqn.invars)))
        yield from _flat(body, within)
        for out, var in zip(eqn.outvars, body.outvars):
            names[out] = None if isinstance(var, jax_core.Literal) else within.get(var, var)


def _body(eqn: Any) -> Any:
    """The body of a call to inline (an open jaxpr), or None."""
    if eqn.primitive.name not in _CALLS:
        return None
    for key in _BODIES:
        body = eqn.params.get(key)
        body = getattr(body, "jaxpr", body)
        if (
            isinstance(body, jax_core.Jaxpr)
            and not body.constvars
            and len(body.invars) == len(eqn.invars)
            and len(body.outvars) == len(eqn.outvars)
        ):
            return body
    return None


def _nbytes(var: Any) -> int:
    aval = var.aval
    shape = getattr(aval, "shape", None)
    if shape is None:
        return 0
    try:
        itemsize = aval.dtype.itemsize
    except (AttributeError, TypeError):
        return 0
    return math.prod(shape) * itemsize


def _follows(var: Any, batch: int) -> int:
    """1 where the value has a dimension that is a multiple of `batch`, else 0."""
    shape = getattr(var.aval, "shape", ())
    return int(any(d >= batch and d % batch == 0 for d in shape))
