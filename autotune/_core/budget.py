"""How many bytes the step may use: the budget record, and the rule that
makes one from what the user gave and what the target says."""

from __future__ import annotations

import dataclasses

from autotune._core import checks as check
from autotune._core.errors import TuneError


@dataclasses.dataclass(frozen=True)
class Budget:
    """The bytes available to the step and where the number came from."""

    limit_bytes: int
    reserve_bytes: int
    source: str

    @property
    def bytes(self) -> int:
        """What the compiled step may need: the limit less the reserve."""
        return self.limit_bytes - self.reserve_bytes


def check_bytes(name: str, value: object, *, positive: bool) -> int:
    """`value` as a count of bytes: an integer, positive or at least zero."""
    try:
        number = check.integer(name, value)
    except TuneError:
        raise TuneError(f"`{name}` (={value!r}) must be an integer number of bytes") from None
    if number < 0 or (positive and number == 0):
        rule = "positive" if positive else "zero or positive"
        raise TuneError(f"`{name}` (={value!r}) must be {rule}")
    return number


def resolve_budget(
    *,
    budget_bytes: int | None,
    reserve_bytes: int,
    target_limit: int | None,
    target_source: str,
    target_name: str = "the target",
    ceiling: int | None = None,
) -> Budget:
    """The budget: an explicit `budget_bytes` wins over the target's limit,
    capped at `ceiling` (one device's memory, where known) with a note.

    `reserve_bytes` (other live buffers: prefetched batches, eval state) is
    taken off either.
    """
    reserve = check_bytes("reserve_bytes", reserve_bytes, positive=False)
    if budget_bytes is not None:
        limit = check_bytes("budget_bytes", budget_bytes, positive=True)
        source = "given (budget_bytes)"
        if ceiling is not None and limit > ceiling:
            source = (
                f"given (budget_bytes = {limit:,} B), capped at the memory of "
                f"{target_name} ({ceiling:,} B)"
            )
            limit = ceiling
    elif target_limit is not None:
        limit, source = target_limit, target_source
    else:
        raise TuneError(
            f"the target {target_name} reports no memory limit: give `budget_bytes` "
            "(--budget on the command line)"
        )
    if reserve >= limit:
        raise TuneError(
            f"`reserve_bytes` (={reserve:,}) must be below the budget's limit "
            f"(={limit:,}, {source})"
        )
    return Budget(limit, reserve, source)
