"""Tuning the project's own models: one row per remat choice."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from autotune.estimate import estimate_step, tree_bytes
from autotune.result import TuneResult
from autotune.targets import Target, get_target, local_target
from autotune.tuner import Variant, compare

DEFAULT_DESCRIBED_TARGET = "h100-sxm-80gb"


@dataclasses.dataclass(frozen=True)
class Choice:
    """A rematerialization choice: per-stage policy and XLA's own pass."""

    remat: str = "none"          # "none" or a jax.checkpoint_policies name
    remat_every: int = 1         # rematerialize stages 0, k, 2k, ...
    xla_remat_pass: bool = False

    @property
    def label(self) -> str:
        label = f"remat={self.remat}"
        if self.remat != "none" and self.remat_every != 1:
            label += f"/every {self.remat_every}"
        return label + (" +xla-pass" if self.xla_remat_pass else "")


def resolve_target(name: str = "auto", *, mem_fraction: float | None = None) -> Target:
    """ "auto": the local accelerator if there is one, else a described H100."""
    if name == "auto":
        local = local_target()
        if local.platform != "cpu":
            return local
        name = DEFAULT_DESCRIBED_TARGET
    return get_target(name, mem_fraction=mem_fraction)


def vgg_variants(model: str = "vgg16", choices: Sequence[Choice] = (Choice(),),
                 **model_kwargs: Any) -> dict[str, Variant]:
    """A `Variant`, with its analytical estimate, for each choice."""
    from models import vgg_setup

    variants = {}
    for choice in choices:
        setup = vgg_setup(model, remat=choice.remat, remat_every=choice.remat_every,
                          **model_kwargs)
        estimate = estimate_step(setup.loss_fn, setup.params, setup.batch_args,
                                 state_bytes=tree_bytes(setup.opt_state))
        variants[f"{model} {choice.label}"] = Variant(
            setup.step, setup.args_for_batch, estimate, choice.xla_remat_pass)
    return variants


def tune_vgg(model: str = "vgg16", *, choices: Sequence[Choice] = (Choice(),),
             image_size: int = 224, channels: int = 3, num_classes: int = 1000,
             optimizer: str = "sgd", dtype: str = "float32",
             param_dtype: str = "float32", target: str | Target = "auto",
             mem_fraction: float | None = None, **search_kwargs: Any
             ) -> tuple[TuneResult, ...]:
    """The largest batch of a VGG train step for each choice, on `target`."""
    tgt = (target if isinstance(target, Target)
           else resolve_target(target, mem_fraction=mem_fraction))
    variants = vgg_variants(model, choices, image_size=image_size,
                            channels=channels, num_classes=num_classes,
                            optimizer=optimizer, dtype=dtype,
                            param_dtype=param_dtype)
    return compare(variants, target=tgt, **search_kwargs)
