"""Bytes of arrays, abstract or real: the one place a shape and a dtype make a size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax


def array_bytes(shape: Sequence[int], dtype: Any) -> int:
    """Bytes of an array of `shape` and `dtype` (a NumPy or JAX dtype)."""
    return math.prod(shape) * dtype.itemsize


def leaf_bytes(leaf: Any) -> int:
    """Bytes of a whole array, `ShapeDtypeStruct` or aval."""
    return array_bytes(leaf.shape, leaf.dtype)


def shard_shape(leaf: Any) -> tuple[int, ...]:
    """The shape one device holds of a leaf: its sharding's shard, or all of it."""
    sharding = getattr(leaf, "sharding", None)
    return tuple(leaf.shape if sharding is None else sharding.shard_shape(leaf.shape))


def device_bytes(tree: Any) -> int:
    """Bytes one device holds of a pytree: each leaf's shard, or all of it."""
    return sum(array_bytes(shard_shape(leaf), leaf.dtype) for leaf in jax.tree.leaves(tree))
