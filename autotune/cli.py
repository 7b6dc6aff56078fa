"""The `autotune` command: the largest batch of a train step that fits a target.

It parses its arguments into an `autotune._command.run.Job` and runs it. The
workload is `--workload MODULE:ATTR`, by default `DEFAULT_WORKLOAD`. The
command knows no workload: the flags of one (`WorkloadFlag`s its ATTR
carries) are shorthand for its `--workload-arg`s, added to the parser when
the arguments hold what the command's own flags do not.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autotune._workloads.workload import WorkloadFlag

DEFAULT_WORKLOAD = "autotune.models:vgg_workloads"
_HELP = ("-h", "--help")


def _parser(flags: Sequence[WorkloadFlag] = (), spec: str = "", add_help: bool = True):
    """The command's own flags, and the flags of the workload `spec` (`flags`)."""
    p = argparse.ArgumentParser(
        prog="autotune",
        add_help=add_help,
        # A workload's own flags join the parser late: none may be taken for
        # a longer flag of the command's that it is a prefix of.
        allow_abbrev=False,
        description="Find the largest batch of a train step that fits an accelerator, "
        "from XLA's memory analysis of the compiled step. The search runs nothing "
        "and allocates nothing on the device; only --verify and --time run steps, "
        f"in a child process. Without --workload it tunes {DEFAULT_WORKLOAD}.",
    )
    p.add_argument(
        "--workload",
        default=None,
        metavar="MODULE:ATTR",
        help="the workload: MODULE importable from the current directory (as "
        "python -m finds it); ATTR an autotune.Workload, a (step, args_for_batch) "
        "pair, a list of workloads, or a callable with no required arguments "
        f"returning one of those (default: {DEFAULT_WORKLOAD})",
    )
    p.add_argument(
        "--workload-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a keyword for a callable ATTR, repeatable: VALUE is read as JSON "
        "(blocks=12, remat='[\"none\"]'), else taken as a string",
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
        "config file dumped by scripts/dump_target_config.py; a comma-separated "
        "list (h100-sxm-80gb,a100-40gb,v5e:1x1) tunes on each, in one table with "
        "an upper bound on samples/s from each target's peak FLOP/s",
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
        help="bytes the step may use, e.g. 30GB or 32212254720; wins over the target's "
        "limit (per device, on each target of a list)",
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
    p.add_argument(
        "--stop-at-assignment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="end each compile once XLA has assigned its buffers, in a worker process: "
        "the default for a described GPU or TPU, where it gives the same bytes in a fraction "
        "of the time (a TPU's answer is then compiled in full); the local device compiles "
        "in full unless asked. --no-stop-at-assignment compiles every probe in full, in this "
        "process. See docs/search.md",
    )
    plans = p.add_argument_group(
        "remat plans (a workload that names its blocks: an autotune.RematSpace, or an "
        "ATTR carrying remat_space)"
    )
    plans.add_argument(
        "--fit-batch",
        type=int,
        default=None,
        metavar="N",
        help="the remat plan of least recompute found whose max batch is at least N, "
        "at its own proven max batch; the compiles at N that decided it are listed",
    )
    plans.add_argument(
        "--remat-frontier",
        action="store_true",
        help="max batch against recompute: for each distinct max batch found, the plan "
        "of least recompute found, each proven",
    )
    plans.add_argument(
        "--remat-plan",
        default=None,
        metavar="PLAN",
        help="tune one plan: BLOCK=POLICY pairs, comma-separated "
        "(stage1=nothing_saveable); blocks not named recompute nothing",
    )
    if flags:
        own = p.add_argument_group(f"flags of {spec} (shorthand for --workload-arg)")
        for flag in flags:
            kind = {"action": "store_const", "const": None} if flag.parse is None else {}
            own.add_argument(
                flag.flag, dest=_dest(flag), default=_NOT_GIVEN, metavar=flag.metavar,
                help=flag.help, **kind,
            )  # fmt: skip
    return p


_NOT_GIVEN = object()


def help_text(spec: str = DEFAULT_WORKLOAD) -> str:
    """`autotune --help` as the parser writes it, with the flags of the
    workload `spec` (the command's reference)."""
    from autotune._workloads.workload import workload_flags

    return _parser(workload_flags(spec), spec).format_help().rstrip()


def _dest(flag: WorkloadFlag) -> str:
    return f"workload flag {flag.keyword}"


def _parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, tuple[WorkloadFlag, ...]]:
    """The arguments, and the flags of the workload they name that were added
    to the parser (none if the command's own flags took every argument)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    known, rest = _parser(add_help=False).parse_known_args(argv)
    if not rest:
        return known, ()
    from autotune._core.errors import TuneError
    from autotune._workloads.workload import workload_flags

    spec = known.workload or DEFAULT_WORKLOAD
    flags = workload_flags(spec)
    unknown = {item.partition("=")[0] for item in rest if item.startswith("--")}
    unknown -= {f.flag for f in flags} | set(_HELP)
    if spec != DEFAULT_WORKLOAD and unknown:
        default = [f.flag for f in workload_flags(DEFAULT_WORKLOAD) if f.flag in unknown]
        if default:
            raise TuneError(
                f"`{default[0]}` is a flag of the default workload ({DEFAULT_WORKLOAD}), "
                f"and `--workload` (={spec!r}) tunes another: give that workload's keywords "
                "with --workload-arg NAME=VALUE"
            )
    try:
        return _parser(flags, spec).parse_args(argv), flags
    except argparse.ArgumentError as e:  # a workload flag that is one of the command's
        raise TuneError(
            f"`--workload` (={spec!r}): its flags clash with the command's: {e}"
        ) from None


def _workload_source(
    args: argparse.Namespace, flags: Sequence[WorkloadFlag]
) -> tuple[str, dict[str, object]]:
    """(spec, keywords) of the workloads to tune: `--workload-arg`s and the
    workload's own flags, each keyword given once."""
    from autotune._core.errors import TuneError

    kwargs = _workload_kwargs(args.workload_arg)
    for flag in flags:
        text = getattr(args, _dest(flag))
        if text is _NOT_GIVEN:
            continue
        if flag.keyword in kwargs:
            raise TuneError(
                f"`{flag.flag}` gives {flag.keyword!r}, which a `--workload-arg` gives too"
            )
        kwargs[flag.keyword] = flag.value(text)
    return args.workload or DEFAULT_WORKLOAD, kwargs


def _pairs(
    flag: str, items: Sequence[str], valid: Callable[[str], bool], rule: str
) -> dict[str, str]:
    """`NAME=VALUE` items of a repeatable flag, each name once."""
    from autotune._core.errors import TuneError

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
    from autotune._core.signals import as_interrupts

    # Signals are the command's from here on: recorded while JAX is imported
    # (raising there can abort the process), raised where the search can
    # take them (see autotune._core.signals).
    with as_interrupts(raise_at_once=False) as received:
        try:
            status = _main(argv)
        except KeyboardInterrupt:  # the command's own handling missed it
            print("autotune: interrupted before any batch was proven to fit", file=sys.stderr)
            status = received.exit_status
    return received.exit_status if received.signum is not None else status


def _main(argv: Sequence[str] | None) -> int:
    try:
        args, flags = _parse(argv)
    except ValueError as e:  # a workload that cannot be loaded, or whose flags clash
        print(f"autotune: error: {e}", file=sys.stderr)
        return 2
    if args.list_targets:
        from autotune._targets.listing import render_target_list

        print(render_target_list())
        return 0
    from autotune._targets.plugins import quiet_start

    quiet_start()
    from autotune._command.run import Job
    from autotune._command.targets import run_job
    from autotune._core.signals import received
    from autotune._core.units import parse_bytes

    signalled = received()
    if signalled is not None and signalled.signum is not None:  # during the import
        print("autotune: interrupted before any batch was proven to fit", file=sys.stderr)
        return signalled.exit_status
    try:
        spec, kwargs = _workload_source(args, flags)
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
            stop_at_assignment=args.stop_at_assignment,
            fit_batch=args.fit_batch,
            remat_frontier=args.remat_frontier,
            remat_plan=args.remat_plan,
        )
        return run_job(job)
    except ValueError as e:  # TuneError and the models' argument checks
        print(f"autotune: error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The console script: `main`, then an exit that leaves compiles still in
    flight after Ctrl-C or SIGTERM without unwinding them."""
    status = main()
    from autotune._core.signals import leave

    prober = sys.modules.get("autotune._compile.prober")  # not imported: nothing compiled
    leave(status, prober is not None and prober.compiles_in_flight())


if __name__ == "__main__":
    entry()
