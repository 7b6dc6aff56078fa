"""VGG16's largest batch on described Cloud TPUs, compiled on this CPU machine.

Single v5e, v6e and v5p chips, without and with per-stage remat
(`nothing_saveable`), and a v5e:4x4 slice (16 chips, data parallel, global
batch) without remat. Prints a Markdown report: the answers, their proof
(the next candidate refused by the compiler), and every compile's time.

    JAX_PLATFORMS=cpu python scripts/bench_tpu_vgg16.py --out benchmarks/tpu-vgg16.md

`--cases v5e:4x4/none,v5p:1x1x1/none` runs some of them; the report is
rewritten after each answer, so a stopped run keeps what it found.
Each probe stops once the compiler has placed its buffers, and the answer is
compiled in full (`autotune._search.compiles.search_placed`);
`--no-stop-at-assignment` compiles every probe in full, in this process.
`--full-compile` times one full compile of the step at
the answer in this process (XLA's dump off, no persistent cache), against
which the search's wall is read.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    verdict = "refused" if probe.refused else "placed" if probe.placed else "compiled"
    print(f"  batch {probe.batch:>6}: {verdict:8} {autotune.format_bytes(probe.need_bytes):>9}"
          f"  {probe.compile_seconds:6.1f} s", file=sys.stderr, flush=True)  # fmt: skip


def tune(target: str, remat: tuple[str, ...], stop: bool) -> tuple[autotune.TuneResult, ...]:
    print(f"{target} {remat}", file=sys.stderr, flush=True)
    workloads = VGGConfig("vgg16", remat=remat).workloads()
    tgt = dataclasses.replace(autotune.get_target(target), stop_at_assignment=stop)
    return autotune.compare(workloads, target=tgt, on_probe=progress)


def one_full_compile(r: autotune.TuneResult) -> float:
    """Seconds to lower and compile the step at the answer, in this process."""
    from autotune.internal import Prober, on_target

    (workload,) = VGGConfig("vgg16", remat=(r.label.split("remat=")[1],)).workloads()
    target = autotune.get_target(r.target)
    prober = Prober.for_target(on_target(workload, target, "dp"), target)
    start = time.perf_counter()
    probe = prober(r.batch)
    seconds = time.perf_counter() - start
    assert probe.need_bytes + probe.code_bytes == r.peak_bytes, "the answer's peak, byte for byte"
    return seconds


def row(r: autotune.TuneResult, full: float | None) -> str:
    fits = [p.compile_seconds for p in r.probes if not p.refused and not p.placed]
    refused = [p.compile_seconds for p in r.probes if p.refused]
    placed = [p.compile_seconds for p in r.probes if p.placed]
    n = r.data_parallel_size
    batch = f"{r.batch}" if n == 1 else f"{r.batch} ({r.per_device_batch} x {n})"
    ratio = "-" if full is None else f"{full:.0f} s, {r.seconds / full:.2f}"
    return (
        f"| {r.target} | {r.label.split('remat=')[1]} | {batch} | {r.next_batch} | "
        f"{r.peak_bytes:,} | {r.budget_bytes:,} | {r.headroom_bytes:,} | "
        f"{r.compiles} ({len(refused)} refused, {len(placed)} placed) | "
        f"{sum(fits):.0f} s / {len(fits)} | {sum(refused):.0f} s / {len(refused)} | "
        f"{sum(placed):.0f} s / {len(placed)} | {r.seconds:.0f} s | {ratio} |"
    )


def report(
    results: list[autotune.TuneResult], fulls: list[float | None], seconds: float, argv: str
) -> str:
    lines = [
        "# VGG16 on described Cloud TPUs\n",
        f"Python {platform.python_version()}, jax {jax.__version__}, libtpu "
        f"{importlib.metadata.version('libtpu')}, {os.cpu_count()} CPU cores, no TPU; "
        f"`JAX_PLATFORMS=cpu python scripts/bench_tpu_vgg16.py{argv}`, "
        f"{seconds:.0f} s in all.\n",
        "| target | remat | max batch | next (refused) | peak (B) | budget (B) | headroom (B) "
        "| compiles | compiling fits | compiling refusals | placements | seconds "
        "| one full compile, wall / it |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *map(row, results, fulls),
        *(f"\n```\n{r.render()}\n```" for r in results),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(f"{t}/{r}" for t, rs in CASES for r in rs),
                        help="TARGET/REMAT pairs, comma-separated")  # fmt: skip
    parser.add_argument("--out", type=Path, help="rewritten after each answer")
    parser.add_argument("--stop-at-assignment", action=argparse.BooleanOptionalAction,
                        default=True)  # fmt: skip
    parser.add_argument("--full-compile", action="store_true")
    args = parser.parse_args()
    argv = "" if args.cases == parser.get_default("cases") else f" --cases {args.cases}"
    argv += " --no-stop-at-assignment" * (not args.stop_at_assignment)
    argv += " --full-compile" * args.full_compile
    start = time.perf_counter()
    results: list[autotune.TuneResult] = []
    fulls: list[float | None] = []
    for case in args.cases.split(","):
        target, remat = case.split("/")
        found = tune(target, (remat,), args.stop_at_assignment)
        results += found
        fulls += [one_full_compile(r) if args.full_compile else None for r in found]
        text = report(results, fulls, time.perf_counter() - start, argv)
        if args.out:
            args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
