"""The JSON report a training job reads, and the one-line reader for it.

Schema (version 1)::

    {
      "schema": "autotune.result",
      "version": 1,
      "results": [
        {
          "label": "vgg16 remat=none",      # the choice this row answers
          "batch": 632,                      # largest batch that fits
          "peak_bytes": 79000000000,         # compiled need at `batch`
          "budget": {"limit_bytes": ..., "reserve_bytes": ..., "source": "...", "bytes": ...},
          "headroom_bytes": ...,             # budget.bytes - peak_bytes
          "next_batch": 640,                 # next candidate, proven not to fit (null: none proven)
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
          "code_in_peak_bytes": 0,           # TPU: program code counted in peak_bytes
          "interrupted": false,
          "from_cache": false,               # answered from the result cache
          "flops_per_example": 9.0e10,       # or null
          "flops_source": "..."              # which cost analysis gave it
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
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autotune._errors import TuneError
from autotune._recommend import Recommendation
from autotune._result import TuneResult

SCHEMA = "autotune.result"
VERSION = 1


def to_json(
    results: Sequence[TuneResult], recommendation: Recommendation | None = None
) -> dict[str, Any]:
    data = {"schema": SCHEMA, "version": VERSION, "results": [r.to_dict() for r in results]}
    if recommendation is not None:
        data["recommendation"] = dataclasses.asdict(recommendation)
    return data


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` whole or not at all."""
    path = Path(path)
    if not path.parent.is_dir():
        raise TuneError(
            f"`path` (={str(path)!r}): the directory {str(path.parent)!r} does not exist"
        )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    """Write the results report to `path` atomically."""
    write_atomic(path, json.dumps(to_json(results, recommendation), indent=2) + "\n")


def read_json(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The result rows of a report, after checking its schema and version."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TuneError(f"`path` (={str(path)!r}) does not exist") from None
    except json.JSONDecodeError as e:
        raise TuneError(f"`path` (={str(path)!r}) is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise TuneError(
            f"`path` (={str(path)!r}) is not an autotune report (its 'schema' must be {SCHEMA!r})"
        )
    if data.get("version") != VERSION:
        raise TuneError(
            f"`path` (={str(path)!r}) has report version "
            f"{data.get('version')!r}; this reader knows {VERSION}"
        )
    return data["results"]


def read_results(path: str | os.PathLike[str]) -> tuple[TuneResult, ...]:
    """The results of a report, as `TuneResult`s."""
    return tuple(TuneResult.from_dict(row) for row in read_json(path))


def load_batch_size(path: str | os.PathLike[str], label: str | None = None) -> int:
    """The tuned batch size from a report: `load_batch_size("tune.json")`.

    A report of several rows (remat choices) needs `label` to pick one.
    """
    rows = read_json(path)
    labels = ", ".join(repr(r["label"]) for r in rows)
    if label is None:
        if len(rows) != 1:
            raise TuneError(
                f"`label` (=None): {str(path)!r} holds {len(rows)} results ({labels}); name one"
            )
        return int(rows[0]["batch"])
    for row in rows:
        if row["label"] == label:
            return int(row["batch"])
    raise TuneError(f"`label` (={label!r}) is not in {str(path)!r}; it holds {labels}")
