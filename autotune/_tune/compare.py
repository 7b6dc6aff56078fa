"""`compare`: `find_max_batch` for several workloads and settings, one row each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autotune._core.errors import SearchInterrupted, TuneError
from autotune._results.result import TuneResult
from autotune._tune.tuner import find_max_batch
from autotune._workloads.workload import Workload, as_workload


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
    rows = tuning_rows(workloads, xla_remat_pass)
    results: list[TuneResult] = []
    for label, workload, remat_pass in rows:
        try:
            results.append(
                find_max_batch(workload, xla_remat_pass=remat_pass, label=label, **kwargs)
            )
        except SearchInterrupted as e:
            raise SearchInterrupted((*results, *e.results)) from None
    return tuple(results)


def tuning_rows(
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
