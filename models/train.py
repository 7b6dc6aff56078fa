"""Train steps for the model zoo and the abstract arguments to compile them with."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from .vgg import _one_of, abstract_vgg, as_dtype

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
LOSSES: tuple[str, ...] = ("softmax_xent",)


def make_optimizer(name: str, learning_rate: float = 1e-2) -> optax.GradientTransformation:
    """`optax` optimizer by name; "sgd" is SGD with momentum 0.9."""
    _one_of("optimizer", name, OPTIMIZERS)
    if name == "sgd":
        return optax.sgd(learning_rate, momentum=0.9)
    if name == "adam":
        return optax.adam(learning_rate)
    return optax.adamw(learning_rate)


def make_loss_fn(graphdef: nnx.GraphDef, *, loss: str = "softmax_xent") -> Callable:
    """Pure loss `loss_fn(params, x, y) -> scalar` of the model described by `graphdef`."""
    _one_of("loss", loss, LOSSES)

    def loss_fn(params: nnx.State, x: jax.Array, y: jax.Array) -> jax.Array:
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return loss_fn


def make_train_step(
    graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, *, loss: str = "softmax_xent"
) -> Callable:
    """Jitted `step(params, opt_state, x, y) -> (params, opt_state, loss)`.

    Params and optimizer state are donated.
    """
    loss_fn = make_loss_fn(graphdef, loss=loss)

    def step(params: nnx.State, opt_state: Any, x: jax.Array, y: jax.Array) -> tuple:
        value, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return jax.jit(step, donate_argnums=(0, 1))


def _check_batch(batch: Any) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"`batch` (={batch!r}) must be a positive integer")


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """A jitted train step with the abstract arguments it is compiled for."""

    name: str  # model configuration, e.g. "vgg16"
    step: Callable  # jitted (params, opt_state, x, y) -> (params, opt_state, loss)
    loss_fn: Callable  # pure (params, x, y) -> scalar loss, for residual analysis
    params: Any  # nnx.State of nnx.Param, ShapeDtypeStruct leaves
    opt_state: Any  # optimizer state, ShapeDtypeStruct leaves
    input_shape: tuple[int, ...]  # one example, (H, W, C)
    input_dtype: Any  # dtype of x: the compute dtype
    num_classes: int  # logits width; labels are int32 in [0, num_classes)
    optimizer: str  # one of OPTIMIZERS
    remat: str | tuple[str, ...]  # "none", a jax.checkpoint_policies name, or one per stage
    remat_every: int = 1  # rematerialized stages are 0, k, 2k, ...

    def batch_args(self, batch: int) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
        """Abstract `(x, y)` for `batch` examples."""
        _check_batch(batch)
        x = jax.ShapeDtypeStruct((batch, *self.input_shape), self.input_dtype)
        y = jax.ShapeDtypeStruct((batch,), jnp.int32)
        return x, y

    def args_for_batch(self, batch: int) -> tuple:
        """Abstract `(params, opt_state, x, y)` for `batch` examples, as the step takes them."""
        return (self.params, self.opt_state, *self.batch_args(batch))


def vgg_setup(
    name: str = "vgg16",
    *,
    image_size: int = 224,
    channels: int = 3,
    num_classes: int = 1000,
    hidden: int | None = None,
    optimizer: str = "sgd",
    param_dtype: Any = "float32",
    dtype: Any = "float32",
    remat: str | tuple[str, ...] = "none",
    remat_every: int = 1,
    learning_rate: float = 1e-2,
) -> TrainSetup:
    """Train step and abstract arguments for a VGG; nothing is allocated."""
    tx = make_optimizer(optimizer, learning_rate)
    model = abstract_vgg(
        name,
        image_size=image_size,
        channels=channels,
        num_classes=num_classes,
        hidden=hidden,
        param_dtype=param_dtype,
        dtype=dtype,
        remat=remat,
        remat_every=remat_every,
    )
    graphdef, params = nnx.split(model, nnx.Param)
    return TrainSetup(
        name=name,
        step=make_train_step(graphdef, tx),
        loss_fn=make_loss_fn(graphdef),
        params=params,
        opt_state=jax.eval_shape(tx.init, params),
        input_shape=(image_size, image_size, channels),
        input_dtype=as_dtype("dtype", dtype),
        num_classes=num_classes,
        optimizer=optimizer,
        remat=remat,
        remat_every=remat_every,
    )
