"""The `autotune` command: the largest VGG batch that fits a target."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autotune",
        description="Find the largest batch of a VGG train step that fits an "
        "accelerator, from XLA's memory analysis of the compiled step. "
        "The search runs nothing and allocates nothing on the device; only "
        "--verify and --time run steps, in a child process.",
    )
    p.add_argument(
        "--model", default="vgg16", help="vgg11, vgg13, vgg16 or vgg19 (default: %(default)s)"
    )
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--optimizer", default="sgd", help="sgd (momentum 0.9), adam or adamw")
    p.add_argument("--dtype", default="float32", help="compute dtype: float32 or bfloat16")
    p.add_argument("--param-dtype", default="float32")
    p.add_argument(
        "--remat",
        default="none,nothing_saveable",
        help="comma-separated remat choices, one row each: none or a "
        "jax.checkpoint_policies name per conv stage (default: %(default)s)",
    )
    p.add_argument(
        "--remat-every", type=int, default=1, help="rematerialize every k-th conv stage only"
    )
    p.add_argument(
        "--xla-remat-pass",
        choices=("off", "on", "both"),
        default="off",
        help="XLA's automatic rematerialization pass (default: off: "
        "need(batch) is then affine and exact; train with "
        "jax_compiler_enable_remat_pass=False to match)",
    )
    p.add_argument(
        "--target",
        default="auto",
        help="auto (the local accelerator, else a described "
        "h100-sxm-80gb), local, a described GPU name, or a target "
        "config file dumped by scripts/dump_target_config.py",
    )
    p.add_argument(
        "--mesh",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel devices: N described GPUs of --target, or "
        "the first N local devices; the batch is then global and "
        "split over them, memory is per device (default: 1)",
    )
    p.add_argument(
        "--layout",
        default="dp",
        help="with --mesh: dp (parameters and optimizer state "
        "replicated) or fsdp (split too) (default: %(default)s)",
    )
    p.add_argument(
        "--accumulate-to",
        type=int,
        default=None,
        metavar="GLOBAL",
        help="a desired global batch: print the gradient-accumulation "
        "steps and micro-batch that reach it with each answer",
    )
    p.add_argument(
        "--mem-fraction",
        type=float,
        default=None,
        help="allocator fraction for a described target (default: "
        "XLA_PYTHON_CLIENT_MEM_FRACTION or 0.75)",
    )
    p.add_argument(
        "--budget",
        default=None,
        help="bytes the step may use, e.g. 30GB or 32212254720; wins over the target's limit",
    )
    p.add_argument("--reserve", default="0", help="bytes kept free for other buffers, e.g. 2GB")
    p.add_argument(
        "--multiple-of",
        type=int,
        default=None,
        help="candidate (global) batches are its multiples (default: lcm(8, --mesh))",
    )
    p.add_argument("--max-batch", type=int, default=65536)
    p.add_argument(
        "--json", default=None, metavar="PATH", help="write the results as JSON for a training job"
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="PATH",
        help="write a PNG of need(batch) per choice against the budget "
        "(needs matplotlib: the [plot] extra)",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="print the seed-style analytical breakdown beside XLA's numbers",
    )
    p.add_argument(
        "--compilation-cache-dir",
        default=None,
        metavar="DIR",
        help="JAX's persistent compilation cache: the compile at the "
        "answer lands there, so a training job on the same device "
        "that points jax_compilation_cache_dir at DIR (and turns "
        "the remat pass off) does not compile it again",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="neither read nor write the result cache"
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="result cache directory (default: $XDG_CACHE_HOME/"
        "jax-batch-autotune or ~/.cache/jax-batch-autotune)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="run each answer for real (2 steps) in a child process and "
        "compare its peak with the prediction",
    )
    p.add_argument(
        "--verify-boundary",
        action="store_true",
        help="also run the next candidate, which must fail (implies --verify)",
    )
    p.add_argument(
        "--time",
        action="store_true",
        help="measure samples/s at each answer in the child; the "
        "recommendation then uses the measurement",
    )
    p.add_argument(
        "--verify-timeout",
        type=float,
        default=600.0,
        help="seconds each child may run (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _keep_cuda_plugin_quiet() -> None:
    """Without a GPU, the installed CUDA plugin fails to start and says so at
    length; described targets do not need it to start."""
    from autotune.targets import cuda_plugin_without_gpu

    if os.environ.get("JAX_PLATFORMS") or not cuda_plugin_without_gpu():
        return
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:  # read the variable at import: tell it directly
        sys.modules["jax"].config.update("jax_platforms", "cpu")


def _model_kwargs(args: argparse.Namespace) -> dict:
    """The VGG setup's keywords, as tuning, verifying and explaining take them."""
    return {
        "image_size": args.image_size,
        "channels": args.channels,
        "num_classes": args.classes,
        "optimizer": args.optimizer,
        "dtype": args.dtype,
        "param_dtype": args.param_dtype,
    }


def _choices(args: argparse.Namespace) -> list:
    from autotune.zoo import Choice

    passes = {"off": (False,), "on": (True,), "both": (False, True)}[args.xla_remat_pass]
    remats = [r.strip() for r in args.remat.split(",") if r.strip()]
    return [Choice(r, args.remat_every, p) for r in remats for p in passes]


def _progress(probe) -> None:
    from autotune.units import format_bytes

    print(
        f"  compiled batch {probe.batch:>6}: needs {format_bytes(probe.need_bytes):>9}"
        f"  ({probe.compile_seconds:.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def _verify(results, args: argparse.Namespace, *, deviceless: bool) -> dict[str, float]:
    """Runs each answer for real; returns the measured samples/s by label."""
    from autotune.verify import verify_result

    if deviceless:
        print(
            "\nnote: these runs use this machine's device, not the described target",
            file=sys.stderr,
        )
    print("\nrun for real (child process, XLA remat pass as tuned):")
    rates = {}
    for r, choice in zip(results, _choices(args)):
        config = {
            "model": args.model,
            **_model_kwargs(args),
            "remat": choice.remat,
            "remat_every": choice.remat_every,
            "xla_remat_pass": choice.xla_remat_pass,
        }
        checks = verify_result(
            r,
            config,
            boundary=args.verify_boundary,
            timeout_s=args.verify_timeout,
            time_steps=5 if args.time else 0,
        )
        for v in checks:
            print(f"  {r.label}: {v.render(r.budget_bytes)}")
        if checks[0].throughput is not None:
            rates[r.label] = checks[0].throughput.samples_per_second
    return rates


def _report(results, args: argparse.Namespace, rates: dict[str, float]) -> None:
    from autotune.recommend import recommend
    from autotune.report import write_json
    from autotune.result import comparison_table

    best = recommend(results, rates)
    print()
    print(comparison_table(results))
    if best is not None:
        print(best.render())
    for r in results:
        print()
        print(r.render())
    if args.accumulate_to is not None:
        print()
        for r in results:
            print(_accumulation_line(r, args.accumulate_to))
    if args.json:
        write_json(results, args.json, best)
        print(f"\nwrote {args.json}")
    if args.plot:
        from autotune.plot import plot_results

        plot_results(results, args.plot)
        print(f"wrote {args.plot}")


def _accumulation_line(result, desired: int) -> str:
    from models.parallel import accumulation_plan

    steps, micro = accumulation_plan(desired, result.batch, result.data_parallel_size)
    per_device = micro // result.data_parallel_size
    return (
        f"{result.label}: global batch {desired} = {steps} accumulation "
        f"step(s) x micro-batch {micro} ({per_device} per device)"
    )


def run(args: argparse.Namespace) -> int:
    from autotune.cache import ResultCache
    from autotune.errors import TuneError
    from autotune.units import parse_bytes
    from autotune.zoo import resolve_target, tune_vgg

    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path and not Path(path).resolve().parent.is_dir():
            raise TuneError(
                f"`{flag}` (={path!r}): the directory {str(Path(path).parent)!r} does not exist"
            )
    if args.compilation_cache_dir:
        import jax

        jax.config.update("jax_compilation_cache_dir", args.compilation_cache_dir)
    if args.accumulate_to is not None and (
        args.accumulate_to < 1 or args.accumulate_to % max(args.mesh, 1)
    ):
        raise TuneError(
            f"`--accumulate-to` (={args.accumulate_to}) must be a positive "
            f"multiple of `--mesh` (={args.mesh}): equal micro-batches split "
            "over the devices add up only to such batches"
        )
    if args.mesh != 1 and (args.verify or args.verify_boundary or args.time):
        raise TuneError(
            f"`--mesh` (={args.mesh}) with --verify, --verify-boundary or --time: "
            "runs for real use one device; tune with --mesh 1 to verify"
        )
    target = resolve_target(args.target, mem_fraction=args.mem_fraction, devices=args.mesh)
    print(f"target: {target.description}", file=sys.stderr)
    results = tune_vgg(
        args.model,
        choices=_choices(args),
        **_model_kwargs(args),
        target=target,
        budget_bytes=None if args.budget is None else parse_bytes("budget", args.budget),
        reserve_bytes=parse_bytes("reserve", args.reserve),
        layout=args.layout,
        max_batch=args.max_batch,
        **({} if args.multiple_of is None else {"multiple_of": args.multiple_of}),
        on_probe=None if args.quiet else _progress,
        cache=None if args.no_cache else ResultCache(args.cache_dir),
    )
    rates = {}
    if args.verify or args.verify_boundary or args.time:
        rates = _verify(results, args, deviceless=target.deviceless)
    _report(results, args, rates)
    if args.explain:
        from autotune.explain import explain_vgg

        for r in results:
            print("\n" + explain_vgg(r, args.model, **_model_kwargs(args)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _keep_cuda_plugin_quiet()
    from autotune.errors import SearchInterrupted

    try:
        return run(args)
    except SearchInterrupted as e:
        if e.results:
            print(
                "\nINTERRUPTED: the last row is partial (its batch fits; the "
                "boundary above it was not reached)",
                file=sys.stderr,
            )
            _report(e.results, args, {})
        else:
            print("autotune: interrupted before any batch was proven to fit", file=sys.stderr)
        return 130
    except ValueError as e:  # TuneError and the models' argument checks
        print(f"autotune: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
