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
    from autotune._budget import Budget
    from autotune._cache import ResultCache
    from autotune._errors import SearchInterrupted, TuneError
    from autotune._estimate import Estimate, estimate_step
    from autotune._layout import agree_across_hosts
    from autotune._peak import PeakBreakdown, PeakEntry
    from autotune._probe import Probe
    from autotune._recommend import Recommendation, recommend
    from autotune._report import load_batch_size, read_results, write_json
    from autotune._result import TuneResult
    from autotune._targets import Target, get_target, known_targets
    from autotune._train_workload import train_workload
    from autotune._tuner import compare, find_max_batch
    from autotune._units import format_bytes
    from autotune._why import peak_breakdown
    from autotune._workload import Workload, load_workloads

# Each public name and the module it lives in.
_HOMES = {
    "Budget": "_budget",
    "ResultCache": "_cache",
    "SearchInterrupted": "_errors",
    "TuneError": "_errors",
    "Estimate": "_estimate",
    "estimate_step": "_estimate",
    "agree_across_hosts": "_layout",
    "PeakBreakdown": "_peak",
    "PeakEntry": "_peak",
    "Probe": "_probe",
    "Recommendation": "_recommend",
    "recommend": "_recommend",
    "load_batch_size": "_report",
    "read_results": "_report",
    "write_json": "_report",
    "TuneResult": "_result",
    "Target": "_targets",
    "get_target": "_targets",
    "known_targets": "_targets",
    "train_workload": "_train_workload",
    "compare": "_tuner",
    "find_max_batch": "_tuner",
    "format_bytes": "_units",
    "peak_breakdown": "_why",
    "Workload": "_workload",
    "load_workloads": "_workload",
}

__all__ = [
    "Budget",
    "Estimate",
    "PeakBreakdown",
    "PeakEntry",
    "Probe",
    "Recommendation",
    "ResultCache",
    "SearchInterrupted",
    "Target",
    "TuneError",
    "TuneResult",
    "Workload",
    "agree_across_hosts",
    "compare",
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
    "train_workload",
    "write_json",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'autotune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"autotune.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
