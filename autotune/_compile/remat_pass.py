"""XLA's automatic rematerialization pass, on or off for a thread's compiles.

The pass makes need(batch) non-affine near the limit it aims for, and that
limit differs between devices and described targets. It is switched with
JAX's own flag, as a training job does
(`jax.config.update("jax_compiler_enable_remat_pass", False)`), so both
compile the same program and share JAX's persistent compilation cache.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import jax

REMAT_PASS_FLAG = "jax_compiler_enable_remat_pass"
# The XLA option that flag sets, for compiles made outside `xla_remat_pass`.
REMAT_PASS_OFF = {"xla_disable_hlo_passes": "rematerialization"}


def xla_remat_pass(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """XLA's automatic rematerialization pass on or off for the compiles inside,
    in this thread only.

    The pass makes need(batch) non-affine near the limit it aims for, and that
    limit differs between devices and described targets. It is switched with
    JAX's own flag, as a training job does
    (`jax.config.update("jax_compiler_enable_remat_pass", False)`), so both
    compile the same program and share JAX's persistent compilation cache.
    """
    try:
        from jax._src.config import enable_remat_opt_pass
    except ImportError:  # the flag's state moved: set it for the process
        return _process_remat_pass(enabled)
    return enable_remat_opt_pass(enabled)


_REMAT_PASS_LOCK = threading.Lock()
# The remat pass setting of the last compiles this process made through a
# Prober; None before the first (the process's flag is then what counts).
_COMPILED_WITH: list[bool | None] = [None]


def afresh_if_the_pass_flips(enabled: bool) -> None:
    """Clear JAX's in-memory caches when compiles switch the remat pass.

    JAX keys the executables it keeps in memory by program and compiler
    options, not by the remat flag: a compile with the pass on, after one of
    the same program with it off (or the other way), returned the first
    executable at once (measured: VGG16 at batch 480 for a described H100,
    the same need both ways, 0.0 s). Persistent caches are left alone.
    """
    with _REMAT_PASS_LOCK:
        before = _COMPILED_WITH[0]
        if before is None:
            before = bool(getattr(jax.config, REMAT_PASS_FLAG))
        if before != enabled:
            jax.clear_caches()
        _COMPILED_WITH[0] = enabled


@contextlib.contextmanager
def _process_remat_pass(enabled: bool) -> Iterator[None]:
    with _REMAT_PASS_LOCK:
        before = getattr(jax.config, REMAT_PASS_FLAG)
        jax.config.update(REMAT_PASS_FLAG, enabled)
        try:
            yield
        finally:
            jax.config.update(REMAT_PASS_FLAG, before)
