"""Kernels compiled once for all of a search's deviceless GPU compiles.

A search compiles one step at several batches, and other steps (remat
choices) beside it; many of their kernels are the same (the optimizer's
update, the weight gradients' reductions). XLA keeps the kernels it compiles
in a file when `xla_gpu_kernel_cache_file` names one, and takes them from it
in later compiles; the buffers, and so the need, are those of a compile
without it (`benchmarks/probe-options.md`: byte-identical on VGG16,
ResNet-18, GPT-2 and ViT-B/16; VGG16's later compiles take a quarter less).

XLA reads, merges and writes the file without a lock, so each compile thread
has a file of its own, in a directory of this process removed at exit. A
file XLA cannot read or write fails the compile: such a compile is made
again without it. Sharing is off where JAX's persistent compilation cache
is on: the file's path, in the compile options, would be in every key.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import threading

from autotune._core.signals import at_exit

OPTION = "xla_gpu_kernel_cache_file"


@functools.cache
def _directory() -> str:
    directory = tempfile.mkdtemp(prefix="autotune-kernels-")
    at_exit(functools.partial(shutil.rmtree, directory, ignore_errors=True))
    return directory


def forget_all() -> None:
    """Start afresh: the next compiles share no kernel an earlier one compiled."""
    _directory.cache_clear()


def thread_file() -> str:
    """The kernel cache file of the calling compile thread."""
    return os.path.join(_directory(), f"{threading.get_ident()}.bin")


# What XLA says when the kernel file, not the step, failed a compile (its path
# is in the message when the file cannot be written).
_UNREADABLE = ("CompilationCacheProto", "Read less bytes than requested")


def blames_the_file(message: str, path: str) -> bool:
    """Whether a compile's error is the kernel file's, not the step's."""
    return path in message or any(text in message for text in _UNREADABLE)


def forget(path: str) -> None:
    """Remove a kernel cache file a compile could not use."""
    try:
        os.remove(path)
    except OSError:
        pass
