"""An upper bound on a target's samples/s at an answer, from its published
peak FLOP/s: a bound, never a measurement.

    bound = peak FLOP/s of one device x devices / FLOPs per example

The peak is the target's dense figure for the step's compute dtype (the
operands of its dots and convolutions, `autotune._compile.compute_dtype`);
for a step that computes in several, the fastest of their figures, so that
the bound holds for every FLOP. No bound, with its reason, where the dtype
is unknown, the target has no figure for it, or the FLOPs are unknown.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from autotune._results.result import TuneResult
from autotune._targets.peak_flops import PeakFlops

RULE = "peak FLOP/s of one device x devices / FLOPs per example"


@dataclasses.dataclass(frozen=True)
class ThroughputBound:
    """Samples/s no run of the step on the target can exceed (`RULE`)."""

    dtypes: tuple[str, ...]  # the step's compute dtypes; () if unknown
    devices: int  # the devices the batch is split over
    peak_flops_per_second: float | None  # one device's, for `dtypes`
    flops_per_example: float | None
    source: str  # where the peak figure comes from
    reason: str = ""  # why there is no bound; "" when there is one

    @property
    def samples_per_second(self) -> float | None:
        if self.reason or not self.peak_flops_per_second or not self.flops_per_example:
            return None
        return self.peak_flops_per_second * self.devices / self.flops_per_example

    @property
    def dtype(self) -> str:
        """The compute dtypes as one word: "bfloat16", "bfloat16+float32", "unknown"."""
        return "+".join(self.dtypes) or "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples_per_second": self.samples_per_second,
            "rule": RULE,
            "dtype": self.dtype if self.dtypes else None,
            "devices": self.devices,
            "peak_flops_per_second": self.peak_flops_per_second,
            "flops_per_example": self.flops_per_example,
            "source": self.source,
            "reason": self.reason,
        }


def throughput_bound(
    result: TuneResult, peak: PeakFlops | None, dtypes: tuple[str, ...]
) -> ThroughputBound:
    """The bound at `result` on its target, whose device's figures are `peak`
    (None: none published), for a step computing in `dtypes`."""
    known = dict(
        dtypes=dtypes,
        devices=result.data_parallel_size,
        flops_per_example=result.flops_per_example,
    )
    if not dtypes:
        return ThroughputBound(
            **known, peak_flops_per_second=None, source="",
            reason="the step's compute dtype is unknown: no dot or convolution in its program",
        )  # fmt: skip
    if peak is None:
        return ThroughputBound(
            **known, peak_flops_per_second=None, source="",
            reason=f"no published peak FLOP/s is known for {result.target_description}",
        )  # fmt: skip
    missing = [d for d in dtypes if peak.of(d) is None]
    if missing:
        return ThroughputBound(
            **known, peak_flops_per_second=None, source=peak.source,
            reason=f"{peak.source} gives no {missing[0]} figure",
        )  # fmt: skip
    figure = max(peak.of(d) for d in dtypes)
    reason = "" if result.flops_per_example else f"no FLOPs per example ({result.flops_source})"
    return ThroughputBound(**known, peak_flops_per_second=figure, source=peak.source, reason=reason)
