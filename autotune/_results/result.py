"""The tuner's answer, and how it renders for people and programs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from autotune._compile.records import CompileFailure, Probe
from autotune._core.budget import Budget
from autotune._core.table import render_table
from autotune._core.units import format_bytes
from autotune._explain.records import PeakBreakdown, breakdown_to_row


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """The largest batch that fits, with the evidence for it.

    `batch` was compiled and needs `peak_bytes` <= `budget_bytes`;
    `next_batch`, the next candidate that compiles, was compiled and needs
    more (None when `batch` is `max_batch`, or when the search was
    interrupted before the boundary was found: see `interrupted`).
    `failures` are candidates that did not compile for a reason other than
    memory, with XLA's message; `contradictions` are pairs of batches (a, b),
    a < b, whose need fell from a to b: need did not grow with the batch,
    and the answer is not exact. `program_changes` are pairs of compiles,
    neighbours by batch, whose programs differ beyond their shapes (the step
    switches programs between them): the answer is not exact either.

    With `compiler_fits` (a TPU), a batch fits when it compiles, and
    `next_batch` is the next candidate, refused by the compiler.

    With `data_parallel_size` > 1, batches are global (split over that many
    devices: `per_device_batch` each) and byte counts are one device's.
    """

    label: str
    batch: int
    peak_bytes: int
    budget: Budget
    next_batch: int | None
    next_peak_bytes: int | None
    fixed_bytes: int
    per_example_bytes: int
    estimate_per_example_bytes: int | None
    compiles: int
    seconds: float
    target: str
    target_description: str
    xla_settings: Mapping[str, Any]
    multiple_of: int
    max_batch: int
    probes: tuple[Probe, ...]
    interrupted: bool = False
    from_cache: bool = False
    data_parallel_size: int = 1
    flops_per_example: float | None = None
    flops_source: str = ""
    failures: tuple[CompileFailure, ...] = ()
    contradictions: tuple[tuple[int, int], ...] = ()
    # What is live at the peak of the compile at `batch`; only when asked for.
    peak_breakdown: PeakBreakdown | None = None
    # The target's compiler fits programs into memory itself and refuses one
    # that cannot fit (a TPU): a batch fits when it compiles, and the next
    # candidate was refused; need(batch) is not assumed to grow.
    compiler_fits: bool = False
    # Program code counted in `peak_bytes` (TPU: the compiler fits code and
    # buffers into HBM together); 0 where the peak is buffers alone.
    code_in_peak_bytes: int = 0
    # The rematerialization the step was compiled with, block -> policy in
    # model order ("none": nothing recomputed); None when the workload names none.
    remat_plan: Mapping[str, str] | None = None
    program_changes: tuple[tuple[int, int], ...] = ()

    @property
    def budget_bytes(self) -> int:
        return self.budget.bytes

    @property
    def per_device_batch(self) -> int:
        """Examples each data-parallel device holds at `batch`."""
        return self.batch // self.data_parallel_size

    @property
    def headroom_bytes(self) -> int:
        return self.budget.bytes - self.peak_bytes

    @property
    def exact(self) -> bool:
        """True when the next candidate that compiles was proven not to fit,
        every compile agreed that need grows with the batch, and all were
        of one program."""
        return (
            self.next_batch is not None
            and not self.contradictions
            and not self.program_changes
            and not self.interrupted
        )

    @property
    def probe(self) -> Probe:
        """The compile at the answer."""
        return next(p for p in self.probes if p.batch == self.batch)

    @property
    def line_holds(self) -> bool:
        """Whether the affine fit (`fixed_bytes` + `per_example_bytes` x
        batch) can be true: no negative slope, fixed bytes within the budget
        and not below zero. Need that is not affine (it fell, or the program
        changed between compiles) gives a line no step has."""
        return self.per_example_bytes >= 0 and 0 <= self.fixed_bytes <= self.budget_bytes

    @property
    def estimate_error(self) -> float | None:
        """(analytical - XLA) / XLA per-example bytes."""
        if self.estimate_per_example_bytes is None or not self.per_example_bytes:
            return None
        if not self.line_holds:
            return None
        return (self.estimate_per_example_bytes / self.per_example_bytes) - 1

    def how(self) -> str:
        """How the answer was obtained, in one line."""
        batches = ", ".join(str(p.batch) for p in self.probes)
        if self.failures:
            batches += "; did not compile: " + ", ".join(str(f.batch) for f in self.failures)
        stopped = [str(p.batch) for p in self.probes if p.stopped and not p.placed]
        placed = [str(p.batch) for p in self.probes if p.placed]
        if stopped:
            batches += (
                f"; {', '.join(stopped)} stopped once XLA had assigned their buffers, "
                "no code generated"
            )
        if placed:
            batches += (
                f"; {', '.join(placed)} stopped once the compiler had placed their buffers "
                "within its limit, a verdict with no code generated"
            )
        if (stopped or placed) and len(stopped) + len(placed) < len(self.probes):
            batches += "; the others compiled in full"
        remat = "on" if self.xla_settings.get("remat_pass") else "off"
        cached = "from the cache: " if self.from_cache else ""
        return (
            f"{cached}{self.compiles} compiles (batches {batches}) for "
            f"{self.target_description}, XLA remat pass {remat}, "
            f"jax {self.xla_settings.get('jax')}"
        )

    def render(self) -> str:
        """A short report a person reads."""
        refusal = next((p for p in self.probes if p.batch == self.next_batch and p.refused), None)
        if refusal is not None:
            nxt = (
                f"next candidate {self.next_batch} refused by the compiler: needs "
                f"{refusal.required_bytes:,} B of {refusal.available_bytes:,} B, "
                "to the precision of its message"
            )
        elif self.next_batch is not None:
            nxt = f"next candidate {self.next_batch} needs {self.next_peak_bytes:,} B: does not fit"
            skipped = sorted(
                f.batch for f in self.failures if self.batch < f.batch < self.next_batch
            )
            if skipped:
                nxt += f"; {', '.join(map(str, skipped))} did not compile"
        elif self.interrupted:
            nxt = "PARTIAL: interrupted before the boundary was proven"
        else:
            nxt = f"capped at max_batch={self.max_batch}"
        lines = [
            f"{self.label or 'step'} on {self.target}",
            f"  max batch       {self.batch}  ({nxt})",
            *_per_device_lines(self),
            *_plan_lines(self),
            f"  predicted peak  {self.peak_bytes:,} B ({format_bytes(self.peak_bytes)})"
            + _code_text(self),
            f"  budget          {self.budget_bytes:,} B ({format_bytes(self.budget_bytes)}); "
            f"{self.budget.source}"
            + (
                f", less {self.budget.reserve_bytes:,} B reserved"
                if self.budget.reserve_bytes
                else ""
            ),
            f"  headroom        {self.headroom_bytes:,} B ({format_bytes(self.headroom_bytes)})",
            *_line_lines(self),
            "  FLOPs/example   "
            + (
                f"{self.flops_per_example:.4g} ({self.flops_source})"
                if self.flops_per_example is not None
                else self.flops_source
            ),
            f"  obtained by     {self.how()}, {self.seconds:.1f} s",
        ]
        if self.failures:
            lines.append(f"  compile failed  {self.failures[0].error.splitlines()[0][:300]}")
        if self.contradictions:
            pairs = ", ".join(f"{a} -> {b}" for a, b in self.contradictions)
            lines.append(
                f"  NOT EXACT       need fell as the batch grew ({pairs}): a batch above "
                "the next candidate may fit"
            )
        if self.program_changes:
            pairs = ", ".join(f"{a} and {b}" for a, b in self.program_changes)
            lines.append(
                f"  NOT EXACT       the step's program changes between batch {pairs}: "
                "a batch past the change may fit"
            )
        return "\n".join(lines)

    def render_memory(self) -> str:
        """XLA's memory analysis of the compile at the answer, as a table."""
        p = self.probe
        rows = [
            ("arguments", "parameters, optimizer state, batch", p.argument_bytes),
            ("outputs", "new parameters, optimizer state, loss", p.output_bytes),
            ("- aliased", "outputs written over donated arguments", -p.alias_bytes),
            ("temporaries", "activations, gradients, workspace", p.temp_bytes),
            ("need", "arguments + outputs - aliased + temporaries", p.need_bytes),
        ]
        return render_table(
            ("XLA", "what", "bytes", "size"),
            [(name, what, f"{n:,}", format_bytes(n)) for name, what, n in rows],
            left=2,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (see `autotune.report` for the schema)."""
        data = dataclasses.asdict(self)
        data["budget"] = {**dataclasses.asdict(self.budget), "bytes": self.budget.bytes}
        data["headroom_bytes"] = self.headroom_bytes
        data["per_device_batch"] = self.per_device_batch
        data["probes"] = [p.to_dict() for p in self.probes]
        data["failures"] = [f.to_dict() for f in self.failures]
        data["contradictions"] = [list(pair) for pair in self.contradictions]
        data["program_changes"] = [list(pair) for pair in self.program_changes]
        data["xla_settings"] = dict(self.xla_settings)
        del data["peak_breakdown"]
        data.update(breakdown_to_row(self.peak_breakdown))
        return data


def _line_lines(result: TuneResult) -> list[str]:
    """The per-example and fixed bytes; where no line can hold them, what
    the compiles showed instead."""
    if result.line_holds:
        return [
            f"  per example     {result.per_example_bytes:,} B from XLA" + _estimate_text(result),
            f"  fixed           {result.fixed_bytes:,} B",
        ]
    needs = ", ".join(
        f"{p.batch}: {format_bytes(p.need_bytes)}"
        for p in sorted(result.probes, key=lambda p: p.batch)
        if not p.refused
    )
    return [
        "  per example     no line: need(batch) is not affine here (the line through "
        f"the compiles gives {result.per_example_bytes:,} B per example and "
        f"{result.fixed_bytes:,} B fixed, which no step needs)",
        f"  compiles        need at batch {needs}",
    ]


def _plan_lines(result: TuneResult) -> list[str]:
    if result.remat_plan is None:
        return []
    by_policy: dict[str, list[str]] = {}
    for block, policy in result.remat_plan.items():
        by_policy.setdefault(policy, []).append(block)
    groups = sorted(by_policy.items(), key=lambda item: item[0] == "none")
    return ["  remat plan      " + "; ".join(f"{p} on {', '.join(bs)}" for p, bs in groups)]


def _per_device_lines(result: TuneResult) -> list[str]:
    n = result.data_parallel_size
    if n == 1:
        return []
    return [
        f"  per device      {result.per_device_batch} examples on each of {n} "
        "devices (the batch above is global; bytes below are per device)"
    ]


def _code_text(result: TuneResult) -> str:
    code = result.code_in_peak_bytes
    if not code:
        return ""
    return (
        f": buffers {result.peak_bytes - code:,} B + program code {code:,} B, "
        "as the TPU compiler counts HBM"
    )


def _estimate_text(result: TuneResult) -> str:
    error = result.estimate_error
    if error is None:
        return ""
    return f"; {result.estimate_per_example_bytes:,} B analytical ({error:+.1%})"


def _flops_cells(flops: float | None, least: float | None) -> tuple[str, str]:
    if not flops or not least:
        return "-", "-"
    return f"{flops / 1e9:.1f}", f"{flops / least - 1:+.0%}"


COMPARISON_HEADERS = (
    "choice",
    "max batch",
    "peak",
    "budget",
    "headroom",
    "per example (XLA)",
    "analytical",
    "GFLOP/ex",
    "recompute",
    "compiles",
    "seconds",
)


def comparison_table(results: Sequence[TuneResult]) -> str:
    """One row per result, in the spirit of the seed's table."""
    known = [r.flops_per_example for r in results if r.flops_per_example]
    least = min(known, default=None)
    sharded = any(r.data_parallel_size > 1 for r in results)
    rows = []
    for r in results:
        error = r.estimate_error
        analytical = (
            "-" if error is None else f"{format_bytes(r.estimate_per_example_bytes)} ({error:+.0%})"
        )
        if error is None and r.estimate_per_example_bytes is not None and not r.line_holds:
            analytical = format_bytes(r.estimate_per_example_bytes)
        batch = str(r.batch) + ("" if r.exact else "*")
        per_device = (f"{r.per_device_batch} x {r.data_parallel_size}",) if sharded else ()
        rows.append(
            (
                r.label,
                batch,
                *per_device,
                format_bytes(r.peak_bytes),
                format_bytes(r.budget_bytes),
                format_bytes(r.headroom_bytes),
                format_bytes(r.per_example_bytes) if r.line_holds else "no line",
                analytical,
                *_flops_cells(r.flops_per_example, least),
                f"{r.compiles} (cached)" if r.from_cache else str(r.compiles),
                f"{r.seconds:.1f}",
            )
        )
    headers = COMPARISON_HEADERS
    if sharded:
        headers = ("choice", "global batch", "per device", *headers[2:])
    return render_table(headers, rows)
