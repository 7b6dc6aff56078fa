"""`compare_targets`: `compare` on each of several targets, side by side."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autotune._compile.compute_dtype import program_dtypes
from autotune._core.errors import SearchInterrupted, TuneError
from autotune._results.bound import throughput_bound
from autotune._results.comparison import TargetComparison, TargetRow
from autotune._results.result import TuneResult
from autotune._targets.interface import Target
from autotune._targets.target_list import get_targets
from autotune._tune.compare import compare, tuning_rows
from autotune._workloads.workload import Workload, jit_step


def compare_targets(
    workloads: Workload | Sequence[Workload] | Mapping[str, Workload],
    targets: Sequence[str | Target],
    *,
    xla_remat_pass: bool | Sequence[bool] = False,
    mem_fraction: float | None = None,
    on_target: Callable[[Target], None] | None = None,
    **kwargs: Any,
) -> TargetComparison:
    """The largest batch of each workload on each target, one row per target
    and choice, each proven as `find_max_batch` proves it, with an upper
    bound on samples/s from the target's peak FLOP/s (`autotune._results.bound`).

    `targets` names each target once (as `get_target` does, or `Target`s);
    `mem_fraction` is passed to each named one. `budget_bytes`,
    `reserve_bytes`, `max_batch` and the other `kwargs` of `compare` apply
    per device, to every target. `on_target` is called before each
    target's searches. On Ctrl-C, `SearchInterrupted` carries the results
    finished and, in its `comparison`, their rows.
    """
    if "target" in kwargs:
        raise TuneError("`target` is given beside `targets`; give the targets in `targets`")
    resolved = get_targets(targets, mem_fraction=mem_fraction)
    if isinstance(workloads, Workload):
        workloads = [workloads]
    rows = tuning_rows(workloads, xla_remat_pass)
    dtypes = _compute_dtypes([w for _, w, _ in rows], kwargs.get("multiple_of") or 8)
    results: list[TuneResult] = []
    for target in resolved:
        if on_target is not None:
            on_target(target)
        try:
            results += compare(workloads, xla_remat_pass=xla_remat_pass, target=target, **kwargs)
        except SearchInterrupted as e:
            done = (*results, *e.results)
            interrupted = SearchInterrupted(done)
            interrupted.comparison = _comparison(resolved, done, dtypes)
            raise interrupted from None
    return _comparison(resolved, results, dtypes)


def _comparison(
    targets: Sequence[Target], results: Sequence[TuneResult], dtypes: Sequence[tuple[str, ...]]
) -> TargetComparison:
    """The rows of `results`, made target by target, each row of a target
    in the order of `dtypes`'."""
    by_name = {t.name: t for t in targets}
    rows = []
    for i, result in enumerate(results):
        target = by_name[result.target]
        bound = throughput_bound(result, target.peak_flops, dtypes[i % len(dtypes)])
        rows.append(TargetRow(result, bound))
    return TargetComparison(tuple(rows))


def _compute_dtypes(workloads: Sequence[Workload], batch: int) -> list[tuple[str, ...]]:
    """Each workload's compute dtypes, from its step lowered for the host at
    `batch` (the dtypes follow neither the target nor the batch); () where
    it does not lower."""
    found: dict[int, tuple[str, ...]] = {}
    for w in workloads:
        if id(w) not in found:
            try:
                lowered = jit_step(w.step, w.donate_argnums).lower(*w.args_for_batch(batch))
                found[id(w)] = program_dtypes(lowered.as_text())
            except Exception:  # the search reports a step that does not lower
                found[id(w)] = ()
    return [found[id(w)] for w in workloads]
