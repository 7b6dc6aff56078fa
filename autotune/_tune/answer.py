"""The tuner's answer from what the compiles proved: the result and its
figures, or why there is none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autotune._compile.prober import Prober
from autotune._compile.records import Probe, compile_failures_text
from autotune._core.budget import Budget
from autotune._core.units import format_bytes
from autotune._results.result import TuneResult
from autotune._search.need import Bracket
from autotune._targets.interface import Target
from autotune._tune.programs import changes
from autotune._workloads.estimate import Estimate


def answer_of(
    bracket: Bracket,
    prober: Prober,
    target: Target,
    *,
    label: str,
    asked: Mapping[str, Any],
    estimate: Estimate | None,
    seconds: float,
) -> TuneResult:
    """The result of a search whose bracket found a batch that fits (`lo`);
    `asked` holds the question's fields (budget, grid, target, settings)."""
    answer = prober.probes[bracket.lo]
    nxt = prober.probes[bracket.hi] if bracket.hi is not None else None
    per_example = _slope(answer, [p for p in prober.probes.values() if not p.refused])
    fixed_at_answer = prober.fixed_bytes(answer.batch) if prober.compiles == 1 else None
    if fixed_at_answer is not None:  # one compile: its split gives the slope
        per_example = round((answer.need_bytes - fixed_at_answer) / answer.batch)
    peak = target.peak_bytes(answer)
    return TuneResult(
        label=label,
        batch=answer.batch,
        peak_bytes=peak,
        compiler_fits=target.compiler_fits,
        code_in_peak_bytes=peak - answer.need_bytes,
        next_batch=nxt.batch if nxt else None,
        next_peak_bytes=nxt.need_bytes if nxt else None,
        fixed_bytes=peak - per_example * answer.batch,
        per_example_bytes=per_example,
        estimate_per_example_bytes=estimate.per_example_bytes if estimate else None,
        **_flops_per_example(prober, answer, asked["data_parallel_size"]),
        compiles=prober.compiles,
        seconds=seconds,
        **asked,
        probes=prober.compiled(),
        interrupted=bracket.interrupted,
        failures=tuple(prober.failures[b] for b in prober.order if b in prober.failures),
        contradictions=bracket.contradictions,
        # After Ctrl-C, nothing more is lowered: the compiles' programs alone.
        program_changes=changes(
            prober,
            answer.batch,
            asked["multiple_of"],
            answer.batch if bracket.interrupted else top_candidate(asked),
        ),
    )


def top_candidate(asked: Mapping[str, Any]) -> int:
    """The largest candidate of the question."""
    return asked["max_batch"] // asked["multiple_of"] * asked["multiple_of"]


def no_answer(prober: Prober, budget: Budget, options: Mapping[str, Any]) -> str:
    """Why no batch is an answer: none fits, or none compiles."""
    if prober.probes:
        return _does_not_fit(min(prober.probes.values(), key=lambda p: p.batch), budget)
    return compile_failures_text(tuple(prober.failures.values()), options)


def _flops_per_example(prober: Prober, answer: Probe, data_parallel_size: int) -> dict[str, Any]:
    if answer.flops is not None:  # one device's program: its share of the batch
        return {
            "flops_per_example": answer.flops * data_parallel_size / answer.batch,
            "flops_source": "compiled program's cost analysis",
        }
    flops = prober.flops(answer.batch)
    if flops is not None:
        return {
            "flops_per_example": flops / answer.batch,
            "flops_source": "lowered program on the host, before XLA's "
            "optimizations; the target's has no cost analysis",
        }
    return {
        "flops_per_example": None,
        "flops_source": "unavailable: no cost analysis on this backend",
    }


def _slope(answer: Probe, compiled: Sequence[Probe]) -> int:
    """Bytes per example between the answer and the compile farthest below it
    (above it, when the answer is the smallest); 0 with no other compile."""
    others = [p for p in compiled if p.batch != answer.batch]
    if not others:
        return 0
    below = [p for p in others if p.batch < answer.batch]
    other = min(below, key=lambda p: p.batch) if below else max(others, key=lambda p: p.batch)
    return round((answer.need_bytes - other.need_bytes) / (answer.batch - other.batch))


def _does_not_fit(probe: Probe, budget: Budget) -> str:
    if probe.refused:
        return (
            f"the step does not fit at the smallest candidate batch={probe.batch}: the "
            f"compiler refused it, requiring {format_bytes(probe.need_bytes)} of "
            f"{format_bytes(probe.available_bytes)} ({budget.source})"
        )
    return (
        f"the step does not fit at the smallest candidate batch={probe.batch}: "
        f"it needs {probe.need_bytes:,} B ({format_bytes(probe.need_bytes)}) "
        f"and the budget is {budget.bytes:,} B ({format_bytes(budget.bytes)}; "
        f"{budget.source}). Breakdown: arguments {format_bytes(probe.argument_bytes)} "
        f"(parameters, optimizer state, batch), outputs "
        f"{format_bytes(probe.output_bytes)}, of which donated "
        f"{format_bytes(probe.alias_bytes)}, temporaries "
        f"{format_bytes(probe.temp_bytes)}"
    )
