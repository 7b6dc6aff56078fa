"""The seed-style analytical breakdown beside what XLA compiled."""

from __future__ import annotations

from autotune.breakdown import training_memory
from autotune.layers import vgg_layer_table
from autotune.result import TuneResult, render_table
from autotune.units import format_bytes


def xla_breakdown(result: TuneResult) -> str:
    """XLA's memory analysis of the compile at the answer."""
    p = result.probe
    rows = [
        ("arguments", "parameters, optimizer state, batch", p.argument_bytes),
        ("outputs", "new parameters, optimizer state, loss", p.output_bytes),
        ("- aliased", "outputs written over donated arguments", -p.alias_bytes),
        ("temporaries", "activations, gradients, workspace", p.temp_bytes),
        ("need", "arguments + outputs - aliased + temporaries", p.need_bytes),
    ]
    return render_table(
        ("XLA", "what", "bytes", "size"),
        [(name, what, f"{n:,}", format_bytes(n)) for name, what, n in rows],
        left=2,
    )


def explain_vgg(
    result: TuneResult,
    model: str,
    *,
    image_size: int = 224,
    channels: int = 3,
    num_classes: int = 1000,
    optimizer: str = "sgd",
    dtype: str = "float32",
    param_dtype: str = "float32",
) -> str:
    """The layer table, the seed's three sources at the answer, and XLA's view."""
    table = vgg_layer_table(
        model, image_size=image_size, channels=channels, num_classes=num_classes
    )
    seed = training_memory(
        table, result.batch, optimizer=optimizer, dtype=dtype, param_dtype=param_dtype
    )
    ratio = result.peak_bytes / seed.total_bytes
    return "\n\n".join(
        [
            f"{result.label} at batch {result.batch}",
            table.render(),
            seed.render(),
            xla_breakdown(result),
            f"XLA's need is {ratio:.2f}x the seed's estimate. The seed keeps every "
            "activation and a gradient of each; XLA frees gradients as the "
            "backward pass goes, adds ReLU masks and convolution workspace, and "
            "under remat recomputes activations instead of keeping them.",
        ]
    )
