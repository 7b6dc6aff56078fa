"""What the `autotune` command does, once its arguments are parsed.

`run(job)` loads the workloads, lays them out over a mesh if asked, tunes
every row, runs the answers for real if asked, and reports: the comparison
table and the recommendation, each answer with its proof, and the JSON and
PNG files. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune._command.preflight import check_environment, check_output_dir, check_output_path
from autotune._command.verify import WorkloadSource, verify_result
from autotune._compile.records import Probe
from autotune._core.errors import SearchInterrupted, TuneError
from autotune._core.units import format_bytes
from autotune._explain.table import render_breakdown
from autotune._results.cache import ResultCache
from autotune._results.plot import pyplot
from autotune._results.recommend import recommend
from autotune._results.report import write_json
from autotune._results.result import TuneResult, comparison_table
from autotune._targets.registry import Target, get_target
from autotune._tune.compare import compare
from autotune._workloads.layout import accumulation_plan
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

    @property
    def runs_steps(self) -> bool:
        return self.verify or self.verify_boundary or self.time


def run(job: Job) -> int:
    """Runs `job`; returns the exit status (0, or 130 after Ctrl-C)."""
    _check(job)
    if job.compilation_cache_dir:
        import jax

        jax.config.update("jax_compilation_cache_dir", job.compilation_cache_dir)
    workloads = load_workloads(job.spec, job.kwargs)
    target = get_target(job.target, mem_fraction=job.mem_fraction, devices=job.mesh)
    print(f"target: {target.description}", file=sys.stderr)
    if job.runs_steps:
        _check_runnable(workloads, target)
    cache = ResultCache(job.cache_dir) if job.cache else None
    if cache is not None:
        cache.writable()  # an unwritable cache is reported now, and costs nothing else
    passes = REMAT_PASS_SETTINGS[job.xla_remat_pass]
    try:
        results = compare(
            workloads,
            xla_remat_pass=passes,
            target=target,
            budget_bytes=job.budget_bytes,
            reserve_bytes=job.reserve_bytes,
            multiple_of=job.multiple_of,
            max_batch=job.max_batch,
            layout=job.layout,
            compiler_options=job.compiler_options,
            on_probe=None if job.quiet else _progress,
            cache=cache,
            why=job.why,
        )
    except SearchInterrupted as e:
        if not e.results:
            print("autotune: interrupted before any batch was proven to fit", file=sys.stderr)
            return 130
        print(
            "\nINTERRUPTED: the last row is partial (its batch fits; the "
            "boundary above it was not reached)",
            file=sys.stderr,
        )
        _report(e.results, job, {})
        return 130
    rates = {}
    if job.runs_steps:
        sources = [
            WorkloadSource(job.spec, w.label, dict(job.kwargs)) for w in workloads for _ in passes
        ]
        rates = _verify(results, sources, job)
    _report(results, job, rates)
    rows = [w for w in workloads for _ in passes]  # compare's order: workload, then pass
    for w, r in zip(rows, results):
        if w.notes is not None:
            print("\n" + w.notes(r))
    return 0


def _check(job: Job) -> None:
    """Refuse, before any compile, what would fail after the search."""
    for flag, path in (("--json", job.json_path), ("--plot", job.plot_path)):
        if path:
            check_output_path(flag, path)
    if (
        job.json_path
        and job.plot_path
        and Path(job.json_path).resolve() == Path(job.plot_path).resolve()
    ):
        raise TuneError(f"`--json` and `--plot` (={job.plot_path!r}) name the same file")
    if job.plot_path:
        pyplot()
    if job.compilation_cache_dir:
        check_output_dir("--compilation-cache-dir", job.compilation_cache_dir)
    check_environment(job.target)
    if job.accumulate_to is not None and (
        job.accumulate_to < 1 or job.accumulate_to % max(job.mesh, 1)
    ):
        raise TuneError(
            f"`--accumulate-to` (={job.accumulate_to}) must be a positive "
            f"multiple of `--mesh` (={job.mesh}): equal micro-batches split "
            "over the devices add up only to such batches"
        )
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


def _progress(probe: Probe) -> None:
    verb = "refused " if probe.refused else "compiled"
    print(
        f"  {verb} batch {probe.batch:>6}: needs {format_bytes(probe.need_bytes):>9}"
        f"  ({probe.compile_seconds:.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def _verify(
    results: Sequence[TuneResult],
    sources: Sequence[WorkloadSource],
    job: Job,
) -> dict[str, float]:
    """Runs each answer for real; returns the measured samples/s by label."""
    print("\nrun for real (child process, XLA settings as tuned):")
    rates = {}
    for r, source in zip(results, sources):
        checks = verify_result(
            r,
            source,
            boundary=job.verify_boundary,
            timeout_s=job.verify_timeout,
            time_steps=5 if job.time else 0,
        )
        for v in checks:
            print(f"  {r.label}: {v.render(r.budget_bytes)}")
        if checks[0].throughput is not None:
            rates[r.label] = checks[0].throughput.samples_per_second
    return rates


def _report(results: Sequence[TuneResult], job: Job, rates: Mapping[str, float]) -> None:
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
            print(_accumulation_line(r, job.accumulate_to))
    if job.json_path:
        write_json(results, job.json_path, best)
        print(f"\nwrote {job.json_path}")
    if job.plot_path:
        from autotune._results.plot import plot_results

        plot_results(results, job.plot_path)
        print(f"wrote {job.plot_path}")


def _accumulation_line(result: TuneResult, desired: int) -> str:
    steps, micro = accumulation_plan(desired, result.batch, result.data_parallel_size)
    per_device = micro // result.data_parallel_size
    return (
        f"{result.label}: global batch {desired} = {steps} accumulation "
        f"step(s) x micro-batch {micro} ({per_device} per device)"
    )
