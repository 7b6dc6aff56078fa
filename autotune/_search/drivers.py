"""The two ways a search drives a prober, one per way need(batch) behaves.

- `BY_NEED`: need grows with the batch, and is affine with XLA's
  rematerialization pass off (GPUs, the CPU): a batch fits when its need is
  within the budget, and lines through compiles place the next ones
  (`autotune._search.need`). Without an estimate, the first compile is dumped
  and split into the bytes that follow the batch and the rest.
- `BY_COMPILES`: the compiler fits programs itself and refuses what it
  cannot (TPUs): a batch fits when it compiles, and need is not assumed to
  grow (`autotune._search.compiles`). Where probes stop once the compiler
  has placed the buffers (`Prober.places`), the search runs on those
  placements and its answer is then compiled in full (`search_placed`).

A target names its driver (`Target.search`); the tuner only calls it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

from autotune._core.errors import TuneError
from autotune._explain.unfused import MARGIN
from autotune._search.compiles import (
    FITS,
    PLACED,
    REFUSED,
    Outcome,
    Verdict,
    search_compiles,
    search_placed,
)
from autotune._search.need import Bracket, calibration_batch, first_batch, search

if TYPE_CHECKING:
    from autotune._compile.prober import Prober
    from autotune._workloads.estimate import Estimate


@dataclasses.dataclass(frozen=True)
class Grid:
    """The candidates of one search, and where an estimate puts the answer."""

    multiple_of: int
    max_batch: int
    guess: int | None = None
    hint: Estimate | None = None  # an estimate with bytes per example
    width: int = 1  # compiles per round of the search by need, however many run at once

    @property
    def top(self) -> int:
        """The largest candidate."""
        return self.max_batch // self.multiple_of * self.multiple_of


class Driver(Protocol):
    def first_batch(self, grid: Grid) -> int:
        """The batch of the search's first compile."""

    def run(self, prober: Prober, budget: int, grid: Grid) -> Bracket:
        """The search: what the compiles proved about `budget`."""


class _ByNeed:
    def first_batch(self, grid: Grid) -> int:
        return first_batch(grid.multiple_of, grid.top, grid.guess, split=grid.hint is None)

    def run(self, prober: Prober, budget: int, grid: Grid) -> Bracket:
        hint = grid.hint
        split = hint is None
        if split:
            prober.dump_first_compile()
        return search(
            prober.measure,
            budget,
            multiple_of=grid.multiple_of,
            max_batch=grid.max_batch,
            guess=grid.guess,
            per_example=hint.per_example_bytes if hint else None,
            fixed=hint.fixed_bytes if hint else None,
            split=prober.fixed_bytes if split else None,
            room=_room(prober, budget, grid) if split else None,
            width=grid.width,
            prepare=prober.prepare,
        )


class _ByCompiles:
    def first_batch(self, grid: Grid) -> int:
        return first_batch(grid.multiple_of, grid.top, grid.guess, split=False)

    def run(self, prober: Prober, budget: int, grid: Grid) -> Bracket:
        def verdict(batch: int) -> Verdict:
            p = prober.probes.get(batch)  # None: it failed, in `prober.failures`
            if p is None:
                return None
            if p.placed:
                return PLACED, p.need_bytes
            if p.refused and prober.places and p.available_bytes:
                # The limit and the excess the compiler printed: it prints the
                # limit rounded (at 16 GB, to 10 MB), the excess to 3 digits.
                return REFUSED, budget + p.need_bytes - p.available_bytes
            # As the compiler counts: with the program's code.
            return (REFUSED if p.refused else FITS), p.need_bytes + p.code_bytes

        def place_at(batch: int) -> Verdict:
            prober.measure([batch], lambda b, need: None)
            return verdict(batch)

        def in_full(batch: int) -> Verdict:
            prober.compile_in_full(batch)
            return verdict(batch)

        keywords: dict[str, Any] = dict(
            multiple_of=grid.multiple_of,
            max_batch=grid.max_batch,
            guess=grid.guess,
            per_example=grid.hint.per_example_bytes if grid.hint else None,
        )
        if prober.places:
            return search_placed(place_at, in_full, budget, **keywords)

        def compile_at(batch: int) -> Outcome:
            v = place_at(batch)
            return None if v is None else (v[0] == FITS, v[1])

        return search_compiles(compile_at, budget, **keywords)


BY_NEED: Driver = _ByNeed()
BY_COMPILES: Driver = _ByCompiles()


def _room(prober: Prober, budget: int, grid: Grid) -> float | None:
    """Where the first compile may go (`search`'s `room`): a share of the
    unfused boundary of the step traced at the first batch, where the step's
    arguments can be made (its data may hold fewer examples)."""
    m, top = grid.multiple_of, grid.top
    unfused = prober.unfused_boundary(first_batch(m, top, None, split=True), budget)
    if unfused is None:
        return None
    room = unfused * MARGIN
    try:
        prober.abstract_args(calibration_batch(m, top, room))
    except TuneError:
        return None
    return room
