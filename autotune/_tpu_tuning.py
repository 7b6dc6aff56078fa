"""What `find_max_batch` does differently for a TPU target.

- The budget is the HBM the compiler fits programs into. Without
  `budget_bytes` or `reserve_bytes` it is the compiler's own; with them, the
  compiler is told to fit programs into less with libtpu's option
  `xla_tpu_max_hbm_size_mib`, in whole MiB, buffers and program code
  together. Either way a batch fits when it compiles, and the answer is
  exact in the same sense: it compiled under that limit, the next candidate
  was refused under it. Measured (libtpu 0.0.42.1, v5e): with the option at
  L MiB, the largest one-buffer program that compiled held L MiB less its
  114 KiB of code; at or above the compiler's own HBM the option changes
  nothing (`benchmarks/tpu-hbm.md`).
- A slice is a mesh over all its devices: arguments without a sharding of
  their own are laid out over it (`autotune._layout.lay_out`, "dp" or
  "fsdp") and batches are global.
- The search is `search_compiles`: refusals are probes too, and it never
  assumes need(batch) grows with the batch.
"""

from __future__ import annotations

from collections.abc import Callable

from autotune._budget import Budget, _check_bytes
from autotune._errors import TuneError
from autotune._layout import lay_out
from autotune._probe import Probe
from autotune._targets import Target
from autotune._tpu_search import Outcome
from autotune._workload import Workload

MAX_HBM_OPTION = "xla_tpu_max_hbm_size_mib"
MIB = 1 << 20


def tpu_budget(
    target: Target, budget_bytes: int | None, reserve_bytes: int
) -> tuple[Budget, dict[str, int]]:
    """The budget of a TPU target, and the compiler option that makes it the
    compiler's limit (none when it is the compiler's own HBM)."""
    reserve = _check_bytes("reserve_bytes", reserve_bytes, positive=False)
    hbm = target.default_budget_bytes
    if hbm is None:
        raise TuneError(f"the TPU target {target.name!r} reports no memory limit")
    if budget_bytes is None and reserve == 0:
        return Budget(hbm, 0, target.budget_source), {}
    if budget_bytes is None:
        limit, source = hbm, f"the TPU compiler's HBM ({hbm:,} B)"
    else:
        limit = _check_bytes("budget_bytes", budget_bytes, positive=True)
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


def on_slice(
    workload: Workload, target: Target, layout: str, data_parallel_size: int | None
) -> tuple[Workload, int]:
    """`workload` laid out over all the slice's devices, and the data-parallel
    size (the device count unless given)."""
    if target.device_count == 1:
        return workload, data_parallel_size or 1
    laid = lay_out(workload, target.devices(), layout)
    return laid, data_parallel_size or target.device_count


def outcome(probe: Callable[[int], Probe]) -> Callable[[int], Outcome]:
    """The search's view of a prober: compiled or refused, and the bytes as
    the compiler counts them (buffers and program code)."""

    def compile_at(batch: int) -> Outcome:
        p = probe(batch)
        return not p.refused, p.need_bytes + p.code_bytes

    return compile_at
