"""Results render as people read them: exact expected text."""

import dataclasses

from autotune._core.budget import Budget
from autotune._results.result import TuneResult, comparison_table

GIB = 1024**3


def result(label, batch, per_example, flops, **kwargs):
    return TuneResult(
        label=label,
        batch=batch,
        peak_bytes=70 * GIB,
        budget=Budget(75 * GIB, 0, "given"),
        next_batch=batch + 8,
        next_peak_bytes=76 * GIB,
        fixed_bytes=GIB,
        per_example_bytes=per_example,
        estimate_per_example_bytes=per_example * 11 // 10,
        compiles=4,
        seconds=12.34,
        target="h100-sxm-80gb",
        target_description="H100",
        xla_settings={"remat_pass": False, "jax": "0.10.2"},
        multiple_of=8,
        max_batch=65536,
        probes=(),
        flops_per_example=flops,
        **kwargs,
    )


def test_comparison_table():
    rows = [
        result("none", 440, 140 * 2**20, 90e9),
        result("remat", 736, 80 * 2**20, 120e9, from_cache=True),
    ]
    assert comparison_table(rows) == "\n".join(
        [
            "choice  max batch     peak   budget  headroom  per example (XLA)       analytical"
            "  GFLOP/ex  recompute    compiles  seconds",
            "------  ---------  -------  -------  --------  -----------------  ---------------"
            "  --------  ---------  ----------  -------",
            "none          440  70.0 GB  75.0 GB    5.0 GB           140.0 MB  154.0 MB (+10%)"
            "      90.0        +0%           4     12.3",
            "remat         736  70.0 GB  75.0 GB    5.0 GB            80.0 MB   88.0 MB (+10%)"
            "     120.0       +33%  4 (cached)     12.3",
        ]
    )


def test_partial_and_capped_rows_are_marked():
    partial = dataclasses.replace(result("cut", 96, 2**20, None), next_batch=None, interrupted=True)
    capped = dataclasses.replace(result("all", 65536, 2**20, None), next_batch=None)
    assert "96*" in comparison_table([partial])
    assert "PARTIAL" in partial.render()
    assert "capped at max_batch=65536" in capped.render()
