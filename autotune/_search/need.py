"""The search for the largest batch whose compiled need fits a budget.

The search only ever trusts compiled results. Guesses (an analytical
estimate, the affine model of the compiles made so far) choose *where* to
compile next; whether a batch fits is decided by its compile alone. It keeps
the largest batch proven to fit (`lo`) and the smallest above it proven not
to (`hi`), and ends when no candidate that compiles lies between them, so the
answer is exact for any need(batch) that grows with the batch, affine or not.

It works in rounds of up to `width` compiles (asked before each round),
which the caller may run concurrently. Each round aims at the boundary
predicted so far and compiles the candidates nearest to it, the one
predicted to fit first:

1. with an analytical estimate: its guess (and the candidate above it, when
   a round holds two compiles), the first compile then calibrating the
   estimate: the line through the estimate's fixed bytes and that compile;
   without one, given a `split` of a compile into the bytes that follow the
   batch and the rest: one compile, as large as `room` allows, and the line
   through its fixed bytes and it; without either: the smallest candidate
   (and a small multiple), then the batch that need in proportion to the
   batch would put at the budget;
2. the boundary of the line a split or an estimate gave, then of the affine
   model through the two largest batches that fit, or through the bracket's
   ends once one does not; with need affine, as it is with XLA's
   rematerialization pass off, and a line that puts the boundary on the
   right candidate, the second round proves the answer (3 compiles: one,
   then the pair, at once or one after the other); from the two small
   batches, the third (4 compiles);
3. when a round fails to halve the bracket, the next one halves it instead
   (the first time, unless it only confirms the line's boundary).

A batch that does not compile for a reason other than memory (`None` from
the measure) is left out of the candidates, and the search goes on around
it; the proof then says which candidates between the answer and the next
one did not compile. No candidate at or above a batch proven not to fit is
ever compiled, and none is compiled twice.

Need is assumed to grow with the batch; compiles that contradict it (a
larger batch needing less) are reported, and such an answer is not exact.

While a round's last compiles run, the caller may be told (`prepare`) the
round that would follow should they come out as the line through the
compiles nearest them predicts, to trace those batches meanwhile: a guess,
which never decides which batches are compiled.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

from autotune._core import checks as check
from autotune._core.errors import TuneError
from autotune._core.signals import answer_proven, search_started
from autotune._search.lines import crossing, grid

# What a compile says: the bytes it needs, or None when it did not compile.
Need = int | None
Record = Callable[[int, Need], None]
# Compiles the batches given (concurrently or not), recording each as it ends.
Measure = Callable[[Sequence[int], Record], None]
# The bytes of the compile at a batch that do not follow the batch (None: unknown).
Split = Callable[[int], "float | None"]


def sequential(need_of: Callable[[int], Need]) -> Measure:
    """A measure that compiles one batch after another with `need_of`."""

    def measure(batches: Sequence[int], record: Record) -> None:
        for batch in batches:
            record(batch, need_of(batch))

    return measure


@dataclasses.dataclass(frozen=True)
class Bracket:
    """What the compiles proved.

    `lo` fits (None: no candidate does); `hi`, the smallest compiled batch
    above it, does not (None: none found). `failed` did not compile;
    `contradictions` are pairs (a, b), a < b, whose need falls from a to b.
    """

    lo: int | None
    hi: int | None
    failed: tuple[int, ...] = ()
    contradictions: tuple[tuple[int, int], ...] = ()
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


def search(
    measure: Measure,
    budget: int,
    *,
    multiple_of: int = 8,
    max_batch: int = 65536,
    guess: int | None = None,
    per_example: float | None = None,
    fixed: float | None = None,
    split: Split | None = None,
    room: float | None = None,
    width: int | Callable[[], int] = 1,
    max_failures: int = 6,
    prepare: Callable[[Sequence[int]], None] | None = None,
) -> Bracket:
    """Largest multiple of `multiple_of` up to `max_batch` with need <= budget.

    Args:
        measure: compiles a round of batches, recording each one's need
            (None: it did not compile); see `sequential`.
        budget: bytes available.
        multiple_of: candidates are its multiples.
        max_batch: the largest candidate considered.
        guess: an analytical estimate of the answer; it places the first
            compiles, never decides the answer.
        per_example: the estimate's bytes per example.
        fixed: the estimate's bytes at no batch; with one compile it gives
            a line whose slope is the compile's, not the estimate's.
        split: without a guess, the first compile is at `calibration_batch`
            and `split` of it gives the fixed bytes of such a line.
        room: with a split, a batch expected to fit; the first compile is
            the largest calibration batch at or below it.
        width: compiles per round, or a callable asked before each round.
        max_failures: compiles that may fail before the search stops.
        prepare: told, while compiles of a round are still in flight, the
            batches the next round will likely compile (as the compiles
            ended so far place it), to make them ready while it waits.

    Returns:
        The bracket proven by compiles. A KeyboardInterrupt returns what was
        proven so far, marked interrupted; one that comes once the bracket is
        proven changes nothing. Under the command's signal handling, a
        signal from the proven bracket to the next search waits
        (`autotune._core.signals.answer_proven`).
    """
    multiple_of, max_batch = check_grid(multiple_of, max_batch)
    widths = width if callable(width) else lambda: width
    check.integer("width", widths(), minimum=1)
    hint = _Hint(guess, per_example, fixed)
    state = _State(budget, multiple_of, max_batch // multiple_of * multiple_of, hint)
    rounds = measure
    if prepare is not None:
        rounds = _preparing(measure, state, widths, max_failures, prepare)
    ended = False
    try:
        search_started()
        first = first_batch(multiple_of, state.top, guess, split is not None, room)
        for batches in _rounds(state, widths, max_failures, split, first):
            rounds(batches, state.record)
        _look_above_dips(state, measure, widths, max_failures)
        ended = True
        answer_proven()
    except KeyboardInterrupt:
        if not (ended or state.proven()):
            return state.bracket(interrupted=True)
        answer_proven()  # the signal came once the answer was proven: it is whole
    return state.bracket()


class _State:
    """The compiles made so far and what they prove, and the hint that
    places the next ones (the estimate, or once the first compile is split,
    the split's line)."""

    def __init__(self, budget: int, m: int, top: int, hint: _Hint | None = None):
        self.budget, self.m, self.top = budget, m, top
        self.hint = _NO_HINT if hint is None else hint
        self.needs: dict[int, int] = {}
        self.failed: set[int] = set()

    def copy(self) -> _State:
        copied = _State(self.budget, self.m, self.top, self.hint)
        copied.needs, copied.failed = dict(self.needs), set(self.failed)
        return copied

    def record(self, batch: int, need: Need) -> None:
        if need is None:
            self.failed.add(batch)
        else:
            self.needs[batch] = need

    @property
    def lo(self) -> int | None:
        return max((b for b, n in self.needs.items() if n <= self.budget), default=None)

    @property
    def hi(self) -> int | None:
        lo = self.lo
        over = [b for b, n in self.needs.items() if n > self.budget and (lo is None or b > lo)]
        return min(over, default=None)

    def above(self, batch: int, limit: int | None = None) -> Iterator[int]:
        """Candidates that may compile above `batch`, below `limit`, in order."""
        end = self.top if limit is None else min(self.top, limit - self.m)
        b = (batch // self.m + 1) * self.m
        while b <= end:
            if b not in self.failed:
                yield b
            b += self.m

    def proven(self) -> bool:
        lo, hi = self.lo, self.hi
        if lo is None:
            return hi is not None and next(self.above(0, hi), None) is None
        return next(self.above(lo, hi), None) is None

    def unknown_near(self, target: float, count: int) -> list[int]:
        """Up to `count` candidates not yet compiled in the open bracket,
        nearest to `target`; the lower first on a tie."""
        lo, hi = self.lo, self.hi
        start = 0 if lo is None else lo
        centre = max(start + self.m, min(grid(target, self.m), self.top))
        found: list[int] = []
        limit = centre + self.m if hi is None else min(centre + self.m, hi)
        below = [c for c in self.above(start, limit) if c not in self.needs]
        above = self.above(centre, hi)
        below.reverse()
        up = next((c for c in above if c not in self.needs), None)
        while len(found) < count and (below or up is not None):
            if below and (up is None or centre - below[0] <= up - centre - self.m):
                found.append(below.pop(0))
            else:
                found.append(up)
                up = next((c for c in above if c not in self.needs), None)
        return sorted(found)

    def bracket(self, interrupted: bool = False) -> Bracket:
        ordered = sorted(self.needs)
        drops = tuple((a, b) for a, b in zip(ordered, ordered[1:]) if self.needs[a] > self.needs[b])
        return Bracket(self.lo, self.hi, tuple(sorted(self.failed)), drops, interrupted)


@dataclasses.dataclass(frozen=True)
class _Hint:
    """An analytical estimate: its answer, bytes per example and fixed bytes."""

    guess: int | None
    per_example: float | None
    fixed: float | None

    def line(self, batch: int, need: int) -> tuple[float, float] | None:
        """(fixed, per example) of the line through the estimate's fixed
        bytes and a compile; None without them, or where they do not rise."""
        if self.fixed is None or need <= self.fixed or batch <= 0:
            return None
        return self.fixed, (need - self.fixed) / batch


_NO_HINT = _Hint(None, None, None)


def _preparing(
    measure: Measure,
    state: _State,
    widths: Callable[[], int],
    max_failures: int,
    prepare: Callable[[Sequence[int]], None],
) -> Measure:
    """`measure`, and once a compile ends while others of its round are in
    flight, `prepare` told the round that would follow if those came out as
    the compiles ended so far predict: a guess, which decides nothing."""

    def measured(batches: Sequence[int], record: Record) -> None:
        in_flight = {b for b in batches if b not in state.needs and b not in state.failed}

        def recorded(batch: int, need: Need) -> None:
            record(batch, need)
            in_flight.discard(batch)
            if in_flight:
                guessed = state.copy()
                for b in in_flight:
                    predicted = _predicted(state, b)
                    if predicted is not None:
                        guessed.record(b, predicted)
                likely = next(_rounds(guessed, widths, max_failures, None, None), [])
                prepare([b for b in likely if b not in in_flight])

        measure(batches, recorded)

    return measured


def _predicted(s: _State, batch: int) -> int | None:
    """The need at `batch` on the line through the two compiles nearest to
    it, or with one, through it and the hint's fixed bytes; None without."""
    near = sorted(s.needs, key=lambda b: abs(b - batch))[:2]
    if len(near) == 2:
        (b0, n0), (b1, n1) = sorted((b, s.needs[b]) for b in near)
        return round(n0 + (n1 - n0) * (batch - b0) / (b1 - b0))
    line = s.hint.line(near[0], s.needs[near[0]]) if near else None
    return None if line is None else round(line[0] + line[1] * batch)


def _look_above_dips(
    state: _State, measure: Measure, widths: Callable[[], int], max_failures: int
) -> None:
    """Where need fell as the batch grew, look above the proven bracket
    before answering: dips that fall on multiples of a power of two (XLA
    tiles such batches better) are searched along those multiples, whose
    need may grow while the rest is higher, and the bracket is then closed
    around the largest that fits. Every spacing from the coarsest a dip's
    batch allows down to the candidates' is searched, so that a fall on the
    candidates' own grid does not hide dips on the multiples of 512. The
    batches compiled depend on the compiles alone, so the answer is the same
    on every run. First, a refusal at the
    smallest candidate is checked against a larger one before it is called
    a floor."""
    state.hint = _NO_HINT  # from here on, compiles alone place compiles
    if _check_the_floor(state, measure):
        _close(state, measure, widths, max_failures)
    searched: set[int] = set()
    while True:  # a spacing searched may show dips of a coarser one
        spacing = next((s for s in _dip_grids(state) if s not in searched), None)
        if spacing is None:
            break
        searched.add(spacing)
        sub = _State(state.budget, spacing, state.top // spacing * spacing)
        for b, n in state.needs.items():
            if b % spacing == 0:
                sub.record(b, n)
        sub.failed = {b for b in state.failed if b % spacing == 0}
        if sub.lo is None or sub.proven():
            continue
        left = max_failures - len(state.failed - sub.failed)  # failures count once
        for batches in _rounds(sub, widths, left, None, None):
            measure(batches, _both(state, sub))
    _close(state, measure, widths, max_failures)


def _close(state: _State, measure: Measure, widths: Callable[[], int], max_failures: int) -> None:
    """Prove the bracket around the largest batch that fits, from the compiles made."""
    for batches in _rounds(state, widths, max_failures, None, None):
        measure(batches, state.record)


def _both(state: _State, sub: _State) -> Record:
    def record(batch: int, need: Need) -> None:
        state.record(batch, need)
        sub.record(batch, need)

    return record


def _check_the_floor(state: _State, measure: Measure) -> bool:
    """A step refused at the smallest candidate, and never compiled above
    it: compile the next candidate too (need that falls, then rises, fits
    there). True if it fits: the search goes on from it."""
    m = state.m
    if state.lo is not None or state.hi != m or 2 * m > state.top:
        return False
    if any(b > m for b in state.needs):
        return False
    measure([2 * m], state.record)
    return state.lo is not None


def _dip_grids(state: _State) -> list[int]:
    """The multiples dips may fall on, the coarsest first: every power of
    two (with the candidates' own multiple) coarser than the candidates, up
    to the largest dividing a batch whose need fell below the batch before
    it. A dip's batch may lie on a grid finer than its own power of two."""
    ordered = sorted(state.needs)
    dips = [b for a, b in zip(ordered, ordered[1:]) if state.needs[a] > state.needs[b]]
    if not dips:
        return []
    power = max(b & -b for b in dips)
    spacings = {math.lcm(1 << k, state.m) for k in range(power.bit_length())}
    return sorted((s for s in spacings if state.m < s <= state.top), reverse=True)


def _rounds(
    s: _State,
    widths: Callable[[], int],
    max_failures: int,
    split: Split | None,
    first: int | None,
) -> Iterator[list[int]]:
    """The batches of each round, until the bracket is proven; with `first`
    None, from the compiles `s` holds already."""
    m = s.m
    width = widths()
    if first is None:
        pass
    elif s.hint.guess and s.hint.guess > 0:
        yield [first] if width == 1 else _spread(first, first + m, m, s.top)
    elif split is not None:
        yield [first]
        if first in s.needs:
            s.hint = _Hint(None, None, split(first))
    else:
        yield _spread(m, 4 * m, m, s.top)[:width] if width > 1 else [m]
    misses = 0
    width_before = None
    unhalved = 0
    while not s.proven() and len(s.failed) < max_failures:
        lo, hi = s.lo, s.hi
        if lo is not None and hi is None:
            target = _extend(s, lo)
            if target <= lo + m / 2:
                target = lo + m * 2**misses
                misses += 1
        elif lo is not None:
            target = _interpolate(s, lo, hi)
            confirming = grid(target, m) in (lo, hi - m)
            # A round that did not halve the bracket is followed by one that
            # does, unless it only confirms the line's boundary; after two
            # such rounds need is no line here (a staircase would be crawled
            # a candidate a round), and every round halves the bracket.
            if width_before is not None and 2 * (hi - lo) > width_before:
                unhalved += 1
                if not confirming:
                    target = lo + (hi - lo) / 2
            if unhalved > 1:
                target = lo + (hi - lo) / 2
            width_before = hi - lo
        elif hi is not None:
            target = _shrink(s, hi)
        else:
            target = m  # every compile so far failed: try the smallest candidates
        batches = s.unknown_near(target, check.integer("width", widths(), minimum=1))
        if not batches:
            return
        yield batches


def first_batch(m: int, top: int, guess: int | None, split: bool, room: float | None = None) -> int:
    """The batch of the search's first compile (`top`: the largest candidate)."""
    if guess and guess > 0:
        return min(top, max(m, int(guess) // m * m))
    return calibration_batch(m, top, room) if split else m


def calibration_batch(m: int, top: int, room: float | None = None) -> int:
    """The first compile's batch where a split of it gives the line: `m`
    times a prime, so that one device's share of it is unlikely to divide
    the model's own dimensions (768, 3072, 1000, ...). The largest such at
    or below `room` (a batch expected to fit), and at least `m` times the
    smallest prime of at least 11 whose multiple is at least 64; `top` where
    that is larger."""
    q = max(11, -(-64 // m))
    while not _prime(q):
        q += 1
    if room is not None and math.isfinite(room) and room >= m * q:
        q = max(q, min(int(room), top) // m)
        while not _prime(q):
            q -= 1
    return min(top, m * q)


def _prime(q: int) -> bool:
    return q > 1 and all(q % d for d in range(2, math.isqrt(q) + 1))


def _spread(first: int, second: int, m: int, top: int) -> list[int]:
    """`first` and a distinct larger candidate near `second`, within the grid."""
    first = min(top, max(m, first // m * m))
    second = min(top, max(first + m, second // m * m))
    return [first] if second > top or second == first else [first, second]


def _extend(s: _State, lo: int) -> float:
    """Where the boundary lies above `lo`, the largest batch that fits."""
    fits = sorted(b for b, n in s.needs.items() if n <= s.budget)
    if len(fits) >= 2:
        below = fits[-2]
        boundary = crossing((below, s.needs[below]), (lo, s.needs[lo]), s.budget)
        # Need that did not rise (a stair): twice `lo`, not the largest candidate.
        return 2 * lo if boundary is None else boundary
    hint = s.hint
    line = hint.line(lo, s.needs[lo])
    if line is not None:
        return (s.budget - line[0]) / line[1]
    if hint.per_example and hint.per_example > 0:
        return lo + (s.budget - s.needs[lo]) / hint.per_example
    if s.needs[lo] > 0:
        # Need in proportion to the batch: under an affine need with a fixed
        # part, a lower bound of the boundary, and near it; the second point
        # of the line, far from the first, so that line's slope is precise.
        return lo * s.budget / s.needs[lo]
    return 4 * lo


def _interpolate(s: _State, lo: int, hi: int) -> float:
    boundary = crossing((lo, s.needs[lo]), (hi, s.needs[hi]), s.budget)
    return lo + (hi - lo) / 2 if boundary is None else boundary


def _shrink(s: _State, hi: int) -> float:
    """Where the boundary lies below `hi`, when nothing compiled fits yet."""
    over = sorted(s.needs)
    if len(over) >= 2:
        boundary = crossing((over[0], s.needs[over[0]]), (over[1], s.needs[over[1]]), s.budget)
        if boundary is not None:
            return boundary
    hint = s.hint
    line = hint.line(hi, s.needs[hi])
    if line is not None and s.budget > line[0]:
        return (s.budget - line[0]) / line[1]
    if hint.per_example and hint.per_example > 0:
        return hi - (s.needs[hi] - s.budget) / hint.per_example
    return hi / 4
