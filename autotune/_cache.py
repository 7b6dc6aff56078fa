"""A cache of tuning results, keyed on everything that changes memory.

The key hashes the step's lowered program (its StableHLO text at the
smallest candidate, which carries the argument shapes, dtypes and
shardings), the target's description and config, the budget, the search
grid, the jax and jaxlib versions, `XLA_FLAGS` and the compiler options
(the remat pass among them). A renamed function with the same program hits;
any change to the program, the versions or the flags misses.

An entry also holds its proof: the hashes of the programs at the answer and
at the next candidate. A hit counts only if the step, lowered again at those
batches, gives the same programs, so a step whose program changes only
above the smallest candidate misses too.

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

CACHE_FORMAT = 2


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/jax-batch-autotune`, else `~/.cache/jax-batch-autotune`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jax-batch-autotune"


def program_hash(program_text: str) -> str:
    """A hash of a lowered program's text, its module's name (`jit_<python
    name>`, which changes no byte) left out."""
    text = re.sub(r"^module @\S+", "module", program_text, count=1)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(program_text: str, fields: Mapping[str, Any]) -> str:
    """A hash of the lowered program and every other input of the answer."""
    digest = hashlib.sha256(program_hash(program_text).encode())
    digest.update(json.dumps(dict(fields), sort_keys=True, default=str).encode())
    return digest.hexdigest()


class ResultCache:
    """Results stored as `<directory>/<key>.json`."""

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> tuple[TuneResult, dict[str, str]] | None:
        """The stored result and its proof, or None (a missing or unreadable
        entry)."""
        path = self._path(key)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("format") != CACHE_FORMAT or data.get("key") != key:
                raise ValueError("not an entry of this cache format")
            proof = data["proof"]
            if not isinstance(proof, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in proof.items()
            ):
                raise ValueError("its proof is not a mapping of batch to program hash")
            return TuneResult.from_dict(data["result"]), proof
        except (OSError, ValueError, KeyError, TypeError) as e:
            warnings.warn(
                f"ignoring the unreadable cache entry {str(path)!r}: {e}",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    def put(self, key: str, result: TuneResult, proof: Mapping[str, str]) -> None:
        """Store `result` and its proof under `key`, whole or not at all."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {
            "format": CACHE_FORMAT,
            "key": key,
            "result": result.to_dict(),
            "proof": dict(proof),
        }
        write_atomic(self._path(key), json.dumps(entry) + "\n")
