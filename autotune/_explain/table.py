"""The peak breakdown as tables a person reads (`autotune --why`)."""

from __future__ import annotations

from pathlib import Path

from autotune._core.units import format_bytes
from autotune._explain.peak import ACTIVATION, ARENA_FREE, GRADIENT, REST, TEMPORARY, PeakBreakdown
from autotune._results.result import render_table

MODULE_ROWS = 16
LARGEST_ROWS = 10
NO_MODULE = "(no module named)"


def render_breakdown(breakdown: PeakBreakdown, label: str = "") -> str:
    """By kind, by module (what remat could free), and the largest buffers."""
    b = breakdown
    head = f"{label or 'step'} at batch {b.batch}: what is live at the peak"
    if b.unavailable:
        return f"{head}\n  breakdown unavailable: {b.unavailable}"
    lines = [
        f"{head} ({b.peak_bytes:,} B = {format_bytes(b.peak_bytes)})",
        f"  from {b.obtained} ({b.seconds:.1f} s); the peak: {b.peak_step}",
        "",
        _by_kind(b),
        "",
        "By module, the values the step computes. A module's activations are what",
        "rematerializing it could free at this peak (less the input it keeps):",
        _by_module(b),
    ]
    blocks = _blocks(b)
    if blocks:
        lines += ["", "Saved activations by block (remat candidates): " + blocks]
    lines += ["", f"The {LARGEST_ROWS} largest buffers:", _largest(b)]
    return "\n".join(lines)


def _share(n: int, total: int) -> str:
    return f"{n / total:.1%}" if total else "-"


def _by_kind(b: PeakBreakdown) -> str:
    rows = []
    for kind, n in b.bytes_by_kind.items():
        name = kind.replace("_", " ")
        if kind == ARENA_FREE:
            name = "arena free at the peak"
        elif kind == REST:
            name = "not in the dump"
        rows.append((name, f"{n:,}", format_bytes(n), _share(n, b.peak_bytes)))
    rows.append(("total", f"{b.peak_bytes:,}", format_bytes(b.peak_bytes), "100%"))
    return render_table(("kind", "bytes", "size", "share"), rows, left=1)


def _by_module(b: PeakBreakdown) -> str:
    modules = list(b.bytes_by_module.items())
    shown, hidden = modules[:MODULE_ROWS], modules[MODULE_ROWS:]
    rows = []
    for module, kinds in shown:
        rows.append(_module_row(module or NO_MODULE, kinds, b.peak_bytes))
    if hidden:
        merged: dict[str, int] = {}
        for _, kinds in hidden:
            for kind, n in kinds.items():
                merged[kind] = merged.get(kind, 0) + n
        rows.append(_module_row(f"{len(hidden)} more modules", merged, b.peak_bytes))
    headers = ("module", "activations", "gradients", "temporaries", "total", "share")
    return render_table(headers, rows, left=1)


def _module_row(name: str, kinds: dict[str, int], peak: int) -> tuple[str, ...]:
    def cell(kind: str) -> str:
        return format_bytes(kinds[kind]) if kinds.get(kind) else "-"

    total = sum(kinds.values())
    return (
        name,
        cell(ACTIVATION),
        cell(GRADIENT),
        cell(TEMPORARY),
        format_bytes(total),
        _share(total, peak),
    )


def _blocks(b: PeakBreakdown) -> str:
    """Activations per top-level module, largest first."""
    blocks: dict[str, int] = {}
    for module, kinds in b.bytes_by_module.items():
        if module and kinds.get(ACTIVATION):
            top = module.split("/")[0]
            blocks[top] = blocks.get(top, 0) + kinds[ACTIVATION]
    ordered = sorted(blocks.items(), key=lambda kv: -kv[1])
    return ", ".join(
        f"{name} {format_bytes(n)} ({_share(n, b.peak_bytes)})" for name, n in ordered[:8]
    )


def _largest(b: PeakBreakdown) -> str:
    rows = []
    for e in [e for e in b.entries if e.kind not in (REST, ARENA_FREE)][:LARGEST_ROWS]:
        shape = f"{e.dtype}[{','.join(map(str, e.shape))}]"
        source = _short_source(e.source) if e.source else ""
        rows.append((e.kind.replace("_", " "), shape, e.op_name, source, format_bytes(e.bytes)))
    return render_table(("kind", "shape", "op", "source", "size"), rows, left=4)


def _short_source(source: str) -> str:
    path, _, line = source.rpartition(":")
    return f"{Path(path).name}:{line}" if path else source
