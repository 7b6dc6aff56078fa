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

Probes that stop at buffer assignment (`search_placed`) make the search
cheap: there the compiler has placed a program's buffers within its limit,
or refused it, in seconds, where the whole compile takes minutes. A
placement is a verdict, not a proof (the compiler counts the program's
code too, known once generated, and may still refuse it), so the search
runs on the verdicts, then compiles its answer in full, and where that is
refused searches on below by full compiles: both ends rest on the
compiler's own word, the answer compiled in full, the next candidate
refused.

What it does not prove: that no batch above a refusal compiles. No batch at
or above a refused one is compiled, as on GPU; where the compiler's fitting
is not monotone, a larger batch might compile, unseen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from autotune._core.signals import answer_proven, search_started
from autotune._search.lines import crossing, grid
from autotune._search.need import Bracket, check_grid

# (compiled, bytes): a compile's need, or the bytes a refusal said it required;
# None: the compile failed for a reason other than memory.
Outcome = tuple[bool, int] | None
# (kind, bytes), kind one of FITS, REFUSED, PLACED (the buffers' bytes, not
# compiled in full); None: it failed.
Verdict = tuple[str, int] | None
FITS, REFUSED, PLACED = "fits", "refused", "placed"


def search_compiles(
    compile_at: Callable[[int], Outcome],
    capacity: int,
    *,
    multiple_of: int = 8,
    max_batch: int = 65536,
    guess: int | None = None,
    per_example: float | None = None,
    max_failures: int = 6,
    known: Mapping[int, Outcome] | None = None,
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
        known: outcomes already compiled, by batch; the search goes on from
            them (the guess is not used then; below a refusal with none that
            compiled, it steps down by the refusal's excess over
            `per_example`).

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
    for batch, outcome in (known or {}).items():
        if outcome is None:
            failed.add(batch)
        else:
            (fits if outcome[0] else refused)[batch] = outcome[1]

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
        if not known and guess and per_example and per_example > 0:
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
        confirmed = 0
        misses = 0
        while True:
            proven = bracket()
            lo, hi = proven.lo, proven.hi
            if done(proven):
                answer_proven()
                return proven
            if lo is None and known and hi in refused and per_example and per_example > 0:
                # On from full compiles that were refused: a step down by the excess.
                aim = hi - (refused[hi] - capacity) / per_example
                nxt = untried(min(hi - m, grid(aim, m)), None, hi)
            elif lo is None:  # refused, or failed, at the smallest candidates
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
                # A step that did not halve the bracket is followed by one that
                # does, unless the line puts the boundary right above `lo`: that
                # candidate is compiled first, twice in a row at most (a line
                # through sizes printed rounded falls a candidate short).
                confirming = aim is not None and grid(aim, m) <= lo and confirmed < 2
                if width is not None and 2 * (hi - lo) > width and not confirming:
                    nxt = middle
                confirmed = confirmed + 1 if confirming else 0
                width = hi - lo
                nxt = untried(nxt, lo, hi)
            assert nxt is not None  # `done` says when none is left
            compiles(nxt)
    except KeyboardInterrupt:
        if done(bracket()):  # the signal came once the answer was proven
            answer_proven()
            return bracket()
        return bracket(interrupted=True)


def search_placed(
    place_at: Callable[[int], Verdict],
    compile_at: Callable[[int], Verdict],
    capacity: int,
    *,
    per_example: float | None = None,
    **grid: Any,
) -> Bracket:
    """`search_compiles` on placements, then on full compiles where needed.

    `place_at` compiles a batch until the compiler has placed its buffers
    (or refused it, or compiled it); `compile_at` compiles a batch in full.
    `grid`: `search_compiles`' other keywords.

    1. The search runs on placements: a placed batch counts as fitting. Its
       next candidate is refused by the compiler itself, a proof.
    2. Its answer is compiled in full. Compiled: the answer, proven.
    3. Refused (its code did not fit beside its buffers): the search goes on
       by full compiles below it, from every refusal seen, the first a step
       down by the excess the refusal printed over the bytes per example of
       the placements.

    A KeyboardInterrupt returns the last bracket, marked interrupted; its
    lower end may then be a placement (the tuner answers with what compiled
    in full).
    """
    known: dict[int, Verdict] = {}

    def placing(batch: int) -> Outcome:
        known[batch] = verdict = place_at(batch)
        return None if verdict is None else (verdict[0] != REFUSED, verdict[1])

    bracket = search_compiles(placing, capacity, per_example=per_example, **grid)
    lo = bracket.lo
    placed = {b: v[1] for b, v in known.items() if v is not None and v[0] == PLACED}
    if bracket.interrupted or lo is None or lo not in placed:  # compiled in full already
        return bracket
    full: dict[int, Outcome] = {
        b: (v[0] == FITS, v[1]) for b, v in known.items() if v is not None and v[0] != PLACED
    }
    full |= {b: None for b in bracket.failed}

    def compiling(batch: int) -> Outcome:
        verdict = compile_at(batch)
        full[batch] = outcome = None if verdict is None else (verdict[0] == FITS, verdict[1])
        return outcome

    try:
        search_started()  # a full compile takes minutes: a signal raises in it
        outcome = compiling(lo)
        if outcome is not None and outcome[0]:
            answer_proven()
            return bracket
    except KeyboardInterrupt:
        return dataclasses.replace(bracket, interrupted=True)
    slope = _slope(placed, lo) or per_example
    return search_compiles(compiling, capacity, per_example=slope, known=full, **grid)


def _slope(placed: Mapping[int, int], lo: int) -> float | None:
    """Bytes per example of the placements: between `lo` and the one farthest
    below it; None without two that rise."""
    below = [b for b in placed if b < lo]
    if not below:
        return None
    far = min(below)
    slope = (placed[lo] - placed[far]) / (lo - far)
    return slope if slope > 0 else None


def _extrapolate(fits: dict[int, int], lo: int, capacity: int) -> float | None:
    """Where the line through the two largest compiles meets the capacity;
    None where it does not rise (then the search doubles)."""
    below = [b for b in fits if b < lo]
    if not below:
        return None
    return crossing((max(below), fits[max(below)]), (lo, fits[lo]), capacity)
