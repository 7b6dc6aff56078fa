"""JAX's accelerator plugins on a machine that may lack their devices.

A described target compiles with a plugin (CUDA's, libtpu) but without its
device. Each plugin then misbehaves in its own way at start-up:

- the CUDA plugin's start-up check fails without cuDNN unless `jax_platforms`
  excludes CUDA when the plugin loads: JAX then logs a long "Jax plugin
  configuration error" traceback and registers no CUDA topology. Loading the
  plugins with `jax_platforms` switched to "cpu" for that moment
  (`cpu_only_plugin_start`) skips the check; the later backend start leaves
  CUDA out without a word;
- libtpu prints warnings about worker hostnames and the accelerator type,
  and takes a machine-wide lock (`/tmp/libtpu_lockfile`) so that one process
  owns the TPU; with no TPU to guard, `ALLOW_MULTIPLE_LIBTPU_LOAD=1` lets
  several processes describe topologies side by side.

`quiet_start` sets `JAX_PLATFORMS=cpu` when no installed plugin has its
device, before JAX's backends start: the `autotune` command calls it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import importlib.metadata
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from autotune._core.errors import TargetError

# The CUDA plugins JAX ships, newest first: `jax-<name>-plugin` and `-pjrt`.
CUDA_PLUGINS = ("cuda13", "cuda12")
# libtpu's switch for its one-process lock on the machine's TPU (/tmp/libtpu_lockfile).
MULTIPLE_LOADS = "ALLOW_MULTIPLE_LIBTPU_LOAD"


def installed_version(dist: str) -> str | None:
    """The installed version of the distribution `dist`; None if absent."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cuda_plugin_without_gpu() -> bool:
    """A CUDA plugin is installed but this machine has no NVIDIA device: starting
    JAX's CUDA backend would fail (loudly), and only described GPUs can be used."""
    installed = any(installed_version(f"jax-{p}-plugin") for p in CUDA_PLUGINS)
    return installed and not os.path.exists("/dev/nvidiactl")


def check_cuda_plugin() -> str:
    """The installed CUDA plugin's version; raises unless it matches jaxlib's."""
    jaxlib = installed_version("jaxlib")
    for plugin in CUDA_PLUGINS:
        versions = {part: installed_version(f"jax-{plugin}-{part}") for part in ("plugin", "pjrt")}
        if versions["plugin"] is None:
            continue
        for part, version in versions.items():
            if version != jaxlib:
                raise TargetError(
                    f"jax-{plugin}-{part} (={version}) must be the version of "
                    f"jaxlib (={jaxlib}) to compile for a described GPU; run: "
                    f'pip install "jax[{plugin}-local]=={jaxlib}"'
                )
        return versions["plugin"]
    raise TargetError(
        "compiling for a described GPU needs the CUDA plugin, and "
        "jax-cuda13-plugin is not installed; run: "
        f'pip install "jax[cuda13-local]=={jaxlib}"'
    )


def check_libtpu() -> str:
    """The installed libtpu's version; raises unless it is the one jax pins."""
    jax_version = installed_version("jax")
    install = f'pip install "jax[tpu]=={jax_version}"'
    version = installed_version("libtpu")
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


def libtpu_text() -> str:
    version = installed_version("libtpu")
    return f"libtpu {version}" if version else "libtpu not installed"


def accelerators_idle() -> bool:
    """An accelerator plugin is installed (CUDA's, libtpu) and this machine has
    no device for any of them: starting JAX's backends would only fail, with
    warnings or tracebacks, and only described targets can be used."""
    cuda = any(installed_version(f"jax-{p}-plugin") for p in CUDA_PLUGINS)
    libtpu = installed_version("libtpu") is not None
    gpu = cuda and not cuda_plugin_without_gpu()
    tpu = libtpu and tpu_chips_present()
    return (cuda or libtpu) and not gpu and not tpu


def quiet_start() -> None:
    """`JAX_PLATFORMS=cpu` where no installed plugin has its device (and the
    variable is unset): the plugins then neither fail nor warn at start-up."""
    if os.environ.get("JAX_PLATFORMS") or not accelerators_idle():
        return
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:  # JAX read the variable at import: tell it directly
        sys.modules["jax"].config.update("jax_platforms", "cpu")


def tpu_chips_present() -> bool:
    try:  # JAX's own check: TPU chips on the PCI bus
        from jax._src import hardware_utils

        return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
    except Exception:
        return False


@functools.cache
def described_devices(platform: str, **description: Any) -> tuple[Any, ...]:
    """The compile-only devices of a topology described to `platform`'s plugin
    (`jax.experimental.topologies.get_topology_desc(platform, **description)`).

    The plugins load with `jax_platforms` at "cpu" if JAX's backends have not
    started; with no TPU on the machine, libtpu may load in several
    processes. What the plugin prints is captured: a failure raises
    `DescribeError` carrying it, for the caller to explain.
    """
    from jax.experimental import topologies

    if not tpu_chips_present():  # no TPU to guard: let other processes load libtpu too
        os.environ.setdefault(MULTIPLE_LOADS, "1")
    with cpu_only_plugin_start(), captured_stderr() as stderr:
        try:
            return tuple(topologies.get_topology_desc(platform=platform, **description).devices)
        except Exception as e:
            raise DescribeError(e, stderr()) from e


class DescribeError(Exception):
    """A plugin could not describe a topology: its exception and what it printed."""

    def __init__(self, error: Exception, printed: str):
        super().__init__(f"{type(error).__name__}: {error}")
        self.error, self.printed = error, printed


@contextlib.contextmanager
def captured_stderr() -> Iterator[Callable[[], str]]:
    """Redirects file descriptor 2, where XLA logs, into a buffer."""
    with tempfile.TemporaryFile() as buffer:
        saved = os.dup(2)
        os.dup2(buffer.fileno(), 2)

        def text() -> str:
            buffer.seek(0)
            return buffer.read().decode(errors="replace")

        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def cpu_only_plugin_start() -> Iterator[None]:
    """If JAX's backends have not started and `jax_platforms` is unset, sets it
    to "cpu" while the plugins load, so the CUDA plugin skips its check."""
    import jax
    from jax._src import xla_bridge

    previous = jax.config.values.get("jax_platforms")
    started = getattr(xla_bridge, "backends_are_initialized", lambda: True)()
    switch = not started and not previous
    if switch:
        jax.config.update("jax_platforms", "cpu")
    try:
        register = getattr(xla_bridge, "_discover_and_register_pjrt_plugins", None)
        if switch and register is not None:
            register()
        yield
    finally:
        if switch:
            jax.config.update("jax_platforms", previous)


def _jax_libtpu_pin() -> str | None:
    """The libtpu version pattern jax's `[tpu]` extra requires, e.g. "0.0.42.*"."""
    for requirement in importlib.metadata.requires("jax") or ():
        match = re.match(r"libtpu\s*==\s*([\w.*]+)", requirement)
        if match:
            return match.group(1)
    return None
