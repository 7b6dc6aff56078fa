"""The machine's own devices as a target: "local".

The budget is the first device's allocator `bytes_limit`; a CPU, which has
none, may use `CPU_MEMORY_SHARE` of physical memory by default.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from autotune._core import checks as check
from autotune._core.budget import Budget
from autotune._core.errors import TargetError, TuneError
from autotune._targets.interface import DEFAULT_MEM_FRACTION, MemoryBudget, Target

MEM_FRACTION_ENV = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")
# A CPU has no allocator limit: by default the step may use this share of
# the machine's physical memory, leaving the rest to the OS and the program.
CPU_MEMORY_SHARE = 0.75


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalTarget(Target):
    """The first `device_count` of `jax.devices()`."""

    budget: MemoryBudget | None = None
    # The local device compiles each probe in full, in this process, unless
    # asked: its compile at the answer is the one the training job finds in
    # JAX's persistent cache, and its cost analysis gives the FLOPs.
    stop_at_assignment: bool = False

    deviceless: ClassVar[bool] = False

    def devices(self) -> list[Any]:
        return local_devices(self.device_count)

    def placement(self) -> Any:
        return None

    def budget_for(
        self, budget_bytes: int | None, reserve_bytes: int
    ) -> tuple[Budget, Mapping[str, Any]]:
        if budget_bytes is None and self.default_budget_bytes is None and self.on_host:
            share = int(CPU_MEMORY_SHARE * physical_memory_bytes())
            source = (
                f"default for a CPU: {CPU_MEMORY_SHARE:g} x physical memory "
                f"({physical_memory_bytes():,} B)"
            )
            host = dataclasses.replace(self, default_budget_bytes=share, budget_source=source)
            return Target.budget_for(host, None, reserve_bytes)
        return super().budget_for(budget_bytes, reserve_bytes)

    def full_compile_reason(self) -> str:
        if not self.on_host:
            return (
                "a local accelerator's compile tunes kernels on the device before it "
                "assigns buffers, and each worker would open its own context on it"
            )
        return super().full_compile_reason()

    def default_workers(self) -> int | None:
        # An accelerator's compiles run kernels to pick algorithms, on its memory.
        return None if self.on_host else 1

    def round_width(self) -> int:
        return super().round_width() if self.on_host else 1

    @property
    def on_host(self) -> bool:
        """The devices are this machine's CPU."""
        return self.platform == "cpu"


def on_host(device: Any) -> bool:
    """Whether a JAX device is this machine's CPU."""
    return device.platform == "cpu"


def local_target(*, mem_fraction: float | None = None, devices: int = 1) -> LocalTarget:
    """The first `devices` of `jax.devices()`; the budget is the first's
    allocator `bytes_limit`.

    With `mem_fraction` the limit is rescaled from the fraction in effect
    (the environment's or 0.75) to the one given.
    """
    device = local_devices(devices)[0]
    limit = (_memory_stats(device) or {}).get("bytes_limit")
    budget = None if limit is None else _local_budget(limit, mem_fraction)
    if budget is None and mem_fraction is not None:
        resolve_mem_fraction(mem_fraction)  # a bad value names its rule first
        raise TargetError(
            f"`mem_fraction` (={mem_fraction!r}) sets a GPU allocator's share; the local "
            f"device ({device.platform}) has no allocator limit to scale: give a budget "
            "instead"
        )
    kind = device.platform
    where = (
        f"local device {device.id}"
        if devices == 1
        else f"local devices {device.id}..{device.id + devices - 1}"
    )
    return LocalTarget(
        name=f"local:{kind}" if devices == 1 else f"local:{devices}x{kind}",
        platform=getattr(device.client, "platform", kind),
        description=f"{device.device_kind} ({where})",
        # A GPU's total is not known to JAX's client; a CPU's is the machine's.
        memory_bytes=physical_memory_bytes() if on_host(device) else None,
        default_budget_bytes=budget.limit_bytes if budget else None,
        budget=budget,
        budget_source=budget.describe() if budget else "unknown",
        device_count=devices,
    )


def local_devices(count: int) -> list[Any]:
    """The first `count` of `jax.devices()`."""
    import jax

    count = check_device_count(count)
    present = jax.devices()
    if count > len(present):
        raise TargetError(
            f"`devices` (={count}) asks for a mesh larger than the devices "
            f"present ({len(present)} {present[0].platform} device(s)); ask "
            "for at most that many, or a described GPU target"
        )
    return present[:count]


def check_device_count(devices: Any) -> int:
    try:
        return check.integer("devices", devices, minimum=1)
    except TuneError as e:
        raise TargetError(str(e)) from None


def resolve_mem_fraction(mem_fraction: float | None) -> float:
    """Explicit fraction, else the environment's, else `DEFAULT_MEM_FRACTION`."""
    if mem_fraction is not None:
        return _check_fraction("mem_fraction", mem_fraction)
    set_vars = [v for v in MEM_FRACTION_ENV if os.environ.get(v)]
    if len(set_vars) > 1:
        raise TargetError(
            f"{' and '.join(set_vars)} are both set; JAX refuses that: "
            f"remove {MEM_FRACTION_ENV[1]}, the deprecated one"
        )
    if not set_vars:
        return DEFAULT_MEM_FRACTION
    raw = os.environ[set_vars[0]]
    try:
        value = float(raw)
    except ValueError:
        raise TargetError(f"{set_vars[0]} (={raw!r}) must be a number") from None
    return _check_fraction(set_vars[0], value)


def physical_memory_bytes() -> int:
    """Total physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_fraction(name: str, value: float) -> float:
    try:
        return check.fraction(name, value)
    except TuneError as e:
        raise TargetError(str(e)) from None


def _local_budget(bytes_limit: int, mem_fraction: float | None) -> MemoryBudget:
    in_effect = resolve_mem_fraction(None)
    fraction = in_effect if mem_fraction is None else resolve_mem_fraction(mem_fraction)
    free = math.ceil(bytes_limit / in_effect)
    return MemoryBudget(free, 0, fraction, f"the device's bytes_limit at fraction {in_effect:g}")


def _memory_stats(device: Any) -> dict[str, int] | None:
    try:
        return device.memory_stats()
    except Exception:  # backends without stats raise rather than return None
        return None
