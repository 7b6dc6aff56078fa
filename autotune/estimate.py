"""Memory of a training step estimated without compiling it.

The backward pass needs what the forward pass saved for it. JAX lists those
values for any differentiable function (``saved_residuals``, which traces the
function on abstract inputs and honours ``jax.checkpoint`` policies). Summing
their bytes at two batch sizes separates a per-example part from a fixed
part; the step's arguments add the parameters, their gradients, the optimizer
state and the batch itself.

The estimate leaves out what the compiler adds beside the residuals (gradient
buffers of the activations, convolution workspace, the working set of a
recomputed segment), so it usually falls short of what XLA asks for.
``saved_residuals`` is private to JAX: if it moves, the estimate is unavailable.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax

try:
    from jax._src.ad_checkpoint import saved_residuals as _saved_residuals
except ImportError:
    _saved_residuals = None

_EXISTING_SOURCE_PREFIX = "from "


@dataclasses.dataclass(frozen=True)
class Estimate:
    """An affine memory model: ``need(batch) = fixed + per_example * batch``."""

    fixed_bytes: int
    per_example_bytes: int

    def need(self, batch: int) -> int:
        """Bytes needed by a step at ``batch``."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
            raise ValueError(f"`batch` (={batch!r}) must be a non-negative integer")
        return self.fixed_bytes + self.per_example_bytes * batch

    def max_batch(self, budget_bytes: int) -> int:
        """The largest batch whose need fits ``budget_bytes``; 0 if none does."""
        if self.per_example_bytes <= 0:
            raise ValueError(
                f"`per_example_bytes` (={self.per_example_bytes}) must be positive"
                " to bound the batch"
            )
        return max(0, (budget_bytes - self.fixed_bytes) // self.per_example_bytes)


def tree_bytes(tree: Any) -> int:
    """Bytes of a pytree's leaves: arrays, ``ShapeDtypeStruct`` or scalars."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            leaf = jax.eval_shape(lambda: leaf)
        total += math.prod(leaf.shape) * leaf.dtype.itemsize
    return total


def _require_saved_residuals() -> Callable[..., list]:
    if _saved_residuals is None:
        raise RuntimeError(
            "The no-compile estimate is unavailable in jax"
            f" {jax.__version__}: jax._src.ad_checkpoint.saved_residuals is missing"
        )
    return _saved_residuals


def residual_bytes(loss_fn: Callable[..., Any], *args: Any) -> int:
    """Bytes the forward pass of ``loss_fn(*args)`` saves for the backward pass.

    Residuals that are the arguments themselves, constants or literals are
    left out: they exist whether or not the backward pass runs.
    """
    residuals = _require_saved_residuals()(loss_fn, *args)
    return sum(aval.size * aval.dtype.itemsize
               for aval, source in residuals
               if not source.startswith(_EXISTING_SOURCE_PREFIX))


def _split_affine(small_value: int, large_value: int, small: int,
                  large: int) -> tuple[int, int]:
    """(per_example, fixed) of a quantity measured at two batch sizes."""
    per_example = -(-(large_value - small_value) // (large - small))
    return per_example, max(0, small_value - per_example * small)


def _check_probe(probe_batches: tuple[int, int]) -> None:
    small, large = probe_batches
    if not (isinstance(small, int) and isinstance(large, int) and 0 < small < large):
        raise ValueError(
            f"`probe_batches` (={probe_batches!r}) must be two increasing"
            " positive integers"
        )


def estimate_step(loss_fn: Callable[..., Any], params: Any,
                  batch_args_for: Callable[[int], tuple], *, state_bytes: int = 0,
                  grads: bool = True,
                  probe_batches: tuple[int, int] = (1, 2)) -> Estimate:
    """Estimates a step's memory from ``loss_fn(params, *batch_args_for(b))``.

    ``batch_args_for(b)`` returns the batch arguments (abstract or concrete)
    for ``b`` examples. Residuals and batch-argument bytes are measured at the
    two ``probe_batches`` and split into a per-example and a fixed part;

    - fixed = params + params (gradients, if ``grads``) + ``state_bytes``
      + fixed residuals + fixed batch-argument bytes;
    - per_example = residual bytes per example + batch-argument bytes per example.
    """
    _check_probe(probe_batches)
    small, large = probe_batches
    args_small, args_large = batch_args_for(small), batch_args_for(large)
    res_per, res_fixed = _split_affine(
        residual_bytes(loss_fn, params, *args_small),
        residual_bytes(loss_fn, params, *args_large), small, large)
    arg_per, arg_fixed = _split_affine(
        tree_bytes(args_small), tree_bytes(args_large), small, large)
    param_bytes = tree_bytes(params)
    fixed = param_bytes * (2 if grads else 1) + state_bytes + res_fixed + arg_fixed
    return Estimate(fixed_bytes=fixed, per_example_bytes=res_per + arg_per)
