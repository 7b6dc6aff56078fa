"""`find_max_batch`: the largest batch of a user's step that fits a target."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib

from autotune.budget import Budget, resolve_budget
from autotune.cache import ResultCache, cache_key
from autotune.errors import SearchInterrupted, TuneError
from autotune.estimate import Estimate
from autotune.probe import Probe, Prober
from autotune.result import TuneResult
from autotune.search import check_grid, search
from autotune.targets import Target, get_target
from autotune.units import format_bytes


def find_max_batch(
    step: Callable[..., Any],
    args_for_batch: Callable[[int], Sequence[Any]],
    *,
    target: str | Target = "local",
    budget_bytes: int | None = None,
    reserve_bytes: int = 0,
    multiple_of: int = 8,
    max_batch: int = 65536,
    donate_argnums: int | Sequence[int] = (),
    xla_remat_pass: bool = False,
    compiler_options: Mapping[str, str] | None = None,
    estimate: Estimate | None = None,
    on_probe: Callable[[Probe], None] | None = None,
    label: str = "",
    cache: ResultCache | None = None,
    data_parallel_size: int = 1,
) -> TuneResult:
    """Largest batch whose compiled step fits the target's memory.

    Args:
        step: the train step, plain or jitted (a jitted step keeps its own
            donation; `donate_argnums` applies to a plain one).
        args_for_batch: batch size -> the step's positional arguments as
            pytrees of `jax.ShapeDtypeStruct`. Nothing is allocated.
        target: "local" (the default device), a described GPU name from
            `autotune.known_targets()`, a target config file, or a `Target`.
        budget_bytes: bytes the step may use; wins over the target's limit.
        reserve_bytes: bytes kept free for other live buffers.
        multiple_of: candidate batches are its multiples.
        max_batch: the largest candidate.
        xla_remat_pass: keep XLA's automatic rematerialization pass on. Off
            by default: need(batch) is then affine and the answer holds on
            any device with the same memory; on, the answer is larger but
            holds only where the pass aims at the same limit.
        compiler_options: extra XLA options for every compile.
        estimate: an analytical estimate; it places the first probes.
        on_probe: called after each compile (progress).
        label: names the result (a model or remat choice).
        cache: answer from, and store into, this cache (a hit compiles
            nothing; see `autotune.cache` for what the key covers).
        data_parallel_size: devices the batch is split over (a mesh's data
            axis). Batches are then global, multiples of it (so must
            `multiple_of` be), and every byte count is one device's.

    Returns:
        A `TuneResult`: the batch, its peak, the budget, the headroom, and
        every compile made.

    Raises:
        TuneError: bad input, or a step that does not fit at the smallest
            candidate (with its breakdown).
        SearchInterrupted: on Ctrl-C; its `results` hold the largest batch
            proven to fit so far, marked `interrupted`.
    """
    start = time.perf_counter()
    check_grid(multiple_of, max_batch)
    _check_data_parallel(data_parallel_size, multiple_of)
    tgt = target if isinstance(target, Target) else get_target(target)
    budget = resolve_budget(
        budget_bytes=budget_bytes,
        reserve_bytes=reserve_bytes,
        target_limit=tgt.default_budget_bytes,
        target_source=tgt.budget_source,
        platform=tgt.platform,
    )
    options = dict(compiler_options or {})
    prober = Prober(
        step,
        args_for_batch,
        sharding=tgt.sharding() if tgt.deviceless else None,
        xla_remat_pass=xla_remat_pass,
        compiler_options=options,
        donate_argnums=donate_argnums,
        on_probe=on_probe,
    )
    _check_arguments_fit(prober, multiple_of, budget)
    settings = xla_settings(xla_remat_pass, options)
    key = None
    if cache is not None:
        grid = {"multiple_of": multiple_of, "max_batch": max_batch,
                "data_parallel_size": data_parallel_size}  # fmt: skip
        key = _key(prober, tgt, budget, {**grid, **settings})
        hit = cache.get(key)
        if hit is not None:
            return dataclasses.replace(
                hit, label=label, from_cache=True, seconds=time.perf_counter() - start
            )
    hint = estimate if estimate and estimate.per_example_bytes > 0 else None
    bracket = search(
        lambda b: prober(b).need_bytes,
        budget.bytes,
        multiple_of=multiple_of,
        max_batch=max_batch,
        guess=hint.max_batch(budget.bytes) if hint else None,
        per_example=hint.per_example_bytes if hint else None,
    )
    if bracket.lo is None:
        if bracket.interrupted:
            raise SearchInterrupted()
        raise TuneError(_does_not_fit(prober.probes[multiple_of], budget))
    answer = prober.probes[bracket.lo]
    proven_next = bracket.hi is not None and bracket.hi - bracket.lo == multiple_of
    nxt = prober.probes[bracket.hi] if proven_next else None
    smallest = min(prober.probes.values(), key=lambda p: p.batch)
    per_example = _slope(smallest, answer)
    result = TuneResult(
        label=label,
        batch=answer.batch,
        peak_bytes=answer.need_bytes,
        budget=budget,
        next_batch=nxt.batch if nxt else None,
        next_peak_bytes=nxt.need_bytes if nxt else None,
        fixed_bytes=answer.need_bytes - per_example * answer.batch,
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
        probes=tuple(prober.probes.values()),
        interrupted=bracket.interrupted,
        data_parallel_size=data_parallel_size,
    )
    if result.interrupted:
        raise SearchInterrupted((result,))
    if cache is not None:
        cache.put(key, result)
    return result


def _key(prober: Prober, target: Target, budget: Budget, fields: Mapping[str, Any]) -> str:
    """The cache key: the program lowered at the smallest candidate, and the rest."""
    return cache_key(
        prober.lower(fields["multiple_of"]).as_text(),
        {"target": target.name, "target_description": target.description,
         "target_config": target.target_config, "budget": budget, **fields},
    )  # fmt: skip


def _flops_per_example(prober: Prober, answer: Probe, data_parallel_size: int) -> dict[str, Any]:
    if answer.flops is not None:  # one device's program: its share of the batch
        return {
            "flops_per_example": answer.flops * data_parallel_size / answer.batch,
            "flops_source": "compiled program's cost analysis",
        }
    flops = prober.host_flops(answer.batch)
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


def _slope(small: Probe, large: Probe) -> int:
    if large.batch == small.batch:
        return 0
    return round((large.need_bytes - small.need_bytes) / (large.batch - small.batch))


def _check_data_parallel(size: int, multiple_of: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise TuneError(f"`data_parallel_size` (={size!r}) must be a positive integer")
    if multiple_of % size:
        raise TuneError(
            f"`multiple_of` (={multiple_of}) must be a multiple of "
            f"`data_parallel_size` (={size}): every candidate global batch is "
            "split evenly over the data-parallel devices"
        )


def device_bytes(tree: Any) -> int:
    """Bytes one device holds of a pytree: each leaf's shard, or all of it."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        shape = leaf.shape if sharding is None else sharding.shard_shape(leaf.shape)
        total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
    return total


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


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to run the step (a remat choice, say), tuned as one row."""

    step: Callable[..., Any]
    args_for_batch: Callable[[int], Sequence[Any]]
    estimate: Estimate | None = None
    xla_remat_pass: bool = False


def compare(variants: Mapping[str, Variant], **kwargs: Any) -> tuple[TuneResult, ...]:
    """`find_max_batch` for each named variant, one result each, in order.

    `kwargs` are passed to every search. On Ctrl-C, `SearchInterrupted`
    carries every result finished before it and the partial one.
    """
    if not variants:
        raise TuneError("`variants` (={}) must name at least one variant")
    results: list[TuneResult] = []
    for name, v in variants.items():
        try:
            results.append(
                find_max_batch(
                    v.step,
                    v.args_for_batch,
                    estimate=v.estimate,
                    xla_remat_pass=v.xla_remat_pass,
                    label=name,
                    **kwargs,
                )
            )
        except SearchInterrupted as e:
            raise SearchInterrupted((*results, *e.results)) from None
    return tuple(results)
