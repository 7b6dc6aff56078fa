"""Dump this machine's GPU as a target config file for deviceless compiles.

Run on the machine with the GPU, then on any machine with the CUDA plugin:

    python scripts/dump_target_config.py h200.txtpb
    autotune --target h200.txtpb

The file is the `GpuTargetConfigProto` text JAX reads from the device
(`get_topology_for_devices(devices).target_config`), preceded by comment
lines. Two of them, `# bytes_limit: N` (the allocator's limit from
`memory_stats()`) and `# mem_fraction: F` (the fraction in effect here), let
`autotune.get_target` model the budget of the dumped card exactly. Load the
file with the same jaxlib version or an older config may be needed: a newer
jaxlib can write fields an older one does not parse.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

from autotune.internal import (
    DUMP_BYTES_LIMIT,
    DUMP_MEM_FRACTION,
    TargetError,
    local_gpu_config,
    resolve_mem_fraction,
)


def dump(device_index: int = 0) -> str:
    """The config text of `jax.devices()[device_index]`, with its header."""
    import jax
    import jaxlib

    device = jax.devices()[device_index]
    try:
        config = local_gpu_config(device)
    except TargetError as e:
        raise SystemExit(f"{e}; run this on the machine with the GPU") from None
    stats = device.memory_stats() or {}
    header = [
        f"# {device.device_kind}: GpuTargetConfigProto dumped by scripts/dump_target_config.py",
        f"# jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
        f"{datetime.date.today().isoformat()}",
    ]
    if "bytes_limit" in stats:
        header += [
            f"# {DUMP_BYTES_LIMIT}: {stats['bytes_limit']}",
            f"# {DUMP_MEM_FRACTION}: {resolve_mem_fraction(None)}",
        ]
    else:
        print("memory_stats() has no bytes_limit: the file carries no budget", file=sys.stderr)
    return "\n".join(header) + "\n" + config.rstrip("\n") + "\n"


def default_path(device_kind: str) -> Path:
    """E.g. "NVIDIA H200" -> nvidia-h200.txtpb."""
    return Path(re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-") + ".txtpb")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "output",
        nargs="?",
        help="file to write (default: named after the device, e.g. nvidia-h200.txtpb)",
    )
    parser.add_argument("--device", type=int, default=0, help="index in jax.devices()")
    args = parser.parse_args(argv)
    text = dump(args.device)
    import jax

    path = Path(args.output or default_path(jax.devices()[args.device].device_kind))
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
