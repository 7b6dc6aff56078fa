"""A picture of need(batch) for each choice against the budget (optional: matplotlib)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from autotune._core.errors import TuneError
from autotune._results.comparison import TargetComparison, TargetRow
from autotune._results.result import TuneResult

GIB = 1024**3


def pyplot() -> Any:
    """`matplotlib.pyplot`, drawing to files; TuneError if it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TuneError("`--plot` needs matplotlib: pip install -e '.[plot]'") from None
    return plt


def plot_results(results: Sequence[TuneResult], path: str | os.PathLike[str]) -> None:
    """Write a PNG: each choice's compiled probes, its affine fit, its answer,
    and the budget line."""
    plt = pyplot()
    if not results:
        raise TuneError("`results` (=()) must hold at least one result to plot")
    explained = [r for r in results if r.peak_breakdown and not r.peak_breakdown.unavailable]
    fig, axes = plt.subplots(
        1, 1 + len(explained), figsize=(8 + 7 * len(explained), 5), dpi=120, squeeze=False
    )
    for r, bars in zip(explained, axes[0][1:]):
        _breakdown_bars(bars, r)
    _need_panel(axes[0][0], results)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def plot_comparison(comparison: TargetComparison, path: str | os.PathLike[str]) -> None:
    """Write a PNG of several targets side by side: one panel per target,
    each choice's compiles and answer against that target's budget."""
    plt = pyplot()
    targets = list(dict.fromkeys(r.target for r in comparison.results))
    if not targets:
        raise TuneError("`comparison` holds no result to plot")
    fig, axes = plt.subplots(1, len(targets), figsize=(6 * len(targets), 5), dpi=120, squeeze=False)
    for ax, target in zip(axes[0], targets):
        _need_panel(ax, comparison.on(target))
        rows = [row for row in comparison.rows if row.result.target == target]
        ax.set_title(f"{target}\n" + "\n".join(_row_title(row) for row in rows), fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _row_title(row: TargetRow) -> str:
    rate = row.bound.samples_per_second
    bound = "no bound" if rate is None else f"<= {rate:,.0f} samples/s (bound)"
    return f"{row.result.label}: batch {row.result.batch}, {bound}"


def _need_panel(ax, results: Sequence[TuneResult]) -> None:
    """Each result's compiled probes, its affine fit and its answer, against
    the budget of the first (results of one target share it)."""
    right = 1.15 * max(max(p.batch for p in r.probes) for r in results)
    for r in results:
        line = (  # a line no step has (need is not affine here) is not drawn
            [r.fixed_bytes / GIB, (r.fixed_bytes + r.per_example_bytes * right) / GIB]
            if r.line_holds
            else [float("nan")] * 2
        )
        color = ax.plot([0, right], line, linestyle=":", linewidth=1)[0].get_color()
        probes = sorted(r.probes, key=lambda p: p.batch)
        ax.plot(
            [p.batch for p in probes],
            [p.need_bytes / GIB for p in probes],
            "o",
            color=color,
            label=f"{r.label}: {r.batch}",
        )
        ax.plot([r.batch], [r.peak_bytes / GIB], "*", color=color, markersize=14)
    budget = results[0].budget_bytes
    ax.axhline(budget / GIB, color="black", linewidth=1.2, label="budget")
    ax.set_xlim(0, right)
    ax.set_ylim(0, 1.25 * budget / GIB)
    ax.set_xlabel("batch")
    ax.set_ylabel("compiled need (GiB)")
    ax.set_title(f"Largest batch that fits: {results[0].target}")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)


BAR_MODULES = 12
_KIND_COLORS = {
    "activation": "tab:blue",
    "gradient": "tab:orange",
    "temporary": "tab:gray",
    "parameter": "tab:green",
    "optimizer_state": "tab:olive",
    "input_batch": "tab:purple",
}
_ARGUMENT_KINDS = ("parameter", "optimizer_state", "input_batch")


def _breakdown_bars(ax, result: TuneResult) -> None:
    """One bar per module at the answer's peak, split by kind; the arguments
    as bars of their own."""
    b = result.peak_breakdown
    modules = list(b.bytes_by_module.items())[:BAR_MODULES]
    rows = [(m or "(no module named)", kinds) for m, kinds in modules]
    rows += [
        (kind.replace("_", " "), {kind: b.bytes_by_kind[kind]})
        for kind in _ARGUMENT_KINDS
        if b.bytes_by_kind.get(kind)
    ]
    labels = [name for name, _ in rows][::-1]
    rows = rows[::-1]
    left = [0.0] * len(rows)
    for kind, color in _KIND_COLORS.items():
        widths = [kinds.get(kind, 0) / GIB for _, kinds in rows]
        if any(widths):
            ax.barh(labels, widths, left=left, color=color, label=kind.replace("_", " "))
            left = [x + w for x, w in zip(left, widths)]
    ax.set_xlabel("bytes live at the peak (GiB)")
    ax.set_title(f"{result.label}: the peak at batch {result.batch}", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3, axis="x")
