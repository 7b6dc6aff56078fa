"""Measure the HBM one device's program may use, as the TPU compiler counts it.

For each TPU generation, on this CPU machine (libtpu, no TPU): the largest
one-buffer program that compiles (`x + 1` on a donated int8 buffer of N
bytes), found by bisection on N, plus that program's code
(`generated_code_size_in_bytes`) is the compiler's HBM. The same with
libtpu's `xla_tpu_max_hbm_size_mib` shows what that option does. These are
the `hbm_mib` figures of `autotune/_targets/tpu_specs.py`.

    JAX_PLATFORMS=cpu python scripts/measure_tpu_hbm.py
"""

from __future__ import annotations

import importlib.metadata
import time

import jax
import jax.numpy as jnp

from autotune import get_target
from autotune.internal import GENERATIONS, hbm_refusal

MIB = 1 << 20


def compiled_code(sharding, size: int, options: dict | None) -> int | None:
    """The program's code bytes if `x + 1` on `size` donated bytes compiles."""
    arg = jax.ShapeDtypeStruct((size,), jnp.int8, sharding=sharding)
    try:
        compiled = jax.jit(lambda x: x + 1, donate_argnums=0).lower(arg).compile(options)
    except Exception as e:
        if hbm_refusal(e) is None:
            raise
        return None
    return compiled.memory_analysis().generated_code_size_in_bytes


def largest(sharding, options: dict | None = None) -> tuple[int, int]:
    """(largest buffer that compiles, its program's code bytes)."""
    lo, hi = 1, 1 << 40
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if compiled_code(sharding, mid, options) is not None else (lo, mid)
    return lo, compiled_code(sharding, lo, options)


def main() -> None:
    print(f"libtpu {importlib.metadata.version('libtpu')}, jax {jax.__version__}")
    print("| generation | device | largest buffer (B) | code (B) | HBM (B) | MiB | "
          "with max_hbm_size_mib=1024: buffer + code (B) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, generation in GENERATIONS.items():
        start = time.perf_counter()
        target = get_target(f"{name}:{'1x1' if generation.dims == 2 else '1x1x1'}")
        device = target.devices()[0]
        sharding = jax.sharding.SingleDeviceSharding(device)
        buffer, code = largest(sharding)
        limited, limited_code = largest(sharding, {"xla_tpu_max_hbm_size_mib": 1024})
        hbm = buffer + code
        print(
            f"| {name} | {generation.device} ({device.device_kind}) | {buffer:,} | {code:,} | "
            f"{hbm:,} | {hbm / MIB:,.3f} | {limited + limited_code:,} "
            f"({time.perf_counter() - start:.0f} s) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
