"""What `--why` costs, and VGG16's peak by conv stage beside the seed's table.

    JAX_PLATFORMS=cpu python scripts/bench_why.py --target h100-sxm-80gb

1. The default rows (remat none and nothing_saveable) tuned without and with
   the breakdown, no result cache: the answers, every compile's need and the
   compile counts must be identical; the time is what dumping costs.
2. One compile at the first row's answer, alternately with and without the
   dump options, three times each: what the dump adds to a compile.
3. The same rows with a warm result cache: the breakdown costs one compile.
4. Each row's peak by layer and by stage: the seed's forward values
   (activations x batch x 4 B) beside the activations, gradients and
   temporaries XLA holds for the layer at the peak.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax

import autotune
from autotune import compare, format_bytes
from autotune.internal import REMAT_PASS_OFF, compile_with_dump
from autotune.models import VGGConfig, vgg_layer_table
from autotune.models.compiled_layers import by_stage, compiled_layers, render_layers


def tune(config: VGGConfig, target: str, **kwargs):
    start = time.perf_counter()
    results = compare(config.workloads(), target=target, **kwargs)
    return results, time.perf_counter() - start


def compile_seconds(workload: autotune.Workload, batch: int, target: str) -> None:
    """Median of 3 compiles each way, at distinct batches near `batch`: JAX
    keeps a compiled program in memory, and the dump options (a new directory
    each time) would never hit it where the plain compile would."""
    sharding = autotune.get_target(target).sharding()
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(6):
        dump = bool(i % 2)
        args = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
            workload.args_for_batch(batch - 8 * i),
        )
        lowered = workload.jitted().lower(*args)
        start = time.perf_counter()
        if dump:
            compile_with_dump(lowered, REMAT_PASS_OFF)
        else:
            lowered.compile(compiler_options=REMAT_PASS_OFF)
        times[dump].append(time.perf_counter() - start)
    plain, dumped = (statistics.median(times[d]) for d in (False, True))
    print(f"batches {batch} to {batch - 40}, alternately: median of 3 compiles {plain:.2f} s")
    print(f"plain, {dumped:.2f} s with the dump written, read back and removed\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="h100-sxm-80gb")
    parser.add_argument("--model", default="vgg16")
    args = parser.parse_args()
    config = VGGConfig(args.model, remat=("none", "nothing_saveable"))
    print(f"target: {autotune.get_target(args.target).description}\n")

    plain, plain_s = tune(config, args.target)
    why, why_s = tune(config, args.target, why=True)
    print("## 1. Cost in the search (no result cache)\n")
    print("| row | batch | compiles | search s, plain | search s, --why | breakdown read s |")
    print("|---|---:|---:|---:|---:|---:|")
    for a, b in zip(plain, why):
        assert (a.batch, a.peak_bytes, a.compiles) == (b.batch, b.peak_bytes, b.compiles)
        assert [p.need_bytes for p in a.probes] == [p.need_bytes for p in b.probes]
        print(
            f"| {a.label} | {a.batch} | {a.compiles} | {a.seconds:.1f} | {b.seconds:.1f} "
            f"| {b.peak_breakdown.seconds:.2f} |"
        )
    print(f"\nwhole runs: {plain_s:.1f} s plain, {why_s:.1f} s with --why; every compiled")
    print("batch's need identical with and without the dump options.\n")

    print("## 2. One compile, with and without the dump\n")
    compile_seconds(config.workloads()[0], plain[0].batch, args.target)

    with tempfile.TemporaryDirectory() as directory:
        cache = autotune.ResultCache(directory)
        tune(config, args.target, cache=cache)
        hits, hits_s = tune(config, args.target, cache=cache, why=True)
    print("## 3. Cost on a cached answer\n")
    print("| row | batch | breakdown s (one compile) |")
    print("|---|---:|---:|")
    for r in hits:
        assert (
            r.from_cache and r.peak_breakdown.entries == why[hits.index(r)].peak_breakdown.entries
        )
        print(f"| {r.label} | {r.batch} | {r.peak_breakdown.seconds:.1f} |")
    print(f"\nwhole run with --why from the cache: {hits_s:.1f} s\n")

    print("## 4. The peak by layer and by stage\n")
    table = vgg_layer_table(args.model)
    for r in why:
        b = r.peak_breakdown
        listed = sum(e.bytes for e in b.entries if e.kind != "rest")
        print(
            f"### {r.label} at batch {r.batch}: {r.peak_bytes:,} B ({format_bytes(r.peak_bytes)})\n"
        )
        print(f"the peak: {b.peak_step}")
        print(f"{len(b.entries) - 1} buffers listed cover {listed / b.peak_bytes:.2%}; ")
        print("by kind: " + ", ".join(f"{k} {v:,}" for k, v in b.bytes_by_kind.items()) + "\n")
        layers = compiled_layers(table, b, 4)
        print("```")
        print(render_layers(by_stage(layers)))
        print()
        print(render_layers(layers))
        print("```\n")


if __name__ == "__main__":
    main()
