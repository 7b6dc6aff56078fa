"""How many bytes the step may use on the target."""

from __future__ import annotations

import dataclasses
import os

from autotune import _checks as check
from autotune._errors import TuneError

# A CPU has no allocator limit: by default the step may use this share of
# the machine's physical memory, leaving the rest to the OS and the program.
CPU_MEMORY_SHARE = 0.75


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


def _check_bytes(name: str, value: object, *, positive: bool) -> int:
    try:
        number = check.integer(name, value)
    except TuneError:
        raise TuneError(f"`{name}` (={value!r}) must be an integer number of bytes") from None
    if number < 0 or (positive and number == 0):
        rule = "positive" if positive else "zero or positive"
        raise TuneError(f"`{name}` (={value!r}) must be {rule}")
    return number


def physical_memory_bytes() -> int:
    """Total physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resolve_budget(
    *,
    budget_bytes: int | None,
    reserve_bytes: int,
    target_limit: int | None,
    target_source: str,
    platform: str,
) -> Budget:
    """The budget: an explicit `budget_bytes` wins over the target's limit.

    `reserve_bytes` (other live buffers: prefetched batches, eval state) is
    taken off either. A CPU target without a limit gets `CPU_MEMORY_SHARE` of
    physical memory, and says so.
    """
    reserve = _check_bytes("reserve_bytes", reserve_bytes, positive=False)
    if budget_bytes is not None:
        limit = _check_bytes("budget_bytes", budget_bytes, positive=True)
        source = "given (budget_bytes)"
    elif target_limit is not None:
        limit, source = target_limit, target_source
    elif platform == "cpu":
        limit = int(CPU_MEMORY_SHARE * physical_memory_bytes())
        source = (
            f"default for a CPU: {CPU_MEMORY_SHARE:g} x physical memory "
            f"({physical_memory_bytes():,} B)"
        )
    else:
        raise TuneError(
            f"the target ({platform}) reports no memory limit: give `budget_bytes` "
            "(--budget on the command line)"
        )
    if reserve >= limit:
        raise TuneError(
            f"`reserve_bytes` (={reserve:,}) must be below the budget's limit "
            f"(={limit:,}, {source})"
        )
    return Budget(limit, reserve, source)
