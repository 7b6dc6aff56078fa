"""The largest batch of a JAX train step that fits an accelerator, from XLA's
memory analysis of the compiled step.

`import autotune` imports nothing heavy: each public name is imported on its
first use (JAX with the first), so that the `autotune` command can take
Ctrl-C and SIGTERM over before JAX starts loading. The VGG application
(`autotune.models`, Flax) and the Flax NNX workload builder (`autotune.nnx`)
are imported only by whoever uses them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autotune._compile.records import Probe
    from autotune._core.budget import Budget
    from autotune._core.errors import SearchInterrupted, TuneError
    from autotune._core.units import format_bytes
    from autotune._explain.records import PeakBreakdown, PeakEntry
    from autotune._results.bound import ThroughputBound
    from autotune._results.cache import ResultCache
    from autotune._results.comparison import TargetComparison, TargetRow
    from autotune._results.recommend import Recommendation, recommend
    from autotune._results.report import load_batch_size, read_results, write_json
    from autotune._results.result import TuneResult
    from autotune._targets.interface import Target
    from autotune._targets.registry import get_target, known_targets
    from autotune._tune.compare import compare
    from autotune._tune.targets import compare_targets
    from autotune._tune.tuner import find_max_batch
    from autotune._tune.why import peak_breakdown
    from autotune._workloads.estimate import Estimate, estimate_step
    from autotune._workloads.layout import agree_across_hosts
    from autotune._workloads.train import train_workload
    from autotune._workloads.workload import Workload, WorkloadFlag, load_workloads

# Each public name and the module it lives in.
_HOMES = {
    "Probe": "autotune._compile.records",
    "Budget": "autotune._core.budget",
    "SearchInterrupted": "autotune._core.errors",
    "TuneError": "autotune._core.errors",
    "format_bytes": "autotune._core.units",
    "PeakBreakdown": "autotune._explain.records",
    "PeakEntry": "autotune._explain.records",
    "PlanSearch": "autotune._plans.records",
    "PlanTrial": "autotune._plans.records",
    "RematPlan": "autotune._plans.plan",
    "RematSpace": "autotune._plans.plan",
    "search_plans": "autotune._plans.search",
    "ResultCache": "autotune._results.cache",
    "ThroughputBound": "autotune._results.bound",
    "TargetComparison": "autotune._results.comparison",
    "TargetRow": "autotune._results.comparison",
    "Recommendation": "autotune._results.recommend",
    "recommend": "autotune._results.recommend",
    "load_batch_size": "autotune._results.report",
    "read_results": "autotune._results.report",
    "write_json": "autotune._results.report",
    "TuneResult": "autotune._results.result",
    "Target": "autotune._targets.interface",
    "get_target": "autotune._targets.registry",
    "known_targets": "autotune._targets.registry",
    "compare": "autotune._tune.compare",
    "compare_targets": "autotune._tune.targets",
    "find_max_batch": "autotune._tune.tuner",
    "peak_breakdown": "autotune._tune.why",
    "Estimate": "autotune._workloads.estimate",
    "estimate_step": "autotune._workloads.estimate",
    "agree_across_hosts": "autotune._workloads.layout",
    "train_workload": "autotune._workloads.train",
    "Workload": "autotune._workloads.workload",
    "WorkloadFlag": "autotune._workloads.workload",
    "load_workloads": "autotune._workloads.workload",
}

__all__ = [
    "Budget",
    "Estimate",
    "PeakBreakdown",
    "PeakEntry",
    "PlanSearch",
    "PlanTrial",
    "Probe",
    "Recommendation",
    "RematPlan",
    "RematSpace",
    "ResultCache",
    "SearchInterrupted",
    "Target",
    "TargetComparison",
    "TargetRow",
    "ThroughputBound",
    "TuneError",
    "TuneResult",
    "Workload",
    "WorkloadFlag",
    "agree_across_hosts",
    "compare",
    "compare_targets",
    "estimate_step",
    "find_max_batch",
    "format_bytes",
    "get_target",
    "known_targets",
    "load_batch_size",
    "load_workloads",
    "peak_breakdown",
    "read_results",
    "recommend",
    "search_plans",
    "train_workload",
    "write_json",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'autotune' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
