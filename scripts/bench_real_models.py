"""Time to an exact answer on real models: wall time against one compile.

For each model in benchmarks/workloads (ResNet-18 with BatchNorm, a GPT-2
small decoder, ViT-B/16) and a described GPU, this measures

- one compile of the step at the answer, as a user's job makes it (trace,
  lower, compile, XLA's remat pass off as the tuner compiles), JAX's
  caches cleared first;
- the tuner's wall time from a cold start (`find_max_batch`, no result
  cache, JAX's caches cleared), with compiles at once as the tuner decides
  ("auto") or as many as given;
- the proof, by independent compiles: the answer fits, the next candidate
  does not.

Run on a quiet machine (nothing else compiling):

    JAX_PLATFORMS=cpu python scripts/bench_real_models.py --out benchmarks/real-models.md
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
# (label, spec, compiler options a user of that model needs)
MODELS = (
    ("resnet18 (BatchNorm, 128 px)", "resnet18:workload", {}),
    ("gpt2-small (seq 512, bf16)", "gpt2:workload", {}),
    ("vit-b16 (224 px)", "vit:workload", {"xla_gpu_enable_triton_gemm": False}),
)


@dataclasses.dataclass(frozen=True)
class Row:
    model: str
    workers: str
    batch: int
    compiles: int
    wall_s: float
    one_compile_s: float
    proof: str
    sequence: str

    @property
    def ratio(self) -> float:
        return self.wall_s / self.one_compile_s


def one_compile(
    workload: autotune.Workload, target: autotune.Target, batch: int, options: dict
) -> tuple[float, int]:
    """Seconds to trace, lower and compile the step at `batch`, and its need."""
    jax.clear_caches()
    sharding = target.sharding()
    start = time.perf_counter()
    args = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        workload.args_for_batch(batch),
    )
    compiled = (
        workload.jitted().lower(*args).compile(compiler_options={**REMAT_PASS_OFF, **options})
    )
    return time.perf_counter() - start, compiled_need(compiled)


def tune(
    workload: autotune.Workload, target: autotune.Target, options: dict, workers: int | None
) -> tuple[autotune.TuneResult, float]:
    jax.clear_caches()
    forget_shared_kernels()  # no kernels from an earlier run
    start = time.perf_counter()
    result = autotune.find_max_batch(
        workload, target=target, compiler_options=options, workers=workers
    )
    return result, time.perf_counter() - start


def measure(
    label: str,
    spec: str,
    options: dict,
    target: autotune.Target,
    workers: tuple[str, ...],
    repeats: int,
) -> list[Row]:
    (workload,) = autotune.load_workloads(spec)
    one_compile(workload, target, 8, options)  # the compiler's one-time set-up, for every row
    rows = []
    for n in workers:
        tunes = [tune(workload, target, options, None if n == "auto" else int(n))
                 for _ in range(repeats)]  # fmt: skip
        result, wall = min(tunes, key=lambda t: t[1])
        compiles = [one_compile(workload, target, result.batch, options) for _ in range(repeats)]
        seconds, need = min(compiles)
        _, need_next = one_compile(workload, target, result.next_batch, options)
        ok = (need == result.peak_bytes <= result.budget_bytes < need_next
              and need_next == result.next_peak_bytes)  # fmt: skip
        sequence = " ".join(
            f"{p.batch}{'✓' if p.need_bytes <= result.budget_bytes else '✗'}" for p in result.probes
        )
        rows.append(Row(label, n, result.batch, result.compiles, wall, seconds,
                        "checked" if ok else "FAILED", sequence))  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="h100-sxm-80gb")
    parser.add_argument(
        "--workers", default="auto", help='comma-separated compiles at once: "auto" or a count'
    )
    parser.add_argument("--models", default=",".join(m[1] for m in MODELS))
    parser.add_argument("--repeats", type=int, default=2, help="runs of each; the fastest is kept")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(WORKLOADS))
    target = autotune.get_target(args.target)
    workers = tuple(args.workers.split(","))
    chosen = [m for m in MODELS if m[1] in args.models.split(",")]
    rows = [row for m in chosen for row in measure(*m, target, workers, args.repeats)]
    text = render(rows, args, target)
    print(text)
    if args.out:
        args.out.write_text(text)


def render(rows: list[Row], args: argparse.Namespace, target: autotune.Target) -> str:
    lines = [
        "# Time to an exact answer on real models",
        "",
        f"Command: `JAX_PLATFORMS=cpu python scripts/bench_real_models.py --target "
        f"{args.target} --workers {args.workers} --repeats {args.repeats}`",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- jax {jax.__version__}, jaxlib {jaxlib.__version__}; target: {target.description}",
        f"- machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "",
        "One compile: trace, lower and compile of the step at the answer, caches cleared. "
        "Wall: `find_max_batch` with JAX's caches cleared, no result cache and no kernels "
        "kept from an earlier run, after one "
        "compile of the step at batch 8 set the compiler up. Each the fastest of "
        f"{args.repeats} runs. Proof: independent "
        "compiles at the answer (fits, same bytes) and the next candidate (does not fit).",
        "",
        "| model | at once | answer | compiles | wall (s) | one compile (s) "
        "| wall / one compile | proof |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.workers} | {r.batch} | {r.compiles} | {r.wall_s:.1f} | "
            f"{r.one_compile_s:.1f} | {r.ratio:.2f} | {r.proof} |"
        )
    lines += ["", "Compiles in order (✓ fits, ✗ does not):", ""]
    lines += [f"- {r.model}, at once {r.workers}: {r.sequence}" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
