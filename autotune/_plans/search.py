"""The search over remat plans: the least recompute that fits a wanted batch,
or the frontier of max batch against recompute, each point proven by compiles.

The blocks are ordered greedily (`autotune._plans.order`): most activation
bytes at the peak per forward FLOP first. Plans then grow along that order,
each block under the space's strongest policy; compiles decide. A plan whose
recomputed blocks are a subset of another's, under policies no stronger,
recomputes no more: the search only ever compares plans so related, and
says "cheapest found", never "cheapest".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from autotune._core import checks as check
from autotune._core.errors import SearchInterrupted, TuneError
from autotune._plans.order import activation_bytes, forward_flops, greedy_order
from autotune._plans.plan import RematPlan, RematSpace
from autotune._plans.policies import NONE
from autotune._plans.records import PlanSearch, PlanTrial
from autotune._results.result import TuneResult
from autotune._targets.registry import as_target
from autotune._tune.tuner import find_max_batch, prepare
from autotune._tune.why import breakdown_at

# find_max_batch's keywords that decide one compile's verdict.
_PROBE_KEYWORDS = (
    "target", "budget_bytes", "reserve_bytes", "xla_remat_pass", "compiler_options", "layout",
    "on_probe", "workers",
)  # fmt: skip

FIT_RULE = (
    "cheapest found, not proven cheapest: blocks in the greedy order, the shortest prefix "
    "that fits the wanted batch under the strongest policy (bisection), then each of its "
    "blocks dropped where the rest still fits, then each given a milder policy where it "
    "still fits"
)
FRONTIER_RULE = (
    "cheapest found, not proven cheapest: the prefixes of the greedy order, each block "
    "under the strongest policy, each searched for its max batch; for each distinct max "
    "batch, the shortest prefix that reaches it"
)


def search_plans(
    space: RematSpace,
    fit_batch: int | None = None,
    *,
    on_trial: Callable[[PlanTrial], None] | None = None,
    **kwargs: Any,
) -> PlanSearch:
    """The plan of least recompute found that fits `fit_batch`, or, without
    it, the frontier of plans (max batch against recompute).

    `kwargs` are `find_max_batch`'s (target, budget_bytes, max_batch, ...),
    for every plan. `on_trial` is called after each compile that decides a
    plan at `fit_batch`. Raises `TuneError` when no plan fits `fit_batch`,
    naming the largest batch any plan reached and its plan; on Ctrl-C,
    `SearchInterrupted` with the rows proven so far.
    """
    check.instance("space", space, RematSpace, "an autotune.RematSpace")
    check.callable_or_none("on_trial", on_trial)
    for name in ("step", "args_for_batch", "label", "why", "estimate", "donate_argnums"):
        if name in kwargs:
            raise TuneError(
                f"`{name}` is given to a search over plans; the space's workloads hold it"
            )
    if fit_batch is None:
        return _frontier(space, kwargs)
    fit_batch = _checked_fit_batch(fit_batch, kwargs)
    return _Fit(space, fit_batch, kwargs, on_trial).run()


def _checked_fit_batch(fit_batch: Any, kwargs: dict[str, Any]) -> int:
    wanted = check.integer("fit_batch", fit_batch, minimum=1)
    top = check.integer("max_batch", kwargs.get("max_batch", 65536), minimum=1)
    if wanted > top:
        raise TuneError(
            f"`fit_batch` (={wanted}) must be at most `max_batch` (={top}): a plan's max "
            "batch is searched up to max_batch"
        )
    multiple = kwargs.get("multiple_of")
    if multiple is None:
        devices = (
            kwargs.get("data_parallel_size")
            or as_target(kwargs.get("target", "local")).device_count
        )
        multiple = math.lcm(8, check.integer("data_parallel_size", devices, minimum=1))
    multiple = check.integer("multiple_of", multiple, minimum=1)
    if wanted % multiple:
        raise TuneError(
            f"`fit_batch` (={wanted}) must be a multiple of `multiple_of` (={multiple}): "
            "the batches searched are its multiples"
        )
    return wanted


class _Fit:
    """One `fit_batch` search: single compiles at the wanted batch decide plans."""

    def __init__(
        self,
        space: RematSpace,
        wanted: int,
        kwargs: dict[str, Any],
        on_trial: Callable[[PlanTrial], None] | None,
    ):
        self.space, self.wanted, self.kwargs, self.on_trial = space, wanted, kwargs, on_trial
        self.trials: dict[RematPlan, PlanTrial] = {}
        self.flops: dict[str, float] = {}
        self.budget_bytes = 0

    def run(self) -> PlanSearch:
        space = self.space
        none = space.plan()
        held = self._decide(none, explain=True)
        if self.trials[none].fits:
            return self._answer(none, ())
        order = greedy_order(space.blocks, held, self.flops)
        everything = self._prefix(order, len(order))
        if not self._fits(everything):
            reached = find_max_batch(space.workload(everything), **self.kwargs)
            raise TuneError(
                f"`fit_batch` (={self.wanted}) is reached by no plan: the largest batch any "
                f"plan reached is {reached.batch}, with every block under "
                f"{space.strongest} ({everything.text()}), proven by {reached.compiles} "
                "compiles"
            )
        lo, hi = 0, len(order)  # prefix lo does not fit, prefix hi does
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._fits(self._prefix(order, mid)):
                hi = mid
            else:
                lo = mid
        chosen = self._prefix(order, hi)
        for block in reversed(order[:hi]):
            lighter = chosen.with_policies({block: NONE})
            if lighter.recomputed and self._fits(lighter):
                chosen = lighter
        for block in [b for b in order if b in chosen.recomputed]:
            for policy in space.policies[:-1]:
                milder = chosen.with_policies({block: policy})
                if self._fits(milder):
                    chosen = milder
                    break
        return self._answer(chosen, order)

    def _prefix(self, order: tuple[str, ...], k: int) -> RematPlan:
        return self.space.plan({b: self.space.strongest for b in order[:k]})

    def _fits(self, plan: RematPlan) -> bool:
        if plan not in self.trials:
            self._decide(plan)
        return self.trials[plan].fits

    def _decide(self, plan: RematPlan, explain: bool = False) -> dict[str, int]:
        """Compiles `plan` at the wanted batch; with `explain`, also reads
        the activations at its peak and the blocks' forward FLOPs."""
        workload = self.space.workload(plan)
        options = {k: v for k, v in self.kwargs.items() if k in _PROBE_KEYWORDS}
        prepared = prepare(workload, keep_dumps=explain, **{"target": "local", **options})
        probe = prepared.prober(self.wanted)
        self.budget_bytes = prepared.budget.bytes
        if explain:
            self.flops = forward_flops(
                workload.jitted(), workload.args_for_batch(self.wanted), self.space.blocks
            )
        trial = PlanTrial(
            plan=plan,
            batch=self.wanted,
            need_bytes=probe.need_bytes,
            fits=prepared.target.fits(probe, prepared.budget),
            flops_per_example=_per_example(prepared.prober.flops(self.wanted), self.wanted),
        )
        self.trials[plan] = trial
        if self.on_trial is not None:
            self.on_trial(trial)
        if not explain:
            return {}
        breakdown = breakdown_at(prepared.prober, self.wanted)
        return activation_bytes(breakdown, self.space.blocks)

    def _answer(self, plan: RematPlan, order: tuple[str, ...]) -> PlanSearch:
        result = find_max_batch(self.space.workload(plan), **self.kwargs)
        return PlanSearch(
            wanted=self.wanted,
            results=(result,),
            trials=tuple(self.trials.values()),
            order=order or self.space.blocks,
            rule=FIT_RULE if order else "the plan that recomputes nothing fits",
            plans_probed=len(self.trials),
            budget_bytes=self.budget_bytes,
        )


def _per_example(flops: float | None, batch: int) -> float | None:
    return None if flops is None else flops / batch


def _frontier(space: RematSpace, kwargs: dict[str, Any]) -> PlanSearch:
    """The prefixes of the greedy order, each searched for its max batch."""
    rows: list[TuneResult] = []
    try:
        none = find_max_batch(space.workload(space.plan()), why=True, **kwargs)
        rows.append(dataclasses.replace(none, peak_breakdown=None))
        held = (
            activation_bytes(none.peak_breakdown, space.blocks)
            if none.peak_breakdown is not None
            else {}
        )
        workload = space.workload(space.plan())
        flops = forward_flops(workload.jitted(), workload.args_for_batch(none.batch), space.blocks)
        order = greedy_order(space.blocks, held, flops)
        for k in range(1, len(order) + 1):
            plan = space.plan({b: space.strongest for b in order[:k]})
            rows.append(find_max_batch(space.workload(plan), **kwargs))
    except SearchInterrupted as e:
        raise SearchInterrupted((*rows, *e.results)) from None
    frontier: list[TuneResult] = []
    for row in rows:
        if not frontier or row.batch > frontier[-1].batch:
            frontier.append(row)
    return PlanSearch(
        wanted=None,
        results=tuple(frontier),
        trials=(),
        order=order,
        rule=FRONTIER_RULE,
        plans_probed=len(rows),
        budget_bytes=rows[0].budget_bytes,
    )
