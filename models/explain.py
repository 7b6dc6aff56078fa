"""The seed-style analytical breakdown beside what XLA compiled."""

from __future__ import annotations

import autotune

from .breakdown import DTYPE_BYTES, training_memory
from .compiled_layers import compiled_layers, render_layers
from .layers import vgg_layer_table
from .workloads import VGGConfig


def explain_vgg(result: autotune.TuneResult, config: VGGConfig) -> str:
    """The layer table, the seed's three sources at the answer, and XLA's view."""
    table = vgg_layer_table(
        config.model,
        image_size=config.image_size,
        channels=config.channels,
        num_classes=config.num_classes,
    )
    seed = training_memory(
        table,
        result.batch,
        optimizer=config.optimizer,
        dtype=config.dtype,
        param_dtype=config.param_dtype,
    )
    ratio = result.peak_bytes / seed.total_bytes
    sections = [
        f"{result.label} at batch {result.batch}",
        table.render(),
        seed.render(),
        result.render_memory(),
        f"XLA's need is {ratio:.2f}x the seed's estimate. The seed keeps every "
        "activation and a gradient of each; XLA frees gradients as the "
        "backward pass goes, adds ReLU masks and convolution workspace, and "
        "under remat recomputes activations instead of keeping them.",
    ]
    breakdown = result.peak_breakdown
    if breakdown is not None and not breakdown.unavailable:
        layers = compiled_layers(table, breakdown, DTYPE_BYTES[config.dtype])
        sections.append(
            "Each layer's forward values by the seed (activations x batch) beside "
            "what the compiled step holds for that layer at its peak (--why):\n"
            + render_layers(layers)
        )
    return "\n\n".join(sections)
