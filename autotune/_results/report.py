"""The JSON report a training job reads, and the one-line reader for it.

The schema, field by field, and its versions (this writer's `VERSION`; the
readers take `READABLE`) are documented in docs/schema.md; a test holds that
page and the fields written here to each other.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune._core import checks as check
from autotune._core.errors import TuneError
from autotune._results.bound import ThroughputBound
from autotune._results.recommend import Recommendation
from autotune._results.result import TuneResult
from autotune._results.validate import (
    check_plan_search,
    check_recommendation,
    result_from_dict,
)

SCHEMA = "autotune.result"
VERSION = 5
# Versions this reader takes; those before 5 lack the probes' `stopped` and
# `placed_bytes`, those before 4 `remat_plan`,
# `program_changes` and the probes' `program`, those before 3 also the TPU
# fields, those before 2 also `failures` and `contradictions`.
READABLE = (1, 2, 3, 4, 5)


def to_json(
    results: Sequence[TuneResult],
    recommendation: Recommendation | None = None,
    bounds: Sequence[ThroughputBound] | None = None,
    plan_search: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    rows = [r.to_dict() for r in results]
    for row, bound in zip(rows, bounds or ()):
        row["throughput_bound"] = bound.to_dict()
    data = {"schema": SCHEMA, "version": VERSION, "results": rows}
    if recommendation is not None:
        data["recommendation"] = dataclasses.asdict(recommendation)
    if plan_search is not None:
        data["plan_search"] = dict(plan_search)
    return data


def temporary_prefix(file: Path) -> str:
    """The prefix of the temporary file an atomic write of `file` goes
    through: short, so that any name its directory takes can be written."""
    return f".{file.name[:32]}."


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` whole or not at all."""
    path = Path(path)
    if not path.parent.is_dir():
        raise TuneError(
            f"`path` (={str(path)!r}): the directory {str(path.parent)!r} does not exist"
        )
    if path.is_dir():
        raise TuneError(f"`path` (={str(path)!r}) is a directory; give a file's path")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_json(
    results: Sequence[TuneResult],
    path: str | os.PathLike[str],
    recommendation: Recommendation | None = None,
    *,
    bounds: Sequence[ThroughputBound] | None = None,
    plan_search: Mapping[str, Any] | None = None,
) -> None:
    """Write the results report to `path` atomically; `TuneError` naming
    `path` if it cannot be written. `bounds`, one per result (several
    targets side by side), go in the rows as `throughput_bound`;
    `plan_search`: how a search over remat plans chose the rows
    (`autotune.PlanSearch.to_dict()`)."""
    for i, r in enumerate(results):
        check.instance(f"results[{i}]", r, TuneResult, "an autotune.TuneResult")
    if bounds is not None and len(bounds) != len(results):
        raise TuneError(
            f"`bounds` holds {len(bounds)} bounds for {len(results)} results; give one each"
        )
    check.path("path", path)
    text = json.dumps(to_json(results, recommendation, bounds, plan_search), indent=2) + "\n"
    try:
        write_atomic(path, text)
    except OSError as e:
        reason = e.strerror or str(e)
        raise TuneError(f"`path` (={str(path)!r}) cannot be written: {reason}") from None
    except RuntimeError as e:  # pathlib's "Symlink loop from ..."
        raise TuneError(f"`path` (={str(path)!r}) cannot be written: {e}") from None


@dataclasses.dataclass(frozen=True)
class _HugeInteger:
    """An integer in a report too long for Python to read (`int` refuses
    more than `sys.get_int_max_str_digits()` digits)."""

    digits: int


def _integer(text: str) -> int | _HugeInteger:
    try:
        return int(text)
    except ValueError:
        return _HugeInteger(len(text.lstrip("-")))


def _first_huge(value: Any, where: str = "") -> tuple[str, int] | None:
    """(field, digits) of the first integer too long to read, if any; the
    field as `results[0].batch`."""
    if isinstance(value, _HugeInteger):
        return where or "the report", value.digits
    if isinstance(value, dict):
        items = [(f"{where}.{key}" if where else str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
    else:
        return None
    for field, item in items:
        found = _first_huge(item, field)
        if found is not None:
            return found
    return None


def read_json(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The result rows of a report, once its schema, version and every row check out."""
    return _read(path)[0]


def read_results(path: str | os.PathLike[str]) -> tuple[TuneResult, ...]:
    """The results of a report, as `TuneResult`s, once every row checks out
    (`TuneError` naming the path and the field otherwise)."""
    return _read(path)[1]


def _read(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], tuple[TuneResult, ...]]:
    file = check.path("path", path)
    try:
        data = json.loads(file.read_text(), parse_int=_integer)
    except FileNotFoundError:
        raise TuneError(f"`path` (={str(path)!r}) does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TuneError(f"`path` (={str(path)!r}) cannot be read: {e}") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise TuneError(f"`path` (={str(path)!r}) is not valid JSON: {e}") from None
    huge = _first_huge(data)
    if huge is not None:
        field, digits = huge
        raise TuneError(
            f"`path` (={str(path)!r}): `{field}` is an integer of {digits} digits; "
            f"a report's integers have at most {sys.get_int_max_str_digits() or 'any'}"
        )
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise TuneError(
            f"`path` (={str(path)!r}) is not an autotune report (its 'schema' must be {SCHEMA!r})"
        )
    version = data.get("version")
    if version not in READABLE or type(version) is not int:
        raise TuneError(
            f"`path` (={str(path)!r}) has report version {version!r}; this reader knows "
            f"{', '.join(map(str, READABLE))}"
        )
    try:
        rows = data.get("results")
        if not isinstance(rows, list):
            raise TuneError(f"`results` (={check.shown(rows)}) must be a list of results")
        results = tuple(
            result_from_dict(row, f"results[{i}]", version=version) for i, row in enumerate(rows)
        )
        if "recommendation" in data:
            check_recommendation(data["recommendation"], results, "recommendation")
        if "plan_search" in data:
            check_plan_search(data["plan_search"], "plan_search")
    except TuneError as e:
        raise TuneError(f"`path` (={str(path)!r}) holds an invalid report: {e}") from None
    return rows, results


def load_batch_size(
    path: str | os.PathLike[str],
    label: str | None = None,
    *,
    target: str | None = None,
    allow_interrupted: bool = False,
) -> int:
    """The tuned batch size from a report: `load_batch_size("tune.json")`.

    A report of several rows (remat choices) needs `label` to pick one; a
    report of several targets, `target` too (a row's target name). A row
    of an interrupted search (its batch fits; larger ones were not all
    tried) is refused unless `allow_interrupted` is True.
    """
    check.instance_or_none("label", label, str, "a string")
    check.instance_or_none("target", target, str, "a string")
    check.boolean("allow_interrupted", allow_interrupted)
    results = read_results(path)
    if target is not None:
        names = ", ".join(dict.fromkeys(repr(r.target) for r in results))
        results = tuple(r for r in results if r.target == target)
        if not results:
            raise TuneError(f"`target` (={target!r}) is not in {str(path)!r}; it holds {names}")
    labels = ", ".join(repr(r.label) for r in results)
    if label is None:
        if len(results) != 1:
            raise TuneError(
                f"`label` (=None): {str(path)!r} holds {len(results)} results ({labels}); name one"
            )
        (row,) = results
    else:
        rows = [r for r in results if r.label == label]
        if not rows:
            raise TuneError(f"`label` (={label!r}) is not in {str(path)!r}; it holds {labels}")
        if len(rows) > 1:
            targets = ", ".join(repr(r.target) for r in rows)
            raise TuneError(
                f"`label` (={label!r}) names {len(rows)} rows of {str(path)!r} "
                f"(targets {targets}); a batch size needs one: name its `target`"
            )
        (row,) = rows
    if row.interrupted and not allow_interrupted:
        raise TuneError(
            f"`label` (={row.label!r}) in {str(path)!r} is from an interrupted search: "
            f"batch {row.batch} fits, but the boundary above it was not proven; "
            "pass allow_interrupted=True to use it anyway"
        )
    return row.batch
