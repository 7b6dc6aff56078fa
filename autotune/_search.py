"""The search for the largest batch whose compiled need fits a budget.

The search only ever trusts compiled results. Guesses (an analytical estimate,
the affine model of two compiles) choose *where* to compile next; whether a
batch fits is decided by its compile alone. It keeps the largest batch proven
to fit (`lo`) and the smallest proven not to (`hi`), and ends when they are
neighbouring candidates, so the answer is exact for any need(batch) that
grows with the batch, affine or not:

1. with an analytical estimate: compile a batch a quarter of the way to
   its guess (safely inside), then jump to where the estimate's per-example
   bytes, added to that compile's need, meet the budget; without one, or if
   the first compile does not fit: compile the smallest candidate and a
   second small one;
2. jump to the boundary of the affine model through the compiled points,
   then confirm: the boundary fits and the next candidate does not (3 or 4
   compiles when XLA's need is affine, as it is with XLA's rematerialization
   pass off);
3. otherwise interpolate between the compiled points that bracket the
   budget, halving the bracket instead whenever interpolation fails to.

No candidate at or above a batch proven not to fit is ever compiled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from autotune import _checks as check
from autotune._errors import TuneError


@dataclasses.dataclass(frozen=True)
class Bracket:
    """What the compiles proved: `lo` fits, `hi` does not (None: not found)."""

    lo: int | None
    hi: int | None
    interrupted: bool = False


def check_grid(multiple_of: int, max_batch: int) -> tuple[int, int]:
    """(`multiple_of`, `max_batch`) as ints, once they make a grid."""
    multiple_of = check.integer("multiple_of", multiple_of, minimum=1)
    max_batch = check.integer("max_batch", max_batch, minimum=1)
    if max_batch < multiple_of:
        raise TuneError(
            f"`max_batch` (={max_batch}) must be at least `multiple_of` (={multiple_of})"
        )
    return multiple_of, max_batch


def _affine_boundary(p: tuple[int, int], q: tuple[int, int], budget: int) -> float | None:
    """Batch at which the line through two (batch, need) points meets budget."""
    (b0, n0), (b1, n1) = sorted((p, q))
    if b1 == b0 or n1 <= n0:
        return None
    return b0 + (budget - n0) * (b1 - b0) / (n1 - n0)


def search(
    measure: Callable[[int], int],
    budget: int,
    *,
    multiple_of: int = 8,
    max_batch: int = 65536,
    guess: int | None = None,
    per_example: float | None = None,
) -> Bracket:
    """Largest multiple of `multiple_of` up to `max_batch` with measure <= budget.

    Args:
        measure: batch -> bytes needed (one compile per new batch).
        budget: bytes available.
        multiple_of: candidates are its multiples.
        max_batch: the largest candidate considered.
        guess: an analytical estimate of the answer; it places the first
            compiles, never decides the answer.
        per_example: the estimate's bytes per example; with `guess`, it
            places the jump after the first compile.

    Returns:
        The bracket proven by compiles. `lo` is None if even the smallest
        candidate does not fit; `hi` is None if `max_batch` fits.
        A KeyboardInterrupt returns what was proven so far, marked
        interrupted.
    """
    m, max_batch = check_grid(multiple_of, max_batch)
    top = max_batch // m * m
    fits: dict[int, int] = {}
    over: dict[int, int] = {}

    def probe(batch: int) -> bool:
        need = measure(batch)
        (fits if need <= budget else over)[batch] = need
        return need <= budget

    def bracket(interrupted: bool = False) -> Bracket:
        return Bracket(max(fits, default=None), min(over, default=None), interrupted)

    try:
        if guess and per_example and per_example > 0:
            first = min(top, max(m, int(guess) // 4 // m * m))
            if probe(first) and first < top:
                jump = first + (budget - fits[first]) / per_example
                probe(max(first + m, _grid(jump, m, top)))
        if not fits:
            if m in over or not probe(m) or top == m:
                return bracket()
            if not over:
                probe(min(top, max(2 * m, int(guess or 0) // 4 // m * m)))
        if max(fits) == top:
            return bracket()
        misses = 0
        width = None
        confirmations = 0
        while True:
            lo, hi = max(fits), min(over, default=None)
            if lo == top or (hi is not None and hi - lo == m):
                return bracket()
            if hi is None:
                below = sorted(fits)[-2]
                nxt = _grid(_affine_boundary((below, fits[below]), (lo, fits[lo]), budget), m, top)
                if nxt <= lo:
                    nxt = min(top, lo + m * 2**misses)
                    misses += 1
            else:
                nxt = max(
                    lo + m,
                    _grid(_affine_boundary((lo, fits[lo]), (hi, over[hi]), budget), m, hi - m),
                )
                confirming = nxt in (lo + m, hi - m) and confirmations < 2
                if width is not None and 2 * (hi - lo) > width and not confirming:
                    nxt = lo + (hi - lo) // 2 // m * m
                confirmations = confirmations + 1 if confirming else 0
                width = hi - lo
            probe(nxt)
    except KeyboardInterrupt:
        return bracket(interrupted=True)


def _grid(batch: float | None, m: int, ceiling: int) -> int:
    """`batch` rounded down to a multiple of m, at most `ceiling`."""
    if batch is None:
        return ceiling
    return min(ceiling, int(batch // m) * m)
