"""The largest batch that fits an accelerator, from XLA's memory analysis."""

from autotune.budget import Budget
from autotune.cache import ResultCache
from autotune.errors import SearchInterrupted, TuneError
from autotune.estimate import Estimate, estimate_step
from autotune.probe import Probe
from autotune.recommend import Recommendation, recommend
from autotune.report import load_batch_size, read_json, read_results, write_json
from autotune.result import TuneResult
from autotune.targets import Target, get_target, known_targets, local_target
from autotune.tuner import Variant, compare, find_max_batch

__all__ = [
    "Budget",
    "Estimate",
    "Probe",
    "Recommendation",
    "ResultCache",
    "SearchInterrupted",
    "Target",
    "TuneError",
    "TuneResult",
    "Variant",
    "compare",
    "estimate_step",
    "find_max_batch",
    "get_target",
    "known_targets",
    "load_batch_size",
    "local_target",
    "read_json",
    "read_results",
    "recommend",
    "write_json",
]
