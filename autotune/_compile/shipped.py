"""A lowered step made into bytes another process can compile: `jax.export`.

A probe that stops at buffer assignment compiles in a worker process
(`autotune._compile.workers`), which cannot import the user's step by name
(a `Workload` may be built in code). It gets the program instead: the step
exported (`jax.export`, public; serializing needs the `flatbuffers` package)
at one batch, over the flat list of its argument leaves, so no pytree type
of the user's (`nnx.Param`, a dataclass) has to be registered in the worker.

Donation does not travel with the program: `jax.jit(exported.call)` reports
an alias of 0 unless the worker donates again (measured, jax 0.10.2). So the
donated leaves are read from the parent's own lowering (`args_info`, which
also knows the donation of a step jitted already) and shipped beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax


class ShipError(Exception):
    """The step could not be exported for another process; the message says why."""


@dataclasses.dataclass(frozen=True)
class Shipped:
    """One batch's program, serialized, and the leaves it donates."""

    program: bytes
    donated: tuple[int, ...]  # positions in the flat list of argument leaves


def ship(jitted: Any, args: Sequence[Any], lowered: Any, platform: str) -> Shipped:
    """`jitted` at `args` (placed structs) exported for `platform`; `lowered`
    is the same step lowered at `args`, whose donation is kept."""
    leaves, treedef = jax.tree.flatten(tuple(args))
    try:
        infos = jax.tree.leaves(lowered.args_info)
    except Exception as e:
        raise ShipError(f"the lowered step has no argument info: {type(e).__name__}: {e}") from e
    if len(infos) != len(leaves):
        raise ShipError(f"{len(infos)} argument infos for {len(leaves)} argument leaves")
    donated = tuple(i for i, info in enumerate(infos) if getattr(info, "donated", False))

    def flat(*flat_leaves: Any) -> list[Any]:
        return jax.tree.leaves(jitted(*jax.tree.unflatten(treedef, flat_leaves)))

    try:
        exported = jax.export.export(
            jax.jit(flat, donate_argnums=donated), platforms=(_export_platform(platform),)
        )(*leaves)
        return Shipped(bytes(exported.serialize()), donated)
    except Exception as e:  # an unexportable step, or no flatbuffers: compiled in process
        raise ShipError(f"jax.export failed: {type(e).__name__}: {str(e)[:400]}") from e


def _export_platform(platform: str) -> str:
    # jax.export names the platforms as lowering does: "cuda", "rocm", "tpu", "cpu".
    return {"gpu": "cuda"}.get(platform, platform)


def unship(shipped: Shipped, placement: Any) -> Any:
    """The shipped program lowered again in this process, donation applied:
    `placement` is the sharding of every argument (None: the default device)."""
    exported = jax.export.deserialize(bytearray(shipped.program))
    structs = [
        jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=placement) for a in exported.in_avals
    ]
    return jax.jit(exported.call, donate_argnums=shipped.donated).lower(*structs)
