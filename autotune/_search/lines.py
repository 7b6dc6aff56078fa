"""The arithmetic both searches share: where a line through two compiles meets
a level, and a batch rounded to the grid of candidates."""

from __future__ import annotations


def crossing(p: tuple[int, int], q: tuple[int, int], level: int) -> float | None:
    """Batch at which the line through two (batch, bytes) points meets `level`;
    None where the line does not rise."""
    (b0, n0), (b1, n1) = sorted((p, q))
    if b1 == b0 or n1 <= n0:
        return None
    return b0 + (level - n0) * (b1 - b0) / (n1 - n0)


def grid(batch: float, m: int, ceiling: int | None = None) -> int:
    """`batch` rounded down to a multiple of `m`, at most `ceiling`."""
    rounded = int(batch // m) * m
    return rounded if ceiling is None else min(ceiling, rounded)
