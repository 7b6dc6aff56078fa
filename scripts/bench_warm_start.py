"""What the tuner's compile saves the training job: its first step, cold vs warm.

Tunes a VGG on the local device with JAX's persistent compilation cache in a
fresh directory, then times a training job's first step (compile + run) in a
new process, once with an empty cache (cold) and once with the tuner's
(warm). Writes a markdown table:

    python scripts/bench_warm_start.py --out benchmarks/warm-start.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

JOB = textwrap.dedent("""
    import sys, time, json
    import jax, jax.numpy as jnp
    from flax import nnx
    jax.config.update("jax_compilation_cache_dir", sys.argv[1])
    jax.config.update("jax_compiler_enable_remat_pass", False)
    from autotune.models import VGG, vgg_setup
    from autotune.models.train import make_optimizer
    kw = json.loads(sys.argv[2]); batch = int(sys.argv[3])
    setup = vgg_setup(kw["model"], image_size=kw["image_size"], num_classes=kw["classes"])
    _, params = nnx.split(VGG(kw["model"], image_size=kw["image_size"],
                              num_classes=kw["classes"], rngs=nnx.Rngs(0)), nnx.Param)
    opt_state = make_optimizer("sgd").init(params)
    x = jnp.zeros((batch, kw["image_size"], kw["image_size"], 3))
    y = jnp.zeros((batch,), jnp.int32)
    jax.block_until_ready((params, opt_state, x, y))
    start = time.perf_counter()
    jax.block_until_ready(setup.step(params, opt_state, x, y))
    print(time.perf_counter() - start)
""")


def _run(args: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"command failed: {' '.join(args)}\n{out.stderr}")
    return out.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg11")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--budget", default="1GB")
    p.add_argument("--out", default="benchmarks/warm-start.md")
    a = p.parse_args()
    env = dict(os.environ)
    kw = {"model": a.model, "image_size": a.image_size, "classes": a.classes}
    with tempfile.TemporaryDirectory() as warm, tempfile.TemporaryDirectory() as cold:
        import json

        report = Path(warm) / "tune.json"
        _run(
            [
                sys.executable,
                "-m",
                "autotune",
                "--model",
                a.model,
                "--image-size",
                str(a.image_size),
                "--classes",
                str(a.classes),
                "--target",
                "local",
                "--budget",
                a.budget,
                "--remat",
                "none",
                "--no-cache",
                "--quiet",
                "--compilation-cache-dir",
                warm,
                "--json",
                str(report),
            ],
            env,
        )
        batch = json.loads(report.read_text())["results"][0]["batch"]
        job = [sys.executable, "-c", JOB]
        cold_s = float(_run([*job, cold, json.dumps(kw), str(batch)], env))
        warm_s = float(_run([*job, warm, json.dumps(kw), str(batch)], env))
    device = "cpu" if os.environ.get("JAX_PLATFORMS") == "cpu" else "default device"
    text = "\n".join(
        [
            "# Warm start: the training job's first step after the tuner",
            "",
            f"Command: `python scripts/bench_warm_start.py --model {a.model} --image-size "
            f"{a.image_size} --classes {a.classes} --budget {a.budget}`",
            f"Date: {datetime.date.today()}; machine: "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
            f"device: {device}.",
            "",
            "| model | batch (tuned) | first step, empty cache | first step, tuner's cache "
            "| saved |",
            "|---|---|---|---|---|",
            f"| {a.model} at {a.image_size} | {batch} | {cold_s:.1f} s | {warm_s:.1f} s | "
            f"{cold_s - warm_s:.1f} s ({1 - warm_s / cold_s:.0%}) |",
            "",
            "The first step is compile plus one run; the run itself is the same in both.",
            "",
        ]
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
