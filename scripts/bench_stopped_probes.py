"""Searches whose probes stop at buffer assignment, against one full compile.

For each model and a described GPU, this measures, in one process:

- a warm-up search of a small step for the same target, so neither the CUDA
  plugin's start nor the compile workers' are charged to a model;
- the search with every probe a full compile in this process ("before":
  the target with `stop_at_assignment=False`) and with probes stopped at
  buffer assignment in worker processes ("after"); JAX's caches are cleared
  before each, and the before/after order alternates over the repeats;
- one full compile: lowering and compiling the step at the answer and at the
  next candidate, in this process, XLA's dump off, no persistent cache, the
  faster of the two;
- the proof by those independent compiles: their needs are the answer's.

    JAX_PLATFORMS=cpu python scripts/bench_stopped_probes.py --out benchmarks/stopped-probes.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jaxlib

import autotune
from autotune.internal import REMAT_PASS_OFF, compiled_need, forget_shared_kernels

WORKLOADS = Path(__file__).resolve().parents[1] / "benchmarks" / "workloads"
MODELS = {
    "vgg16": ("VGG16 (autotune.models, 224 px)", None, {}),
    "resnet18": ("ResNet-18 (BatchNorm, 128 px)", "resnet18:workload", {}),
    "gpt2": ("GPT-2 small (seq 512, bf16)", "gpt2:workload", {}),
    "vit": ("ViT-B/16 (224 px)", "vit:workload", {"xla_gpu_enable_triton_gemm": False}),
}


def load(name: str) -> autotune.Workload:
    if name == "vgg16":
        from autotune.models import VGGConfig

        (workload,) = VGGConfig("vgg16").workloads()
        return workload
    sys.path.insert(0, str(WORKLOADS))
    (workload,) = autotune.load_workloads(MODELS[name][1])
    return workload


def jitted(workload):
    """The step jitted as a user's job jits it: one jitted already keeps its donation."""
    donate = workload.donate_argnums
    donate = (donate,) if isinstance(donate, int) else tuple(donate)
    step = workload.step
    return step if hasattr(step, "lower") and not donate else jax.jit(step, donate_argnums=donate)


def one_compile(workload, target, batch, options):
    """(seconds, need) of one full compile at `batch`, as a user's job makes it."""
    jax.clear_caches()
    forget_shared_kernels()
    start = time.perf_counter()
    sharding = target.sharding()
    args = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        workload.args_for_batch(batch),
    )
    compiled = jitted(workload).lower(*args).compile(compiler_options={**REMAT_PASS_OFF, **options})
    return time.perf_counter() - start, compiled_need(compiled)


def search(workload, target, options):
    jax.clear_caches()
    forget_shared_kernels()
    start = time.perf_counter()
    result = autotune.find_max_batch(workload, target=target, compiler_options=options or None)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="h100-sxm-80gb")
    parser.add_argument("--models", default="vgg16,resnet18,gpt2,vit")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out")
    a = parser.parse_args()
    after = autotune.get_target(a.target)
    before = dataclasses.replace(after, stop_at_assignment=False)
    from autotune.models import VGGConfig

    (warm,) = VGGConfig("vgg-tiny", image_size=32, num_classes=10).workloads()
    for target in (after, before):
        autotune.find_max_batch(warm, target=target)
    lines = []
    for name in a.models.split(","):
        label, _, options = MODELS[name]
        workload = load(name)
        runs = []
        for i in range(a.repeats):
            order = (("before", before), ("after", after))
            for arm, target in order if i % 2 == 0 else order[::-1]:
                wall, r = search(workload, target, options)
                stopped = sum(p.stopped for p in r.probes)
                runs.append((arm, wall, r, stopped))
                print(name, arm, r.batch, f"{wall:.1f} s", len(r.probes), stopped, flush=True)
        r = runs[0][2]
        t_at, need_at = one_compile(workload, after, r.batch, options)
        t_next, need_next = one_compile(workload, after, r.next_batch, options)
        full = min(t_at, t_next)
        proof = (
            "ok"
            if need_at == r.peak_bytes and need_next == r.next_peak_bytes
            and all(x[2].batch == r.batch and x[2].peak_bytes == r.peak_bytes for x in runs)
            else f"MISMATCH {need_at} {need_next}"
        )  # fmt: skip
        for arm, wall, res, stopped in runs:
            lines.append(
                f"| {label} | {arm} | {res.batch} | {len(res.probes)} | {stopped} | "
                f"{wall:.1f} | {full:.1f} | {wall / full:.2f} | {proof} |"
            )
        print("\n".join(lines[-len(runs) :]), flush=True)
    header = (
        "| model | probes | batch | probes | stopped early | wall s | one full compile s "
        "| wall / one compile | proof |\n|---|---|---|---|---|---|---|---|---|"
    )
    text = "\n".join([header, *lines])
    stamp = (
        f"{datetime.date.today()}, {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {jaxlib.__version__}, {os.cpu_count()} cores, target {a.target}"
    )
    print(stamp)
    if a.out:
        Path(a.out).write_text(f"<!-- {stamp} -->\n{text}\n")


if __name__ == "__main__":
    main()
