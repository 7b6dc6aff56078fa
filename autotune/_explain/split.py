"""The bytes of one compile that do not follow the batch: a line from one compile.

XLA's dump of a compile says which values share the temporary arena at its
peak (see `autotune._explain.peak`). The step's input batch, and the values live at
the peak whose shape has a dimension that is a multiple of the batch (one
device's share of it), follow the batch; the rest of the compile's need is
fixed. The line through the fixed bytes and the compile gives the need at any
batch where the program keeps its shape. Measured for a described H100
(benchmarks/real-models.md): from a compile at batch 88, the line put the
boundary on the right candidate for GPT-2 small and ViT-B/16, and five
candidates (0.5%) above it for a ResNet-18, whose programs change with the
batch; from the ResNet-18's compile at 2,936, on the right one. So the first
compile is as large as `autotune._explain.unfused` says it may be. The search places
compiles with the line; only compiles decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from autotune._compile.arguments import INPUT_BATCH, ArgumentLeaf
from autotune._compile.dump import DumpError, DumpTexts, parse_buffer_assignment, parse_live_ranges
from autotune._core.sizes import leaf_bytes
from autotune._explain.peak import parse_shape, peak_step


def fixed_bytes(
    texts: DumpTexts,
    need: int,
    args: Sequence[Any],
    leaves: Sequence[ArgumentLeaf],
    batch: int,
) -> int | None:
    """The bytes of a compile's `need` that do not follow the batch; None
    where the dump does not say, or nothing in it follows the batch.

    `args` are the step's arguments for `batch` (placed structs) and
    `leaves` the same arguments as one device holds them
    (`autotune._compile.arguments.argument_leaves`).
    """
    local = local_batch(args, leaves, batch)
    if local is None:
        return None
    try:
        allocations = parse_buffer_assignment(texts.buffer_assignment)
        live = parse_live_ranges(texts.live_range)
        arenas = [a for a in allocations if a.role == "temp"]
        _, shares = peak_step(arenas, live) if arenas else (0, [])
        follows = sum(n for value, n in shares if _follows(value.shape, local))
    except (DumpError, ValueError):
        return None
    follows += sum(leaf.nbytes for leaf in leaves if leaf.kind == INPUT_BATCH)
    if follows <= 0 or follows > need:
        return None
    return need - follows


def local_batch(args: Sequence[Any], leaves: Sequence[ArgumentLeaf], batch: int) -> int | None:
    """One device's share of `batch`, from the input batch's bytes."""
    whole = part = 0
    for struct, leaf in zip(jax.tree.leaves(tuple(args)), leaves):
        if leaf.kind == INPUT_BATCH:
            whole += leaf_bytes(struct)
            part += leaf.nbytes
    if part <= 0 or (batch * part) % whole:
        return None
    return batch * part // whole


def _follows(shape_text: str, batch: int) -> bool:
    """Whether a value's shape, as XLA's dump writes it, follows the batch."""
    try:
        _, shape = parse_shape(shape_text)
    except (DumpError, ValueError):
        return False
    return follows_batch(shape, batch)


def follows_batch(shape: Sequence[int], batch: int) -> bool:
    """Whether a shape has a dimension that is a multiple of `batch`: a value
    taken to follow the batch."""
    return any(d >= batch and d % batch == 0 for d in shape)
