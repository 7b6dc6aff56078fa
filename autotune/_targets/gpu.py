"""A GPU described to XLA, compiled for without one: named, from a config
file, or the machine's own GPU compiled for on the CPU.

A described GPU needs no GPU: XLA compiles for a `GpuTargetConfigProto`
(protobuf text) through `jax.experimental.topologies.get_topology_desc(
platform="cuda", target_config=..., topology="1x1x1")`, whose compile-only
devices carry `NamedSharding`s for `jax.ShapeDtypeStruct` inputs. That needs
the CUDA plugin packages of exactly jaxlib's version (`pip install
"jax[cuda13-local]==<jaxlib version>"`: the plugin, without NVIDIA
libraries). The plugins load quietly (`autotune._targets.plugins`); if JAX's
backends were started before (e.g. by `jax.devices()`) without
`JAX_PLATFORMS=cpu`, `devices()` raises `TargetError` saying so.

Several described GPUs: `get_target("h100-sxm-80gb", devices=8)`, or the
name "8xh100-sxm-80gb", describes 8 such GPUs. The topology is one host with
up to `GPUS_PER_HOST` GPUs ("1x1xN"), or N / 8 hosts of 8 ("1xHx8"); up to
`MAX_DESCRIBED_DEVICES` were compiled for. `memory_analysis()` of a program
compiled for that mesh gives one device's bytes.

An incomplete config can kill the process (a zero `threads_per_warp` or
`block_dim_limit_x` is a floating-point exception inside XLA), so a config
file must carry `REQUIRED_FIELDS` before it reaches XLA. XLA's own parse
errors go to stderr only; they are captured and put into `TargetError`.

Budget, `MemoryBudget`: JAX's GPU allocator may use `fraction x (memory free
when the client starts)`. Measured on an H200 (jaxlib 0.11.2, driver
580.159.04): `bytes_limit` 112,583,507,968 at fraction 0.75, so about
150,111,343,958 bytes were free out of nvidia-smi's 143771 MiB:
`H200_RESERVE_BYTES` below the total. That reserve is applied to every named
card; its error on other cards is unknown.
"""

from __future__ import annotations

import dataclasses
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any

from autotune._core.errors import TargetError
from autotune._targets.gpu_specs import GPU_SPECS, render_target_config
from autotune._targets.interface import MemoryBudget, Target
from autotune._targets.local import (
    check_device_count,
    local_devices,
    local_target,
    resolve_mem_fraction,
)
from autotune._targets.plugins import (
    DescribeError,
    check_cuda_plugin,
    described_devices,
    installed_version,
)

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

# The local GPU, compiled for from its own description on the CPU.
LOCAL_DEVICELESS = "local-deviceless"

GPUS_PER_HOST = 8
MAX_DESCRIBED_DEVICES = 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class DescribedGpu(Target):
    """GPUs described by a `GpuTargetConfigProto`, compiled for deviceless."""

    target_config: str  # GpuTargetConfigProto text
    budget: MemoryBudget | None = None

    def devices(self) -> list[Any]:
        try:
            check_cuda_plugin()
            return list(_gpu_devices(self.target_config, topology(self.device_count)))
        except TargetError as e:
            raise TargetError(f"target {self.name!r}: {e}") from e

    @property
    def shares_kernels(self) -> bool:
        return True

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "target_config": self.target_config}


def topology(devices: int) -> str:
    """The described topology of `devices` GPUs: "1x1xN", or "1xHx8" hosts of 8."""
    check_device_count(devices)
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


def described_target(
    name: str, *, mem_fraction: float | None = None, devices: int = 1
) -> DescribedGpu:
    """The named GPU from the hardware table; `devices` of them."""
    topology(devices)
    spec = GPU_SPECS[name]
    budget = MemoryBudget(
        total_bytes=spec.memory_bytes,
        reserve_bytes=H200_RESERVE_BYTES,
        fraction=resolve_mem_fraction(mem_fraction),
        source="reserve measured on an H200",
    )
    name, description = _counted(name, f"{spec.product} (described, deviceless compile)", devices)
    return DescribedGpu(
        name=name,
        platform="cuda",
        description=description,
        memory_bytes=spec.memory_bytes,
        default_budget_bytes=budget.limit_bytes,
        target_config=render_target_config(spec),
        budget=budget,
        budget_source=budget.describe(),
        device_count=devices,
        peak_flops=spec.peak_flops,
    )


def spec_config(name: str) -> str:
    """The `GpuTargetConfigProto` text of a named GPU (one of `GPU_SPECS`)."""
    return render_target_config(GPU_SPECS[name])


def file_target(path: str, *, mem_fraction: float | None = None, devices: int = 1) -> DescribedGpu:
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
    return DescribedGpu(
        name=name,
        platform="cuda",
        description=description,
        memory_bytes=memory,
        default_budget_bytes=budget.limit_bytes if budget else None,
        target_config=config,
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


def local_deviceless_target(*, mem_fraction: float | None = None, devices: int = 1) -> DescribedGpu:
    """The local GPU, compiled for from its own config on the CPU.

    The budget is the local allocator's, as for "local". Deviceless compiles
    skip the device's convolution autotuning and run concurrently; their
    need differed from the device's by at most 0.03% on an H200 at VGG16's
    boundary (compiled from a named description, not from this target,
    which has not been measured on a GPU). The answer's compile is not one a
    training job can reuse from JAX's compilation cache.
    """
    local = local_target(mem_fraction=mem_fraction, devices=devices)
    device = local_devices(devices)[0]
    config = local_gpu_config(device)
    _check_required_fields(config, f"the config of local device {device.id}")
    return DescribedGpu(
        name=local.name.replace("local:", f"{LOCAL_DEVICELESS}:"),
        platform="cuda",
        description=f"{local.description}, compiled deviceless from its own config",
        memory_bytes=_int_field(config, "device_memory_size"),
        default_budget_bytes=local.default_budget_bytes,
        target_config=config,
        budget=local.budget,
        budget_source=local.budget_source,
        device_count=devices,
    )


def _counted(name: str, description: str, devices: int) -> tuple[str, str]:
    if devices == 1:
        return name, description
    return f"{devices}x{name}", f"{devices} x {description}, topology {topology(devices)}"


def _gpu_devices(config: str, shape: str) -> tuple[Any, ...]:
    try:
        return described_devices("cuda", target_config=config, topology=shape)
    except DescribeError as e:
        if isinstance(e.error, NotImplementedError):
            raise TargetError(
                "JAX has no CUDA topology: its backends started before this "
                "target was built, and the CUDA plugin failed its start-up "
                "check; set JAX_PLATFORMS=cpu in the environment before JAX "
                "starts"
            ) from e
        if isinstance(e.error, RuntimeError):
            raise TargetError(_parse_error(config, e.printed, e.error)) from e
        raise e.error from None


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
            f"; jaxlib {installed_version('jaxlib')} does not know that "
            "field, so the file likely comes from a newer jaxlib: delete "
            "that line"
        )
    return (
        f"the target config does not parse at line {line}, column {column} "
        f"(`{text}`): {reason}{hint}"
    )
