"""The seed's layer table beside what the compiled step holds at its peak.

The VGG names its layers with `jax.named_scope` (`stage2/conv1`,
`stage2/pool`, `fc1`), so XLA's op names carry them and the peak breakdown
(`autotune.PeakBreakdown`) groups buffers by layer. Each seed row's forward
values (its activation count x batch x dtype bytes) then sit beside the bytes
XLA keeps for that layer at the peak.
"""

from __future__ import annotations

import dataclasses

import autotune
from autotune import format_bytes

from .layers import LayerTable


@dataclasses.dataclass(frozen=True)
class CompiledLayer:
    """One seed row and the compiled step's buffers of the same layer."""

    name: str  # the seed's row name: CONV3-64, POOL2, FC
    module: str  # the VGG's scope: stage1/conv1, stage1/pool, fc1
    stage: str  # stage1 ... stage5, or fc
    seed_bytes: int  # forward values: activations x batch x dtype bytes
    activation_bytes: int  # XLA: forward values live at the peak
    gradient_bytes: int  # XLA: backward values live at the peak
    temporary_bytes: int  # XLA: other values live at the peak


def layer_modules(table: LayerTable) -> list[tuple[int, str, str]]:
    """(row index, module, stage) for every row after INPUT, in order."""
    out, stage, conv, fc = [], 1, 0, 0
    for i, row in enumerate(table.rows[1:], start=1):
        if row.name == "POOL2":
            out.append((i, f"stage{stage}/pool", f"stage{stage}"))
            stage, conv = stage + 1, 0
        elif row.name == "FC":
            fc += 1
            out.append((i, f"fc{fc}", "fc"))
        else:
            conv += 1
            out.append((i, f"stage{stage}/conv{conv}", f"stage{stage}"))
    return out


def compiled_layers(
    table: LayerTable, breakdown: autotune.PeakBreakdown, dtype_bytes: int
) -> tuple[CompiledLayer, ...]:
    """Each seed row beside the breakdown's bytes for its layer."""
    rows = []
    for i, module, stage in layer_modules(table):
        kinds = breakdown.bytes_by_module.get(module, {})
        row = table.rows[i]
        rows.append(
            CompiledLayer(
                name=row.name,
                module=module,
                stage=stage,
                seed_bytes=row.activations * breakdown.batch * dtype_bytes,
                activation_bytes=kinds.get("activation", 0),
                gradient_bytes=kinds.get("gradient", 0),
                temporary_bytes=kinds.get("temporary", 0),
            )
        )
    return tuple(rows)


def by_stage(layers: tuple[CompiledLayer, ...]) -> list[CompiledLayer]:
    """The layers summed per stage (convs and pool together; the FCs as "fc")."""
    out: dict[str, CompiledLayer] = {}
    for layer in layers:
        prev = out.get(layer.stage)
        out[layer.stage] = (
            dataclasses.replace(layer, name=layer.stage, module=layer.stage)
            if prev is None
            else dataclasses.replace(
                prev,
                seed_bytes=prev.seed_bytes + layer.seed_bytes,
                activation_bytes=prev.activation_bytes + layer.activation_bytes,
                gradient_bytes=prev.gradient_bytes + layer.gradient_bytes,
                temporary_bytes=prev.temporary_bytes + layer.temporary_bytes,
            )
        )
    return list(out.values())


def render_layers(layers: list[CompiledLayer] | tuple[CompiledLayer, ...]) -> str:
    """A table: seed forward values beside XLA's activations, gradients, temporaries."""
    header = (
        f"{'layer':<10} {'module':<13} {'seed forward':>13} {'XLA activations':>16} "
        f"{'XLA/seed':>8} {'XLA gradients':>14} {'XLA temporaries':>16}"
    )
    lines = [header, "-" * len(header)]
    total = dataclasses.replace(
        layers[0],
        name="total",
        module="",
        seed_bytes=sum(r.seed_bytes for r in layers),
        activation_bytes=sum(r.activation_bytes for r in layers),
        gradient_bytes=sum(r.gradient_bytes for r in layers),
        temporary_bytes=sum(r.temporary_bytes for r in layers),
    )
    for r in (*layers, total):
        ratio = f"{r.activation_bytes / r.seed_bytes:.2f}x" if r.seed_bytes else "-"
        lines.append(
            f"{r.name:<10} {r.module:<13} {format_bytes(r.seed_bytes):>13} "
            f"{format_bytes(r.activation_bytes):>16} {ratio:>8} "
            f"{format_bytes(r.gradient_bytes):>14} {format_bytes(r.temporary_bytes):>16}"
        )
    return "\n".join(lines)
