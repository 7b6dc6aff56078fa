"""`find_max_batch`: the largest batch of a user's step that fits a target."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jaxlib

from autotune import _checks as check
from autotune._budget import Budget, resolve_budget
from autotune._cache import ResultCache, cache_key, program_hash
from autotune._errors import SearchInterrupted, TuneError
from autotune._estimate import Estimate
from autotune._layout import LAYOUTS, device_bytes
from autotune._probe import CompilerOptions, Probe, Prober, compile_failures_text
from autotune._result import TuneResult
from autotune._search import calibration_batch, check_grid, first_batch, search
from autotune._targets import Target, get_target
from autotune._tpu_search import search_compiles
from autotune._tpu_tuning import on_slice, outcome, tpu_budget
from autotune._unfused import MARGIN
from autotune._units import format_bytes
from autotune._why import breakdown_at
from autotune._workload import Workload, as_workload

_UNSET: Any = object()


def _interrupts_as_searches(tune: Callable[..., TuneResult]) -> Callable[..., TuneResult]:
    """A Ctrl-C before the search began (tracing, the cache's key) raised as
    during one: `SearchInterrupted`, with nothing proven."""

    @functools.wraps(tune)
    def wrapped(*args: Any, **kwargs: Any) -> TuneResult:
        try:
            return tune(*args, **kwargs)
        except SearchInterrupted:
            raise
        except KeyboardInterrupt:
            raise SearchInterrupted() from None

    return wrapped


@_interrupts_as_searches
def find_max_batch(
    step: Workload | Callable[..., Any],
    args_for_batch: Callable[[int], Sequence[Any]] | None = None,
    *,
    target: str | Target = "local",
    budget_bytes: int | None = None,
    reserve_bytes: int = 0,
    multiple_of: int | None = None,
    max_batch: int = 65536,
    donate_argnums: int | Sequence[int] = _UNSET,
    xla_remat_pass: bool = False,
    compiler_options: CompilerOptions | None = None,
    estimate: Estimate | None = _UNSET,
    on_probe: Callable[[Probe], None] | None = None,
    label: str = "",
    cache: ResultCache | None = None,
    data_parallel_size: int | None = None,
    layout: str = "dp",
    workers: int | None = None,
    why: bool = False,
) -> TuneResult:
    """Largest batch whose compiled step fits the target's memory.

    `find_max_batch(workload, ...)` tunes an `autotune.Workload`;
    `find_max_batch(step, args_for_batch, ...)` is the same with the
    workload's fields as arguments.

    Args:
        step: a `Workload`, or the train step, plain or jitted (a jitted step
            keeps its own donation unless `donate_argnums` is given).
        args_for_batch: batch size -> the step's positional arguments as
            pytrees of `jax.ShapeDtypeStruct`. Nothing is allocated. Only
            with a step, not a workload.
        target: "local" (the default device), a described GPU name from
            `autotune.known_targets()`, a Cloud TPU slice ("v5e:1x1",
            "v5litepod-4"), a target config file, or a `Target`.
        budget_bytes: bytes the step may use; wins over the target's limit
            (on a TPU it becomes the compiler's limit, in whole MiB).
        reserve_bytes: bytes kept free for other live buffers.
        multiple_of: candidate batches are its multiples (default: the
            least common multiple of 8 and `data_parallel_size`).
        max_batch: the largest candidate.
        donate_argnums: arguments the step donates (with a step only).
        xla_remat_pass: keep XLA's automatic rematerialization pass on. Off
            by default: need(batch) is then affine and the answer holds on
            any device with the same memory; on, the answer is larger but
            holds only where the pass aims at the same limit.
        compiler_options: extra XLA options for every compile, each value
            of the type XLA takes (`{"xla_gpu_enable_triton_gemm": False}`).
        estimate: an analytical estimate; it places the first probes (with
            a step only).
        on_probe: called after each compile (progress).
        label: names the result (a model or remat choice); default: the
            workload's label.
        cache: answer from, and store into, this cache (a hit compiles
            nothing; see `autotune.ResultCache` for what the key covers).
        data_parallel_size: devices the batch is split over (a mesh's data
            axis). Batches are then global, multiples of it (so must
            `multiple_of` be), and every byte count is one device's.
            Default: 1, or a TPU slice's device count.
        layout: how a TPU slice places arguments without a sharding of
            their own, "dp" or "fsdp" (see `autotune._layout`); a slice is
            a mesh over all its devices, so batches are then global.
        workers: compiles at once (default: one on a local accelerator,
            else as many as the first compile shows to pay on this
            machine's cores, see `autotune._concurrency`; a TPU target's
            compiles run one at a time).
        why: also explain the answer's peak (`TuneResult.peak_breakdown`):
            the search dumps its compiles and the breakdown is read from the
            one at the answer; a cached answer costs one more compile.

    Returns:
        A `TuneResult`: the batch, its peak, the budget, the headroom, and
        every compile made.

    Raises:
        TuneError: bad input, or a step that does not fit at the smallest
            candidate (with its breakdown).
        SearchInterrupted: on Ctrl-C; its `results` hold the largest batch
            proven to fit so far, marked `interrupted`.
    """
    workload = _workload(step, args_for_batch, donate_argnums, estimate)
    label = check.string("label", label) or workload.label
    start = time.perf_counter()
    check.boolean("xla_remat_pass", xla_remat_pass)
    check.callable_or_none("on_probe", on_probe)
    check.instance_or_none("cache", cache, ResultCache, "an autotune.ResultCache")
    check.instance_or_none("compiler_options", compiler_options, Mapping, "a mapping")
    if layout not in LAYOUTS:
        raise TuneError(f"`layout` (={check.shown(layout)}) must be one of {', '.join(LAYOUTS)}")
    tgt = target if isinstance(target, Target) else get_target(target)
    tpu = tgt.platform == "tpu"
    options = dict(compiler_options or {})
    if tpu:
        budget, aim = tpu_budget(tgt, budget_bytes, reserve_bytes)
        options.update(aim)
        workload, data_parallel_size = on_slice(workload, tgt, layout, data_parallel_size)
    else:
        budget = resolve_budget(
            budget_bytes=budget_bytes,
            reserve_bytes=reserve_bytes,
            target_limit=tgt.default_budget_bytes,
            target_source=tgt.budget_source,
            platform=tgt.platform,
        )
    data_parallel_size = check.integer(
        "data_parallel_size", 1 if data_parallel_size is None else data_parallel_size, minimum=1
    )
    if multiple_of is None:
        multiple_of = math.lcm(8, data_parallel_size)
    multiple_of, max_batch = check_grid(multiple_of, max_batch)
    _check_data_parallel(data_parallel_size, multiple_of)
    estimate = workload.estimate
    hint = estimate if estimate and estimate.per_example_bytes > 0 else None
    prober = Prober.for_target(
        workload,
        tgt,
        xla_remat_pass=xla_remat_pass,
        compiler_options=options,
        on_probe=on_probe,
        workers=_workers(workers, tgt),
        keep_dumps=why,
        dump_first=hint is None and not tpu and "xla_dump_to" not in options,
    )
    _check_arguments_fit(prober, multiple_of, budget)
    settings = xla_settings(xla_remat_pass, options)
    guess = hint.max_batch(budget.bytes) if hint else None
    split = hint is None and not tpu
    top = max_batch // multiple_of * multiple_of
    first = first_batch(multiple_of, top, guess, split)
    key = None
    if cache is not None:
        grid = {"multiple_of": multiple_of, "max_batch": max_batch,
                "data_parallel_size": data_parallel_size}  # fmt: skip
        key = _key(prober.lower(first).as_text(), tgt, budget, {**grid, **settings})
        asked = dict(budget=budget, target=tgt.name, target_description=tgt.description,
                     xla_settings=settings, interrupted=False, **grid)  # fmt: skip
        hit = _cache_hit(cache, key, prober, asked)
        if hit is not None:
            hit = dataclasses.replace(
                hit, label=label, from_cache=True, seconds=time.perf_counter() - start
            )
            return _explained(hit, prober) if why else hit
    where = dict(
        multiple_of=multiple_of,
        max_batch=max_batch,
        guess=guess,
        per_example=hint.per_example_bytes if hint else None,
    )
    if tpu:
        bracket = search_compiles(outcome(prober), budget.bytes, **where)
    else:
        fixed = hint.fixed_bytes if hint else None
        bracket = search(
            prober.measure,
            budget.bytes,
            fixed=fixed,
            split=prober.fixed_bytes if split else None,
            room=_room(prober, first, budget.bytes, multiple_of, top) if split else None,
            width=lambda: prober.workers,
            **where,
        )
    if bracket.interrupted:  # the probes may hold a compile the bracket did not see
        fits = [p for p in prober.probes.values() if _fits(p, budget, tpu)]
        bracket = dataclasses.replace(
            bracket, lo=max((p.batch for p in fits), default=None), hi=None
        )
        if bracket.lo is None:
            raise SearchInterrupted()
    if bracket.lo is None:
        raise TuneError(_no_answer(prober, budget, options))
    answer = prober.probes[bracket.lo]
    nxt = prober.probes[bracket.hi] if bracket.hi is not None else None
    per_example = _slope(answer, [p for p in prober.probes.values() if not p.refused])
    fixed_at_answer = prober.fixed_bytes(answer.batch) if prober.compiles == 1 else None
    if fixed_at_answer is not None:  # one compile: its split gives the slope
        per_example = round((answer.need_bytes - fixed_at_answer) / answer.batch)
    peak = answer.need_bytes + (answer.code_bytes if tpu else 0)
    result = TuneResult(
        label=label,
        batch=answer.batch,
        peak_bytes=peak,
        compiler_fits=tpu,
        code_in_peak_bytes=answer.code_bytes if tpu else 0,
        budget=budget,
        next_batch=nxt.batch if nxt else None,
        next_peak_bytes=nxt.need_bytes if nxt else None,
        fixed_bytes=peak - per_example * answer.batch,
        per_example_bytes=per_example,
        estimate_per_example_bytes=estimate.per_example_bytes if estimate else None,
        **_flops_per_example(prober, answer, data_parallel_size),
        compiles=prober.compiles,
        seconds=time.perf_counter() - start,
        target=tgt.name,
        target_description=tgt.description,
        xla_settings=settings,
        multiple_of=multiple_of,
        max_batch=max_batch,
        probes=prober.compiled(),
        interrupted=bracket.interrupted,
        data_parallel_size=data_parallel_size,
        failures=tuple(prober.failures[b] for b in prober.order if b in prober.failures),
        contradictions=bracket.contradictions,
    )
    if result.interrupted:
        raise SearchInterrupted((result,))
    if cache is not None:
        cache.put(key, result, _proof(prober, result))
    return _explained(result, prober) if why else result


def _fits(probe: Probe, budget: Budget, tpu: bool) -> bool:
    """Whether a probe fits: on a TPU, it compiled (the compiler fits it)."""
    return not probe.refused if tpu else probe.need_bytes <= budget.bytes


def _explained(result: TuneResult, prober: Prober) -> TuneResult:
    return dataclasses.replace(result, peak_breakdown=breakdown_at(prober, result.batch))


def _workers(workers: int | None, target: Target) -> int | None:
    """Compiles at once: as given; one on a local accelerator (its compiles
    run kernels to pick algorithms, on the device's memory); else None, as
    many as the first compile shows to pay (`autotune._concurrency`)."""
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise TuneError(f"`workers` (={workers!r}) must be a positive integer or None")
        return workers
    if not target.deviceless and target.platform != "cpu":
        return 1
    return None


def _cache_hit(
    cache: ResultCache, key: str, prober: Prober, asked: Mapping[str, Any]
) -> TuneResult | None:
    """The cached answer to the question `asked`, if the programs at its
    batch and at the next candidate are still those its proof compiled."""
    entry = cache.get(key, expect=asked)
    if entry is None:
        return None
    result, proof = entry
    if _proof(prober, result) != proof:
        return None
    return result


def _proof(prober: Prober, result: TuneResult) -> dict[str, str]:
    """Hashes of the programs the answer rests on: at its batch and the next."""
    batches = [result.batch] + ([result.next_batch] if result.next_batch is not None else [])
    return {str(b): program_hash(prober.lower(b).as_text()) for b in batches}


def _workload(step: Any, args_for_batch: Any, donate_argnums: Any, estimate: Any) -> Workload:
    """The workload to tune, from a `Workload` or a step and its fields."""
    if isinstance(step, Workload):
        given = [
            name
            for name, value in (
                ("args_for_batch", args_for_batch),
                ("donate_argnums", donate_argnums),
                ("estimate", estimate),
            )
            if value is not None and value is not _UNSET
        ]
        if given:
            raise TuneError(
                f"`step` is a Workload, and {', '.join(f'`{g}`' for g in given)} "
                "given beside it; give them in the Workload instead"
            )
        return step
    if args_for_batch is None:
        raise TuneError(
            f"`args_for_batch` (=None) is required with a step (={step!r}); or pass "
            "an autotune.Workload"
        )
    return Workload(
        step,
        args_for_batch,
        donate_argnums=() if donate_argnums is _UNSET else donate_argnums,
        estimate=None if estimate is _UNSET else estimate,
    )


def _no_answer(prober: Prober, budget: Budget, options: Mapping[str, Any]) -> str:
    """Why no batch is an answer: none fits, or none compiles."""
    if prober.probes:
        return _does_not_fit(min(prober.probes.values(), key=lambda p: p.batch), budget)
    return compile_failures_text(tuple(prober.failures.values()), options)


def _key(program: str, target: Target, budget: Budget, fields: Mapping[str, Any]) -> str:
    """The cache key: the program lowered at the search's first batch, and the rest."""
    return cache_key(
        program,
        {"target": target.name, "target_description": target.description,
         "target_config": target.target_config, "budget": budget, **fields},
    )  # fmt: skip


def _flops_per_example(prober: Prober, answer: Probe, data_parallel_size: int) -> dict[str, Any]:
    if answer.flops is not None:  # one device's program: its share of the batch
        return {
            "flops_per_example": answer.flops * data_parallel_size / answer.batch,
            "flops_source": "compiled program's cost analysis",
        }
    flops = prober.flops(answer.batch)
    if flops is not None:
        return {
            "flops_per_example": flops / answer.batch,
            "flops_source": "lowered program on the host, before XLA's "
            "optimizations; the target's has no cost analysis",
        }
    return {
        "flops_per_example": None,
        "flops_source": "unavailable: no cost analysis on this backend",
    }


def _slope(answer: Probe, compiled: Sequence[Probe]) -> int:
    """Bytes per example between the answer and the compile farthest below it
    (above it, when the answer is the smallest); 0 with no other compile."""
    others = [p for p in compiled if p.batch != answer.batch]
    if not others:
        return 0
    below = [p for p in others if p.batch < answer.batch]
    other = min(below, key=lambda p: p.batch) if below else max(others, key=lambda p: p.batch)
    return round((answer.need_bytes - other.need_bytes) / (answer.batch - other.batch))


def _check_data_parallel(size: int, multiple_of: int) -> None:
    if multiple_of % size:
        raise TuneError(
            f"`multiple_of` (={multiple_of}) must be a multiple of "
            f"`data_parallel_size` (={size}): every candidate global batch is "
            "split evenly over the data-parallel devices"
        )


def _room(prober: Prober, batch: int, budget: int, m: int, top: int) -> float | None:
    """Where the first compile may go (`search`'s `room`): a share of the
    unfused boundary of the step traced at `batch`, where the step's
    arguments can be made (its data may hold fewer examples)."""
    unfused = prober.unfused_boundary(batch, budget)
    if unfused is None:
        return None
    room = unfused * MARGIN
    try:
        prober.abstract_args(calibration_batch(m, top, room))
    except TuneError:
        return None
    return room


def _check_arguments_fit(prober: Prober, batch: int, budget: Budget) -> None:
    """Refuse, before any compile, a budget below the step's own arguments."""
    args = prober.abstract_args(batch)
    needed = device_bytes(args)
    if needed > budget.bytes:
        raise TuneError(
            f"the budget ({budget.bytes:,} B = {format_bytes(budget.bytes)}; "
            f"{budget.source}) is smaller than the step's arguments alone at "
            f"batch={batch} ({needed:,} B = {format_bytes(needed)} on one device: "
            "parameters, optimizer state and the batch); the budget must "
            "exceed them"
        )


def _does_not_fit(probe: Probe, budget: Budget) -> str:
    if probe.refused:
        return (
            f"the step does not fit at the smallest candidate batch={probe.batch}: the "
            f"compiler refused it, requiring {format_bytes(probe.need_bytes)} of "
            f"{format_bytes(probe.available_bytes)} ({budget.source})"
        )
    return (
        f"the step does not fit at the smallest candidate batch={probe.batch}: "
        f"it needs {probe.need_bytes:,} B ({format_bytes(probe.need_bytes)}) "
        f"and the budget is {budget.bytes:,} B ({format_bytes(budget.bytes)}; "
        f"{budget.source}). Breakdown: arguments {format_bytes(probe.argument_bytes)} "
        f"(parameters, optimizer state, batch), outputs "
        f"{format_bytes(probe.output_bytes)}, of which donated "
        f"{format_bytes(probe.alias_bytes)}, temporaries "
        f"{format_bytes(probe.temp_bytes)}"
    )


def xla_settings(remat_pass: bool, options: Mapping[str, str]) -> dict[str, Any]:
    """The settings the answer depends on."""
    return {
        "remat_pass": remat_pass,
        "compiler_options": dict(options),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
    }


def compare(
    workloads: Sequence[Workload] | Mapping[str, Workload],
    *,
    xla_remat_pass: bool | Sequence[bool] = False,
    **kwargs: Any,
) -> tuple[TuneResult, ...]:
    """`find_max_batch` for each workload, one result each, in order.

    `workloads` is a sequence (each labelled by its `label`) or a mapping of
    label to workload. `xla_remat_pass` may list settings: each workload is
    then tuned once per setting; rows with the pass on are labelled
    " +xla-pass". `kwargs` are passed to every search. On Ctrl-C,
    `SearchInterrupted` carries every result finished before it and the
    partial one.
    """
    rows = _rows(workloads, xla_remat_pass)
    results: list[TuneResult] = []
    for label, workload, remat_pass in rows:
        try:
            results.append(
                find_max_batch(workload, xla_remat_pass=remat_pass, label=label, **kwargs)
            )
        except SearchInterrupted as e:
            raise SearchInterrupted((*results, *e.results)) from None
    return tuple(results)


def _rows(
    workloads: Sequence[Workload] | Mapping[str, Workload], passes: bool | Sequence[bool]
) -> list[tuple[str, Workload, bool]]:
    """(label, workload, remat pass) per row."""
    if isinstance(workloads, Mapping):
        named = [
            (label, as_workload(w, f"`workloads[{label!r}]`")) for label, w in workloads.items()
        ]
    elif isinstance(workloads, Sequence) and not isinstance(workloads, str):
        named = []
        for i, w in enumerate(workloads):
            w = as_workload(w, f"`workloads[{i}]`")
            named.append((w.label or f"workload {i}", w))
    else:
        raise TuneError(
            f"`workloads` (={workloads!r}) must be a sequence of autotune.Workload or a "
            "mapping of label to Workload"
        )
    if not named:
        raise TuneError(f"`workloads` (={workloads!r}) must hold at least one workload")
    labels = [label for label, _ in named]
    if len(set(labels)) != len(labels):
        raise TuneError(f"`workloads` have labels that repeat ({labels}); each row needs its own")
    settings = (passes,) if isinstance(passes, bool) else tuple(passes)
    if not settings or not all(isinstance(p, bool) for p in settings):
        raise TuneError(f"`xla_remat_pass` (={passes!r}) must be True, False or a sequence of them")
    return [(label + (" +xla-pass" if p else ""), w, p) for label, w in named for p in settings]
