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

One JSON file per key, written atomically. An entry that is not a result the
search could have produced for the question asked is reported, ignored and
overwritten; a directory that cannot be written is reported. Neither stops a
search.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune._core import checks as check
from autotune._core.errors import TuneError
from autotune._results.report import write_atomic
from autotune._results.result import TuneResult
from autotune._results.validate import result_from_dict

CACHE_FORMAT = 3


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
    """Results stored as `<directory>/<key>.json`.

    An entry is believed only if it checks out as a result the search could
    have produced (`autotune._results.validate`) for the question asked; anything
    else is reported, counts as a miss, and is replaced. A directory that
    cannot be written is reported once; the answer is returned all the same.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self.directory = (
            check.path("directory", directory) if directory is not None else default_cache_dir()
        )
        self._unwritable = False

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(
        self, key: str, expect: Mapping[str, Any] | None = None
    ) -> tuple[TuneResult, dict[str, str]] | None:
        """The stored result and its proof, or None (a missing or invalid entry).

        `expect`: fields the result must have (the budget, grid, target and
        settings asked for), as `autotune._results.validate.result_from_dict` takes them.
        """
        path = self._path(key)
        try:
            if not path.exists():
                return None
            entry = json.loads(path.read_text())
            if not isinstance(entry, dict):
                raise TuneError(f"the entry (={check.shown(entry)}) must be a JSON object")
            if entry.get("format") != CACHE_FORMAT or type(entry.get("format")) is not int:
                raise TuneError(
                    f"`format` (={check.shown(entry.get('format'))}) is not {CACHE_FORMAT}"
                )
            if entry.get("key") != key:
                raise TuneError("`key` is not the entry's file name: the entry is another's")
            proof = entry.get("proof")
            if (
                not isinstance(proof, dict)
                or not proof
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in proof.items())
            ):
                raise TuneError(
                    f"`proof` (={check.shown(proof)}) must map batches to program hashes"
                )
            return result_from_dict(entry.get("result"), "result", expect=expect), proof
        except (OSError, ValueError, RecursionError) as e:  # TuneError is a ValueError
            warnings.warn(
                f"ignoring the cache entry {str(path)!r}: {e}; searching again to replace it",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    def writable(self) -> bool:
        """Whether results can be stored here; reports it (once) if not."""
        if self._unwritable:
            return False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            self._refuse_writes(e)
        return not self._unwritable

    def put(self, key: str, result: TuneResult, proof: Mapping[str, str]) -> None:
        """Store `result` and its proof under `key`, whole or not at all; a
        directory that cannot be written is reported once and the result is
        not stored."""
        if self._unwritable:
            return
        entry = {
            "format": CACHE_FORMAT,
            "key": key,
            "result": result.to_dict(),
            "proof": dict(proof),
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomic(self._path(key), json.dumps(entry) + "\n")
        except OSError as e:
            self._refuse_writes(e)

    def _refuse_writes(self, error: OSError) -> None:
        self._unwritable = True
        warnings.warn(
            f"the result cache {str(self.directory)!r} cannot be written "
            f"({error.strerror or error}); results are not cached",
            RuntimeWarning,
            stacklevel=4,
        )
