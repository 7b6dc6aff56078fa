"""A cache of tuning results, keyed on everything that changes memory.

The key hashes the step's lowered program (its StableHLO text at the
smallest candidate, which carries the argument shapes, dtypes and
shardings), the target's description and config, the budget, the search
grid, the jax and jaxlib versions, `XLA_FLAGS` and the compiler options
(the remat pass among them). A renamed function with the same program hits;
any change to the program, the versions or the flags misses.

One JSON file per key, written atomically. A file that cannot be read back is
reported, ignored and overwritten; it never stops a search.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune._report import write_atomic
from autotune._result import TuneResult

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/jax-batch-autotune`, else `~/.cache/jax-batch-autotune`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jax-batch-autotune"


def cache_key(program_text: str, fields: Mapping[str, Any]) -> str:
    """A hash of the lowered program and every other input of the answer.

    The module's name (`jit_<python name>`) is left out: it changes no byte.
    """
    digest = hashlib.sha256()
    digest.update(re.sub(r"^module @\S+", "module", program_text, count=1).encode())
    digest.update(json.dumps(dict(fields), sort_keys=True, default=str).encode())
    return digest.hexdigest()


class ResultCache:
    """Results stored as `<directory>/<key>.json`."""

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> TuneResult | None:
        """The stored result, or None (a missing or unreadable entry)."""
        path = self._path(key)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("format") != CACHE_FORMAT or data.get("key") != key:
                raise ValueError("not an entry of this cache format")
            return TuneResult.from_dict(data["result"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            warnings.warn(
                f"ignoring the unreadable cache entry {str(path)!r}: {e}",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    def put(self, key: str, result: TuneResult) -> None:
        """Store `result` under `key`, whole or not at all."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {"format": CACHE_FORMAT, "key": key, "result": result.to_dict()}
        write_atomic(self._path(key), json.dumps(entry) + "\n")
