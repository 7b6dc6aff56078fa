"""Our train steps laid out over a device mesh: data parallel and FSDP.

A layout turns a `TrainSetup` into a step jitted with input and output
shardings over a 1-D mesh (axis "data") and abstract arguments that carry
them. Compiled for the mesh, `memory_analysis()` reports one device's bytes,
so the tuner searches the *global* batch (a multiple of the data-parallel
size) against one device's budget; each device holds
`global_batch / data_size` examples.

- "dp": the batch is split over "data"; parameters and optimizer state are
  replicated.
- "fsdp": the batch is split, and so is every parameter and optimizer-state
  leaf, along its largest axis that the data-parallel size divides; leaves
  with no such axis (small biases, step counters) stay replicated.

Many hosts. With `jax.distributed.initialize()`, every process builds the
same mesh over `jax.devices()` (all processes' devices) and compiles the
same SPMD program for the same global shapes, so each process's
`memory_analysis()`, and hence its search, is the same. Hosts can still
differ where the answer depends on them (jaxlib version, `XLA_FLAGS`, the
allocator fraction): `agree_across_hosts` makes process 0's answer the one
every process uses, and is the identity in a single process.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .train import TrainSetup, _check_batch
from .vgg import _one_of, _positive_int

LAYOUTS: tuple[str, ...] = ("dp", "fsdp")
DATA_AXIS = "data"


def make_mesh(devices: int | Sequence[Any] | None = None) -> Mesh:
    """1-D mesh, axis "data", over `devices`.

    `devices`: the devices themselves (e.g. a described target's
    `Target.devices()`), a count of `jax.devices()` to take, or None for all.
    """
    present = jax.devices()
    if devices is None:
        devices = present
    elif isinstance(devices, int) and not isinstance(devices, bool):
        _positive_int("devices", devices)
        if devices > len(present):
            raise ValueError(
                f"`devices` (={devices}) asks for a mesh larger than the devices "
                f"present ({len(present)} {present[0].platform} device(s)); a "
                "mesh needs at most that many"
            )
        devices = present[:devices]
    devices = list(devices)
    if not devices:
        raise ValueError("`devices` (=[]) must hold at least one device")
    return Mesh(np.array(devices), (DATA_AXIS,))


def data_size(mesh: Mesh) -> int:
    """Devices along the mesh's "data" axis: the data-parallel size."""
    if DATA_AXIS not in mesh.shape:
        raise ValueError(
            f"`mesh` (axes {tuple(mesh.axis_names)}) must have an axis named "
            f"{DATA_AXIS!r}, the axis the batch is split over"
        )
    return int(mesh.shape[DATA_AXIS])


def fsdp_spec(shape: Sequence[int], n: int) -> PartitionSpec:
    """Shard the largest axis that `n` divides over "data"; replicate if none."""
    axes = [i for i, d in enumerate(shape) if d % n == 0 and d >= n]
    if n == 1 or not axes:
        return PartitionSpec()
    axis = max(axes, key=lambda i: shape[i])
    return PartitionSpec(*(DATA_AXIS if i == axis else None for i in range(len(shape))))


def _place(tree: Any, mesh: Mesh, spec: Callable[[Sequence[int]], PartitionSpec]) -> Any:
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(
            leaf.shape, leaf.dtype, sharding=NamedSharding(mesh, spec(leaf.shape))
        ),
        tree,
    )


def _shardings(tree: Any) -> Any:
    return jax.tree.map(lambda leaf: leaf.sharding, tree)


def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of a pytree of (sharded) arrays or structs."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
        total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
    return total


@dataclasses.dataclass(frozen=True)
class ShardedSetup:
    """A `TrainSetup`'s step jitted for a mesh, with sharded abstract arguments."""

    setup: TrainSetup
    mesh: Mesh
    layout: str  # one of LAYOUTS
    step: Callable  # jitted with in/out shardings; params, opt_state donated
    params: Any  # ShapeDtypeStruct leaves with NamedSharding
    opt_state: Any  # ShapeDtypeStruct leaves with NamedSharding

    @property
    def data_size(self) -> int:
        return data_size(self.mesh)

    def per_device_batch(self, global_batch: int) -> int:
        """Examples each device holds at `global_batch`."""
        self._check_global_batch(global_batch)
        return global_batch // self.data_size

    def batch_args(self, global_batch: int) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
        """Abstract `(x, y)` for `global_batch` examples, split over "data"."""
        self._check_global_batch(global_batch)
        x, y = self.setup.batch_args(global_batch)
        split = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
        return (
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=split),
            jax.ShapeDtypeStruct(y.shape, y.dtype, sharding=split),
        )

    def args_for_batch(self, global_batch: int) -> tuple:
        """Abstract `(params, opt_state, x, y)` for `global_batch` examples."""
        return (self.params, self.opt_state, *self.batch_args(global_batch))

    def _check_global_batch(self, batch: int) -> None:
        _check_batch(batch)
        if batch % self.data_size:
            raise ValueError(
                f"`batch` (={batch}) must be a multiple of the data-parallel size "
                f"(={self.data_size}, the mesh's {DATA_AXIS!r} axis): the global "
                "batch is split evenly over the devices"
            )


def shard_setup(setup: TrainSetup, mesh: Mesh, layout: str = "dp") -> ShardedSetup:
    """`setup`'s step and arguments laid out over `mesh` as `layout` says."""
    _one_of("layout", layout, LAYOUTS)
    n = data_size(mesh)
    spec = (
        (lambda shape: PartitionSpec()) if layout == "dp" else (lambda shape: fsdp_spec(shape, n))
    )
    params = _place(setup.params, mesh, spec)
    opt_state = _place(setup.opt_state, mesh, spec)
    split = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    state = (_shardings(params), _shardings(opt_state))
    step = jax.jit(
        setup.step,
        in_shardings=(*state, split, split),
        out_shardings=(*state, NamedSharding(mesh, PartitionSpec())),
        donate_argnums=(0, 1),
    )
    return ShardedSetup(
        setup=setup, mesh=mesh, layout=layout, step=step, params=params, opt_state=opt_state
    )


def accumulation_plan(
    desired_global: int, max_fitting_global: int, data_size: int
) -> tuple[int, int]:
    """Gradient-accumulation `(steps, micro_batch)` that reach `desired_global`.

    `micro_batch` is a global batch that fits (at most `max_fitting_global`), a
    multiple of `data_size`, and `steps * micro_batch == desired_global`; the
    fewest steps that achieve that exactly. A desired batch that fits is one
    step. Raises ValueError when `desired_global` is not a multiple of
    `data_size` (no equal micro-batches split over the devices reach it) or
    when not even `data_size` examples fit.
    """
    for name, value in (
        ("desired_global", desired_global),
        ("max_fitting_global", max_fitting_global),
        ("data_size", data_size),
    ):
        _positive_int(name, value)
    if desired_global % data_size:
        lower = desired_global // data_size * data_size
        options = " or ".join(str(b) for b in (lower, lower + data_size) if b)
        raise ValueError(
            f"`desired_global` (={desired_global}) is not a multiple of the "
            f"data-parallel size (={data_size}): equal micro-batches split over "
            f"the devices cannot add up to it; ask for {options}"
        )
    if max_fitting_global < data_size:
        raise ValueError(
            f"`max_fitting_global` (={max_fitting_global}) must be at least the "
            f"data-parallel size (={data_size}): one example per device must fit"
        )
    per_device = desired_global // data_size
    fewest = math.ceil(desired_global / max_fitting_global)
    steps = next(s for s in range(fewest, per_device + 1) if per_device % s == 0)
    return steps, desired_global // steps


def agree_across_hosts(batch: int) -> int:
    """Process 0's `batch`, on every process; the identity with one process."""
    if jax.process_count() == 1:
        return batch
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(batch)))
