"""What the command checks before its first compile, so that nothing found after
minutes of compiling can cost the answer: the files it will write and the
environment XLA reads when its backends start.

XLA reads `XLA_FLAGS` once, when the first backend starts, and a flag it does
not know or a value it cannot parse ends the process: it logs a fatal line
("Unknown flag in XLA_FLAGS: --bogus", "Couldn't interpret value maybe for
flag ...") and exits, and a value not starting with "--" is taken for a file
of flags. JAX's GPU client parses `XLA_PYTHON_CLIENT_*` when it starts; if
that fails, JAX falls back to the CPU. Both are tried here first: the flags
in a child process that starts only a CPU backend, the client's variables
with jaxlib's own parser.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from autotune._core.checks import shown
from autotune._core.errors import TuneError
from autotune._results.report import temporary_prefix
from autotune._targets.local import resolve_mem_fraction

# XLA's flag parsers log their complaint here (jaxlib 0.10.2).
_FLAG_COMPLAINT = re.compile(r"(?:parse_flags_from_env|command_line_flags)\.cc:\d+\] (.*)")
_START_CPU_BACKEND = "import jax; jax.devices('cpu')"
_CHILD_TIMEOUT_S = 300
# What JAX's GPU client reads from the environment when it starts.
_GPU_CLIENT_ENV = re.compile(r"XLA_(PYTHON_)?CLIENT_\w+")


def check_output_path(flag: str, path: str) -> None:
    """`path` can be written whole: a name that is not empty and not too long,
    not a directory, nor a device or other special file (an atomic write
    would replace it), in a directory that exists and takes a new file."""
    file = _named(flag, path, "a file's path")
    where = "there"
    try:
        if file.is_dir():
            raise TuneError(f"`{flag}` (={shown(path)}) is a directory; give a file's path")
        if file.exists() and not file.is_file():
            raise TuneError(f"`{flag}` (={shown(path)}) exists and is not a regular file")
        parent = file.resolve().parent
        where = f"in {str(parent)!r}"
        if not parent.is_dir():
            raise TuneError(
                f"`{flag}` (={shown(path)}): the directory {str(file.parent)!r} does not exist"
            )
        _check_name_length(flag, path, file.name, parent)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=temporary_prefix(file), suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise TuneError(
            f"`{flag}` (={shown(path)}): a file cannot be written {where} ({_why(e)})"
        ) from None
    except RuntimeError as e:  # pathlib's "Symlink loop from ..."
        raise TuneError(f"`{flag}` (={shown(path)}) cannot be resolved: {e}") from None


def check_output_dir(flag: str, path: str) -> None:
    """`path` is a directory that takes new files, or nothing yet, where the
    nearest directory above it that exists takes new folders."""
    folder = _named(flag, path, "a directory's path")
    try:
        if folder.exists() and not folder.is_dir():
            raise TuneError(f"`{flag}` (={shown(path)}) exists and is not a directory")
        resolved = folder.resolve()
        existing = resolved
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise TuneError(f"`{flag}` (={shown(path)}): {str(existing)!r} is not a directory")
        for part in resolved.relative_to(existing).parts:
            _check_name_length(flag, path, part, existing)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise TuneError(
                f"`{flag}` (={shown(path)}): {str(existing)!r} takes no new "
                f"{'file' if existing == resolved else 'folder'} (permission denied)"
            )
    except OSError as e:
        raise TuneError(
            f"`{flag}` (={shown(path)}) cannot be used as a directory ({_why(e)})"
        ) from None
    except RuntimeError as e:  # pathlib's "Symlink loop from ..."
        raise TuneError(f"`{flag}` (={shown(path)}) cannot be resolved: {e}") from None


def _named(flag: str, path: str, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TuneError(f"`{flag}` (={shown(path)}) must be {what}, not empty")
    return Path(path)


def _check_name_length(flag: str, path: str, name: str, directory: Path) -> None:
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    size = len(os.fsencode(name))
    if size > limit:
        raise TuneError(
            f"`{flag}` (={shown(path)}): the name {shown(name, 24)} is {size} bytes, "
            f"and {str(directory)!r} takes names of at most {limit}"
        )


def _why(error: OSError) -> str:
    return error.strerror or str(error)


def check_environment(target: str) -> None:
    """`XLA_FLAGS` as XLA will read it; for a local target, what JAX's GPU
    client will read."""
    check_xla_flags()
    if target in ("local", "auto"):
        check_gpu_client_env()


def check_xla_flags() -> None:
    """Starts a CPU backend in a child with this `XLA_FLAGS`; refuses the flags
    if XLA complains about them there. No complaint (or no answer) passes."""
    flags = os.environ.get("XLA_FLAGS")
    if not flags:
        return
    try:
        child = subprocess.run(
            [sys.executable, "-P", "-c", _START_CPU_BACKEND],
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
            capture_output=True,
            text=True,
            timeout=_CHILD_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return
    complaints = _FLAG_COMPLAINT.findall(child.stderr)
    if child.returncode != 0 and complaints:
        raise TuneError(f"`XLA_FLAGS` (={flags!r}) is refused by XLA: {complaints[0].strip()}")


def check_gpu_client_env() -> None:
    """The allocator fraction in (0, 1], and every variable JAX's GPU client
    parses, through jaxlib's own parser."""
    resolve_mem_fraction(None)
    given = sorted(name for name in os.environ if _GPU_CLIENT_ENV.fullmatch(name))
    if not given:
        return
    from jaxlib import xla_client

    parse = getattr(xla_client, "generate_pjrt_gpu_plugin_options", None)
    if parse is None:
        return
    try:
        parse()
    except ValueError as e:
        shown = ", ".join(f"{name}={os.environ[name]!r}" for name in given)
        raise TuneError(f"JAX's GPU client refuses its environment ({shown}): {e}") from None
