"""The policies a remat plan gives a block: "none" or a `jax.checkpoint_policies` name."""

from __future__ import annotations

from typing import Any

from autotune._core import checks as check
from autotune._core.errors import TuneError

NONE = "none"

POLICIES: tuple[str, ...] = (
    "everything_saveable",
    "dots_saveable",
    "checkpoint_dots",
    "dots_with_no_batch_dims_saveable",
    "checkpoint_dots_with_no_batch_dims",
    "nothing_saveable",
)
"""`jax.checkpoint_policies` names a plan accepts besides "none", from the
least recompute to the most."""


def check_policy(name: str, value: Any) -> str:
    """`value` if it is "none" or a policy of `POLICIES`, else a `TuneError`."""
    if value == NONE or value in POLICIES:
        return value
    raise TuneError(
        f"`{name}` (={check.shown(value)}) must be {NONE!r} or a jax.checkpoint_policies "
        f"name: {', '.join(POLICIES)}"
    )
