"""What the command does with a list of targets (`--target a,b,c`): every
row on every target, reported in one table with each target's bound on
samples/s, then each answer with its proof."""

from __future__ import annotations

import sys

from autotune._command.live import LINE
from autotune._command.preflight import check_gpu_client_env
from autotune._command.run import (
    REMAT_PASS_SETTINGS,
    Job,
    accumulation_line,
    check_accumulation,
    check_job,
    check_signalled,
    progress,
    run,
    signal_status,
    write_files,
)
from autotune._compile.prober import start_workers
from autotune._core.errors import TuneError
from autotune._core.signals import raising
from autotune._explain.table import render_breakdown
from autotune._results.cache import ResultCache
from autotune._results.comparison import TargetComparison
from autotune._results.report import write_json
from autotune._targets.interface import Target
from autotune._targets.target_list import get_targets, split_target_list
from autotune._tune.targets import compare_targets
from autotune._workloads.workload import load_workloads


def run_job(job: Job) -> int:
    """Runs `job`: on its one target (`autotune._command.run.run`), or on
    each target of its list."""
    names = split_target_list(job.target)
    return run(job) if names is None else run_targets(job, names)


def run_targets(job: Job, names: tuple[str, ...]) -> int:
    """Runs `job` on each of `names`; the exit status as `run`'s."""
    _check_list(job, names)
    check_job(job)
    if any(name in ("local", "auto") for name in names):
        check_gpu_client_env()
    targets = get_targets(names, name="--target", mem_fraction=job.mem_fraction)
    targets = tuple(job.probing(t) for t in targets)
    if not job.why:
        start_workers(targets[0])  # while the model is built; the others' when they come
    workloads = load_workloads(job.spec, job.kwargs)
    for target in targets:
        check_accumulation(job, target.device_count)
    cache = ResultCache(job.cache_dir) if job.cache else None
    if cache is not None:
        cache.writable()
    try:
        with raising(), LINE:
            comparison = compare_targets(
                workloads,
                targets,
                xla_remat_pass=REMAT_PASS_SETTINGS[job.xla_remat_pass],
                on_target=_announce,
                budget_bytes=job.budget_bytes,
                reserve_bytes=job.reserve_bytes,
                multiple_of=job.multiple_of,
                max_batch=job.max_batch,
                layout=job.layout,
                compiler_options=job.compiler_options,
                on_probe=None if job.quiet else progress,
                cache=cache,
                why=job.why,
            )
    except KeyboardInterrupt as e:  # SearchInterrupted is one
        check_signalled(job, e)
        done = getattr(e, "comparison", None)
        if done is None or not done.rows:
            print("autotune: interrupted before any batch was proven to fit", file=sys.stderr)
            return signal_status(0, interrupted=True)
        print(
            "\nINTERRUPTED: the rows below are those tuned before it (the last may be partial)",
            file=sys.stderr,
        )
        return signal_status(_report(done, job), interrupted=True)
    except SystemExit as e:
        raise TuneError(
            f"`--workload` (={job.spec!r}): its code raised SystemExit({e.code!r}) "
            "during the search; a workload must not exit"
        ) from None
    return signal_status(_report(comparison, job))


def _check_list(job: Job, names: tuple[str, ...]) -> None:
    """Refuse what cannot apply to a list of targets."""
    if job.runs_steps:
        raise TuneError(
            f"`--target` (={job.target!r}) lists several targets, and --verify, "
            "--verify-boundary and --time run one answer on this machine's device: "
            "give them one target, local"
        )
    if job.plan_flag is not None:
        raise TuneError(
            f"`{job.plan_flag}` with a list of targets (`--target` = {job.target!r}): a "
            "search over remat plans tunes one target; run it once per target"
        )
    if job.mesh != 1:
        raise TuneError(
            f"`--mesh` (={job.mesh}) with a list of targets (`--target` = {job.target!r}): "
            "name each target's devices in the list instead (8xh100-sxm-80gb, v5litepod-8)"
        )


def _announce(target: Target) -> None:
    print(f"target: {target.description}", file=sys.stderr)


def _report(comparison: TargetComparison, job: Job) -> int:
    """Prints the table and each answer, then writes the files; returns 1 if
    one was not written."""
    results = comparison.results
    print()
    print(comparison.render())
    for r in results:
        print()
        print(r.render())
        if r.peak_breakdown is not None:
            print()
            print(render_breakdown(r.peak_breakdown, r.label))
    if job.accumulate_to is not None:
        print()
        for r in results:
            print(f"{r.target}: {accumulation_line(r, job.accumulate_to)}")

    def report() -> None:
        write_json(results, job.json_path, bounds=comparison.bounds)

    def plot() -> None:
        from autotune._results.plot import plot_comparison

        plot_comparison(comparison, job.plot_path)

    return write_files(job, report, plot)
