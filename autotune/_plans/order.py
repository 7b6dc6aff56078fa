"""The greedy order of a plan search: blocks by the activations each holds at
the peak, per FLOP it costs to recompute them.

Activation bytes come from the peak's breakdown (`--why`): the values the
forward pass made that are live at the peak, by the module path their op
names give. A block's recompute cost is its forward pass: the multiply-adds
of its matrix products and convolutions in the step's jaxpr, by the named
scope of each operation, outside the backward pass (`transpose(...)`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax

from autotune._explain.peak import ACTIVATION, module_of
from autotune._explain.records import PeakBreakdown

_PRODUCTS = ("dot_general", "conv_general_dilated")


def block_of(module: str, blocks: Sequence[str]) -> str | None:
    """The block a module path ("stage1/conv2") lies in: its first component that is a block."""
    for part in module.split("/"):
        if part in blocks:
            return part
    return None


def activation_bytes(breakdown: PeakBreakdown, blocks: Sequence[str]) -> dict[str, int]:
    """Bytes of activations live at the peak, per block (0 where none is)."""
    held = dict.fromkeys(blocks, 0)
    for module, kinds in breakdown.bytes_by_module.items():
        block = block_of(module, blocks)
        if block is not None:
            held[block] += kinds.get(ACTIVATION, 0)
    return held


def forward_flops(step: Any, args: Sequence[Any], blocks: Sequence[str]) -> dict[str, float]:
    """FLOPs of each block's forward matrix products and convolutions in
    `step(*args)`'s jaxpr (0 where none is named)."""
    flops = dict.fromkeys(blocks, 0.0)
    jaxpr = jax.make_jaxpr(step)(*args).jaxpr
    for stack, eqn in _equations(jaxpr, ""):
        if eqn.primitive.name not in _PRODUCTS:
            continue
        if "transpose(" in stack or "rematted_computation" in stack:
            continue
        block = block_of(module_of(f"jit(step)/{stack}/{eqn.primitive.name}"), blocks)
        if block is not None:
            flops[block] += _flops(eqn)
    return flops


def greedy_order(
    blocks: Sequence[str], held: Mapping[str, int], flops: Mapping[str, float]
) -> tuple[str, ...]:
    """Blocks by activation bytes at the peak per forward FLOP, largest
    first; a block without FLOPs ranks by its bytes; ties keep model order."""

    def worth(block: str) -> tuple[float, int]:
        nbytes, cost = held.get(block, 0), flops.get(block, 0.0)
        if cost > 0:
            return (-nbytes / cost, -nbytes)
        return (-math.inf if nbytes else 0.0, -nbytes)

    return tuple(sorted(blocks, key=worth))


def _equations(jaxpr: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    for eqn in jaxpr.eqns:
        stack = "/".join(s for s in (prefix, str(eqn.source_info.name_stack)) if s)
        yield stack, eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner, stack)


def _flops(eqn: Any) -> float:
    out = math.prod(eqn.outvars[0].aval.shape)
    if eqn.primitive.name == "dot_general":
        (contracting, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2.0 * out * math.prod(lhs[d] for d in contracting)
    rhs = eqn.invars[1].aval.shape
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2.0 * out * math.prod(rhs) / out_features
