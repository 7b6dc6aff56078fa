"""Where the step's own jaxpr would fill the budget: the place of the first compile.

The split (`autotune._explain.split`) draws the line of need through one compile;
its error grows with the distance from that compile to the answer. A
ResNet-18's compile at batch 88 puts the answer five candidates high (at
small batches its programs keep other values live at the peak); the one at
2,936 puts it on the right candidate (benchmarks/first-compile.md). A compile
costs the same at any batch on a described GPU, so the first one is best
made as large as it may be while it fits.

This module says how large, from the trace alone: the step's jaxpr run in
its own order, every value kept from the equation that makes it to its last
use, gives the bytes live at each equation, those with a dimension that is
a multiple of the batch and the rest. Calls are inlined (each call its own
values); a loop or a branch holds, while it runs, the most its bodies hold.
XLA fuses most of those values away, moves the rest and adds its own
(layouts, convolution workspaces): XLA's answer was 0.54 (VGG16) to 1.86
(ViT-B/16) times the batch at which that need meets the budget, on a
described H100 (benchmarks/first-compile.md). The first compile aims at
half of it. Only compiles decide; this places one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from jax.extend import core as jax_core

from autotune._compile.arguments import INPUT_BATCH, ArgumentLeaf
from autotune._core.sizes import array_bytes
from autotune._explain.split import follows_batch

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
    return _profile(jaxpr.jaxpr, batch, {})


_Profile = list[tuple[int, int]]


def _profile(jaxpr: Any, batch: int, bodies: dict[int, tuple[int, int]]) -> _Profile:
    """`live_bytes` of an open jaxpr; `bodies` keeps the peaks of the loop
    and branch bodies already walked."""
    names: dict[Any, Any] = {}
    events = list(_flat(jaxpr, names, batch, itertools.count(), bodies))
    last: dict[Any, int] = {}
    for i, (reads, _, _) in enumerate(events):
        for key in reads:
            last[key] = i
    for var in jaxpr.outvars:
        key = None if isinstance(var, jax_core.Literal) else names.get(var, var)
        if key is not None:
            last[key] = len(events)
    freed: dict[int, list[Any]] = {}
    for key, i in last.items():
        freed.setdefault(i, []).append(key)
    live = [0, 0]
    sizes: dict[Any, tuple[int, int]] = {}  # key -> (follows, bytes), for the values written
    profile = []
    for i, (_, writes, (rest, follows)) in enumerate(events):
        for key, follow, nbytes in writes:
            if key in last:
                sizes[key] = (follow, nbytes)
                live[follow] += nbytes
        profile.append((live[0] + rest, live[1] + follows))
        for key in freed.get(i, ()):
            if key in sizes:  # not an argument of the jaxpr
                follow, nbytes = sizes[key]
                live[follow] -= nbytes
    return profile


# A value: its variable, and the call it was written in (the same jaxpr may
# be inlined many times: one jitted function called once a layer).
_Key = tuple[int, Any]
# An equation's values read, (value, follows, bytes) written, and the bytes
# its loop or branch bodies hold while it runs (not following, following).
_Event = tuple[list[Any], list[tuple[_Key, int, int]], tuple[int, int]]


def _flat(
    jaxpr: Any,
    names: dict[Any, Any],
    batch: int,
    calls: Iterator[int],
    bodies: dict[int, tuple[int, int]],
) -> Iterable[_Event]:
    """The events of each equation, in order; the bodies of calls inlined,
    their variables named in the caller's terms (`calls` numbers each
    inlined body)."""
    call = next(calls)
    for eqn in jaxpr.eqns:
        read = (names.get(v, v) for v in eqn.invars if not isinstance(v, jax_core.Literal))
        reads = [key for key in read if key is not None]
        body = _body(eqn)
        if body is None:
            writes = []
            for var in eqn.outvars:
                names[var] = (call, var)
                writes.append((names[var], _follows(var, batch), _nbytes(var)))
            yield reads, writes, _held(eqn, batch, bodies)
            continue
        within = {
            inner: None if isinstance(outer, jax_core.Literal) else names.get(outer, outer)
            for inner, outer in zip(body.invars, eqn.invars)
        }
        yield from _flat(body, within, batch, calls, bodies)
        for out, var in zip(eqn.outvars, body.outvars):
            names[out] = None if isinstance(var, jax_core.Literal) else within.get(var, var)


def _held(eqn: Any, batch: int, bodies: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """The most bytes the loop or branch bodies of `eqn` hold at once beyond
    their arguments, each kind at its own peak; (0, 0) for an equation
    without a body."""
    most = (0, 0)
    for value in eqn.params.values():
        for body in value if isinstance(value, (tuple, list)) else (value,):
            body = getattr(body, "jaxpr", body)
            if not isinstance(body, jax_core.Jaxpr):
                continue
            if id(body) not in bodies:
                profile = _profile(body, batch, bodies) or [(0, 0)]
                bodies[id(body)] = (max(r for r, _ in profile), max(f for _, f in profile))
            peak = bodies[id(body)]
            most = (max(most[0], peak[0]), max(most[1], peak[1]))
    return most


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
        return array_bytes(shape, aval.dtype)
    except (AttributeError, TypeError):
        return 0


def _follows(var: Any, batch: int) -> int:
    """1 where the value follows the batch (`autotune._explain.split.follows_batch`), else 0."""
    return int(follows_batch(getattr(var.aval, "shape", ()), batch))
