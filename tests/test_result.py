"""Results render as people read them: exact expected text."""

import dataclasses

from autotune._compile.prober import Probe
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


def test_a_line_no_step_has_is_not_printed_as_a_fact():
    """The 8-GPU row of a need that is not affine: its line had a negative
    slope and fixed bytes above the budget."""
    budget = Budget(64 * 2**20, 0, "given")
    probes = tuple(
        Probe(batch=b, argument_bytes=n, output_bytes=0, alias_bytes=0, temp_bytes=0,
              compile_seconds=1.0)
        for b, n in ((25856, 60_000_000), (26112, 58_000_000), (26368, 66_000_000))
    )  # fmt: skip
    row = dataclasses.replace(
        result("mlp", 26112, -2_324, None),
        probes=probes,
        budget=budget,
        peak_bytes=58_000_000,
        fixed_bytes=165_053_740,
        contradictions=((25856, 26112),),
    )
    assert not row.line_holds and row.estimate_error is None
    text = row.render()
    assert "-2,324 B from XLA" not in text and "fixed           165,053,740 B" not in text
    assert (
        "  per example     no line: need(batch) is not affine here (the line through the "
        "compiles gives -2,324 B per example and 165,053,740 B fixed, which no step needs)"
    ) in text
    assert "  compiles        need at batch 25856: 57.2 MB, 26112: 55.3 MB, 26368: 62.9 MB" in text
    assert "no line" in comparison_table([row]).splitlines()[-1]


def test_compiles_of_different_programs_are_paired():
    from autotune._compile.records import Probe, program_changes

    def probe(batch, program):
        return Probe(batch, 1, 1, 0, 1, 0.1, program=program)

    probes = [probe(64, "a"), probe(8, "a"), probe(256, "b"), probe(128, ""), probe(512, "b")]
    assert program_changes(probes) == ((64, 256),)
    assert program_changes([probe(8, "a"), probe(16, "a")]) == ()
