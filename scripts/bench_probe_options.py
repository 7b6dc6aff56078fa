"""What XLA options save a deviceless compile without changing its need.

Memory analysis needs XLA's HLO passes and buffer assignment, not fast
kernels: the LLVM options below act after buffer assignment, and a kernel
cache file (`xla_gpu_kernel_cache_file`, one per model, as the tuner keeps
one for a search) gives later compiles the kernels earlier ones compiled. For each model
(the VGG16 step and benchmarks/workloads) and a described GPU, this compiles
at two batches with XLA's defaults and with each option set, JAX's caches
cleared before every compile, and records the compile time and whether the
need is byte-identical.

    JAX_PLATFORMS=cpu python scripts/bench_probe_options.py --out benchmarks/probe-options.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jaxlib

import autotune
from autotune.internal import KERNEL_CACHE_OPTION, REMAT_PASS_OFF, compiled_need

WORKLOADS = Path(__file__).resolve().parents[1] / "benchmarks" / "workloads"
MODELS = {
    "vgg16": ("autotune.models:vgg_workloads", {"remat": ["none"]}, {}, (96, 440)),
    "resnet18": ("resnet18:workload", {}, {}, (256, 4096)),
    "gpt2-small": ("gpt2:workload", {}, {}, (16, 64)),
    "vit-b16": ("vit:workload", {}, {"xla_gpu_enable_triton_gemm": False}, (32, 128)),
}
OPTION_SETS = {
    "defaults": {},
    "llvm O0, no expensive passes": {
        "xla_backend_optimization_level": 0,
        "xla_llvm_disable_expensive_passes": True,
    },
    # One file for all of a model's compiles, as the tuner keeps one for a search's.
    "kernels shared": {KERNEL_CACHE_OPTION: None},
}


def compile_seconds(lowered, options: dict) -> tuple[float, int]:
    jax.clear_caches()
    start = time.perf_counter()
    compiled = lowered.compile(compiler_options={**REMAT_PASS_OFF, **options})
    return time.perf_counter() - start, compiled_need(compiled)


def measure(name: str, repeats: int, target: autotune.Target) -> list[str]:
    spec, kwargs, options, batches = MODELS[name]
    (workload,) = autotune.load_workloads(spec, kwargs)
    sharding = target.sharding()
    kernels = {KERNEL_CACHE_OPTION: str(Path(tempfile.mkdtemp()) / f"{name}.bin")}
    rows = []
    for batch in batches:
        args = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
            workload.args_for_batch(batch),
        )
        lowered = workload.jitted().lower(*args)
        times: dict[str, list[float]] = {k: [] for k in OPTION_SETS}
        needs: dict[str, int] = {}
        for _ in range(repeats):  # interleaved, so load drifts hit every set alike
            for label, extra in OPTION_SETS.items():
                if KERNEL_CACHE_OPTION in extra:
                    extra = kernels
                seconds, need = compile_seconds(lowered, {**options, **extra})
                times[label].append(seconds)
                needs[label] = need
        base = statistics.median(times["defaults"])
        for label in OPTION_SETS:
            median = statistics.median(times[label])
            same = "yes" if needs[label] == needs["defaults"] else "NO"
            rows.append(
                f"| {name} | {batch} | {label} | {median:.2f} | {median / base:.2f} | "
                f"{needs[label]:,} | {same} |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="h100-sxm-80gb")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(WORKLOADS))
    target = autotune.get_target(args.target)
    rows = [r for name in args.models.split(",") for r in measure(name, args.repeats, target)]
    text = "\n".join(
        [
            "# Compile options for deviceless probes",
            "",
            f"Command: `JAX_PLATFORMS=cpu python scripts/bench_probe_options.py --target "
            f"{args.target} --repeats {args.repeats}`",
            "",
            f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            f"- jax {jax.__version__}, jaxlib {jaxlib.__version__}; target: {target.description}",
            f"- machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
            "",
            f"Median of {args.repeats} compiles each, JAX's caches cleared before every "
            "compile, option sets interleaved.",
            "",
            "| model | batch | options | compile (s) | vs defaults | need (B) | need identical |",
            "|---|---:|---|---:|---:|---:|---|",
            *rows,
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
