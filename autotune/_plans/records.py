"""What a search over remat plans found: the trials that decided it and the
proven answers, apart from the search that makes them."""

from __future__ import annotations

import dataclasses
from typing import Any

from autotune._core.table import render_table
from autotune._core.units import format_bytes
from autotune._plans.plan import RematPlan
from autotune._results.result import TuneResult


@dataclasses.dataclass(frozen=True)
class PlanTrial:
    """One compile of a plan at the wanted batch, and whether it fit."""

    plan: RematPlan
    batch: int
    need_bytes: int
    fits: bool
    # The step's FLOPs per example under the plan (the lowered program's cost
    # analysis, as a row's), None where the backend has none.
    flops_per_example: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "remat_plan": self.plan.to_dict(),
            "batch": self.batch,
            "need_bytes": self.need_bytes,
            "fits": self.fits,
            "flops_per_example": self.flops_per_example,
        }


@dataclasses.dataclass(frozen=True)
class PlanSearch:
    """The plans a search proved, and how it chose them.

    With `wanted` (a batch), `results` holds one row: the plan of least
    recompute found that fits `wanted`, at its own proven maximum batch.
    Without, the frontier: for each distinct max batch found, the plan of
    least recompute found. Each row's proof is a `TuneResult`'s: its batch
    fits, its next candidate does not, for that plan.
    """

    wanted: int | None
    results: tuple[TuneResult, ...]
    trials: tuple[PlanTrial, ...]
    order: tuple[str, ...]  # the blocks, most activation bytes per recompute FLOP first
    rule: str  # how the plans were chosen: "cheapest found", never more
    plans_probed: int
    budget_bytes: int

    @property
    def result(self) -> TuneResult:
        """The answer to `wanted`, or the frontier's largest batch."""
        return self.results[-1]

    def to_dict(self) -> dict[str, Any]:
        """The report's `plan_search` (the rows are its `results`)."""
        return {
            "fit_batch": self.wanted,
            "plans_probed": self.plans_probed,
            "order": list(self.order),
            "rule": self.rule,
            "trials": [t.to_dict() for t in self.trials],
        }

    def render(self) -> str:
        """The trials and the rule, for people (the rows render on their own)."""
        lines = [
            f"searched {self.plans_probed} remat plans; blocks in the greedy order: "
            f"{', '.join(self.order)}",
            f"rule: {self.rule}",
        ]
        if self.trials:
            base = self.trials[0].flops_per_example  # the plan that recomputes nothing
            rows = [
                (
                    t.plan.short(),
                    f"{t.need_bytes:,}",
                    format_bytes(t.need_bytes),
                    "fits" if t.fits else "does not fit",
                    _gflops(t.flops_per_example),
                    _extra(t.flops_per_example, base),
                )
                for t in self.trials
            ]
            lines.append(f"compiles at batch {self.wanted} (budget {self.budget_bytes:,} B):")
            lines.append(
                render_table(("plan", "need B", "need", "verdict", "GFLOP/ex", "recompute"), rows)
            )
            chosen = self.result.flops_per_example
            if base and chosen:
                lines.append(
                    f"answer: {self.result.remat_plan and _text(self.result.remat_plan)} at "
                    f"batch {self.result.batch}, {_extra(chosen, base)} FLOPs per example over "
                    "the plan that recomputes nothing"
                )
        return "\n".join(lines)


def _gflops(flops: float | None) -> str:
    return "n/a" if flops is None else f"{flops / 1e9:.1f}"


def _extra(flops: float | None, base: float | None) -> str:
    if flops is None or not base:
        return "n/a"
    return f"{round(flops / base - 1, 4) + 0.0:+.1%}"


def _text(plan: dict[str, str]) -> str:
    chosen = [f"{b}={p}" for b, p in plan.items() if p != "none"]
    return ", ".join(chosen) or "none"
