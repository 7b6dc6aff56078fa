"""`find_max_batch`: the largest batch of a user's step that fits a target.

The tuner asks the target (`autotune._targets.interface.Target`) for all
that differs between kinds: the budget and the compiler options it implies,
the layout over its devices, how a compile fits, and the search.
"""

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

from autotune._compile.prober import Prober
from autotune._compile.records import CompilerOptions, Probe
from autotune._core import checks as check
from autotune._core.budget import Budget
from autotune._core.errors import SearchInterrupted, TuneError
from autotune._core.sizes import device_bytes
from autotune._core.units import format_bytes
from autotune._results.cache import ResultCache, cache_key, program_hash
from autotune._results.result import TuneResult
from autotune._search.drivers import Grid
from autotune._search.need import Bracket, check_grid
from autotune._targets.interface import Target
from autotune._targets.registry import as_target
from autotune._tune.answer import answer_of, no_answer, top_candidate
from autotune._tune.why import breakdown_at
from autotune._workloads.estimate import Estimate
from autotune._workloads.layout import on_target
from autotune._workloads.workload import Workload

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
            Default: the target's device count.
        layout: how a target of several devices (a TPU slice, "8xh100-sxm-80gb")
            places arguments without a sharding of their own, "dp" or "fsdp"
            (`autotune._workloads.layout`); batches are then global.
        workers: compiles at once (default: the target's: one on a local
            accelerator, else as many as the first compile shows to pay on
            this machine's cores, see `autotune._compile.concurrency`; a TPU
            target's search compiles one at a time). How many run at once
            never changes which batches are compiled: a round's batches are
            the target's (`Target.round_width`).
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
    check.instance_or_none("cache", cache, ResultCache, "an autotune.ResultCache")
    prepared = prepare(
        workload, target, budget_bytes=budget_bytes, reserve_bytes=reserve_bytes,
        xla_remat_pass=xla_remat_pass, compiler_options=compiler_options, layout=layout,
        on_probe=on_probe, workers=workers, keep_dumps=why,
    )  # fmt: skip
    tgt, budget, options, prober = (
        prepared.target,
        prepared.budget,
        prepared.options,
        prepared.prober,
    )
    dp = check.integer(
        "data_parallel_size",
        tgt.device_count if data_parallel_size is None else data_parallel_size,
        minimum=1,
    )
    multiple_of, max_batch = check_grid(
        math.lcm(8, dp) if multiple_of is None else multiple_of, max_batch
    )
    _check_data_parallel(dp, multiple_of)
    estimate = workload.estimate
    hint = estimate if estimate and estimate.per_example_bytes > 0 else None
    guess = hint.max_batch(budget.bytes) if hint else None
    grid = Grid(multiple_of, max_batch, guess, hint, tgt.round_width())
    _check_arguments_fit(prober, multiple_of, budget)
    asked = dict(
        budget=budget, target=tgt.name, target_description=tgt.description,
        xla_settings=xla_settings(xla_remat_pass, options), multiple_of=multiple_of,
        max_batch=max_batch, data_parallel_size=dp, remat_plan=workload.remat_plan,
    )  # fmt: skip
    key = None
    if cache is not None:
        key = _key(prober, tgt, grid, asked)
        hit = _cache_hit(cache, key, prober, {**asked, "interrupted": False})
        if hit is not None:
            hit = dataclasses.replace(
                hit, label=label, from_cache=True, seconds=time.perf_counter() - start
            )
            return _explained(hit, prober) if why else hit
    prober.when_idle(lambda: prober.program(top_candidate(asked)))  # for `changes`
    bracket = _proven(tgt.search.run(prober, budget.bytes, grid), prober, tgt, budget)
    if bracket.lo is None:
        raise TuneError(no_answer(prober, budget, options))
    result = answer_of(
        bracket, prober, tgt, label=label, asked=asked, estimate=estimate,
        seconds=time.perf_counter() - start,
    )  # fmt: skip
    if result.interrupted:
        raise SearchInterrupted((result,))
    if cache is not None:
        cache.put(key, result, _proof(prober, result))
    return _explained(result, prober) if why else result


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A question's compiles ready to make: the workload laid out on its
    target, the budget and the compiler options it implies."""

    target: Target
    budget: Budget
    options: Mapping[str, Any]
    prober: Prober


def prepare(
    workload: Workload,
    target: str | Target,
    *,
    budget_bytes: int | None = None,
    reserve_bytes: int = 0,
    xla_remat_pass: bool = False,
    compiler_options: CompilerOptions | None = None,
    layout: str = "dp",
    on_probe: Callable[[Probe], None] | None = None,
    workers: int | None = None,
    keep_dumps: bool = False,
) -> Prepared:
    """The prober of `workload` for `target`, with the budget it is held to."""
    check.boolean("xla_remat_pass", xla_remat_pass)
    check.callable_or_none("on_probe", on_probe)
    check.instance_or_none("compiler_options", compiler_options, Mapping, "a mapping")
    tgt = as_target(target)
    laid_out = on_target(workload, tgt, layout)
    budget, implied = tgt.budget_for(budget_bytes, reserve_bytes)
    options = {**(compiler_options or {}), **implied}
    prober = Prober.for_target(
        laid_out,
        tgt,
        budget.bytes,
        xla_remat_pass=xla_remat_pass,
        compiler_options=options,
        on_probe=on_probe,
        workers=_workers(workers, tgt),
        keep_dumps=keep_dumps,
    )
    return Prepared(tgt, budget, options, prober)


def _proven(bracket: Bracket, prober: Prober, target: Target, budget: Budget) -> Bracket:
    """The bracket, or after Ctrl-C the largest compile that fits: the probes
    may hold a compile the bracket did not see."""
    if not bracket.interrupted:
        return bracket
    fits = [p.batch for p in prober.probes.values() if target.fits(p, budget)]
    if not fits:
        raise SearchInterrupted()
    return dataclasses.replace(bracket, lo=max(fits), hi=None)


def _key(prober: Prober, target: Target, grid: Grid, asked: Mapping[str, Any]) -> str:
    """The cache key: the program lowered at the search's first batch, the
    target, and the question asked."""
    program = prober.lower(target.search.first_batch(grid)).as_text()
    fields = {k: v for k, v in asked.items() if k not in ("target", "target_description")}
    settings = fields.pop("xla_settings")
    return cache_key(program, {**target.identity(), **fields, **settings})


def _explained(result: TuneResult, prober: Prober) -> TuneResult:
    return dataclasses.replace(result, peak_breakdown=breakdown_at(prober, result.batch))


def _workers(workers: int | None, target: Target) -> int | None:
    """Compiles at once: as given, else the target's default."""
    if workers is None:
        return target.default_workers()
    return check.integer("workers", workers, minimum=1)


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


def _check_data_parallel(size: int, multiple_of: int) -> None:
    if multiple_of % size:
        raise TuneError(
            f"`multiple_of` (={multiple_of}) must be a multiple of "
            f"`data_parallel_size` (={size}): every candidate global batch is "
            "split evenly over the data-parallel devices"
        )


def _check_arguments_fit(prober: Prober, batch: int, budget: Budget) -> None:
    """Refuse, before any compile, a budget below the step's own arguments,
    at the smallest candidate and at the next one: arguments that shrink as
    the batch grows may fit there, and the search then finds the floor."""
    args = prober.abstract_args(batch)
    needed = device_bytes(args)
    if needed > budget.bytes:
        try:
            if device_bytes(prober.abstract_args(2 * batch)) <= budget.bytes:
                return
        except TuneError:  # no arguments at the next candidate: the floor stands
            pass
        raise TuneError(
            f"the budget ({budget.bytes:,} B = {format_bytes(budget.bytes)}; "
            f"{budget.source}) is smaller than the step's arguments alone at "
            f"batch={batch} ({needed:,} B = {format_bytes(needed)} on one device: "
            "parameters, optimizer state and the batch); the budget must "
            "exceed them"
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
