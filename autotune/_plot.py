"""A picture of need(batch) for each choice against the budget (optional: matplotlib)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from autotune._errors import TuneError
from autotune._result import TuneResult

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
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    right = 1.15 * max(max(p.batch for p in r.probes) for r in results)
    for r in results:
        color = ax.plot(
            [0, right],
            [r.fixed_bytes / GIB, (r.fixed_bytes + r.per_example_bytes * right) / GIB],
            linestyle=":",
            linewidth=1,
        )[0].get_color()
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
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
