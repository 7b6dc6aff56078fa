"""The largest batch of a JAX train step that fits an accelerator, from XLA's
memory analysis of the compiled step.

`import autotune` imports JAX and nothing else heavy: the VGG application
(`autotune.models`, Flax) and the Flax NNX workload builder
(`autotune.nnx`) are imported only by whoever uses them.
"""

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
from autotune._workload import Workload, WorkloadFlag, load_workloads

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
