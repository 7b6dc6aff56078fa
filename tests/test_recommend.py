"""Recommendation by measured throughput, else by the stated FLOPs model."""

import dataclasses

from autotune._core.budget import Budget
from autotune._results.recommend import recommend
from autotune._results.result import TuneResult


def row(label, batch, flops, interrupted=False):
    return TuneResult(
        label=label,
        batch=batch,
        peak_bytes=90,
        budget=Budget(100, 0, "given"),
        next_batch=batch + 8,
        next_peak_bytes=110,
        fixed_bytes=10,
        per_example_bytes=1,
        estimate_per_example_bytes=None,
        compiles=4,
        seconds=1.0,
        target="t",
        target_description="t",
        xla_settings={},
        multiple_of=8,
        max_batch=1024,
        probes=(),
        interrupted=interrupted,
        flops_per_example=flops,
    )


ROWS = [row("none", 400, 90e9), row("remat", 700, 120e9), row("light", 480, 90.5e9)]


def test_model_prefers_fewest_flops_then_largest_batch():
    best = recommend(ROWS)
    assert (best.label, best.batch) == ("light", 480)
    assert "compute-bound" in best.basis


def test_measured_throughput_wins_over_the_model():
    best = recommend(ROWS, {"none": 900.0, "remat": 1000.0, "light": 950.0})
    assert (best.label, best.samples_per_second) == ("remat", 1000.0)
    assert "measured" in best.render()


def test_without_flops_the_largest_batch_and_it_says_so():
    rows = [dataclasses.replace(r, flops_per_example=None) for r in ROWS]
    best = recommend(rows)
    assert best.label == "remat" and "no FLOPs known" in best.basis


def test_interrupted_rows_are_never_recommended():
    rows = [*ROWS, row("partial", 4000, 1e9, interrupted=True)]
    assert recommend(rows).label == "light"
    assert recommend([rows[-1]]) is None
