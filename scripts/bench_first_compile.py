"""Where the first compile goes: the unfused boundary against XLA's answer.

For each workload, on a described GPU, with no analytical estimate (so the
search draws its line from one compile, `autotune._explain.split`):

- the unfused boundary: the batch at which the step's jaxpr, traced at 88,
  every value kept to its last use, fills the budget (`autotune._explain.unfused`);
- the answer the tuner proves, and XLA's answer over that boundary;
- the compiles the search made, the first at or below half the boundary;
- the seconds to trace the step at 88 and walk its jaxpr;
- independent compiles of the candidates around the answer, from two below
  it to two above: the proof checked, and need that does not grow shown.

    JAX_PLATFORMS=cpu python scripts/bench_first_compile.py --out benchmarks/first-compile.md
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
from autotune.internal import Prober, calibration_batch

ROOT = Path(__file__).resolve().parents[1]
# (spec, keywords, compiler options a user of that model needs)
WORKLOADS = (
    ("resnet18:workload", {}, {}),
    ("gpt2:workload", {}, {}),
    ("vit:workload", {}, {"xla_gpu_enable_triton_gemm": False}),
    ("lm:workloads", {}, {}),
    ("cnn:workload", {"image_size": 224}, {}),
    ("autotune.models:vgg_workloads", {"remat": ["none"]}, {}),
)


@dataclasses.dataclass(frozen=True)
class Row:
    label: str
    boundary: float | None
    answer: int
    compiles: str
    seconds: float
    placing_s: float
    around: tuple[tuple[int, int, bool], ...]  # (batch, need, fits) by independent compiles

    @property
    def ratio(self) -> str:
        return "-" if not self.boundary else f"{self.answer / self.boundary:.2f}"


def measure(workload: autotune.Workload, target: autotune.Target, options: dict) -> Row:
    plain = dataclasses.replace(workload, estimate=None)  # the split's search, as for any step
    budget = target.default_budget_bytes
    jax.clear_caches()
    start = time.perf_counter()
    prober = Prober.for_target(plain, target)
    boundary = prober.unfused_boundary(calibration_batch(8, 65536), budget)
    placing = time.perf_counter() - start
    jax.clear_caches()
    start = time.perf_counter()
    result = autotune.find_max_batch(plain, target=target, compiler_options=options)
    seconds = time.perf_counter() - start
    sequence = " ".join(
        f"{p.batch}{'✓' if p.need_bytes <= result.budget_bytes else '✗'}" for p in result.probes
    )
    jax.clear_caches()
    prober = Prober.for_target(plain, target, compiler_options=options)
    batches = [b for b in range(result.batch - 16, result.batch + 24, 8) if 8 <= b <= 65536]
    around = tuple((b, n, n <= budget) for b in batches for n in [prober(b).need_bytes])
    return Row(plain.label or "?", boundary, result.batch, sequence, seconds, placing, around)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="h100-sxm-80gb")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "benchmarks" / "workloads"), str(ROOT / "examples")]
    target = autotune.get_target(args.target)
    rows = []
    for spec, kwargs, options in WORKLOADS:
        for workload in autotune.load_workloads(spec, kwargs):
            if not workload.label or workload.label == spec.split(":")[1]:
                workload = dataclasses.replace(workload, label=spec.split(":")[0])
            rows.append(measure(workload, target, options))
            print(rows[-1], flush=True)
    text = render(rows, target)
    print(text)
    if args.out:
        args.out.write_text(text)


def render(rows: list[Row], target: autotune.Target) -> str:
    lines = [
        "# Where the first compile goes",
        "",
        "Command: `JAX_PLATFORMS=cpu python scripts/bench_first_compile.py "
        "--out benchmarks/first-compile.md`",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- jax {jax.__version__}, jaxlib {jaxlib.__version__}; target: {target.description}",
        f"- machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "",
        "Unfused boundary: the batch at which the step's jaxpr, traced at 88, every value "
        "kept from its equation to its last use, fills the default budget. Each workload "
        "tuned without an analytical estimate, multiples of 8.",
        "",
        "| workload | unfused boundary | trace and walk (s) | answer | answer / boundary "
        "| compiles (✓ fits) | wall (s) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        bound = "-" if r.boundary is None else f"{r.boundary:.0f}"
        lines.append(
            f"| {r.label} | {bound} | {r.placing_s:.2f} | {r.answer} | {r.ratio} | {r.compiles} "
            f"| {r.seconds:.1f} |"
        )
    lines += ["", "Need around each answer, by independent compiles:", "",
              "| workload | batch | need (B) | fits |", "|---|---:|---:|---|"]  # fmt: skip
    lines += [f"| {r.label} | {b} | {n:,} | {'yes' if ok else 'no'} |"
              for r in rows for b, n, ok in r.around]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
