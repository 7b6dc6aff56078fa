"""A lowered step made into bytes another process can compile: `jax.export`.

A probe that stops at buffer assignment compiles in a worker process
(`autotune._compile.workers`), which cannot import the user's step by name
(a `Workload` may be built in code). It gets the program instead: the step
exported (`jax.export`, public; serializing needs the `flatbuffers` package)
at one batch, over the flat list of its argument leaves, so no pytree type
of the user's (`nnx.Param`, a dataclass) has to be registered in the worker.

A program over several devices (a TPU slice) ships each leaf's layout
beside it, its mesh's shape, axis names and PartitionSpec, and the worker
lays the leaves out over the same devices, in the same order.

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
import numpy as np
from jax.sharding import Mesh, NamedSharding


class ShipError(Exception):
    """The step could not be exported for another process; the message says why."""


# Where a leaf lies on a mesh of the target's devices, in their order:
# (the mesh's shape, its axis names, the leaf's PartitionSpec).
Layout = tuple[tuple[int, ...], tuple[str, ...], Any]


@dataclasses.dataclass(frozen=True)
class Shipped:
    """One batch's program, serialized, the leaves it donates, and for a
    program over several devices each leaf's layout."""

    program: bytes
    donated: tuple[int, ...]  # positions in the flat list of argument leaves
    layouts: tuple[Layout, ...] = ()  # empty: every leaf on the target's placement


def ship(
    jitted: Any, args: Sequence[Any], lowered: Any, platform: str, devices: Sequence[Any] = ()
) -> Shipped:
    """`jitted` at `args` (placed structs) exported for `platform`; `lowered`
    is the same step lowered at `args`, whose donation is kept. With several
    `devices` (the target's, in order), each leaf's layout over them is
    shipped too."""
    leaves, treedef = jax.tree.flatten(tuple(args))
    layouts = tuple(_layout(leaf, devices) for leaf in leaves) if len(devices) > 1 else ()
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
        return Shipped(bytes(exported.serialize()), donated, layouts)
    except Exception as e:  # an unexportable step, or no flatbuffers: compiled in process
        raise ShipError(f"jax.export failed: {type(e).__name__}: {str(e)[:400]}") from e


def _layout(leaf: Any, devices: Sequence[Any]) -> Layout:
    sharding = getattr(leaf, "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or not hasattr(sharding, "spec"):
        raise ShipError(f"a leaf's sharding ({sharding!r}) is not over a named mesh")
    if [d.id for d in mesh.devices.flat] != [d.id for d in devices]:
        raise ShipError("a leaf lies on a mesh whose devices are not the target's, in its order")
    return tuple(mesh.devices.shape), tuple(mesh.axis_names), sharding.spec


def _export_platform(platform: str) -> str:
    # jax.export names the platforms as lowering does: "cuda", "rocm", "tpu", "cpu".
    return {"gpu": "cuda"}.get(platform, platform)


def unship(shipped: Shipped, target: Any) -> Any:
    """The shipped program lowered again in this process, donation applied,
    each argument on `target`'s placement (None: the default device) or, for
    a program over several devices, laid out over them as shipped."""
    exported = jax.export.deserialize(bytearray(shipped.program))
    if shipped.layouts:
        devices = np.array(target.devices())
        shardings = [
            NamedSharding(Mesh(devices.reshape(shape), names), spec)
            for shape, names, spec in shipped.layouts
        ]
    else:
        shardings = [target.placement()] * len(exported.in_avals)
    structs = [
        jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
        for a, s in zip(exported.in_avals, shardings)
    ]
    return jax.jit(exported.call, donate_argnums=shipped.donated).lower(*structs)
