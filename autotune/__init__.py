"""The largest batch of a JAX train step that fits an accelerator, from XLA's
memory analysis of the compiled step.

`import autotune` imports JAX and nothing else heavy: the VGG application
(`autotune.models`, Flax) and the Flax NNX workload builder
(`autotune.nnx`) are imported only by whoever uses them.
"""

from autotune._compile.records import Probe
from autotune._core.budget import Budget
from autotune._core.errors import SearchInterrupted, TuneError
from autotune._core.units import format_bytes
from autotune._explain.records import PeakBreakdown, PeakEntry
from autotune._results.cache import ResultCache
from autotune._results.recommend import Recommendation, recommend
from autotune._results.report import load_batch_size, read_results, write_json
from autotune._results.result import TuneResult
from autotune._targets.registry import Target, get_target, known_targets
from autotune._tune.compare import compare
from autotune._tune.tuner import find_max_batch
from autotune._tune.why import peak_breakdown
from autotune._workloads.estimate import Estimate, estimate_step
from autotune._workloads.layout import agree_across_hosts
from autotune._workloads.train import train_workload
from autotune._workloads.workload import Workload, WorkloadFlag, load_workloads

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
    "WorkloadFlag",
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
