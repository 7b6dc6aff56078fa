"""VGG16's largest batch on described Cloud TPUs, compiled on this CPU machine.

Single v5e, v6e and v5p chips, without and with per-stage remat
(`nothing_saveable`), and a v5e:4x4 slice (16 chips, data parallel, global
batch) without remat. Prints a Markdown report: the answers, their proof
(the next candidate refused by the compiler), and every compile's time.

    JAX_PLATFORMS=cpu python scripts/bench_tpu_vgg16.py --out benchmarks/tpu-vgg16.md

`--cases v5e:4x4/none,v5p:1x1x1/none` runs some of them; the report is
rewritten after each answer, so a stopped run keeps what it found.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path

import jax

import autotune
from autotune.models import VGGConfig

CASES = (  # (target, remat choices)
    ("v5e:1x1", ("none", "nothing_saveable")),
    ("v6e:1x1", ("none", "nothing_saveable")),
    ("v5p:1x1x1", ("none", "nothing_saveable")),
    ("v5e:4x4", ("none",)),
)


def progress(probe: autotune.Probe) -> None:
    verdict = "refused" if probe.refused else "compiled"
    print(f"  batch {probe.batch:>6}: {verdict:8} {autotune.format_bytes(probe.need_bytes):>9}"
          f"  {probe.compile_seconds:6.1f} s", file=sys.stderr, flush=True)  # fmt: skip


def tune(target: str, remat: tuple[str, ...]) -> tuple[autotune.TuneResult, ...]:
    print(f"{target} {remat}", file=sys.stderr, flush=True)
    workloads = VGGConfig("vgg16", remat=remat).workloads()
    return autotune.compare(workloads, target=target, on_probe=progress)


def row(r: autotune.TuneResult) -> str:
    fits = [p.compile_seconds for p in r.probes if not p.refused]
    refused = [p.compile_seconds for p in r.probes if p.refused]
    n = r.data_parallel_size
    batch = f"{r.batch}" if n == 1 else f"{r.batch} ({r.per_device_batch} x {n})"
    return (
        f"| {r.target} | {r.label.split('remat=')[1]} | {batch} | {r.next_batch} | "
        f"{r.peak_bytes:,} | {r.budget_bytes:,} | {r.headroom_bytes:,} | "
        f"{r.compiles} ({len(refused)} refused) | {sum(fits):.0f} s / {len(fits)} | "
        f"{sum(refused):.0f} s / {len(refused)} | {r.seconds:.0f} s |"
    )


def report(results: list[autotune.TuneResult], seconds: float, argv: str) -> str:
    lines = [
        "# VGG16 on described Cloud TPUs\n",
        f"Python {platform.python_version()}, jax {jax.__version__}, libtpu "
        f"{importlib.metadata.version('libtpu')}, {os.cpu_count()} CPU cores, no TPU; "
        f"`JAX_PLATFORMS=cpu python scripts/bench_tpu_vgg16.py{argv}`, "
        f"{seconds:.0f} s in all.\n",
        "| target | remat | max batch | next (refused) | peak (B) | budget (B) | headroom (B) "
        "| compiles | compiling fits | compiling refusals | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *map(row, results),
        *(f"\n```\n{r.render()}\n```" for r in results),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(f"{t}/{r}" for t, rs in CASES for r in rs),
                        help="TARGET/REMAT pairs, comma-separated")  # fmt: skip
    parser.add_argument("--out", type=Path, help="rewritten after each answer")
    args = parser.parse_args()
    argv = "" if args.cases == parser.get_default("cases") else f" --cases {args.cases}"
    start = time.perf_counter()
    results: list[autotune.TuneResult] = []
    for case in args.cases.split(","):
        target, remat = case.split("/")
        results += tune(target, (remat,))
        text = report(results, time.perf_counter() - start, argv)
        if args.out:
            args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
