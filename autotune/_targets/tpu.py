"""A described Cloud TPU slice as a target: compile-only devices from libtpu.

`jax.experimental.topologies.get_topology_desc(platform="tpu", topology_name=
"v5e:2x2", chip_config_name="default", chips_per_host_bounds=(2, 2, 1),
num_slices=1)` loads libtpu and returns devices that compile but do not run;
a step lowered with `NamedSharding`s over a mesh of them compiles on this
machine, and `memory_analysis()` gives one device's bytes. It needs libtpu of
the version jax pins (`pip install "jax[tpu]==<jax version>"`, the `[tpu]`
extra), no TPU and no environment variable.

What differs from a GPU:

- the compiler fits a program into HBM itself and refuses, at compile, one
  it cannot fit: a batch fits when it compiles, its peak counts the
  program's code beside its buffers, and need(batch) is not monotone near
  the limit, so the search decides by compiles alone
  (`autotune._search.compiles`);
- the budget is the compiler's HBM per device (`TpuGeneration.hbm_mib`).
  With `budget_bytes` or `reserve_bytes` the compiler is told to fit
  programs into less with libtpu's option `xla_tpu_max_hbm_size_mib`, in
  whole MiB, buffers and program code together. Measured (libtpu 0.0.42.1,
  v5e): with the option at L MiB, the largest one-buffer program that
  compiled held L MiB less its 114 KiB of code; at or above the compiler's
  own HBM the option changes nothing (`benchmarks/tpu-hbm.md`);
- a slice is a mesh over all its devices, so batches are global;
- a probe stopped at buffer assignment stops at a verdict, not at the
  need: the compiler placed the buffers within its limit, or refused the
  program. The compiler counts the program's code too, known only once
  generated, and refuses after codegen some programs whose buffers it placed
  within HBM (`benchmarks/tpu-verdicts.md`); so a placement only places the
  search, and the answer is compiled in full (`autotune._search.compiles.
  search_placed`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from autotune._core import checks as check
from autotune._core.budget import Budget, check_bytes
from autotune._core.errors import TargetError, TuneError
from autotune._search.drivers import BY_COMPILES, Driver
from autotune._targets.interface import Target
from autotune._targets.plugins import (
    DescribeError,
    check_libtpu,
    described_devices,
    installed_version,
    libtpu_text,
)
from autotune._targets.tpu_specs import TpuSlice, parse_tpu_name

if TYPE_CHECKING:
    from autotune._compile.records import Probe

MAX_HBM_OPTION = "xla_tpu_max_hbm_size_mib"
MIB = 1 << 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class TpuTarget(Target):
    """All the devices of a described TPU slice."""

    slice: TpuSlice

    compiler_fits: ClassVar[bool] = True
    search: ClassVar[Driver] = BY_COMPILES

    def devices(self) -> list[Any]:
        """The slice's compile-only devices, in libtpu's order."""
        check_libtpu()
        s = self.slice
        try:
            return list(
                described_devices(
                    "tpu",
                    topology_name=s.topology,
                    chip_config_name=s.generation.chip_config,
                    chips_per_host_bounds=s.chips_per_host_bounds,
                    num_slices=1,
                )
            )
        except DescribeError as e:
            printed = e.printed.strip()
            raise TargetError(
                f"libtpu {installed_version('libtpu')} cannot describe the TPU topology "
                f"{s.topology!r} (chip config {s.generation.chip_config!r}, chips per host "
                f"{s.chips_per_host_bounds}): {e}"
                + (f"\nlibtpu said: {printed}" if printed else "")
            ) from e.error

    def budget_for(
        self, budget_bytes: int | None, reserve_bytes: int
    ) -> tuple[Budget, Mapping[str, Any]]:
        """The compiler's own HBM, or less told by `xla_tpu_max_hbm_size_mib`."""
        reserve = check_bytes("reserve_bytes", reserve_bytes, positive=False)
        hbm = self.slice.generation.hbm_bytes
        if budget_bytes is None and reserve == 0:
            return Budget(hbm, 0, self.budget_source), {}
        if budget_bytes is None:
            limit, source = hbm, f"the TPU compiler's HBM ({hbm:,} B)"
        else:
            limit = check_bytes("budget_bytes", budget_bytes, positive=True)
            source = f"given (budget_bytes = {limit:,} B)"
            if limit > hbm:
                limit, source = hbm, f"{source}, capped at the TPU compiler's HBM ({hbm:,} B)"
        aim_mib = (limit - reserve) // MIB
        if aim_mib < 1:
            raise TuneError(
                f"`reserve_bytes` (={reserve:,}) must leave at least 1 MiB of the TPU "
                f"budget (={limit:,} B, {source}) for the compiler to aim at"
            )
        rounded = reserve + aim_mib * MIB
        if rounded != limit:
            source += f", rounded down to {rounded:,} B"
        source += (
            f"; the compiler fits buffers and program code into {aim_mib:,} MiB "
            f"({MAX_HBM_OPTION}): a batch fits when it compiles"
        )
        return Budget(rounded, reserve, source), {MAX_HBM_OPTION: aim_mib}

    def full_compile_reason(self) -> str:
        # A slice's probes may stop too: a placement only places the search,
        # and its answer is compiled in full whatever the placements read.
        return ""

    def fits(self, probe: Probe, budget: Budget) -> bool:
        # A placement is a verdict that a full compile has not proven.
        return not probe.refused and not probe.placed

    def peak_bytes(self, probe: Probe) -> int:
        return probe.need_bytes + probe.code_bytes


def tpu_target(tpu: TpuSlice, *, mem_fraction: float | None = None, devices: int = 1) -> TpuTarget:
    """The target of a described slice: all its devices, its compiler's HBM."""
    if mem_fraction is not None:
        raise TargetError(
            f"`mem_fraction` (={mem_fraction!r}) sets a GPU allocator's share; "
            f"`target` (={tpu.name!r}) is a TPU, whose limit is its compiler's HBM: "
            "give a budget or a reserve instead"
        )
    if devices not in (1, tpu.device_count):
        allowed = " or ".join(map(str, sorted({1, tpu.device_count})))
        raise TargetError(
            f"`devices` (={devices!r}) must be {allowed} for `target` (={tpu.name!r}): "
            f"a TPU slice is a mesh over all its {tpu.device_count} devices; name a "
            "slice of the size you want"
        )
    g = tpu.generation
    return TpuTarget(
        name=tpu.name,
        platform="tpu",
        description=f"{tpu.describe()} (described, deviceless compile; {libtpu_text()})",
        memory_bytes=g.hbm_bytes,
        default_budget_bytes=g.hbm_bytes,
        budget_source=(
            f"the TPU compiler's HBM per {g.device} ({g.hbm_mib:,} MiB, buffers and "
            "program code; measured with libtpu 0.0.42.1): a batch fits when it compiles"
        ),
        device_count=tpu.device_count,
        peak_flops=g.device_peak_flops,
        slice=tpu,
    )


def check_stored_limit(
    target: str, budget_bytes: int, options: Mapping[str, Any], where: str
) -> None:
    """Refuses a stored row whose compiler fitted it, unless its budget is the
    limit the compiler fitted the answer into: the whole MiB it was told
    (`xla_tpu_max_hbm_size_mib`), or else the HBM of the row's TPU target as
    the compiler counts it. `options` are the row's compiler options, read
    from `where`."""
    if MAX_HBM_OPTION in options:
        name = f"{where}.{MAX_HBM_OPTION}"
        told = check.integer(name, options[MAX_HBM_OPTION], minimum=1)
        if told * MIB != budget_bytes:
            raise TuneError(
                f"`{name}` (={check.shown(told)}) must be the budget in MiB "
                f"(={budget_bytes / MIB:,})"
            )
        return
    try:
        tpu = parse_tpu_name(target)
    except TuneError:
        tpu = None
    if tpu is not None and tpu.generation.hbm_bytes == budget_bytes:
        return
    hbm = "" if tpu is None else f" (={tpu.generation.hbm_bytes:,} B)"
    raise TuneError(
        f"`{where}` (={check.shown(dict(options))}) must hold {MAX_HBM_OPTION}, the limit "
        f"the compiler fitted the answer into, unless the budget (={budget_bytes:,} B) is "
        f"the HBM of the row's TPU target{hbm}"
    )
