"""The examples' answers for a described GPU, checked against every candidate
compiled, and the compiles the search spends with and without the
analytical estimate the workload builders attach.

For each workload of `examples/lm.py` (remat none and nothing_saveable per
block) and `examples/cnn.py`, on a grid of `--multiple-of`:

- the answer of `autotune.find_max_batch` with the workload's estimate, and
  without it (the same workload, `estimate=None`);
- brute force (unless `--no-brute-force`): every candidate up to the answer
  plus one step compiled, the largest that fits; it must equal the answer,
  or the script fails.

Compiles of one batch are made once: the searches and the brute force share
JAX's in-process cache, so the counts are the searches' own. Run:

    JAX_PLATFORMS=cpu python scripts/bench_examples.py --target h100-sxm-80gb \\
        --multiple-of 64 --cnn-image-size 224
    JAX_PLATFORMS=cpu python scripts/bench_examples.py --target h100-sxm-80gb \\
        --multiple-of 8 --cnn-image-size 224 --no-brute-force
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shlex
import sys
import time
from pathlib import Path

import jax
import jaxlib

from autotune import Workload, find_max_batch, get_target
from autotune.internal import Prober

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def brute_force(workload: Workload, target, budget: int, multiple_of: int, upto: int) -> int:
    """The largest candidate up to `upto` whose compile fits `budget`."""
    prober = Prober(
        workload.step,
        workload.args_for_batch,
        sharding=target.sharding() if target.deviceless else None,
        donate_argnums=workload.donate_argnums,
    )
    fits = [b for b in range(multiple_of, upto + 1, multiple_of) if prober(b).need_bytes <= budget]
    return max(fits, default=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="h100-sxm-80gb")
    parser.add_argument("--multiple-of", type=int, default=64)
    parser.add_argument("--cnn-image-size", type=int, default=224)
    parser.add_argument("--no-brute-force", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(EXAMPLES))
    import cnn
    import lm

    target = get_target(args.target)
    built = time.perf_counter()
    workloads = [*lm.workloads(), cnn.workload(image_size=args.cnn_image_size)]
    built = time.perf_counter() - built
    print(f"$ {shlex.join(['python', *sys.argv])}")
    print(
        f"{target.description}; jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
        f"{platform.python_version()}; grid: multiples of {args.multiple_of}; "
        f"{built:.1f} s to build the workloads and their estimates\n"
    )
    print(
        "| workload | batch | next (does not fit) | brute force | compiles, estimate "
        "| compiles, none | XLA B/example (answer to next) | estimate B/example |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    failed = False
    for workload in workloads:
        kwargs = dict(target=target, multiple_of=args.multiple_of)
        with_estimate = find_max_batch(workload, **kwargs)
        without = find_max_batch(dataclasses.replace(workload, estimate=None), **kwargs)
        oracle = "-"
        if not args.no_brute_force:
            oracle = brute_force(
                workload,
                target,
                with_estimate.budget_bytes,
                args.multiple_of,
                with_estimate.batch + args.multiple_of,
            )
            failed |= oracle != with_estimate.batch
        failed |= with_estimate.batch != without.batch
        r = with_estimate
        slope = "-"
        if r.next_batch is not None:
            slope = f"{(r.next_peak_bytes - r.peak_bytes) // (r.next_batch - r.batch):,}"
        print(
            f"| {workload.label} | {r.batch} | {r.next_batch} | {oracle} | {r.compiles} "
            f"| {without.compiles} | {slope} | {workload.estimate.per_example_bytes:,} |",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
