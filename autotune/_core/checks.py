"""Checks of single values from outside: arguments, and fields read back from disk.

Each returns the value as a plain Python type or raises `TuneError` naming
the value, what it was and the rule: "`multiple_of` (=0) must be a positive
integer". Integers may be any integer type (`int`, numpy's, a 0-d array),
never a bool or a float; numbers may be any real type but a bool, and must be
finite.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune._core.errors import TuneError


def shown(value: Any, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def integer(name: str, value: Any, *, minimum: int | None = None) -> int:
    """`value` as an `int`, at least `minimum` if given."""
    rule = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer of at least {minimum}"
    )
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TuneError(f"`{name}` (={shown(value)}) must be {rule}") from None
    if minimum is not None and number < minimum:
        raise TuneError(f"`{name}` (={shown(value)}) must be {rule}")
    return number


def optional_integer(name: str, value: Any, *, minimum: int | None = None) -> int | None:
    return None if value is None else integer(name, value, minimum=minimum)


def real(name: str, value: Any, *, minimum: float | None = None) -> float:
    """`value` as a finite `float`, at least `minimum` if given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TuneError(f"`{name}` (={shown(value)}) must be a finite number")
    if minimum is not None and value < minimum:
        raise TuneError(f"`{name}` (={shown(value)}) must be at least {minimum:g}")
    return float(value)


def optional_real(name: str, value: Any, *, minimum: float | None = None) -> float | None:
    return None if value is None else real(name, value, minimum=minimum)


def fraction(name: str, value: Any) -> float:
    """A share of memory: a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise TuneError(f"`{name}` (={shown(value)}) must be a number in (0, 1]")
    return float(value)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TuneError(f"`{name}` (={shown(value)}) must be True or False")
    return value


def string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TuneError(f"`{name}` (={shown(value)}) must be a string")
    return value


def mapping(name: str, value: Any) -> dict[Any, Any]:
    if not isinstance(value, Mapping):
        raise TuneError(f"`{name}` (={shown(value)}) must be a mapping")
    return dict(value)


def path(name: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TuneError(f"`{name}` (={shown(value)}) must be a path (a string or os.PathLike)")
    return Path(value)


def function(name: str, value: Any, what: str = "") -> Any:
    """A callable; `what` says more of what it must be."""
    if not callable(value):
        raise TuneError(f"`{name}` (={shown(value)}) must be callable{what}")
    return value


def callable_or_none(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TuneError(f"`{name}` (={shown(value)}) must be callable or None")
    return value


def instance(name: str, value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise TuneError(f"`{name}` (={shown(value)}) must be {what}")
    return value


def instance_or_none(name: str, value: Any, kind: type, what: str) -> Any:
    return value if value is None else instance(name, value, kind, f"{what} or None")
