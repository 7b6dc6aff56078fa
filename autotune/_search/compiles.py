"""The search on a TPU: the largest batch that compiles below a refused one.

The TPU compiler fits a program into HBM itself and refuses, at compile, one
it cannot fit. So on a TPU a batch fits when it compiles, and need(batch) is
not monotone near the limit (measured: a plain-JAX MLP on v5e needed 16.01e9
B at batch 38,000 and 14.89e9 B at 45,000). This search decides by compiles
alone and assumes nothing about how need grows. It keeps `lo`, the largest
batch that compiled, and `hi`, the smallest refused batch above it, and ends
when they are neighbouring candidates: `lo` compiled and `lo + multiple_of`
was refused, whatever need(batch) does elsewhere.

The bytes seen only choose where to compile next: each compile's need plus
its program code, and each refusal's required bytes, interpolated to the
compiler's capacity (as the GPU search does with its budget), bisecting
whenever a step fails to halve the bracket. Interpolation alone can crawl:
a refusal's bytes are the compiler's count before it squeezes the program,
far above what a batch near the limit compiles to (VGG16 on v5e: refused
at 264 "requiring" 20.1e9 B, while 232 compiled to 15.2e9 B).

With an estimate, the first compile is the estimate's guess itself, not a
quarter of it as on GPU, and the quarter only if the guess is refused: far
above the limit the compiler refuses in seconds (VGG16 on v5e: 2-4 s),
while a compile that fits costs the whole compile (390-575 s there).

What it does not prove: that no batch above a refusal compiles. No batch at
or above a refused one is compiled, as on GPU; where the compiler's fitting
is not monotone, a larger batch might compile, unseen.
"""

from __future__ import annotations

from collections.abc import Callable

from autotune._core.signals import answer_proven, search_started
from autotune._search.lines import crossing, grid
from autotune._search.need import Bracket, check_grid

# (compiled, bytes): a compile's need, or the bytes a refusal said it required;
# None: the compile failed for a reason other than memory.
Outcome = tuple[bool, int] | None


def search_compiles(
    compile_at: Callable[[int], Outcome],
    capacity: int,
    *,
    multiple_of: int = 8,
    max_batch: int = 65536,
    guess: int | None = None,
    per_example: float | None = None,
    max_failures: int = 6,
) -> Bracket:
    """Largest multiple of `multiple_of` up to `max_batch` that compiles, below
    the smallest refused batch above it.

    Args:
        compile_at: batch -> (compiled, bytes), or None where the compile
            failed for a reason other than memory; one compile per new batch.
        capacity: the bytes the compiler fits programs into; it places
            compiles, never decides.
        multiple_of, max_batch: the candidates.
        guess, per_example: an analytical estimate of the answer and its
            bytes per example; they place the first compiles.
        max_failures: compiles that may fail before the search stops.

    Returns:
        The bracket: `lo` compiled (None if no candidate below `hi` did),
        `hi` was refused (None if none was), and every candidate between
        them failed (`failed`). A KeyboardInterrupt returns what was proven
        so far, marked interrupted.
    """
    check_grid(multiple_of, max_batch)
    m = multiple_of
    top = max_batch // m * m
    fits: dict[int, int] = {}
    refused: dict[int, int] = {}
    failed: set[int] = set()

    def compiles(batch: int) -> bool:
        outcome = compile_at(batch)
        if outcome is None:
            failed.add(batch)
            return False
        ok, size = outcome
        (fits if ok else refused)[batch] = size
        return ok

    def bracket(interrupted: bool = False) -> Bracket:
        lo = max(fits, default=None)
        hi = min((b for b in refused if lo is None or b > lo), default=None)
        return Bracket(lo, hi, tuple(sorted(failed)), interrupted=interrupted)

    def untried(aim: float, lo: int | None, hi: int | None) -> int | None:
        """The candidate not compiled yet nearest to `aim` between `lo` and
        `hi` (exclusive; None: the grid's ends); the lower on a tie."""
        start, end = m if lo is None else lo + m, top if hi is None else hi - m
        if start > end:
            return None
        centre = min(end, max(start, grid(aim, m)))
        for step in range(0, (end - start) // m + 1):
            for b in (centre - step * m, centre + step * m):
                if start <= b <= end and b not in failed and b not in fits and b not in refused:
                    return b
        return None

    def done(b: Bracket) -> bool:
        return b.lo == top or untried(0, b.lo, b.hi) is None or len(failed) >= max_failures

    try:
        search_started()
        if guess and per_example and per_example > 0:
            # Try the guess itself, and a quarter of it only if the guess is refused
            # (the GPU search starts at the quarter): far above the limit a refusal
            # comes in seconds, while a compile that fits costs the whole compile.
            for first in dict.fromkeys(
                min(top, max(m, int(g) // m * m)) for g in (guess, guess / 4)
            ):
                if compiles(first):
                    break
            if fits and max(fits) < top:
                lo = max(fits)
                jump = grid(lo + (capacity - fits[lo]) / per_example, m, top)
                hi = bracket().hi
                if jump > lo and (hi is None or jump < hi) and jump not in failed:
                    compiles(jump)
        if not fits and not refused:
            while not fits and not refused and not done(bracket()):
                compiles(m if m not in failed else max(failed) + m)
            if fits and not refused and not done(bracket()):
                lo = max(fits)
                nxt = untried(max(2 * m, int(guess or 0) // 4 // m * m), lo, None)
                if nxt is not None:
                    compiles(nxt)
        width = None
        misses = 0
        while True:
            proven = bracket()
            lo, hi = proven.lo, proven.hi
            if done(proven):
                answer_proven()
                return proven
            if lo is None:  # refused, or failed, at the smallest candidates
                nxt = untried(m, None, hi)
            elif hi is None:
                aim = _extrapolate(fits, lo, capacity)
                if aim is None:
                    nxt = untried(min(top, 2 * lo), lo, None)
                elif aim < lo + m:
                    nxt = untried(min(top, lo + m * 2**misses), lo, None)
                    misses += 1
                else:
                    nxt = untried(grid(aim, m, top), lo, None)
            else:
                middle = lo + (hi - lo) // 2 // m * m
                aim = crossing((lo, fits[lo]), (hi, refused[hi]), capacity)
                nxt = middle if aim is None else max(lo + m, grid(aim, m, hi - m))
                if width is not None and 2 * (hi - lo) > width:
                    nxt = middle
                width = hi - lo
                nxt = untried(nxt, lo, hi)
            assert nxt is not None  # `done` says when none is left
            compiles(nxt)
    except KeyboardInterrupt:
        if done(bracket()):  # the signal came once the answer was proven
            answer_proven()
            return bracket()
        return bracket(interrupted=True)


def _extrapolate(fits: dict[int, int], lo: int, capacity: int) -> float | None:
    """Where the line through the two largest compiles meets the capacity;
    None where it does not rise (then the search doubles)."""
    below = [b for b in fits if b < lo]
    if not below:
        return None
    return crossing((max(below), fits[max(below)]), (lo, fits[lo]), capacity)
