"""Why a batch fits or not: the peak breakdown of a compile, on request.

The tuner asks for it with `find_max_batch(..., why=True)`: the search then
dumps each of its compiles (no extra compile, the same compile count) and
the breakdown is read from the compile at the answer. A cached answer has
no compile, so it costs one more, at the answer. `peak_breakdown` explains
any batch with one compile.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from autotune._compile.arguments import argument_leaves
from autotune._compile.prober import CompilerOptions, Prober
from autotune._core import checks as check
from autotune._explain.peak import explain_peak
from autotune._explain.records import PeakBreakdown, unavailable
from autotune._targets.interface import Target
from autotune._targets.registry import as_target
from autotune._workloads.layout import on_target
from autotune._workloads.workload import Workload, as_workload


def breakdown_at(prober: Prober, batch: int) -> PeakBreakdown:
    """The breakdown of `prober`'s compile at `batch` (made now if it was not).

    `prober` must keep its dumps (`Prober(..., keep_dumps=True)`). The
    breakdown's `seconds` count reading the dump, and the compile if one was
    made for it.
    """
    start = time.perf_counter()
    breakdown = _read(prober, batch)
    return dataclasses.replace(breakdown, seconds=time.perf_counter() - start)


def _read(prober: Prober, batch: int) -> PeakBreakdown:
    searched = batch in prober.dumps
    probe = prober(batch)
    obtained = (
        f"XLA's dump of the search's compile at batch {batch}"
        if searched
        else f"XLA's dump of a compile at batch {batch} made for the breakdown"
    )
    dump = prober.dumps.get(batch)
    if dump is None or dump.texts is None:
        reason = dump.error if dump is not None else "the compile kept no dump"
        return unavailable(batch, probe.need_bytes, reason, obtained)
    try:
        arguments = argument_leaves(prober.abstract_args(batch), prober.abstract_args, batch)
    except ValueError as e:
        return unavailable(batch, probe.need_bytes, str(e), obtained)
    return explain_peak(
        dump.texts, probe.need_bytes, arguments, dump.out_paths, batch=batch, obtained=obtained
    )


def peak_breakdown(
    step: Workload | Callable[..., Any],
    batch: int,
    args_for_batch: Callable[[int], Sequence[Any]] | None = None,
    *,
    target: str | Target = "local",
    donate_argnums: int | Sequence[int] = (),
    xla_remat_pass: bool = False,
    compiler_options: CompilerOptions | None = None,
    layout: str = "dp",
) -> PeakBreakdown:
    """What is live at the peak of `step` compiled for `batch`: one compile.

    `step` is a `Workload`, or a step with its `args_for_batch` and
    `donate_argnums` (as in `find_max_batch`). The result lists the buffers
    live at the peak, largest first, each with its bytes, shape, dtype, kind
    (parameter, optimizer_state, input_batch, activation, gradient,
    temporary, output), XLA's op name, the user's source line and module;
    the entries sum to the compiled need. If XLA's dump cannot be read, the
    result says why in `unavailable` and lists nothing. On a target of
    several devices the workload is laid out over them (`layout`, as in
    `find_max_batch`), `batch` is global and the bytes are one device's.
    """
    if isinstance(step, Workload):
        workload = step
    elif args_for_batch is None:
        workload = as_workload(step, "`step`")
    else:
        workload = Workload(step, args_for_batch, donate_argnums=donate_argnums)
    batch = check.integer("batch", batch, minimum=1)
    tgt = as_target(target)
    prober = Prober.for_target(
        on_target(workload, tgt, layout),
        tgt,
        xla_remat_pass=xla_remat_pass,
        compiler_options=compiler_options,
        keep_dumps=True,
    )
    return breakdown_at(prober, batch)
