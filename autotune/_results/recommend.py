"""Which choice to train with: the best throughput among the answers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from autotune._results.result import TuneResult

# Choices whose cost is within this share of the cheapest count as equal;
# among them the larger batch wins.
TIE = 0.01


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """The recommended row and the basis of the recommendation."""

    label: str
    batch: int
    basis: str
    samples_per_second: float | None = None

    def render(self) -> str:
        rate = (
            f", {self.samples_per_second:,.1f} samples/s"
            if self.samples_per_second is not None
            else ""
        )
        return f"recommended: {self.label} at batch {self.batch}{rate} ({self.basis})"


def recommend(
    results: Sequence[TuneResult], samples_per_second: Mapping[str, float] | None = None
) -> Recommendation | None:
    """The best row: by measured samples/s when given (label -> rate), else
    by a compute-bound model (samples/s proportional to 1 / FLOPs per example),
    else the largest batch. Interrupted rows are never recommended."""
    rows = [r for r in results if not r.interrupted]
    if not rows:
        return None
    if samples_per_second:
        timed = [r for r in rows if r.label in samples_per_second]
        if timed:
            best = max(timed, key=lambda r: samples_per_second[r.label])
            return Recommendation(
                best.label, best.batch, "measured on the device", samples_per_second[best.label]
            )
    if all(r.flops_per_example for r in rows):
        least = min(r.flops_per_example for r in rows)
        cheap = [r for r in rows if r.flops_per_example <= least * (1 + TIE)]
        best = max(cheap, key=lambda r: r.batch)
        return Recommendation(
            best.label,
            best.batch,
            "no device timed; model: compute-bound, samples/s "
            "proportional to 1 / FLOPs per example",
        )
    best = max(rows, key=lambda r: r.batch)
    return Recommendation(
        best.label, best.batch, "no device timed and no FLOPs known: the largest batch"
    )
