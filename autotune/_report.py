"""The JSON report a training job reads, and the one-line reader for it.

Schema (version 3; the reader also takes version 2, which had no TPU
fields: `compiler_fits`, `code_in_peak_bytes` and the probes' `code_bytes`,
`required_bytes`, `available_bytes`; and version 1, which also had no
`failures`, `contradictions` or peak breakdown)::

    {
      "schema": "autotune.result",
      "version": 3,
      "results": [
        {
          "label": "vgg16 remat=none",      # the choice this row answers
          "batch": 632,                      # largest batch that fits
          "peak_bytes": 79000000000,         # compiled need at `batch`
          "budget": {"limit_bytes": ..., "reserve_bytes": ..., "source": "...", "bytes": ...},
          "headroom_bytes": ...,             # budget.bytes - peak_bytes
          "next_batch": 640,                 # next candidate that compiles, proven not
                                             # to fit (null: none proven)
          "next_peak_bytes": ...,
          "fixed_bytes": ..., "per_example_bytes": ...,   # XLA's affine fit
          "estimate_per_example_bytes": ...,              # analytical, or null
          "compiles": 4, "seconds": 9.3,
          "target": "h100-sxm-80gb", "target_description": "...",
          "xla_settings": {"remat_pass": false, "compiler_options": {...},
                           "XLA_FLAGS": "", "jax": "0.10.2", "jaxlib": "0.10.2"},
          "multiple_of": 8, "max_batch": 65536,
          "probes": [{"batch": 8, "argument_bytes": ..., "output_bytes": ...,
                      "alias_bytes": ..., "temp_bytes": ..., "need_bytes": ...,
                      "compile_seconds": ..., "flops": ...,
                      "code_bytes": ...,             # the program's code
                      "required_bytes": null,        # refused by a TPU compiler: what it
                      "available_bytes": null}, ...],  # said it needed and had
          "compiler_fits": false,            # TPU: the compiler fits programs itself; a
                                             # batch fits when it compiles, next_batch
                                             # is the candidate above, refused
          "code_in_peak_bytes": 0,           # TPU: program code counted in peak_bytes
          "interrupted": false,
          "from_cache": false,               # answered from the result cache
          "flops_per_example": 9.0e10,       # or null
          "flops_source": "...",             # which cost analysis gave it
          "failures": [{"batch": 648, "error": "...", "compile_seconds": 2.1}],
                                             # candidates that did not compile, not
                                             # for memory (those between batch and
                                             # next_batch are part of the proof)
          "contradictions": [[a, b], ...],   # compiles whose need fell from batch a
                                             # to b > a: the answer is not exact
          # Only with --why (find_max_batch(why=True)): what is live at the peak.
          "peak_breakdown": [  # largest first; sums to peak_bytes; null if unavailable
            {"bytes": ..., "shape": [440, 224, 224, 64], "dtype": "float32",
             "kind": "activation",           # parameter, optimizer_state, input_batch, activation,
                                             # gradient, temporary, output, arena_free (the
                                             # arena's bytes free at the peak); the last: rest
             "op_name": "jit(step)/jvp(stage1)/conv1/conv_general_dilated",
             "source": "/path/vgg.py:119",  # or null
             "module": "stage1/conv1"},      # from the op name or the stack; "" if none
            ...,
            {"bytes": ..., "kind": "rest", ...}],
          "peak_breakdown_info": {"obtained": "...", "seconds": 0.4, "peak_step": "...",
                                  "unused_bytes": ...,   # arena free at the peak
                                  "bytes_by_kind": {...}, "bytes_by_module": {...},
                                  "unavailable": ""}     # the reason, when unavailable
        }
      ],
      "recommendation": {"label": ..., "batch": ..., "basis": "...",   # optional
                         "samples_per_second": null}
    }
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autotune import _checks as check
from autotune._errors import TuneError
from autotune._recommend import Recommendation
from autotune._result import TuneResult
from autotune._validate import check_recommendation, result_from_dict

SCHEMA = "autotune.result"
VERSION = 3
# Versions this reader takes; those before 3 lack the TPU fields, those
# before 2 also `failures` and `contradictions`.
READABLE = (1, 2, 3)


def to_json(
    results: Sequence[TuneResult], recommendation: Recommendation | None = None
) -> dict[str, Any]:
    data = {"schema": SCHEMA, "version": VERSION, "results": [r.to_dict() for r in results]}
    if recommendation is not None:
        data["recommendation"] = dataclasses.asdict(recommendation)
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
) -> None:
    """Write the results report to `path` atomically; `TuneError` naming
    `path` if it cannot be written."""
    for i, r in enumerate(results):
        check.instance(f"results[{i}]", r, TuneResult, "an autotune.TuneResult")
    check.path("path", path)
    text = json.dumps(to_json(results, recommendation), indent=2) + "\n"
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
    except TuneError as e:
        raise TuneError(f"`path` (={str(path)!r}) holds an invalid report: {e}") from None
    return rows, results


def load_batch_size(
    path: str | os.PathLike[str], label: str | None = None, *, allow_interrupted: bool = False
) -> int:
    """The tuned batch size from a report: `load_batch_size("tune.json")`.

    A report of several rows (remat choices) needs `label` to pick one. A row
    of an interrupted search (its batch fits; larger ones were not all tried)
    is refused unless `allow_interrupted` is True.
    """
    check.instance_or_none("label", label, str, "a string")
    check.boolean("allow_interrupted", allow_interrupted)
    results = read_results(path)
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
            raise TuneError(
                f"`label` (={label!r}) names {len(rows)} rows of {str(path)!r}; "
                "a batch size needs one"
            )
        (row,) = rows
    if row.interrupted and not allow_interrupted:
        raise TuneError(
            f"`label` (={row.label!r}) in {str(path)!r} is from an interrupted search: "
            f"batch {row.batch} fits, but the boundary above it was not proven; "
            "pass allow_interrupted=True to use it anyway"
        )
    return row.batch
