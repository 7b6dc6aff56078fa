"""The seed-style analytical breakdown beside what XLA compiled."""

from __future__ import annotations

import autotune

from .breakdown import training_memory
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
    return "\n\n".join(
        [
            f"{result.label} at batch {result.batch}",
            table.render(),
            seed.render(),
            result.render_memory(),
            f"XLA's need is {ratio:.2f}x the seed's estimate. The seed keeps every "
            "activation and a gradient of each; XLA frees gradients as the "
            "backward pass goes, adds ReLU masks and convolution workspace, and "
            "under remat recomputes activations instead of keeping them.",
        ]
    )
