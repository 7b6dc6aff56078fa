"""What the `autotune` command does, once its arguments are parsed.

`run(job)` loads the workloads, tunes every row (the library lays them out
over a target's devices), runs the answers for real if asked, and reports:
the comparison table and the recommendation, each answer with its proof,
and the JSON and PNG files. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autotune._command.live import LINE
from autotune._command.preflight import check_environment, check_output_dir, check_output_path
from autotune._command.verify import WorkloadSource, verify_result
from autotune._compile.prober import Probe, start_workers
from autotune._core import checks as check
from autotune._core.errors import TuneError
from autotune._core.signals import raising, received
from autotune._core.units import format_bytes
from autotune._explain.table import render_breakdown
from autotune._plans.loading import load_space
from autotune._plans.plan import RematSpace, parse_plan
from autotune._plans.records import PlanSearch, PlanTrial
from autotune._plans.search import search_plans
from autotune._results.cache import ResultCache, default_cache_dir
from autotune._results.plot import pyplot
from autotune._results.recommend import recommend
from autotune._results.report import write_json
from autotune._results.result import TuneResult, comparison_table
from autotune._targets.registry import Target, get_target
from autotune._tune.compare import compare
from autotune._workloads.layout import accumulation_plan, check_layout
from autotune._workloads.workload import Workload, load_workloads

REMAT_PASS_SETTINGS = {"off": (False,), "on": (True,), "both": (False, True)}


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of the command: what to tune, for what, and what to report."""

    spec: str  # "MODULE:ATTR" of the workloads
    kwargs: Mapping[str, Any]  # passed to a callable ATTR (JSON-ready)
    target: str = "auto"
    mesh: int = 1
    layout: str = "dp"
    mem_fraction: float | None = None
    budget_bytes: int | None = None
    reserve_bytes: int = 0
    multiple_of: int | None = None  # default: lcm(8, mesh)
    max_batch: int = 65536
    xla_remat_pass: str = "off"  # off, on or both
    compiler_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    accumulate_to: int | None = None
    json_path: str | None = None
    plot_path: str | None = None
    compilation_cache_dir: str | None = None
    cache: bool = True
    cache_dir: str | None = None
    verify: bool = False
    verify_boundary: bool = False
    time: bool = False
    verify_timeout: float = 600.0
    quiet: bool = False
    why: bool = False  # explain each answer's peak, buffer by buffer
    stop_at_assignment: bool | None = None  # probes end at buffer assignment; None: the target's
    fit_batch: int | None = None  # the cheapest remat plan that fits this batch
    remat_frontier: bool = False  # max batch against recompute, over remat plans
    remat_plan: str | None = None  # tune this plan: "stage1=nothing_saveable,..."

    def probing(self, target: Target) -> Target:
        """`target`, its probes stopped at buffer assignment or not as asked
        (`stop_at_assignment`); as it is where nothing was asked."""
        if self.stop_at_assignment is None:
            return target
        return dataclasses.replace(target, stop_at_assignment=self.stop_at_assignment)

    @property
    def runs_steps(self) -> bool:
        return self.verify or self.verify_boundary or self.time

    @property
    def plan_flag(self) -> str | None:
        """The option that makes the workload a space of remat plans, if any."""
        if self.fit_batch is not None:
            return "--fit-batch"
        if self.remat_frontier:
            return "--remat-frontier"
        if self.remat_plan is not None:
            return "--remat-plan"
        return None


def run(job: Job) -> int:
    """Runs `job`; returns the exit status: 0; 1 when a file could not be
    written; 128 + the signal's number after Ctrl-C or SIGTERM."""
    check_job(job)
    if job.compilation_cache_dir:
        import jax

        jax.config.update("jax_compilation_cache_dir", job.compilation_cache_dir)
    passes = REMAT_PASS_SETTINGS[job.xla_remat_pass]
    # Imports and backends start with signals held (raising inside an
    # extension's import or start can abort the process); the search takes them.
    target = job.probing(get_target(job.target, mem_fraction=job.mem_fraction, devices=job.mesh))
    if not job.why:  # a dump read for --why compiles in this process
        start_workers(target)  # while the model is built
    space = load_space(job.spec, job.kwargs, job.plan_flag) if job.plan_flag else None
    if space is not None and job.remat_plan is not None:
        workloads = (space.workload(space.plan(parse_plan(job.remat_plan))),)
    elif space is None:
        workloads = load_workloads(job.spec, job.kwargs)
    check_accumulation(job, target.device_count)
    print(f"target: {target.description}", file=sys.stderr)
    if target.stop_at_assignment and not target.stops_at_assignment():
        print(f"probes: compiled in full, not stopped at buffer assignment: "
              f"{target.full_compile_reason()}", file=sys.stderr)  # fmt: skip
    search = None
    try:
        with raising(), LINE:
            if space is not None and job.remat_plan is None:
                search = _search_plans(space, target, job)
                results = search.results
            else:
                results = _tune(workloads, passes, target, job)
    except KeyboardInterrupt as e:  # SearchInterrupted is one
        check_signalled(job, e)
        return _interrupted(getattr(e, "results", ()), job)
    except SystemExit as e:
        raise TuneError(
            f"`--workload` (={job.spec!r}): its code raised SystemExit({e.code!r}) "
            "during the search; a workload must not exit"
        ) from None
    rates: dict[str, float] = {}
    note = "came once the answers were proven: they are whole"
    if job.runs_steps:
        sources = [
            WorkloadSource(job.spec, w.label, dict(job.kwargs)) for w in workloads for _ in passes
        ]
        try:
            with raising():
                _verify(results, sources, job, rates)
        except KeyboardInterrupt:
            note = ""
            print(
                "\nINTERRUPTED during the runs for real: the answers below are proven; "
                "runs not shown above were not made",
                file=sys.stderr,
            )
    if search is not None:
        print()
        print(search.render())
        status = _report(results, job, rates, search)
        return signal_status(status)
    status = _report(results, job, rates)
    rows = [w for w in workloads for _ in passes]  # compare's order: workload, then pass
    for w, r in zip(rows, results):
        if w.notes is not None:
            print("\n" + w.notes(r))
    signalled = received()
    if note and signalled is not None and signalled.signum is not None:
        name = signal.Signals(signalled.signum).name
        print(f"\nautotune: {name} {note}", file=sys.stderr)
    return signal_status(status)


def _tune(
    workloads: Sequence[Workload], passes: tuple[bool, ...], target: Target, job: Job
) -> tuple[TuneResult, ...]:
    """Every row's answer (`compare`), laid out over the target's devices."""
    if job.runs_steps:
        _check_runnable(workloads, target)
    return compare(workloads, xla_remat_pass=passes, why=job.why, **_search_keywords(target, job))


def _search_plans(space: RematSpace, target: Target, job: Job) -> PlanSearch:
    """The plan search the job asks for: `--fit-batch`, or the frontier."""
    if not job.quiet:
        print(f"remat plans of {space.label or job.spec}: blocks {', '.join(space.blocks)}",
              file=sys.stderr)  # fmt: skip
    return search_plans(
        space,
        job.fit_batch,
        on_trial=None if job.quiet else _trial_progress,
        xla_remat_pass=job.xla_remat_pass == "on",
        **_search_keywords(target, job),
    )


def _search_keywords(target: Target, job: Job) -> dict[str, Any]:
    """`find_max_batch`'s keywords every search of the job shares."""
    cache = ResultCache(job.cache_dir) if job.cache else None
    if cache is not None:
        cache.writable()  # an unwritable cache is reported now, and costs nothing else
    return dict(
        target=target,
        budget_bytes=job.budget_bytes,
        reserve_bytes=job.reserve_bytes,
        multiple_of=job.multiple_of,
        max_batch=job.max_batch,
        layout=job.layout,
        compiler_options=job.compiler_options,
        on_probe=None if job.quiet else progress,
        cache=cache,
    )


def check_signalled(job: Job, interrupt: BaseException) -> None:
    """Under the command's signal handling, a KeyboardInterrupt with no
    signal behind it was raised by the workload's own code."""
    signalled = received()
    if signalled is not None and signalled.signum is None:
        raise TuneError(
            f"`--workload` (={job.spec!r}): its code raised KeyboardInterrupt during "
            "the search, and no signal came; a workload must not raise it"
        ) from None


def _interrupted(results: Sequence[TuneResult], job: Job) -> int:
    """Reports what a signal left: every whole row, and a partial last one."""
    if not results:
        print("autotune: interrupted before any batch was proven to fit", file=sys.stderr)
        return signal_status(0, interrupted=True)
    if results[-1].interrupted:
        print(
            "\nINTERRUPTED: the last row is partial (its batch fits; the "
            "boundary above it was not reached)",
            file=sys.stderr,
        )
    else:
        print(
            "\nINTERRUPTED: the rows below are whole; the rows after them were not tuned",
            file=sys.stderr,
        )
    return signal_status(_report(results, job, {}), interrupted=True)


def signal_status(status: int, interrupted: bool = False) -> int:
    """128 + the number of a signal received, else `status`. Without the
    command's signal handling, an interrupt reads as Ctrl-C's 130."""
    signalled = received()
    if signalled is not None and signalled.signum is not None:
        return signalled.exit_status
    return 130 if interrupted else status


def check_job(job: Job) -> None:
    """Refuse, before any compile, what would fail after the search."""
    for flag, path in (("--json", job.json_path), ("--plot", job.plot_path)):
        if path is not None:
            check_output_path(flag, path)
    if job.compilation_cache_dir is not None:
        check_output_dir("--compilation-cache-dir", job.compilation_cache_dir)
    if job.cache_dir is not None and not job.cache_dir:
        raise TuneError("`--cache-dir` (='') must be a directory's path, not empty")
    _check_distinct(job)
    if job.plot_path:
        pyplot()
    check_environment(job.target)
    if job.mem_fraction is not None:  # whatever the target: a value is never ignored in silence
        check.fraction("--mem-fraction", job.mem_fraction)
    check_layout(job.layout, "--layout")
    timeout = check.real("--verify-timeout", job.verify_timeout)
    if timeout <= 0:
        raise TuneError(
            f"`--verify-timeout` (={job.verify_timeout!r}) must be a positive number of seconds"
        )
    check_accumulation(job, max(job.mesh, 1))
    if job.mesh != 1 and job.runs_steps:
        raise TuneError(
            f"`--mesh` (={job.mesh}) with --verify, --verify-boundary or --time: "
            "runs for real use one device; tune with --mesh 1 to verify"
        )
    if job.xla_remat_pass not in REMAT_PASS_SETTINGS:
        raise TuneError(
            f"`--xla-remat-pass` (={job.xla_remat_pass!r}) must be one of "
            f"{', '.join(REMAT_PASS_SETTINGS)}"
        )
    _check_plans(job)


def _check_plans(job: Job) -> None:
    """The plan options, one at a time, and only with what applies to them."""
    given = [
        flag
        for flag, on in (
            ("--fit-batch", job.fit_batch is not None),
            ("--remat-frontier", job.remat_frontier),
            ("--remat-plan", job.remat_plan is not None),
        )
        if on
    ]
    if len(given) > 1:
        raise TuneError(f"`{given[0]}` and `{given[1]}` ask different questions; give one")
    if not given or given[0] == "--remat-plan":
        return
    flag = given[0]
    if job.fit_batch is not None and job.fit_batch < 1:
        raise TuneError(f"`--fit-batch` (={job.fit_batch}) must be a positive batch size")
    for other, on in (
        ("--verify, --verify-boundary or --time", job.runs_steps),
        ("--why", job.why),
        ("--xla-remat-pass both", job.xla_remat_pass == "both"),
    ):
        if on:
            raise TuneError(
                f"`{flag}` with {other}: a plan search tunes one setting and reports its "
                "plans; tune the plan it answers with --remat-plan to use them"
            )


def _check_distinct(job: Job) -> None:
    """Every file and directory the command writes has a path of its own (a
    report written where the cache makes its directory would be lost)."""
    cache_dir = job.cache_dir if job.cache_dir is not None else str(default_cache_dir())
    outputs = [
        ("--json", job.json_path),
        ("--plot", job.plot_path),
        ("--cache-dir", cache_dir if job.cache else None),
        ("--compilation-cache-dir", job.compilation_cache_dir),
    ]
    seen: dict[str, str] = {}
    for flag, path in outputs:
        if path is None:
            continue
        where = os.path.realpath(path)
        if where in seen:
            raise TuneError(
                f"`{seen[where]}` and `{flag}` (={path!r}) name the same path; "
                "each output needs its own"
            )
        seen[where] = flag


def check_accumulation(job: Job, devices: int) -> None:
    """`--accumulate-to` must split evenly over the target's devices: checked
    before the search, so that its report is not lost after it."""
    if job.accumulate_to is not None and (job.accumulate_to < 1 or job.accumulate_to % devices):
        raise TuneError(
            f"`--accumulate-to` (={job.accumulate_to}) must be a positive multiple of "
            f"the target's device count (={devices}): equal micro-batches split over "
            "the devices add up only to such batches"
        )


def _check_runnable(workloads: Sequence[Workload], target: Target) -> None:
    missing = [w.label for w in workloads if w.real_args is None]
    if missing:
        raise TuneError(
            f"--verify, --verify-boundary and --time run the step, and the workload "
            f"{missing[0]!r} cannot build real arguments: give its Workload a `real_args`"
        )
    if target.deviceless:
        raise TuneError(
            f"--verify, --verify-boundary and --time run the step on this machine's "
            f"device, and `--target` (={target.name!r}) is a described target: tune "
            "--target local to run the answer for real"
        )


def progress(probe: Probe) -> None:
    verb = "refused " if probe.refused else "placed  " if probe.placed else "compiled"
    needs = "buffers placed" if probe.placed else "needs"
    LINE.print(
        f"  {verb} batch {probe.batch:>6}: {needs} {format_bytes(probe.need_bytes):>9}"
        f"  ({probe.compile_seconds:.1f} s)"
    )


def _trial_progress(trial: PlanTrial) -> None:
    verdict = "fits" if trial.fits else "does not fit"
    LINE.print(
        f"  plan {trial.plan.text()} at batch {trial.batch}: {verdict} "
        f"({format_bytes(trial.need_bytes)})"
    )


def _verify(
    results: Sequence[TuneResult],
    sources: Sequence[WorkloadSource],
    job: Job,
    rates: dict[str, float],
) -> None:
    """Runs each answer for real; puts the measured samples/s by label in `rates`."""
    print("\nrun for real (child process, XLA settings as tuned):")
    for r, source in zip(results, sources):
        checks = verify_result(
            r,
            source,
            boundary=job.verify_boundary,
            timeout_s=job.verify_timeout,
            time_steps=5 if job.time else 0,
        )
        for i, v in enumerate(checks):
            print(f"  {r.label}: {v.render(r.budget_bytes, boundary=i == 1)}")
        if checks[0].throughput is not None:
            rates[r.label] = checks[0].throughput.samples_per_second


def _report(
    results: Sequence[TuneResult],
    job: Job,
    rates: Mapping[str, float],
    search: PlanSearch | None = None,
) -> int:
    """Prints the results, then writes the files; returns 1 if one was not written."""
    best = recommend(results, rates)
    print()
    print(comparison_table(results))
    if best is not None:
        print(best.render())
    for r in results:
        print()
        print(r.render())
        if r.peak_breakdown is not None:
            print()
            print(render_breakdown(r.peak_breakdown, r.label))
    if job.accumulate_to is not None:
        print()
        for r in results:
            print(accumulation_line(r, job.accumulate_to))

    def report() -> None:
        write_json(results, job.json_path, best, plan_search=search.to_dict() if search else None)

    def plot() -> None:
        from autotune._results.plot import plot_results

        plot_results(results, job.plot_path)

    return write_files(job, report, plot)


def write_files(job: Job, report: Callable[[], None], plot: Callable[[], None]) -> int:
    """Writes the `--json` report and the `--plot` figure the job asks for;
    1 if one was not written, else 0."""
    status = 0
    if job.json_path:
        if written("--json", job.json_path, report):
            print(f"\nwrote {job.json_path}")
        else:
            status = 1
    if job.plot_path:
        if written("--plot", job.plot_path, plot):
            print(f"wrote {job.plot_path}")
        else:
            status = 1
    return status


def written(flag: str, path: str, write: Callable[[], None]) -> bool:
    """Writes one file; a failure is one line naming the path and why (the
    results are printed already)."""
    try:
        write()
    except TuneError as e:
        print(f"autotune: error: `{flag}` was not written: {e}", file=sys.stderr)
        return False
    except OSError as e:
        reason = e.strerror or str(e)
        print(f"autotune: error: `{flag}` (={path!r}) was not written: {reason}", file=sys.stderr)
        return False
    return True


def accumulation_line(result: TuneResult, desired: int) -> str:
    steps, micro = accumulation_plan(desired, result.batch, result.data_parallel_size)
    per_device = micro // result.data_parallel_size
    return (
        f"{result.label}: global batch {desired} = {steps} accumulation "
        f"step(s) x micro-batch {micro} ({per_device} per device)"
    )
