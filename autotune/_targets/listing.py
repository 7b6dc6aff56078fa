"""Every described target, with one device's memory: `autotune --list-targets`."""

from __future__ import annotations

import math

from autotune._core.units import format_bytes
from autotune._results.result import render_table
from autotune._targets.gpu import described_target
from autotune._targets.gpu_specs import GPU_SPECS
from autotune._targets.tpu_specs import GENERATIONS, TpuSlice, accelerator_types, parse_tpu_name

# Sizes listed per 3-D generation: up to one 4x4x4 cube, then powers of two.
_LISTED_CUBE_CHIPS = 64


def render_target_list() -> str:
    """The GPU table and the TPU table, each with how to name a target."""
    return "\n\n".join([_gpus(), _tpus()])


def _gpus() -> str:
    rows = []
    for name, spec in GPU_SPECS.items():
        target = described_target(name)
        rows.append(
            (
                name,
                spec.product,
                format_bytes(spec.memory_bytes),
                format_bytes(target.default_budget_bytes),
            )
        )
    table = render_table(("name", "device", "memory", "budget"), rows, left=2)
    return (
        "Described GPUs: --target NAME, or NxNAME for N of them (budget: 0.75 x the "
        "memory free at start)\n" + table
    )


def _tpus() -> str:
    rows = []
    notes = []
    for g in GENERATIONS.values():
        types = accelerator_types(g)
        listed = [t for t in types if _listed(parse_tpu_name(t))]
        for t in listed:
            s = parse_tpu_name(t)
            devices = f"{s.device_count} {g.device}{'s' if s.device_count > 1 else ''}"
            rows.append((t, s.topology, devices, str(s.hosts), format_bytes(g.hbm_bytes)))
        if len(listed) < len(types):
            notes.append(f"{g.accelerator_prefix}: {len(types)} sizes, {types[0]} to {types[-1]}")
    headers = ("accelerator type", "topology", "devices", "hosts", "HBM per device")
    table = render_table(headers, rows, left=3)
    return (
        "Cloud TPU slices: --target ACCELERATOR_TYPE or GENERATION:TOPOLOGY (a mesh "
        "over all the slice's devices; HBM as the compiler counts it)\n"
        + table
        + "\nnot all listed: "
        + "; ".join(notes)
        + " (autotune.known_targets(tpu=True) names them all)"
    )


def _listed(s: TpuSlice | None) -> bool:
    if s is None:
        return False
    chips = s.chips
    return chips <= _LISTED_CUBE_CHIPS or math.log2(chips).is_integer()
