"""Several targets at once: a comma-separated list, each named once."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from autotune._core.checks import shown
from autotune._core.errors import TargetError, TuneError
from autotune._targets.interface import Target
from autotune._targets.registry import get_target


def split_target_list(text: str, name: str = "--target") -> tuple[str, ...] | None:
    """The names in `text`, a comma-separated list; None when it names one
    target (no comma). An empty list, or an empty name in it, is refused."""
    if "," not in text and text.strip():
        return None
    names = tuple(part.strip() for part in text.split(","))
    if not any(names):
        raise TuneError(
            f"`{name}` (={text!r}) must name at least one target: NAME, or NAME,NAME,... "
            "to compare several"
        )
    if "" in names:
        raise TuneError(
            f"`{name}` (={text!r}) has an empty name in its list: every comma separates two targets"
        )
    return names


def get_targets(
    targets: Sequence[str | os.PathLike | Target],
    *,
    name: str = "targets",
    mem_fraction: float | None = None,
) -> tuple[Target, ...]:
    """Each target of `targets` (names as `get_target` takes them, or
    `Target`s), refusing an empty list and a target named twice, however
    spelled ("v5e:1x1" and "v5litepod-1" are one slice)."""
    if isinstance(targets, (str, os.PathLike)) or not isinstance(targets, Sequence):
        raise TuneError(
            f"`{name}` (={shown(targets)}) must be a sequence of targets, e.g. "
            "['h100-sxm-80gb', 'v5e:1x1']"
        )
    if not targets:
        raise TuneError(f"`{name}` (={shown(targets)}) must name at least one target")
    listed = shown(_names(targets))
    resolved = []
    for given in targets:
        try:
            target = (
                given if isinstance(given, Target) else get_target(given, mem_fraction=mem_fraction)
            )
        except TargetError as e:
            raise TargetError(f"`{name}` (={listed}): {e}") from None
        resolved.append(target)
    seen: dict[Any, str] = {}
    for given, target in zip(_names(targets), resolved):
        for key in (target.name, _machine(target)):
            if key in seen:
                raise TuneError(
                    f"`{name}` (={listed}) names one target twice: {seen[key]!r} and "
                    f"{given!r} are both {target.description}; name each once"
                )
        seen[target.name] = seen[_machine(target)] = given
    return tuple(resolved)


def _names(targets: Sequence[Any]) -> list[str]:
    return [t.name if isinstance(t, Target) else os.fspath(t) for t in targets]


def _machine(target: Target) -> tuple[tuple[str, Any], ...]:
    """What the target compiles for, whatever its name."""
    return tuple(sorted((k, v) for k, v in target.identity().items() if k != "target"))
