"""Does a TPU compile's verdict at buffer assignment match its full compile's?

For each case (a step, a described TPU target, a batch), one compile with
XLA's dump on, a thread noting when each dump file appears. What a probe
stopped at buffer assignment would know is the memory-usage report, written
with the buffer assignment: its default-memory total within the compiler's
limit ("within HBM"), above it ("over HBM"), or no report before the
compiler refused ("refused first"). The compile then runs to its end, whose
verdict (compiled, or refused by the compiler for want of HBM) is the one
the search trusts today. Prints one Markdown row a case.

    JAX_PLATFORMS=cpu python scripts/measure_tpu_verdicts.py            # every case
    JAX_PLATFORMS=cpu python scripts/measure_tpu_verdicts.py --cases mlp --batches 60288,60416,61000

Cases: `edge` (one donated int8 buffer at the edge of a v5e chip's HBM),
`mlp` (8 x 8192, Adam, v5e:1x1), `lm` (a 2-block decoder, examples/lm.py,
v5e:1x1 told to fit into 2048 MiB), `vgg16` (autotune.models, v5e:1x1).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

import autotune
from autotune.internal import Prober, hbm_refusal

MIB = 1 << 20
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REPORT = "after_optimizations-memory-usage-report.txt"
_DEFAULT_TOTAL = re.compile(r"Memory Space: default \(color=0\)\nTotal bytes: (\d+)")


@dataclasses.dataclass(frozen=True)
class Case:
    label: str
    target: str
    workload: Callable[[], autotune.Workload]
    batches: tuple[int, ...]
    hbm_mib: int | None = None  # xla_tpu_max_hbm_size_mib, else the chip's HBM


@dataclasses.dataclass(frozen=True)
class Seen:
    """One compile: what its dump said at buffer assignment, and how it ended."""

    report_s: float | None
    report_total: int | None  # the default memory space's "Total bytes"
    codegen_s: float | None  # after_codegen.txt
    end_s: float
    fits: bool
    need: int | None  # compiled: argument + output - alias + temp
    code: int | None
    required: int | None  # refused: what the compiler said it required
    message: str


def edge_workload() -> autotune.Workload:
    """`x + 1` on one donated int8 buffer of `batch` bytes."""
    return autotune.Workload(
        lambda x: x + 1, lambda b: (jax.ShapeDtypeStruct((b,), jnp.int8),), donate_argnums=0
    )


def mlp_workload() -> autotune.Workload:
    """A plain-JAX MLP, 8 layers of 8192, Adam, input 4096 (measured-facts 6)."""
    sizes = [4096] + [8192] * 8 + [1]
    params = [
        (jax.ShapeDtypeStruct((a, b), jnp.float32), jax.ShapeDtypeStruct((b,), jnp.float32))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    adam = optax.adam(1e-3)
    state = jax.eval_shape(adam.init, params)

    def loss(p, x, y):
        for w, b in p[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = p[-1]
        return jnp.mean((x @ w + b - y) ** 2)

    def step(p, s, x, y):
        grads = jax.grad(loss)(p, x, y)
        updates, s = adam.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    def args(batch: int) -> tuple[Any, ...]:
        x = jax.ShapeDtypeStruct((batch, 4096), jnp.float32)
        return params, state, x, jax.ShapeDtypeStruct((batch, 1), jnp.float32)

    return autotune.Workload(step, args, donate_argnums=(0, 1))


def lm_workload() -> autotune.Workload:
    """examples/lm.py's decoder: 2 blocks of width 256, 256 tokens, no remat."""
    sys.path.insert(0, str(EXAMPLES))
    import lm

    (workload,) = lm.workloads(remat=("none",), blocks=2, width=256, heads=4, seq_len=256)
    return workload


def vgg16_workload() -> autotune.Workload:
    from autotune.models import VGGConfig

    (workload,) = VGGConfig("vgg16", remat=("none",)).workloads()
    return workload


EDGE = 16_909_218_816  # the largest buffer a v5e chip compiles (benchmarks/tpu-hbm.md)
CASES = {
    "edge": Case("one int8 buffer", "v5e:1x1", edge_workload, (EDGE, EDGE + 512)),
    "mlp": Case("MLP 8 x 8192, Adam", "v5e:1x1", mlp_workload, (36_000, 55_000, 60_000)),
    "lm": Case("decoder, 2 x 256, 256 tokens", "v5e:1x1", lm_workload, (512, 384, 320), 2048),
    "vgg16": Case("VGG16, 224 px", "v5e:1x1", vgg16_workload, (248, 256, 264)),
}


def compile_watched(lowered: Any, options: dict[str, Any]) -> Seen:
    """Compiles `lowered` with the dump on, noting when its files appear."""
    folder = tempfile.mkdtemp(prefix="tpu-verdict-")
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for name in os.listdir(folder):
                seen.setdefault(name, time.perf_counter())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    dump = {"xla_dump_to": folder, "xla_dump_hlo_as_text": True}
    start = time.perf_counter()
    watcher.start()
    need = code = required = None
    message = ""
    try:
        compiled = lowered.compile(compiler_options={**options, **dump})
        m = compiled.memory_analysis()
        need = (
            m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
            + m.temp_size_in_bytes
        )  # fmt: skip
        code = m.generated_code_size_in_bytes
    except Exception as e:
        refusal = hbm_refusal(e)
        if refusal is None:
            raise
        required = refusal.required_bytes
        message = re.sub(r"\s+", " ", str(e)).split(" Total hbm usage")[0][-120:]
    end = time.perf_counter() - start
    done.set()
    watcher.join()
    at = {n: t - start for n, t in seen.items()}
    report = next((n for n in at if n.endswith(REPORT)), None)
    total = None
    if report is not None:
        found = _DEFAULT_TOTAL.search((Path(folder) / report).read_text())
        total = int(found.group(1)) if found else None
    codegen = next((t for n, t in at.items() if n.endswith("after_codegen.txt")), None)
    shutil.rmtree(folder, ignore_errors=True)
    return Seen(
        report_s=None if report is None else at[report],
        report_total=total,
        codegen_s=codegen,
        end_s=end,
        fits=required is None,
        need=need,
        code=code,
        required=required,
        message=message,
    )


def at_assignment(seen: Seen, limit: int) -> str:
    if seen.report_total is None:
        return "refused first"
    return "within HBM" if seen.report_total <= limit else "over HBM"


def _seconds(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}"


def row(case: Case, batch: int, seen: Seen, limit: int) -> str:
    early = at_assignment(seen, limit)
    full = "compiled" if seen.fits else "refused"
    agree = (early == "within HBM") == seen.fits
    bytes_ = (
        f"need {seen.need:,} + code {seen.code:,}" if seen.fits else f"required {seen.required:,}"
    )
    total = "-" if seen.report_total is None else f"{seen.report_total:,}"
    return (
        f"| {case.label} | {case.target} | {limit:,} | {batch:,} | {total} | {early} | "
        f"{_seconds(seen.report_s)} | {_seconds(seen.codegen_s)} | {full}: {bytes_} | "
        f"{seen.end_s:.2f} | {'yes' if agree else '**no**'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    parser.add_argument("--batches", help="comma-separated, instead of each case's own")
    args = parser.parse_args()
    jax.config.update("jax_compiler_enable_remat_pass", False)
    print(
        f"jax {jax.__version__}, libtpu {importlib.metadata.version('libtpu')}, "
        f"{os.cpu_count()} CPU cores\n"
    )
    print(
        "| step | target | limit (B) | batch | report total (B) | at buffer assignment | "
        "report at s | codegen at s | full compile | end s | agree |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        case = CASES[name]
        target = autotune.get_target(case.target)
        options: dict[str, Any] = {}
        limit = target.default_budget_bytes
        if case.hbm_mib is not None:
            options = {"xla_tpu_max_hbm_size_mib": case.hbm_mib}
            limit = case.hbm_mib * MIB
        prober = Prober.for_target(case.workload(), target)
        batches = case.batches if args.batches is None else map(int, args.batches.split(","))
        for batch in batches:
            seen = compile_watched(prober.lower(batch), options)
            print(row(case, batch, seen, limit), flush=True)
            if seen.message:
                print(f"  <!-- {batch}: {seen.message} -->", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
