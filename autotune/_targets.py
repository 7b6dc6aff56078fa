"""What to compile for: the local device, or a GPU described to XLA.

A described GPU needs no GPU: XLA compiles for a `GpuTargetConfigProto`
(protobuf text) through `jax.experimental.topologies.get_topology_desc(
platform="cuda", target_config=..., topology="1x1x1")`, whose compile-only
devices carry `NamedSharding`s for `jax.ShapeDtypeStruct` inputs. That needs
the CUDA plugin packages of exactly jaxlib's version (`pip install
"jax[cuda13-local]==<jaxlib version>"`: the plugin, without NVIDIA
libraries).

On a machine without cuDNN, the plugin's start-up check fails unless
`jax_platforms` excludes CUDA when the plugin is loaded: JAX then logs a long
"Jax plugin configuration error" traceback and registers no CUDA topology, so
a described target cannot be built later in that process. Two ways avoid it:

- set `JAX_PLATFORMS=cpu` in the environment before JAX starts (our CLI does
  so when the machine has no NVIDIA device);
- or do nothing: the first `Target.devices()` of a described target, if JAX's
  backends are not yet started, loads the plugins with `jax_platforms`
  switched to "cpu" for that moment and restores it. The plugin then skips
  its check, registers quietly, and the later backend start leaves CUDA out
  without a word.

If JAX's backends were started before (e.g. by `jax.devices()`) without
`JAX_PLATFORMS=cpu`, `devices()` raises `TargetError` saying so.

Several described GPUs: `get_target("h100-sxm-80gb", devices=8)`, or the
name "8xh100-sxm-80gb", describes 8 such GPUs. The topology is one host with
up to `GPUS_PER_HOST` GPUs ("1x1xN"), or N / 8 hosts of 8 ("1xHx8"); up to
`MAX_DESCRIBED_DEVICES` were compiled for. `devices()` then returns them all,
to build a `jax.sharding.Mesh` from; `memory_analysis()` of a program
compiled for that mesh gives one device's bytes. `local_target(devices=N)`
takes the first N local devices.

An incomplete config can kill the process (a zero `threads_per_warp` or
`block_dim_limit_x` is a floating-point exception inside XLA), so a config
file must carry `REQUIRED_FIELDS` before it reaches XLA. XLA's own parse
errors go to stderr only; they are captured and put into `TargetError`.

Budget of a described target, `MemoryBudget`: JAX's GPU allocator may use
`fraction x (memory free when the client starts)`. Measured on an H200
(jaxlib 0.11.2, driver 580.159.04): `bytes_limit` 112,583,507,968 at
fraction 0.75, so about 150,111,343,958 bytes were free out of nvidia-smi's
143771 MiB: `H200_RESERVE_BYTES` below the total. That reserve is applied to
every named card; its error on other cards is unknown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import importlib.metadata
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from autotune import _checks as check
from autotune._errors import TargetError, TuneError
from autotune._gpu_specs import GPU_SPECS, render_target_config
from autotune._tpu_specs import (
    GENERATIONS,
    TpuSlice,
    accelerator_types,
    close_tpu_names,
    parse_tpu_name,
)

DEFAULT_MEM_FRACTION = 0.75
MEM_FRACTION_ENV = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")

# nvidia-smi's total (143771 MiB = 150,754,820,096 B) minus the free memory
# at start (112,583,507,968 / 0.75, rounded up: 150,111,343,958 B), measured
# on one H200; see the module docstring.
H200_RESERVE_BYTES = 643_476_138

# Without these (or with a zero) XLA crashes the process or fails the compile.
REQUIRED_FIELDS = (
    "threads_per_warp",
    "block_dim_limit_x",
    "core_count",
    "shared_memory_per_block_optin",
    "device_memory_size",
)

# Written as comments by scripts/dump_target_config.py.
DUMP_BYTES_LIMIT = "bytes_limit"
DUMP_MEM_FRACTION = "mem_fraction"

_PLUGINS = ("cuda13", "cuda12")

# What "auto" compiles for on a machine without an accelerator.
DEFAULT_DESCRIBED_TARGET = "h100-sxm-80gb"
# The local GPU, compiled for from its own description on the CPU.
LOCAL_DEVICELESS = "local-deviceless"

GPUS_PER_HOST = 8
MAX_DESCRIBED_DEVICES = 1024
_COUNT_PREFIX = re.compile(r"(\d+)x(.+)")


@dataclasses.dataclass(frozen=True)
class MemoryBudget:
    """The allocator limit model: `fraction x (total - reserve)`."""

    total_bytes: int
    reserve_bytes: int
    fraction: float
    source: str

    @property
    def free_at_start_bytes(self) -> int:
        return self.total_bytes - self.reserve_bytes

    @property
    def limit_bytes(self) -> int:
        return int(self.fraction * self.free_at_start_bytes)

    def describe(self) -> str:
        free = f"{self.free_at_start_bytes:,} B"
        if self.reserve_bytes:
            free += f" = {self.total_bytes:,} B total - {self.reserve_bytes:,} B reserve"
        return f"{self.fraction:g} x free at start ({free}; {self.source})"


@dataclasses.dataclass(frozen=True)
class Target:
    """A device to compile for, real or described; holds no live JAX objects."""

    name: str  # "h200-141gb", "local:gpu", "local:cpu", "file:/path"
    platform: str  # "cuda", "cpu", ...
    description: str
    memory_bytes: int | None  # card total: nvidia-smi's (named), CUDA's (file)
    default_budget_bytes: int | None
    deviceless: bool
    target_config: str | None = None  # GpuTargetConfigProto text, deviceless only
    budget: MemoryBudget | None = None
    budget_source: str = "unknown"
    device_count: int = 1
    tpu: TpuSlice | None = None  # a described TPU slice

    def devices(self) -> list[Any]:
        """The JAX devices to compile for (`device_count` of them)."""
        if not self.deviceless:
            return _local_devices(self.device_count)
        if self.tpu is not None:
            from autotune._tpu_targets import tpu_devices  # it builds on this module

            return tpu_devices(self.tpu)
        try:
            check_cuda_plugin()
            return list(_topology_devices(self.target_config, topology(self.device_count)))
        except TargetError as e:
            raise TargetError(f"target {self.name!r}: {e}") from e

    def sharding(self) -> Any:
        """A `NamedSharding` replicated over this target's devices."""
        return _replicated_sharding(tuple(self.devices()))


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
    devices = _check_device_count(devices)
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
        name_or_path = "local" if local and local.platform != "cpu" else DEFAULT_DESCRIBED_TARGET
    if name_or_path == "local":
        return local_target(mem_fraction=mem_fraction, devices=devices)
    if name_or_path == LOCAL_DEVICELESS:
        return local_deviceless_target(mem_fraction=mem_fraction, devices=devices)
    if name_or_path in GPU_SPECS:
        return described_target(name_or_path, mem_fraction=mem_fraction, devices=devices)
    tpu = parse_tpu_name(name_or_path)
    if tpu is not None:
        from autotune._tpu_targets import tpu_target  # it builds on this module

        return tpu_target(tpu, mem_fraction=mem_fraction, devices=devices)
    if _looks_like_path(name_or_path):
        return file_target(name_or_path, mem_fraction=mem_fraction, devices=devices)
    raise _unknown_target(name_or_path)


def topology(devices: int) -> str:
    """The described topology of `devices` GPUs: "1x1xN", or "1xHx8" hosts of 8."""
    _check_device_count(devices)
    if devices > MAX_DESCRIBED_DEVICES:
        raise TargetError(
            f"`devices` (={devices}) exceeds the {MAX_DESCRIBED_DEVICES} "
            "described GPUs this tool compiles for"
        )
    if devices <= GPUS_PER_HOST:
        return f"1x1x{devices}"
    if devices % GPUS_PER_HOST:
        raise TargetError(
            f"`devices` (={devices}) must be at most {GPUS_PER_HOST} (one host) "
            f"or a multiple of {GPUS_PER_HOST} (hosts of {GPUS_PER_HOST} GPUs) "
            "for a described topology"
        )
    return f"1x{devices // GPUS_PER_HOST}x{GPUS_PER_HOST}"


def _counted(name: str, description: str, devices: int) -> tuple[str, str]:
    if devices == 1:
        return name, description
    return f"{devices}x{name}", f"{devices} x {description}, topology {topology(devices)}"


def described_target(name: str, *, mem_fraction: float | None = None, devices: int = 1) -> Target:
    """The named GPU from the hardware table; `devices` of them."""
    if name not in GPU_SPECS:
        raise _unknown_target(name)
    topology(devices)
    spec = GPU_SPECS[name]
    budget = MemoryBudget(
        total_bytes=spec.memory_bytes,
        reserve_bytes=H200_RESERVE_BYTES,
        fraction=resolve_mem_fraction(mem_fraction),
        source="reserve measured on an H200",
    )
    name, description = _counted(name, f"{spec.product} (described, deviceless compile)", devices)
    return Target(
        name=name,
        platform="cuda",
        description=description,
        memory_bytes=spec.memory_bytes,
        default_budget_bytes=budget.limit_bytes,
        deviceless=True,
        target_config=render_target_config(spec),
        budget=budget,
        budget_source=budget.describe(),
        device_count=devices,
    )


def spec_config(name: str) -> str:
    """The `GpuTargetConfigProto` text of a named GPU."""
    if name not in GPU_SPECS:
        raise _unknown_target(name)
    return render_target_config(GPU_SPECS[name])


def file_target(
    path: str | os.PathLike, *, mem_fraction: float | None = None, devices: int = 1
) -> Target:
    """A GPU described by a config file, e.g. one dumped on the real device.

    The budget comes from the `bytes_limit` and `mem_fraction` comments that
    scripts/dump_target_config.py writes; without them it is None.
    """
    text = str(path)
    topology(devices)
    file = Path(text.removeprefix("file:")).expanduser()
    if not file.is_file():
        raise TargetError(f"target config file `{text}` does not exist (or is not a file)")
    config = file.read_text()
    fields = _check_required_fields(config, text)
    memory = fields["device_memory_size"]
    budget = _dumped_budget(config, memory, resolve_mem_fraction(mem_fraction), file)
    product = _string_field(config, "device_description_str") or "GPU"
    name, description = _counted(
        f"file:{file.resolve()}", f"{product} (from {file}, deviceless compile)", devices
    )
    return Target(
        name=name,
        platform="cuda",
        description=description,
        memory_bytes=memory,
        default_budget_bytes=budget.limit_bytes if budget else None,
        deviceless=True,
        target_config=config,
        budget=budget,
        budget_source=budget.describe() if budget else "unknown",
        device_count=devices,
    )


def local_target(*, mem_fraction: float | None = None, devices: int = 1) -> Target:
    """The first `devices` of `jax.devices()`; the budget is the first's
    allocator `bytes_limit`.

    With `mem_fraction` the limit is rescaled from the fraction in effect
    (the environment's or 0.75) to the one given.
    """
    device = _local_devices(devices)[0]
    limit = (_memory_stats(device) or {}).get("bytes_limit")
    budget = None if limit is None else _local_budget(limit, mem_fraction)
    kind = device.platform
    platform = getattr(device.client, "platform", kind)
    where = (
        f"local device {device.id}"
        if devices == 1
        else f"local devices {device.id}..{device.id + devices - 1}"
    )
    return Target(
        name=f"local:{kind}" if devices == 1 else f"local:{devices}x{kind}",
        platform=platform,
        description=f"{device.device_kind} ({where})",
        memory_bytes=None,
        default_budget_bytes=budget.limit_bytes if budget else None,
        deviceless=False,
        budget=budget,
        budget_source=budget.describe() if budget else "unknown",
        device_count=devices,
    )


def local_gpu_config(device: Any) -> str:
    """The `GpuTargetConfigProto` text JAX reads from a local GPU."""
    from jax._src.lib import xla_client

    if device.platform != "gpu":
        raise TargetError(
            f"the local device {device.id} is {device.platform!r}, not a GPU: "
            f"`target` {LOCAL_DEVICELESS!r} describes the machine's own GPU"
        )
    return xla_client.get_topology_for_devices([device]).target_config


def local_deviceless_target(*, mem_fraction: float | None = None, devices: int = 1) -> Target:
    """The local GPU, compiled for from its own config on the CPU.

    The budget is the local allocator's, as for "local". Deviceless compiles
    skip the device's convolution autotuning and run concurrently; their
    need differed from the device's by at most 0.03% on an H200 at VGG16's
    boundary (compiled from a named description, not from this target,
    which has not been measured on a GPU). The answer's compile is not one a
    training job can reuse from JAX's compilation cache.
    """
    local = local_target(mem_fraction=mem_fraction, devices=devices)
    device = _local_devices(devices)[0]
    config = local_gpu_config(device)
    _check_required_fields(config, f"the config of local device {device.id}")
    return dataclasses.replace(
        local,
        name=local.name.replace("local:", f"{LOCAL_DEVICELESS}:"),
        platform="cuda",
        description=f"{local.description}, compiled deviceless from its own config",
        deviceless=True,
        target_config=config,
    )


def _local_devices(count: int) -> list[Any]:
    import jax

    _check_device_count(count)
    present = jax.devices()
    if count > len(present):
        raise TargetError(
            f"`devices` (={count}) asks for a mesh larger than the devices "
            f"present ({len(present)} {present[0].platform} device(s)); ask "
            "for at most that many, or a described GPU target"
        )
    return present[:count]


def _check_device_count(devices: Any) -> int:
    try:
        return check.integer("devices", devices, minimum=1)
    except TuneError as e:
        raise TargetError(str(e)) from None


def _local_budget(bytes_limit: int, mem_fraction: float | None) -> MemoryBudget:
    in_effect = resolve_mem_fraction(None)
    fraction = in_effect if mem_fraction is None else resolve_mem_fraction(mem_fraction)
    free = math.ceil(bytes_limit / in_effect)
    return MemoryBudget(free, 0, fraction, f"the device's bytes_limit at fraction {in_effect:g}")


def resolve_mem_fraction(mem_fraction: float | None) -> float:
    """Explicit fraction, else the environment's, else `DEFAULT_MEM_FRACTION`."""
    if mem_fraction is not None:
        return _check_fraction("mem_fraction", mem_fraction)
    set_vars = [v for v in MEM_FRACTION_ENV if os.environ.get(v)]
    if len(set_vars) > 1:
        raise TargetError(
            f"{' and '.join(set_vars)} are both set; JAX refuses that: "
            f"remove {MEM_FRACTION_ENV[1]}, the deprecated one"
        )
    if not set_vars:
        return DEFAULT_MEM_FRACTION
    raw = os.environ[set_vars[0]]
    try:
        value = float(raw)
    except ValueError:
        raise TargetError(f"{set_vars[0]} (={raw!r}) must be a number") from None
    return _check_fraction(set_vars[0], value)


def cuda_plugin_without_gpu() -> bool:
    """A CUDA plugin is installed but this machine has no NVIDIA device: starting
    JAX's CUDA backend would fail (loudly), and only described GPUs can be used."""
    installed = any(_installed_version(f"jax-{p}-plugin") for p in _PLUGINS)
    return installed and not os.path.exists("/dev/nvidiactl")


def check_cuda_plugin() -> str:
    """The installed CUDA plugin's version; raises unless it matches jaxlib's."""
    jaxlib = _installed_version("jaxlib")
    for plugin in _PLUGINS:
        versions = {part: _installed_version(f"jax-{plugin}-{part}") for part in ("plugin", "pjrt")}
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


def _unknown_target(name: str) -> TargetError:
    close = difflib.get_close_matches(name, GPU_SPECS, n=1) or close_tpu_names(name)[:1]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return TargetError(
        f"`target` (={name!r}) is not a known target: use 'local', 'auto', "
        f"{LOCAL_DEVICELESS!r}, one of {', '.join(known_targets())}, a Cloud TPU "
        f"accelerator type or topology (v5litepod-4, v5e:2x2; autotune --list-targets), "
        f"or a path to a target config file{hint}"
    )


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_fraction(name: str, value: float) -> float:
    try:
        return check.fraction(name, value)
    except TuneError as e:
        raise TargetError(str(e)) from None


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("file:", ".", "~"))
        or os.sep in text
        or bool(Path(text).suffix)
        or Path(text).exists()
    )


def _memory_stats(device: Any) -> dict[str, int] | None:
    try:
        return device.memory_stats()
    except Exception:  # backends without stats raise rather than return None
        return None


def _int_field(config: str, field: str) -> int | None:
    match = re.search(rf"^\s*{field}\s*:\s*(\d+)\s*$", config, re.MULTILINE)
    return int(match.group(1)) if match else None


def _string_field(config: str, field: str) -> str | None:
    match = re.search(rf'^\s*{field}\s*:\s*"([^"]*)"', config, re.MULTILINE)
    return match.group(1) if match else None


def _comment_value(config: str, key: str) -> str | None:
    match = re.search(rf"^#\s*{key}\s*:\s*(\S+)", config, re.MULTILINE)
    return match.group(1) if match else None


def _check_required_fields(config: str, where: str) -> dict[str, int]:
    fields = {field: _int_field(config, field) for field in REQUIRED_FIELDS}
    missing = [field for field, value in fields.items() if not value]
    if "cuda_compute_capability" not in config:
        missing.append("cuda_compute_capability")
    if missing:
        raise TargetError(
            f"target config file `{where}` lacks {', '.join(missing)} (or has "
            "a zero there); XLA needs them: dump the file with "
            "scripts/dump_target_config.py on the GPU"
        )
    return fields


def _dumped_budget(config: str, total: int, fraction: float, file: Path) -> MemoryBudget | None:
    """The budget model from the dumped comments, once they fit the card: the
    limit at the dumped fraction implies the memory free at start, which is
    at most the card's `device_memory_size`."""
    limit = _comment_value(config, DUMP_BYTES_LIMIT)
    dumped_fraction = _comment_value(config, DUMP_MEM_FRACTION)
    if limit is None or dumped_fraction is None:
        return None
    where = f"target config file `{file}`"
    if not (limit.isascii() and limit.isdigit()) or int(limit) < 1:
        raise TargetError(f"{where}: `{DUMP_BYTES_LIMIT}` (={limit!r}) must be a positive integer")
    try:
        share = Fraction(dumped_fraction)
    except (ValueError, ZeroDivisionError):
        share = None
    if share is None or not 0 < share <= 1:
        raise TargetError(
            f"{where}: `{DUMP_MEM_FRACTION}` (={dumped_fraction!r}) must be a number in (0, 1]"
        )
    free = math.ceil(int(limit) / share)
    if free > total:
        raise TargetError(
            f"{where}: `{DUMP_BYTES_LIMIT}` (={int(limit):,}) at `{DUMP_MEM_FRACTION}` "
            f"(={dumped_fraction}) means {free:,} B free at start, more than the card's "
            f"`device_memory_size` (={total:,}); the comments come from another card "
            "or were edited"
        )
    return MemoryBudget(
        total, total - free, fraction, f"from the dumped bytes_limit at fraction {dumped_fraction}"
    )


@functools.cache
def _topology_devices(config: str, shape: str = "1x1x1") -> tuple[Any, ...]:
    from jax.experimental import topologies

    with _cpu_only_plugin_start(), _captured_stderr() as stderr:
        try:
            topology = topologies.get_topology_desc(
                platform="cuda", target_config=config, topology=shape
            )
        except NotImplementedError as e:
            raise TargetError(
                "JAX has no CUDA topology: its backends started before this "
                "target was built, and the CUDA plugin failed its start-up "
                "check; set JAX_PLATFORMS=cpu in the environment before JAX "
                "starts"
            ) from e
        except RuntimeError as e:
            raise TargetError(_parse_error(config, stderr(), e)) from e
    return tuple(topology.devices)


def _parse_error(config: str, stderr: str, error: Exception) -> str:
    match = re.search(r"GpuTargetConfigProto: (\d+):(\d+): (.*)", stderr)
    if not match:
        return f"XLA rejects the target config: {error}"
    line, column = int(match.group(1)), match.group(2)
    reason = match.group(3).strip().rstrip(".")
    lines = config.splitlines()
    text = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    hint = ""
    if "has no field named" in reason:
        hint = (
            f"; jaxlib {_installed_version('jaxlib')} does not know that "
            "field, so the file likely comes from a newer jaxlib: delete "
            "that line"
        )
    return (
        f"the target config does not parse at line {line}, column {column} "
        f"(`{text}`): {reason}{hint}"
    )


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
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
def _cpu_only_plugin_start() -> Iterator[None]:
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
        yield
    finally:
        if switch:
            jax.config.update("jax_platforms", previous)


@functools.cache
def _replicated_sharding(devices: tuple[Any, ...]) -> Any:
    import jax
    import numpy as np

    mesh = jax.sharding.Mesh(np.array(devices), ("d",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
