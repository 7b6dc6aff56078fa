"""The tuner's internals that its benchmarks and device checks use.

Semi-public, as `jax.experimental` and `equinox.internal` are: these names
may change between versions without notice. Training code should use
`autotune` itself.
"""

from autotune._command.verify import Verification, WorkloadSource, verify_workload
from autotune._compile.dump import compile_with_dump
from autotune._compile.kernels import OPTION as KERNEL_CACHE_OPTION
from autotune._compile.kernels import forget_all as forget_shared_kernels
from autotune._compile.prober import Prober
from autotune._compile.records import compiled_need
from autotune._compile.remat_pass import REMAT_PASS_OFF
from autotune._core.errors import TargetError
from autotune._search.need import calibration_batch
from autotune._targets.gpu import DUMP_BYTES_LIMIT, DUMP_MEM_FRACTION, local_gpu_config
from autotune._targets.local import resolve_mem_fraction
from autotune._targets.refusal import hbm_refusal
from autotune._targets.tpu_specs import GENERATIONS
from autotune._workloads.layout import on_target

__all__ = [
    "DUMP_BYTES_LIMIT",
    "DUMP_MEM_FRACTION",
    "GENERATIONS",
    "KERNEL_CACHE_OPTION",
    "REMAT_PASS_OFF",
    "TargetError",
    "Prober",
    "Verification",
    "WorkloadSource",
    "calibration_batch",
    "compile_with_dump",
    "compiled_need",
    "forget_shared_kernels",
    "hbm_refusal",
    "local_gpu_config",
    "on_target",
    "resolve_mem_fraction",
    "verify_workload",
]
