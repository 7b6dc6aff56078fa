"""Every target side by side: one row per target and choice, with the
upper bound on samples/s each target's peak FLOP/s allows."""

from __future__ import annotations

import dataclasses

from autotune._core.table import render_table
from autotune._core.units import format_bytes
from autotune._results.bound import ThroughputBound
from autotune._results.result import TuneResult

HEADERS = (
    "target",
    "choice",
    "max batch",
    "per device",
    "peak",
    "budget",
    "FLOPs/ex",
    "dtype",
    "TFLOP/s/dev",
    "samples/s bound",
)


@dataclasses.dataclass(frozen=True)
class TargetRow:
    """One target's answer for one choice, and its bound."""

    result: TuneResult
    bound: ThroughputBound


@dataclasses.dataclass(frozen=True)
class TargetComparison:
    """The answers of several targets, in the order of the targets, then of
    the choices."""

    rows: tuple[TargetRow, ...]

    @property
    def results(self) -> tuple[TuneResult, ...]:
        return tuple(row.result for row in self.rows)

    @property
    def bounds(self) -> tuple[ThroughputBound, ...]:
        return tuple(row.bound for row in self.rows)

    def on(self, target: str) -> tuple[TuneResult, ...]:
        """The results for the target named `target`."""
        return tuple(r for r in self.results if r.target == target)

    def render(self) -> str:
        """The table, the rule of the bound, the figures' sources, and why a
        row has no bound."""
        lines = [render_table(HEADERS, [_cells(row) for row in self.rows], left=2)]
        sources: dict[str, str] = {}
        for row in self.rows:
            if row.bound.samples_per_second is not None:
                sources.setdefault(row.result.target, row.bound.source)
        lines += [
            "samples/s bound: an upper bound, not a measurement: peak FLOP/s of one device",
            "  x devices / FLOPs per example, at the dense peak the vendor publishes for the",
            "  step's compute dtype (the operands of its dots and convolutions)"
            + (", from:" if sources else ""),
            *(f"  {target}: {source}" for target, source in sources.items()),
        ]
        lines += [
            f"no bound for {row.result.target} {row.result.label}: {row.bound.reason}"
            for row in self.rows
            if row.bound.samples_per_second is None
        ]
        return "\n".join(lines)


def _cells(row: TargetRow) -> tuple[str, ...]:
    r, bound = row.result, row.bound
    rate = bound.samples_per_second
    peak = bound.peak_flops_per_second
    return (
        r.target,
        r.label,
        str(r.batch) + ("" if r.exact else "*"),
        f"{r.per_device_batch} x {r.data_parallel_size}",
        format_bytes(r.peak_bytes),
        format_bytes(r.budget_bytes),
        "-" if not r.flops_per_example else f"{r.flops_per_example:.3g}",
        bound.dtype,
        "-" if rate is None or peak is None else f"{peak / 1e12:g}",
        "-" if rate is None else f"<= {rate:,.0f}",
    )
