"""A workload laid out over a 1-D device mesh: data parallel or fully sharded.

Compiled for a mesh, `memory_analysis()` reports one device's bytes, so the
tuner searches the *global* batch (a multiple of the data-parallel size)
against one device's budget; each device holds `batch / data_size` examples.

Arguments that carry a sharding of their own keep it. The others are placed
by what they are, found by building the arguments at two batch sizes:

- a leaf whose shape changes with the batch is split along that axis over
  the mesh's "data" axis;
- any other leaf (parameters, optimizer state, PRNG keys) is replicated
  ("dp"), or, with "fsdp", split along its largest axis that the
  data-parallel size divides (replicated if none does).

The step's own jit places its outputs; with donation, XLA keeps each
updated leaf where its input was (measured the same as explicit output
shardings for the VGG steps, dp and fsdp).

Many hosts: every process builds the same mesh over `jax.devices()` and
compiles the same SPMD program for the same global shapes, so every
process's search is the same. Where hosts may differ (jaxlib, `XLA_FLAGS`,
the allocator fraction), `agree_across_hosts` gives every process process
0's answer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from autotune._core import checks as check
from autotune._core.errors import TuneError
from autotune._workloads.workload import Workload

if TYPE_CHECKING:
    from autotune._targets.interface import Target

LAYOUTS: tuple[str, ...] = ("dp", "fsdp")
DATA_AXIS = "data"


def make_mesh(devices: Sequence[Any]) -> Mesh:
    """A 1-D mesh, axis "data", over `devices` (local or described)."""
    devices = list(devices)
    if not devices:
        raise TuneError("`devices` (=[]) must hold at least one device")
    return Mesh(np.array(devices), (DATA_AXIS,))


def fsdp_spec(shape: Sequence[int], n: int) -> PartitionSpec:
    """Split the largest axis that `n` divides over "data"; replicate if none."""
    axes = [i for i, d in enumerate(shape) if d % n == 0 and d >= n]
    if n == 1 or not axes:
        return PartitionSpec()
    axis = max(axes, key=lambda i: shape[i])
    return PartitionSpec(*(DATA_AXIS if i == axis else None for i in range(len(shape))))


def on_target(workload: Workload, target: Target, layout: str = "dp") -> Workload:
    """`workload` laid out over `target`'s devices when it has several, once:
    a workload laid out already (by `lay_out`) is left as it is."""
    check_layout(layout)
    if target.device_count == 1 or isinstance(workload.args_for_batch, _LaidOut):
        return workload
    return lay_out(workload, target.devices(), layout)


def check_layout(layout: Any, name: str = "layout") -> str:
    """`layout`, once it is one of `LAYOUTS`; `name` is what the caller calls it."""
    if layout not in LAYOUTS:
        raise TuneError(f"`{name}` (={check.shown(layout)}) must be one of {', '.join(LAYOUTS)}")
    return layout


def lay_out(workload: Workload, devices: Sequence[Any], layout: str = "dp") -> Workload:
    """`workload` with its unsharded arguments placed over `devices`.

    Batches become global: `args_for_batch(b)` of the result asks for `b`
    examples in all, and `b` must be a multiple of the device count. The
    estimate, if any, becomes one device's share.
    """
    check_layout(layout)
    mesh = make_mesh(devices)
    n = len(mesh.devices.flat)
    estimate = workload.estimate
    if estimate is not None:
        fixed = estimate.fixed_bytes // n if layout == "fsdp" else estimate.fixed_bytes
        estimate = dataclasses.replace(
            estimate, fixed_bytes=fixed, per_example_bytes=estimate.per_example_bytes // n
        )
    args = _LaidOut(workload.args_for_batch, mesh, layout)
    return dataclasses.replace(workload, args_for_batch=args, estimate=estimate)


@dataclasses.dataclass(frozen=True)
class _LaidOut:
    """`args_for_batch` of a workload laid out over `mesh`: global batches."""

    args_for_batch: Callable[[int], Sequence[Any]]
    mesh: Mesh
    layout: str

    def __call__(self, batch: int) -> tuple[Any, ...]:
        n = len(self.mesh.devices.flat)
        if batch % n:
            raise TuneError(
                f"`batch` (={batch}) must be a multiple of the data-parallel size "
                f"(={n}): the global batch is split evenly over the devices"
            )
        args = self.args_for_batch(batch)
        axes = _batch_axes(self.args_for_batch, batch, args)
        leaves, tree = jax.tree.flatten(tuple(args))
        return jax.tree.unflatten(
            tree,
            [_place(leaf, axis, self.mesh, self.layout) for leaf, axis in zip(leaves, axes)],
        )


def _batch_axes(args_for_batch: Any, batch: int, args: Any) -> list[int | None]:
    """Per leaf, the axis whose size follows the batch (None: no such axis)."""
    other = args_for_batch(2 * batch)
    leaves, tree = jax.tree.flatten(tuple(args))
    other_leaves, other_tree = jax.tree.flatten(tuple(other))
    if tree != other_tree:
        raise TuneError(
            f"`args_for_batch` returned differently structured arguments for batch={batch} "
            f"and batch={2 * batch}; only leaf shapes may follow the batch"
        )
    axes = []
    for a, b in zip(leaves, other_leaves):
        changed = [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y]
        axes.append(changed[0] if changed else None)
    return axes


def own_sharding(leaf: Any) -> Any:
    """The sharding a leaf was given, if any: a struct's, or an array's that
    spans several devices (an array on one device was merely put there)."""
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        return None
    if isinstance(leaf, jax.ShapeDtypeStruct) or len(sharding.device_set) > 1:
        return sharding
    return None


def _place(leaf: Any, batch_axis: int | None, mesh: Mesh, layout: str) -> Any:
    sharding = own_sharding(leaf)
    if sharding is None:
        if batch_axis is not None:
            spec = PartitionSpec(
                *(DATA_AXIS if i == batch_axis else None for i in range(len(leaf.shape)))
            )
        elif layout == "fsdp":
            spec = fsdp_spec(leaf.shape, len(mesh.devices.flat))
        else:
            spec = PartitionSpec()
        sharding = NamedSharding(mesh, spec)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def accumulation_plan(
    desired_global: int, max_fitting_global: int, data_size: int
) -> tuple[int, int]:
    """Gradient-accumulation `(steps, micro_batch)` that reach `desired_global`.

    `micro_batch` is a global batch that fits (at most `max_fitting_global`),
    a multiple of `data_size`, and `steps * micro_batch == desired_global`;
    the fewest steps that achieve that exactly. A desired batch that fits is
    one step. Raises `TuneError` when `desired_global` is not a multiple of
    `data_size` (no equal micro-batches split over the devices reach it) or
    when not even `data_size` examples fit.
    """
    desired_global, max_fitting_global, data_size = (
        check.integer(name, value, minimum=1)
        for name, value in (
            ("desired_global", desired_global),
            ("max_fitting_global", max_fitting_global),
            ("data_size", data_size),
        )
    )
    if desired_global % data_size:
        lower = desired_global // data_size * data_size
        options = " or ".join(str(b) for b in (lower, lower + data_size) if b)
        raise TuneError(
            f"`desired_global` (={desired_global}) is not a multiple of the "
            f"data-parallel size (={data_size}): equal micro-batches split over "
            f"the devices cannot add up to it; ask for {options}"
        )
    if max_fitting_global < data_size:
        raise TuneError(
            f"`max_fitting_global` (={max_fitting_global}) must be at least the "
            f"data-parallel size (={data_size}): one example per device must fit"
        )
    per_device = desired_global // data_size
    fewest = math.ceil(desired_global / max_fitting_global)
    steps = next(s for s in range(fewest, per_device + 1) if per_device % s == 0)
    return steps, desired_global // steps


def agree_across_hosts(batch: int) -> int:
    """Process 0's `batch`, on every process; the identity with one process."""
    batch = check.integer("batch", batch, minimum=1)
    if jax.process_count() == 1:
        return batch
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(batch)))
