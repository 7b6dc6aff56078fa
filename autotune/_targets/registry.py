"""Targets by name: "local", "auto", "local-deviceless", a described GPU, a
Cloud TPU slice, or a GPU config file."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from autotune._core.errors import TargetError
from autotune._targets.gpu import (
    LOCAL_DEVICELESS,
    described_target,
    file_target,
    local_deviceless_target,
)
from autotune._targets.gpu_specs import GPU_SPECS
from autotune._targets.interface import Target
from autotune._targets.local import check_device_count, local_target
from autotune._targets.plugins import cuda_plugin_without_gpu
from autotune._targets.tpu import check_stored_limit, tpu_target
from autotune._targets.tpu_specs import (
    GENERATIONS,
    accelerator_types,
    close_tpu_names,
    parse_tpu_name,
)

# What "auto" compiles for on a machine without an accelerator.
DEFAULT_DESCRIBED_TARGET = "h100-sxm-80gb"
_COUNT_PREFIX = re.compile(r"(\d+)x(.+)")

__all__ = ["Target", "as_target", "check_stored_limit", "get_target", "known_targets"]


def known_targets(*, tpu: bool = False) -> tuple[str, ...]:
    """Names of the described GPUs; with `tpu`, then every Cloud TPU accelerator
    type (topology strings such as "v5e:2x2" name TPU slices too)."""
    tpus = [t for g in GENERATIONS.values() for t in accelerator_types(g)] if tpu else []
    return (*GPU_SPECS, *tpus)


def get_target(
    name_or_path: str | os.PathLike, *, mem_fraction: float | None = None, devices: int = 1
) -> Target:
    """The target named "local", "auto", "local-deviceless", a GPU from
    `known_targets()`, a Cloud TPU slice (an accelerator type such as
    "v5litepod-4", or a topology such as "v5e:2x2": all its devices), or a
    config file.

    "auto" is the local accelerator if there is one, else a described
    `DEFAULT_DESCRIBED_TARGET`.

    `mem_fraction` (default: `XLA_CLIENT_MEM_FRACTION` or
    `XLA_PYTHON_CLIENT_MEM_FRACTION` if set, else 0.75) sets the budget.
    `devices` (or a name prefix "<N>x", as in "8xh100-sxm-80gb") asks for
    that many devices; the budget stays one device's.
    """
    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    if not isinstance(name_or_path, str):
        raise TargetError(
            f"`target` (={name_or_path!r}) must be 'local', 'auto', a described GPU's "
            "name, a target config file's path, or an autotune.Target"
        )
    devices = check_device_count(devices)
    prefixed = _COUNT_PREFIX.fullmatch(name_or_path)
    if prefixed and prefixed.group(2) in GPU_SPECS:
        if devices != 1:
            raise TargetError(
                f"`target` (={name_or_path!r}) names a device count and "
                f"`devices` (={devices!r}) gives another; give one of them"
            )
        name_or_path, devices = prefixed.group(2), int(prefixed.group(1))
    if name_or_path == "auto":
        local = None if cuda_plugin_without_gpu() else local_target()
        name_or_path = "local" if local and not local.on_host else DEFAULT_DESCRIBED_TARGET
    if name_or_path == "local":
        return local_target(mem_fraction=mem_fraction, devices=devices)
    if name_or_path == LOCAL_DEVICELESS:
        return local_deviceless_target(mem_fraction=mem_fraction, devices=devices)
    if name_or_path in GPU_SPECS:
        return described_target(name_or_path, mem_fraction=mem_fraction, devices=devices)
    tpu = parse_tpu_name(name_or_path)
    if tpu is not None:
        return tpu_target(tpu, mem_fraction=mem_fraction, devices=devices)
    if _looks_like_path(name_or_path):
        return file_target(name_or_path, mem_fraction=mem_fraction, devices=devices)
    raise _unknown_target(name_or_path)


def as_target(target: str | os.PathLike | Target) -> Target:
    """`target` as a `Target`: one given, or one named (`get_target`)."""
    return target if isinstance(target, Target) else get_target(target)


def _unknown_target(name: str) -> TargetError:
    close = difflib.get_close_matches(name, GPU_SPECS, n=1) or close_tpu_names(name)[:1]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return TargetError(
        f"`target` (={name!r}) is not a known target: use 'local', 'auto', "
        f"{LOCAL_DEVICELESS!r}, one of {', '.join(known_targets())}, a Cloud TPU "
        f"accelerator type or topology (v5litepod-4, v5e:2x2; autotune --list-targets), "
        f"or a path to a target config file{hint}"
    )


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("file:", ".", "~"))
        or os.sep in text
        or bool(Path(text).suffix)
        or Path(text).exists()
    )
