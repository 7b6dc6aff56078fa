"""Tuning the project's own models: one row per remat choice."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from autotune.errors import TuneError
from autotune.estimate import Estimate, estimate_step, tree_bytes
from autotune.result import TuneResult
from autotune.targets import Target, cuda_plugin_without_gpu, get_target, local_target
from autotune.tuner import Variant, compare

DEFAULT_DESCRIBED_TARGET = "h100-sxm-80gb"


@dataclasses.dataclass(frozen=True)
class Choice:
    """A rematerialization choice: per-stage policy and XLA's own pass."""

    remat: str = "none"  # "none" or a jax.checkpoint_policies name
    remat_every: int = 1  # rematerialize stages 0, k, 2k, ...
    xla_remat_pass: bool = False

    @property
    def label(self) -> str:
        label = f"remat={self.remat}"
        if self.remat != "none" and self.remat_every != 1:
            label += f"/every {self.remat_every}"
        return label + (" +xla-pass" if self.xla_remat_pass else "")


def resolve_target(
    name: str = "auto", *, mem_fraction: float | None = None, devices: int = 1
) -> Target:
    """ "auto": the local accelerator if there is one, else a described H100;
    `devices` of them."""
    if name == "auto":
        local = None if cuda_plugin_without_gpu() else local_target()
        name = "local" if local and local.platform != "cpu" else DEFAULT_DESCRIBED_TARGET
    return get_target(name, mem_fraction=mem_fraction, devices=devices)


def vgg_variants(
    model: str = "vgg16",
    choices: Sequence[Choice] = (Choice(),),
    *,
    mesh: Any = None,
    layout: str = "dp",
    **model_kwargs: Any,
) -> dict[str, Variant]:
    """A `Variant`, with its analytical estimate, for each choice; laid out
    over `mesh` as `layout` says (see `models.parallel`) when a mesh is given."""
    from models import vgg_setup
    from models.parallel import shard_setup

    variants = {}
    for choice in choices:
        setup = vgg_setup(model, remat=choice.remat, remat_every=choice.remat_every, **model_kwargs)
        estimate = estimate_step(
            setup.loss_fn, setup.params, setup.batch_args, state_bytes=tree_bytes(setup.opt_state)
        )
        step, args_for_batch = setup.step, setup.args_for_batch
        if mesh is not None:
            sharded = shard_setup(setup, mesh, layout)
            step, args_for_batch = sharded.step, sharded.args_for_batch
            estimate = _per_device(estimate, sharded.data_size, layout)
        variants[f"{model} {choice.label}"] = Variant(
            step, args_for_batch, estimate, choice.xla_remat_pass
        )
    return variants


def _per_device(estimate: Estimate, n: int, layout: str) -> Estimate:
    """One device's share: the batch is split; with fsdp the state too."""
    fixed = estimate.fixed_bytes // n if layout == "fsdp" else estimate.fixed_bytes
    return dataclasses.replace(
        estimate, fixed_bytes=fixed, per_example_bytes=estimate.per_example_bytes // n
    )


def tune_vgg(
    model: str = "vgg16",
    *,
    choices: Sequence[Choice] = (Choice(),),
    image_size: int = 224,
    channels: int = 3,
    num_classes: int = 1000,
    optimizer: str = "sgd",
    dtype: str = "float32",
    param_dtype: str = "float32",
    target: str | Target = "auto",
    mem_fraction: float | None = None,
    devices: int = 1,
    layout: str = "dp",
    **search_kwargs: Any,
) -> tuple[TuneResult, ...]:
    """The largest batch of a VGG train step for each choice, on `target`.

    With `devices` > 1 (or a `Target` of several devices) the step is laid
    out over a 1-D mesh of them as `layout` says; batches are then global,
    multiples of the device count (by default of lcm(8, devices)).
    """
    from models.parallel import LAYOUTS, make_mesh

    if layout not in LAYOUTS:
        raise TuneError(f"`layout` (={layout!r}) must be one of {', '.join(LAYOUTS)}")
    tgt = (
        target
        if isinstance(target, Target)
        else resolve_target(target, mem_fraction=mem_fraction, devices=devices)
    )
    n = tgt.device_count
    mesh = make_mesh(tgt.devices()) if n > 1 else None
    search_kwargs.setdefault("multiple_of", math.lcm(8, n))
    variants = vgg_variants(
        model,
        choices,
        mesh=mesh,
        layout=layout,
        image_size=image_size,
        channels=channels,
        num_classes=num_classes,
        optimizer=optimizer,
        dtype=dtype,
        param_dtype=param_dtype,
    )
    return compare(variants, target=tgt, data_parallel_size=n, **search_kwargs)
