"""The `autotune` command: the largest batch of a train step that fits a target.

It parses its arguments into an `autotune._command.Job` and runs it. With
`--workload MODULE:ATTR` it tunes the user's workload; without, the built-in
VGG16 (`autotune.models`), shaped by the VGG flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

VGG_WORKLOADS = "autotune.models:vgg_workloads"
DEFAULT_REMAT = "none,nothing_saveable"

# The VGG flags: (flag, VGGConfig field, type). Refused beside --workload.
_VGG_FLAGS = (
    ("--model", "model", str, "vgg11, vgg13, vgg16 or vgg19 (default: vgg16)"),
    ("--image-size", "image_size", int, "square input side (default: 224)"),
    ("--channels", "channels", int, "input channels (default: 3)"),
    ("--classes", "num_classes", int, "output classes (default: 1000)"),
    ("--optimizer", "optimizer", str, "sgd (momentum 0.9), adam or adamw (default: sgd)"),
    ("--dtype", "dtype", str, "compute dtype: float32 or bfloat16 (default: float32)"),
    ("--param-dtype", "param_dtype", str, "parameter dtype (default: float32)"),
    (
        "--remat",
        "remat",
        str,
        "comma-separated remat choices, one row each: none or a "
        f"jax.checkpoint_policies name per conv stage (default: {DEFAULT_REMAT})",
    ),
    ("--remat-every", "remat_every", int, "rematerialize every k-th conv stage only"),
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autotune",
        description="Find the largest batch of a train step that fits an accelerator, "
        "from XLA's memory analysis of the compiled step. The search runs nothing "
        "and allocates nothing on the device; only --verify and --time run steps, "
        "in a child process. Without --workload it tunes the built-in VGG16.",
    )
    p.add_argument(
        "--workload",
        default=None,
        metavar="MODULE:ATTR",
        help="your workload: MODULE importable from the current directory (as "
        "python -m finds it); ATTR an autotune.Workload, a (step, args_for_batch) "
        "pair, a list of workloads, or a callable with no required arguments "
        "returning one of those",
    )
    p.add_argument(
        "--workload-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a keyword for a callable ATTR, repeatable: VALUE is read as JSON "
        "(blocks=12, remat='[\"none\"]'), else taken as a string",
    )
    vgg = p.add_argument_group("the built-in VGG (refused with --workload)")
    for flag, field, kind, text in _VGG_FLAGS:
        vgg.add_argument(flag, dest=field, type=kind, default=None, help=text)
    vgg.add_argument(
        "--explain",
        action="store_true",
        help="print the cs231n case study's analytical breakdown beside XLA's numbers",
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
        "--xla-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an XLA option for every compile, e.g. xla_gpu_enable_triton_gemm=false "
        "(repeatable; true/false, integers and numbers are passed as such); train "
        "with the same options",
    )
    p.add_argument(
        "--target",
        default="auto",
        help="auto (the local accelerator, else a described "
        "h100-sxm-80gb), local, a described GPU name, a Cloud TPU slice "
        "(v5litepod-4, v5e:2x2: all its devices, batches global), or a target "
        "config file dumped by scripts/dump_target_config.py",
    )
    p.add_argument(
        "--list-targets",
        action="store_true",
        help="list the described GPUs and TPU slices with one device's memory, and exit",
    )
    p.add_argument(
        "--mesh",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel devices: N described GPUs of --target, or "
        "the first N local devices; the batch is then global and "
        "split over them, memory is per device. Arguments without a sharding "
        "of their own are placed by --layout (those whose shape follows the "
        "batch are split); arguments with one keep it (default: 1)",
    )
    p.add_argument(
        "--layout",
        default="dp",
        help="with --mesh: dp (arguments that do not follow the batch are "
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
        "compare its peak with the prediction (the workload must build real "
        "arguments)",
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
    p.add_argument(
        "--why",
        action="store_true",
        help="after each answer, what is live at its peak: every buffer by kind "
        "(parameter, optimizer state, input batch, activation, gradient, "
        "temporary) and by module, from XLA's dump of the compile at the answer "
        "(one more compile on a cached answer); the JSON rows get peak_breakdown",
    )
    return p


def _keep_cuda_plugin_quiet() -> None:
    """Without a GPU, the installed CUDA plugin fails to start and says so at
    length, and libtpu without a TPU prints warnings; described targets need
    neither to start."""
    from autotune._tpu_targets import accelerators_idle

    if os.environ.get("JAX_PLATFORMS") or not accelerators_idle():
        return
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:  # read the variable at import: tell it directly
        sys.modules["jax"].config.update("jax_platforms", "cpu")


def _workload_source(args: argparse.Namespace) -> tuple[str, dict, object]:
    """(spec, kwargs, explain) of the workloads to tune."""
    from autotune._errors import TuneError

    given = [flag for flag, field, _, _ in _VGG_FLAGS if getattr(args, field) is not None]
    if args.explain:
        given.append("--explain")
    if args.workload is not None:
        if given:
            raise TuneError(
                f"`{given[0]}` is a flag of the built-in VGG, and `--workload` "
                f"(={args.workload!r}) tunes your own step; drop {', '.join(given)}"
            )
        return args.workload, _workload_kwargs(args.workload_arg), None
    if args.workload_arg:
        raise TuneError(
            f"`--workload-arg` (={args.workload_arg[0]!r}) is a keyword for the callable "
            "that --workload names; give --workload too"
        )
    from autotune.models import VGGConfig, explain_vgg

    fields = {field: getattr(args, field) for _, field, _, _ in _VGG_FLAGS}
    remat = fields.pop("remat") or DEFAULT_REMAT
    choices = tuple(r.strip() for r in remat.split(",") if r.strip())
    if not choices:
        raise TuneError(f"`--remat` (={remat!r}) must name at least one remat choice")
    config = VGGConfig(remat=choices, **{k: v for k, v in fields.items() if v is not None})
    explain = (lambda result: explain_vgg(result, config)) if args.explain else None
    return VGG_WORKLOADS, config.to_dict(), explain


def _pairs(
    flag: str, items: Sequence[str], valid: Callable[[str], bool], rule: str
) -> dict[str, str]:
    """`NAME=VALUE` items of a repeatable flag, each name once."""
    from autotune._errors import TuneError

    pairs: dict[str, str] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not valid(name):
            raise TuneError(f"`{flag}` (={item!r}) must be NAME=VALUE, {rule}")
        if name in pairs:
            raise TuneError(f"`{flag}` (={item!r}) gives {name!r} a second time")
        pairs[name] = text.strip()
    return pairs


def parse_xla_options(items: Sequence[str]) -> dict[str, bool | int | float | str]:
    """`--xla-option NAME=VALUE` items as `compile(compiler_options=...)` takes
    them: XLA wants each value in its own type (a bool, not "false")."""
    pairs = _pairs(
        "--xla-option",
        items,
        lambda name: name.startswith("xla_"),
        "NAME an XLA option's name, e.g. xla_gpu_enable_triton_gemm=false",
    )
    return {name: _option_value(text) for name, text in pairs.items()}


def _option_value(text: str) -> bool | int | float | str:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _workload_kwargs(items: Sequence[str]) -> dict[str, object]:
    """`--workload-arg NAME=VALUE` items as keywords; VALUE is JSON, else a string."""
    pairs = _pairs("--workload-arg", items, str.isidentifier, "NAME a Python identifier")
    return {name: _json_or_text(text) for name, text in pairs.items()}


def _json_or_text(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    from autotune._signals import as_interrupts

    # Signals are the command's from here on: recorded while JAX is imported
    # (raising there can abort the process), raised where the search can
    # take them (see autotune._signals).
    with as_interrupts(raise_at_once=False) as received:
        try:
            status = _main(argv)
        except KeyboardInterrupt:  # the command's own handling missed it
            print("autotune: interrupted before any batch was proven to fit", file=sys.stderr)
            status = received.exit_status
    return received.exit_status if received.signum is not None else status


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.list_targets:
        from autotune._target_list import render_target_list

        print(render_target_list())
        return 0
    _keep_cuda_plugin_quiet()
    from autotune._command import Job, run
    from autotune._signals import received
    from autotune._units import parse_bytes

    signalled = received()
    if signalled is not None and signalled.signum is not None:  # during the import
        print("autotune: interrupted before any batch was proven to fit", file=sys.stderr)
        return signalled.exit_status
    try:
        spec, kwargs, explain = _workload_source(args)
        job = Job(
            spec=spec,
            kwargs=kwargs,
            target=args.target,
            mesh=args.mesh,
            layout=args.layout,
            mem_fraction=args.mem_fraction,
            budget_bytes=None if args.budget is None else parse_bytes("--budget", args.budget),
            reserve_bytes=parse_bytes("--reserve", args.reserve),
            multiple_of=args.multiple_of,
            max_batch=args.max_batch,
            xla_remat_pass=args.xla_remat_pass,
            compiler_options=parse_xla_options(args.xla_option),
            accumulate_to=args.accumulate_to,
            json_path=args.json,
            plot_path=args.plot,
            compilation_cache_dir=args.compilation_cache_dir,
            cache=not args.no_cache,
            cache_dir=args.cache_dir,
            verify=args.verify,
            verify_boundary=args.verify_boundary,
            time=args.time,
            verify_timeout=args.verify_timeout,
            quiet=args.quiet,
            why=args.why,
            explain=explain,
        )
        return run(job)
    except ValueError as e:  # TuneError and the models' argument checks
        print(f"autotune: error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The console script: `main`, then an exit that leaves compiles still in
    flight after Ctrl-C or SIGTERM without unwinding them."""
    status = main()
    from autotune._signals import leave

    probe = sys.modules.get("autotune._probe")  # not imported: nothing compiled
    leave(status, probe is not None and probe.compiles_in_flight())


if __name__ == "__main__":
    entry()
