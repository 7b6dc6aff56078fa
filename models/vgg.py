"""The VGG family (Simonyan & Zisserman, 2014) in Flax NNX, configurations as data."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# Conv output channels in order; "M" is a 2x2 stride-2 max-pool ending a stage.
# fmt: off
CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
    "vgg-tiny": (8, "M", 16, "M"),
}
# fmt: on

DEFAULT_HIDDEN: dict[str, int] = {
    "vgg11": 4096,
    "vgg13": 4096,
    "vgg16": 4096,
    "vgg19": 4096,
    "vgg-tiny": 32,
}
"""Width of the two hidden fully connected layers per configuration."""

REMAT_POLICIES: tuple[str, ...] = (
    "none",
    "nothing_saveable",
    "dots_saveable",
    "dots_with_no_batch_dims_saveable",
    "everything_saveable",
)
"""Accepted `remat` values: "none" or a `jax.checkpoint_policies` name."""

DTYPES: dict[str, Any] = {
    "float32": jnp.float32,
    "bfloat16": jnp.bfloat16,
    "float16": jnp.float16,
}


def _one_of(arg: str, value: Any, allowed: Any) -> None:
    if value not in allowed:
        raise ValueError(f"`{arg}` (={value!r}) must be one of {', '.join(allowed)}")


def _positive_int(arg: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{arg}` (={value!r}) must be a positive integer")


def as_dtype(arg: str, value: Any) -> jnp.dtype:
    """Returns the dtype named by `value` (a string or a dtype-like) or raises ValueError."""
    if isinstance(value, str):
        _one_of(arg, value, DTYPES)
        return jnp.dtype(DTYPES[value])
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in DTYPES:
        raise ValueError(f"`{arg}` (={value!r}) must be one of {', '.join(DTYPES)}")
    return dtype


def stages_of(name: str) -> list[list[int]]:
    """Splits a configuration into stages: the conv channel counts before each pool."""
    _one_of("name", name, CONFIGS)
    stages, current = [], []
    for item in CONFIGS[name]:
        if item == "M":
            stages.append(current)
            current = []
        else:
            current.append(item)
    return stages


def remat_policy(name: str) -> Callable[..., bool] | None:
    """The `jax.checkpoint_policies` policy named `name`; None for "none"."""
    _one_of("remat", name, REMAT_POLICIES)
    return None if name == "none" else getattr(jax.checkpoint_policies, name)


def stage_policies(remat: str | Sequence[str], every: int, stages: int) -> tuple[str, ...]:
    """The policy of each conv stage: `remat` on stages 0, k, 2k, ... (k =
    `every`), or one policy per stage."""
    if isinstance(remat, str):
        remat_policy(remat)
        return tuple(remat if i % every == 0 else "none" for i in range(stages))
    policies = tuple(remat)
    if len(policies) != stages:
        raise ValueError(
            f"`remat` (={policies!r}) must name one policy per conv stage: {stages} of them"
        )
    if every != 1:
        raise ValueError(
            f"`remat_every` (={every!r}) must be 1 with a policy per stage (`remat`={policies!r})"
        )
    for policy in policies:
        remat_policy(policy)
    return policies


class Stage(nnx.Module):
    """3x3 SAME convs, each followed by ReLU, then a 2x2 stride-2 max-pool."""

    def __init__(
        self, in_channels: int, widths: list[int], *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs
    ):
        convs = []
        for width in widths:
            convs.append(
                nnx.Conv(
                    in_channels,
                    width,
                    (3, 3),
                    padding="SAME",
                    dtype=dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
            )
            in_channels = width
        self.convs = nnx.List(convs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for index, conv in enumerate(self.convs):
            with jax.named_scope(f"conv{index + 1}"):
                x = nnx.relu(conv(x))
        with jax.named_scope("pool"):
            return nnx.max_pool(x, (2, 2), strides=(2, 2))


def _apply(module: nnx.Module, x: jax.Array) -> jax.Array:
    return module(x)


class VGG(nnx.Module):
    """VGG11/13/16/19 (or "vgg-tiny"): conv stages, then FC-ReLU, FC-ReLU, FC. NHWC input."""

    def __init__(
        self,
        name: str = "vgg16",
        *,
        image_size: int = 224,
        channels: int = 3,
        num_classes: int = 1000,
        hidden: int | None = None,
        param_dtype: Any = jnp.float32,
        dtype: Any = jnp.float32,
        remat: str | Sequence[str] = "none",
        remat_every: int = 1,
        rngs: nnx.Rngs,
    ):
        widths = stages_of(name)
        hidden = DEFAULT_HIDDEN[name] if hidden is None else hidden
        for arg, value in (
            ("image_size", image_size),
            ("channels", channels),
            ("num_classes", num_classes),
            ("hidden", hidden),
            ("remat_every", remat_every),
        ):
            _positive_int(arg, value)
        multiple = 2 ** len(widths)
        if image_size % multiple:
            raise ValueError(
                f"`image_size` (={image_size!r}) must be a positive multiple of "
                f"{multiple} for {name}"
            )
        policies = stage_policies(remat, remat_every, len(widths))
        dtype = as_dtype("dtype", dtype)
        param_dtype = as_dtype("param_dtype", param_dtype)

        self.name = name
        self.remat = remat
        self.remat_every = remat_every
        self.stage_policies = policies
        self.dtype = dtype
        stages, in_channels = [], channels
        for stage_widths in widths:
            stages.append(
                Stage(in_channels, stage_widths, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            )
            in_channels = stage_widths[-1]
        self.stages = nnx.List(stages)
        side = image_size // multiple
        dense = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = nnx.Linear(side * side * in_channels, hidden, **dense)
        self.fc2 = nnx.Linear(hidden, hidden, **dense)
        self.fc3 = nnx.Linear(hidden, num_classes, **dense)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps NHWC images to float32 logits."""
        x = x.astype(self.dtype)
        for index, stage in enumerate(self.stages):
            with jax.named_scope(f"stage{index + 1}"):
                policy = self.stage_policies[index]
                if policy != "none":
                    x = nnx.remat(_apply, policy=remat_policy(policy))(stage, x)
                else:
                    x = stage(x)
        x = x.reshape(x.shape[0], -1)
        with jax.named_scope("fc1"):
            x = nnx.relu(self.fc1(x))
        with jax.named_scope("fc2"):
            x = nnx.relu(self.fc2(x))
        with jax.named_scope("fc3"):
            return self.fc3(x).astype(jnp.float32)


def abstract_vgg(name: str = "vgg16", **kwargs: Any) -> VGG:
    """A VGG whose parameters are `jax.ShapeDtypeStruct`s; nothing is allocated."""
    return nnx.eval_shape(lambda: VGG(name, rngs=nnx.Rngs(0), **kwargs))


def param_count(model: nnx.Module) -> int:
    """Number of scalar parameters (`nnx.Param` entries) of a concrete or abstract model."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
