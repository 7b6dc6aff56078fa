"""What the workload builders share: inputs given for one example, argument
checks, a trace of the built step at batch 1, and the estimate attached
when it can be made.

An input is described for one example, the batch dimension left out: a
`jax.ShapeDtypeStruct`, or a `(shape, dtype)` pair such as
`((32, 32, 3), jnp.float32)`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from autotune._core import checks as check
from autotune._core.errors import TuneError
from autotune._workloads.estimate import Estimate

InputSpec = jax.ShapeDtypeStruct | tuple[Sequence[int], Any]

_INPUTS_RULE = (
    "a list with one entry per input of the loss, each a jax.ShapeDtypeStruct or a "
    "(shape, dtype) pair for one example, e.g. [((32, 32, 3), jnp.float32), ((), jnp.int32)]"
)


def example_inputs(inputs: Any) -> tuple[jax.ShapeDtypeStruct, ...]:
    """`inputs` as one `jax.ShapeDtypeStruct` per input, for one example."""
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise TuneError(f"`inputs` (={inputs!r}) must be {_INPUTS_RULE}")
    return tuple(_example(i, spec) for i, spec in enumerate(inputs))


def _example(index: int, spec: Any) -> jax.ShapeDtypeStruct:
    where = f"`inputs[{index}]` (={check.shown(spec)})"
    if isinstance(spec, jax.ShapeDtypeStruct):
        shape, dtype = spec.shape, spec.dtype
    elif isinstance(spec, (tuple, list)) and len(spec) == 2:
        shape, dtype = spec
    else:
        raise TuneError(f"{where} must be a jax.ShapeDtypeStruct or a (shape, dtype) pair")
    rule = (
        f"{where}: the shape (={check.shown(shape)}) must be a tuple of non-negative "
        "integers, one example's, without the batch dimension"
    )
    if not isinstance(shape, (tuple, list)):
        raise TuneError(rule)
    try:  # any integer type: numpy's too
        dims = tuple(check.integer("shape", d, minimum=0) for d in shape)
    except TuneError:
        raise TuneError(rule) from None
    if dtype is None:  # jnp.dtype(None) is the default float, never what was meant
        raise TuneError(f"{where}: the dtype (=None) must be a dtype, e.g. jnp.float32")
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise TuneError(f"{where}: the dtype (={check.shown(dtype)}) is not a dtype") from None
    return jax.ShapeDtypeStruct(dims, dtype)


def batched(examples: Sequence[jax.ShapeDtypeStruct], batch: int) -> tuple[Any, ...]:
    """The inputs for `batch` examples, abstract."""
    return tuple(jax.ShapeDtypeStruct((batch, *e.shape), e.dtype) for e in examples)


def zeros(examples: Sequence[jax.ShapeDtypeStruct], batch: int) -> tuple[jax.Array, ...]:
    """The inputs for `batch` examples, real: zeros."""
    return tuple(jnp.zeros((batch, *e.shape), e.dtype) for e in examples)


def key_struct() -> jax.ShapeDtypeStruct:
    """An abstract typed PRNG key (`jax.random.key`)."""
    return jax.ShapeDtypeStruct((), jax.random.key(0).dtype)


def require_optimizer(tx: Any) -> None:
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TuneError(
            f"`tx` (={tx!r}) must be an optax.GradientTransformation (an object with "
            "`init` and `update`), e.g. optax.adamw(1e-3)"
        )


def scalar_loss(out: Any, has_aux: bool, aux_rule: str = "") -> tuple[Any, Any]:
    """`(loss, aux)` from what the loss function returned, checked."""
    if has_aux:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TuneError(
                f"`loss_fn` returned {_kind(out)}; it must return (loss, aux){aux_rule}"
            )
        loss, aux = out
    else:
        loss, aux = out, None
        if isinstance(out, (tuple, list)):
            raise TuneError(
                f"`loss_fn` returned {_kind(out)}; it must return the loss, a scalar "
                "(pass has_aux=True if it returns (loss, aux))"
            )
    shape, dtype = getattr(loss, "shape", None), getattr(loss, "dtype", None)
    if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TuneError(
            f"`loss_fn` returned a loss of {_kind(loss)}; the loss must be a floating "
            "scalar (shape ())"
        )
    return loss, aux


def _kind(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def check_traces(step: Callable[..., Any], args: Sequence[Any]) -> None:
    """Trace `step` at batch 1, so a loss that cannot work fails here, clearly."""
    try:
        jax.eval_shape(step, *args)
    except TuneError:
        raise
    except Exception as e:
        raise TuneError(
            f"the train step built from `loss_fn` does not trace at batch=1: "
            f"{type(e).__name__}: {e}"
        ) from e


def try_estimate(make: Callable[[], Estimate]) -> Estimate | None:
    """`make()`, or None with a warning: an estimate only places the first
    compiles, so a workload without one is still tuned exactly."""
    try:
        return make()
    except Exception as e:
        warnings.warn(
            f"no analytical estimate for this workload ({type(e).__name__}: {e}); "
            "the search starts without one",
            stacklevel=3,
        )
        return None
