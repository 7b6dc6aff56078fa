"""`Target`: what every kind of target supplies to the tuner.

A target owns what differs between kinds: its devices, its default budget
and how it is stated, the compiler options a budget implies, the rule by
which a compile fits, the bytes a fitting compile counts, how many compiles
pay at once, and the search that suits how its need grows. The tuner asks;
it never asks which kind a target is. One module per kind implements it:
`autotune._targets.local`, `.gpu` (described GPUs), `.tpu` (Cloud TPU
slices); `autotune._targets.registry` finds a target by name.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from autotune._core.budget import Budget, resolve_budget
from autotune._search.drivers import BY_NEED, Driver
from autotune._targets.peak_flops import PeakFlops

if TYPE_CHECKING:
    from autotune._compile.records import Probe

DEFAULT_MEM_FRACTION = 0.75


@dataclasses.dataclass(frozen=True)
class MemoryBudget:
    """A GPU allocator's limit: `fraction x (total - reserve)`."""

    total_bytes: int
    reserve_bytes: int
    fraction: float
    source: str

    @property
    def free_at_start_bytes(self) -> int:
        return self.total_bytes - self.reserve_bytes

    @property
    def limit_bytes(self) -> int:
        return int(self.fraction * self.free_at_start_bytes)

    def describe(self) -> str:
        free = f"{self.free_at_start_bytes:,} B"
        if self.reserve_bytes:
            free += f" = {self.total_bytes:,} B total - {self.reserve_bytes:,} B reserve"
        return f"{self.fraction:g} x free at start ({free}; {self.source})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Target(abc.ABC):
    """A device, or a mesh of them, to compile for: real or described.

    Holds no live JAX objects; `devices()` makes them when asked.
    """

    name: str  # "h200-141gb", "local:gpu", "v5e:2x2", "file:/path"
    platform: str  # the compiler's: "cuda", "cpu", "tpu", ...
    description: str
    memory_bytes: int | None  # one device's memory, where known
    default_budget_bytes: int | None
    budget_source: str = "unknown"
    device_count: int = 1
    # Probes compile in worker processes and stop once XLA has assigned the
    # program's buffers (`autotune._compile.workers`), where nothing is against
    # it (`stops_at_assignment`); the default for a described device. False:
    # every probe compiles in full, in this process (`dataclasses.replace`, or
    # the command's --no-stop-at-assignment).
    stop_at_assignment: bool = True
    # One device's dense peak FLOP/s by dtype, where a public figure is known
    # (the bound on samples/s beside an answer); None elsewhere.
    peak_flops: PeakFlops | None = None

    # Compiled for devices this machine lacks.
    deviceless: ClassVar[bool] = True
    # A batch fits when it compiles: the compiler fits programs into memory
    # itself, and refuses one it cannot (a TPU). Else it fits when its need
    # is within the budget.
    compiler_fits: ClassVar[bool] = False
    # How the search treats need(batch) on this kind.
    search: ClassVar[Driver] = BY_NEED

    @abc.abstractmethod
    def devices(self) -> list[Any]:
        """The JAX devices to compile for (`device_count` of them)."""

    def sharding(self) -> Any:
        """A `NamedSharding` replicated over this target's devices."""
        return _replicated_sharding(tuple(self.devices()))

    def placement(self) -> Any:
        """The sharding a compile puts on arguments that carry none: this
        target's devices, or None for JAX's default device."""
        return self.sharding()

    def budget_for(
        self, budget_bytes: int | None, reserve_bytes: int
    ) -> tuple[Budget, Mapping[str, Any]]:
        """The budget of a search, and the compiler options it implies.

        `budget_bytes` wins over the target's limit, up to the device's
        memory: above it, it is capped there, and the budget says so.
        """
        budget = resolve_budget(
            budget_bytes=budget_bytes,
            reserve_bytes=reserve_bytes,
            target_limit=self.default_budget_bytes,
            target_source=self.budget_source,
            target_name=repr(self.name),
            ceiling=self.memory_bytes,
        )
        return budget, {}

    def fits(self, probe: Probe, budget: Budget) -> bool:
        """Whether a compile fits the budget."""
        return not probe.refused and probe.need_bytes <= budget.bytes

    def peak_bytes(self, probe: Probe) -> int:
        """The bytes a fitting compile holds at its peak, as the budget counts them."""
        return probe.need_bytes

    def default_workers(self) -> int | None:
        """Compiles at once by default; None: as many as the first compile
        shows to pay on this machine's cores (`autotune._compile.concurrency`)."""
        return None

    def round_width(self) -> int:
        """Compiles a round of the search holds: the target's alone, never
        the machine's cores or a compile's timing, so that the batches
        compiled, and the answer, are the same on every run."""
        return 2

    def stops_at_assignment(self) -> bool:
        """Whether probes stop at buffer assignment: not turned off, and
        nothing against it (`full_compile_reason`)."""
        return self.stop_at_assignment and not self.full_compile_reason()

    def full_compile_reason(self) -> str:
        """Why this target's probes compile in full though `stop_at_assignment`
        is on; "" where they may stop."""
        if self.device_count > 1:
            return (
                "a program for several devices compiles in this process, in full: the need "
                "read from its buffer assignment is not yet checked against memory_analysis()"
            )
        return ""

    @property
    def shares_kernels(self) -> bool:
        """Whether compiles for it may share compiled kernels (`autotune._compile.kernels`)."""
        return False

    def identity(self) -> dict[str, Any]:
        """What names the compiled-for machine in a cache key."""
        return {"target": self.name, "target_description": self.description, "target_config": None}


@functools.cache
def _replicated_sharding(devices: tuple[Any, ...]) -> Any:
    import jax
    import numpy as np

    mesh = jax.sharding.Mesh(np.array(devices), ("d",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
