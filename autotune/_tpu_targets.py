"""A described Cloud TPU slice as a `Target`: compile-only devices from libtpu.

`jax.experimental.topologies.get_topology_desc(platform="tpu", topology_name=
"v5e:2x2", chip_config_name="default", chips_per_host_bounds=(2, 2, 1),
num_slices=1)` loads libtpu and returns devices that compile but do not run;
a step lowered with `NamedSharding`s over a mesh of them compiles on this
machine, and `memory_analysis()` gives one device's bytes. It needs libtpu of
the version jax pins (`pip install "jax[tpu]==<jax version>"`, the `[tpu]`
extra), no TPU and no environment variable.

libtpu takes a machine-wide lock when it loads (`/tmp/libtpu_lockfile`), so
that one process owns the TPU; a second process then cannot describe a
topology. On a machine without a TPU there is nothing to guard, and
`ALLOW_MULTIPLE_LIBTPU_LOAD=1` is set (unless set already) before libtpu
loads, so that tests, benchmarks and several users compile side by side.

Without a TPU, libtpu prints warnings about worker hostnames and the
accelerator type when it loads. They are captured here and shown only if the
topology cannot be built. `JAX_PLATFORMS=cpu` (set by the `autotune` command
on a machine where no installed plugin has its device: `accelerators_idle`)
keeps JAX's own backend start from loading libtpu at all.

The budget of a described slice is its compiler's HBM per device
(`TpuGeneration.hbm_mib`): the compiler refuses a program that does not fit,
so a batch fits when it compiles.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.metadata
import os
import re
from typing import Any

from autotune._errors import TargetError
from autotune._targets import (
    Target,
    _captured_stderr,
    _cpu_only_plugin_start,
    _installed_version,
    cuda_plugin_without_gpu,
)
from autotune._tpu_specs import TpuSlice

_CUDA_PLUGINS = ("jax-cuda13-plugin", "jax-cuda12-plugin")
# libtpu's switch for its one-process lock on the machine's TPU (/tmp/libtpu_lockfile).
MULTIPLE_LOADS = "ALLOW_MULTIPLE_LIBTPU_LOAD"


def tpu_target(tpu: TpuSlice, *, mem_fraction: float | None = None, devices: int = 1) -> Target:
    """The target of a described slice: all its devices, its compiler's HBM."""
    if mem_fraction is not None:
        raise TargetError(
            f"`mem_fraction` (={mem_fraction!r}) sets a GPU allocator's share; "
            f"`target` (={tpu.name!r}) is a TPU, whose limit is its compiler's HBM: "
            "give a budget or a reserve instead"
        )
    if devices not in (1, tpu.device_count):
        allowed = " or ".join(map(str, sorted({1, tpu.device_count})))
        raise TargetError(
            f"`devices` (={devices!r}) must be {allowed} for `target` (={tpu.name!r}): "
            f"a TPU slice is a mesh over all its {tpu.device_count} devices; name a "
            "slice of the size you want"
        )
    g = tpu.generation
    return Target(
        name=tpu.name,
        platform="tpu",
        description=f"{tpu.describe()} (described, deviceless compile; {_libtpu_text()})",
        memory_bytes=g.hbm_bytes,
        default_budget_bytes=g.hbm_bytes,
        deviceless=True,
        budget_source=(
            f"the TPU compiler's HBM per {g.device} ({g.hbm_mib:,} MiB, buffers and "
            "program code; measured with libtpu 0.0.42.1): a batch fits when it compiles"
        ),
        device_count=tpu.device_count,
        tpu=tpu,
    )


def tpu_devices(tpu: TpuSlice) -> list[Any]:
    """The slice's compile-only devices, in libtpu's order."""
    check_libtpu()
    return list(
        _topology_devices(tpu.topology, tpu.generation.chip_config, tpu.chips_per_host_bounds)
    )


def check_libtpu() -> str:
    """The installed libtpu's version; raises unless it is the one jax pins."""
    jax_version = _installed_version("jax")
    install = f'pip install "jax[tpu]=={jax_version}"'
    version = _installed_version("libtpu")
    if version is None:
        raise TargetError(
            f"compiling for a described TPU needs libtpu, and it is not installed; run: {install}"
        )
    pin = _jax_libtpu_pin()
    if pin is not None and not fnmatch.fnmatch(version, pin):
        raise TargetError(
            f"libtpu (={version}) must be the version jax {jax_version} pins "
            f"(libtpu=={pin}) to compile for a described TPU; run: {install}"
        )
    return version


def accelerators_idle() -> bool:
    """An accelerator plugin is installed (CUDA's, libtpu) and this machine has
    no device for any of them: starting JAX's backends would only fail, with
    warnings or tracebacks, and only described targets can be used."""
    cuda = any(_installed_version(p) for p in _CUDA_PLUGINS)
    libtpu = _installed_version("libtpu") is not None
    gpu = cuda and not cuda_plugin_without_gpu()
    tpu = libtpu and _tpu_chips_present()
    return (cuda or libtpu) and not gpu and not tpu


def _tpu_chips_present() -> bool:
    try:  # JAX's own check: TPU chips on the PCI bus
        from jax._src import hardware_utils

        return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
    except Exception:
        return False


def _register_plugins_quietly() -> None:
    """Registers JAX's plugins now, as the first described GPU does: a CUDA
    plugin without a GPU then registers without its failing check, and the
    backend start that lowering triggers leaves it out without a word."""
    from jax._src import xla_bridge

    register = getattr(xla_bridge, "_discover_and_register_pjrt_plugins", None)
    if register is not None:
        with _cpu_only_plugin_start():
            register()


def _jax_libtpu_pin() -> str | None:
    """The libtpu version pattern jax's `[tpu]` extra requires, e.g. "0.0.42.*"."""
    for requirement in importlib.metadata.requires("jax") or ():
        match = re.match(r"libtpu\s*==\s*([\w.*]+)", requirement)
        if match:
            return match.group(1)
    return None


def _libtpu_text() -> str:
    version = _installed_version("libtpu")
    return f"libtpu {version}" if version else "libtpu not installed"


@functools.cache
def _topology_devices(
    topology: str, chip_config: str, chips_per_host_bounds: tuple[int, int, int]
) -> tuple[Any, ...]:
    from jax.experimental import topologies

    if not _tpu_chips_present():  # no TPU to guard: let other processes load libtpu too
        os.environ.setdefault(MULTIPLE_LOADS, "1")
    _register_plugins_quietly()
    with _captured_stderr() as stderr:
        try:
            described = topologies.get_topology_desc(
                platform="tpu",
                topology_name=topology,
                chip_config_name=chip_config,
                chips_per_host_bounds=chips_per_host_bounds,
                num_slices=1,
            )
        except Exception as e:
            raise TargetError(
                f"libtpu {_installed_version('libtpu')} cannot describe the TPU topology "
                f"{topology!r} (chip config {chip_config!r}, chips per host "
                f"{chips_per_host_bounds}): {type(e).__name__}: {e}"
                + (f"\nlibtpu said: {stderr().strip()}" if stderr().strip() else "")
            ) from e
    return tuple(described.devices)
