"""The VGG application's workloads: one `autotune.Workload` per remat choice.

`VGGConfig` is the one description of a VGG run: `vgg_workloads` builds it
from its keywords (the command's `--workload-arg`s, or the flags below), the
verification child rebuilds the same workloads from the same keywords, and
`--explain` reads it. `vgg_workloads.command_flags` are the command's flags
for those keywords (`--image-size 160` for `--workload-arg image_size=160`):
the command knows none of them; it asks the workload it loads. Only the
engine's public API is used here.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import autotune

from .train import TrainSetup, make_optimizer, vgg_setup
from .vgg import REMAT_POLICIES, VGG, stage_policies, stages_of

# Initialization runs once: optimizing its random-number program costs ~15 s
# of CPU compile for nothing.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@dataclasses.dataclass(frozen=True)
class VGGConfig:
    """A VGG train step to tune, one row per remat choice."""

    model: str = "vgg16"  # vgg11, vgg13, vgg16, vgg19 or vgg-tiny
    image_size: int = 224  # square NHWC input
    channels: int = 3
    num_classes: int = 1000
    hidden: int | None = None  # FC width; None: the model's own (4096)
    optimizer: str = "sgd"  # sgd (momentum 0.9), adam or adamw
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: tuple[str, ...] = ("none",)  # "none" or jax.checkpoint_policies names
    remat_every: int = 1  # rematerialize conv stages 0, k, 2k, ...

    def __post_init__(self) -> None:
        remat = (self.remat,) if isinstance(self.remat, str) else tuple(self.remat)
        object.__setattr__(self, "remat", remat)
        if not remat:
            raise ValueError(f"`remat` (={remat!r}) must name at least one choice")
        if len(set(remat)) != len(remat):
            raise ValueError(f"`remat` (={remat!r}) names a choice twice")
        for choice in remat:
            if choice not in REMAT_POLICIES:
                raise ValueError(
                    f"`remat` (={choice!r}) must be one of {', '.join(REMAT_POLICIES)}"
                )
        self.setup(remat[0])  # validates every other field

    def stages(self) -> tuple[str, ...]:
        """The conv stages, as `--why` and a remat plan name them."""
        return tuple(f"stage{i + 1}" for i in range(len(stages_of(self.model))))

    def plan(self, remat: str | tuple[str, ...]) -> dict[str, str]:
        """Stage -> policy of a remat choice (or of one policy per stage)."""
        every = self.remat_every if isinstance(remat, str) else 1
        return dict(zip(self.stages(), stage_policies(remat, every, len(self.stages()))))

    def plan_workload(self, plan: autotune.RematPlan) -> autotune.Workload:
        """The workload that trains with `plan`: one policy per stage."""
        return self._workload(tuple(plan[stage] for stage in self.stages()))

    def setup(self, remat: str | tuple[str, ...]) -> TrainSetup:
        """The abstract train step for one remat choice (built once per
        configuration: building the abstract model traces it)."""
        return _setup(self, remat)

    def _build(self, remat: str | tuple[str, ...]) -> TrainSetup:
        return vgg_setup(
            self.model,
            image_size=self.image_size,
            channels=self.channels,
            num_classes=self.num_classes,
            hidden=self.hidden,
            optimizer=self.optimizer,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            remat=remat,
            remat_every=self.remat_every if isinstance(remat, str) else 1,
        )

    def label(self, remat: str | tuple[str, ...]) -> str:
        if not isinstance(remat, str):
            chosen = [f"{s}={p}" for s, p in self.plan(remat).items() if p != "none"]
            return f"{self.model} remat[{', '.join(chosen) or 'none'}]"
        label = f"{self.model} remat={remat}"
        if remat != "none" and self.remat_every != 1:
            label += f"/every {self.remat_every}"
        return label

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready keywords of `vgg_workloads`."""
        data = dataclasses.asdict(self)
        data["remat"] = list(self.remat)
        return data

    def workloads(self) -> tuple[autotune.Workload, ...]:
        """One workload per remat choice, with its analytical estimate."""
        return tuple(self._workload(remat) for remat in self.remat)

    def _workload(self, remat: str | tuple[str, ...]) -> autotune.Workload:
        setup = self.setup(remat)
        estimate = autotune.estimate_step(
            setup.loss_fn, setup.params, setup.batch_args, opt_state=setup.opt_state
        )
        return autotune.Workload(
            setup.step,
            setup.args_for_batch,
            estimate=estimate,
            label=self.label(remat),
            real_args=lambda batch: self.real_args(setup, batch),
            remat_plan=self.plan(remat),
        )

    def real_args(self, setup: TrainSetup, batch: int) -> tuple[Any, ...]:
        """Real parameters of a `VGG` (`nnx.Rngs(0)`), its optimizer state, and
        a batch of zeros; the state is made by one compiled program."""
        tx = make_optimizer(self.optimizer)
        kwargs = dict(
            image_size=self.image_size,
            channels=self.channels,
            num_classes=self.num_classes,
            hidden=self.hidden,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            remat=setup.remat,
            remat_every=setup.remat_every,
        )

        def init() -> tuple[Any, Any]:
            model = VGG(self.model, rngs=nnx.Rngs(0), **kwargs)
            _, params = nnx.split(model, nnx.Param)
            return params, tx.init(params)

        lowered = jax.jit(init).lower()
        try:
            compiled = lowered.compile(compiler_options=_FAST_COMPILE)
        except Exception:
            compiled = lowered.compile()
        params, opt_state = compiled()
        x, y = setup.batch_args(batch)
        return params, opt_state, jnp.zeros(x.shape, x.dtype), jnp.zeros(y.shape, y.dtype)


@functools.lru_cache(maxsize=32)
def _setup(config: VGGConfig, remat: str | tuple[str, ...]) -> TrainSetup:
    return config._build(remat)


# What plain `autotune` compares: VGG16 with and without per-stage remat.
DEFAULT_REMAT = ("none", "nothing_saveable")


def vgg_workloads(
    *, remat: Any = DEFAULT_REMAT, explain: bool = False, **config: Any
) -> tuple[autotune.Workload, ...]:
    """The workloads of `VGGConfig(remat=remat, **config)`: `autotune --workload
    autotune.models:vgg_workloads` is what `autotune` runs by default. With
    `explain`, each answer is followed by the cs231n case study's analysis
    of it (`explain_vgg`)."""
    if not isinstance(explain, bool):
        raise ValueError(f"`explain` (={explain!r}) must be true or false")
    vgg = VGGConfig(remat=remat, **config)
    if not explain:
        return vgg.workloads()
    from .explain import explain_vgg

    return tuple(
        dataclasses.replace(w, notes=lambda result: explain_vgg(result, vgg))
        for w in vgg.workloads()
    )


def vgg_remat_space(*, policies: Any = ("nothing_saveable",), **config: Any) -> autotune.RematSpace:
    """The remat plans of `VGGConfig(**config)`: its conv stages, `stage1`
    ... `stage5`, each "none" or one of `policies` (from the least recompute
    to the most). `autotune --fit-batch N` searches it."""
    for name in ("remat", "remat_every", "explain"):
        if name in config:
            raise ValueError(
                f"`{name}` (={config[name]!r}) is given to a search over remat plans; the "
                "plans choose each stage's policy"
            )
    vgg = VGGConfig(**config)
    return autotune.RematSpace(
        blocks=vgg.stages(), build=vgg.plan_workload, policies=policies, label=vgg.model
    )


def _remat_choices(text: str) -> tuple[str, ...]:
    choices = tuple(choice.strip() for choice in text.split(",") if choice.strip())
    if not choices:
        raise ValueError("must name at least one remat choice")
    return choices


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be an integer") from None


vgg_workloads.remat_space = vgg_remat_space
vgg_workloads.command_flags = (
    autotune.WorkloadFlag(
        "--model", "model", "vgg11, vgg13, vgg16 or vgg19 (default: vgg16)", metavar="NAME"
    ),
    autotune.WorkloadFlag("--image-size", "image_size", "square input side (default: 224)",
                          _count, "N"),
    autotune.WorkloadFlag("--channels", "channels", "input channels (default: 3)", _count, "N"),
    autotune.WorkloadFlag("--classes", "num_classes", "output classes (default: 1000)",
                          _count, "N"),
    autotune.WorkloadFlag("--optimizer", "optimizer",
                          "sgd (momentum 0.9), adam or adamw (default: sgd)", metavar="NAME"),
    autotune.WorkloadFlag("--dtype", "dtype",
                          "compute dtype: float32 or bfloat16 (default: float32)",
                          metavar="DTYPE"),
    autotune.WorkloadFlag("--param-dtype", "param_dtype", "parameter dtype (default: float32)",
                          metavar="DTYPE"),
    autotune.WorkloadFlag(
        "--remat", "remat",
        "comma-separated remat choices, one row each: none or a jax.checkpoint_policies "
        f"name per conv stage (default: {','.join(DEFAULT_REMAT)})",
        _remat_choices, "CHOICES",
    ),
    autotune.WorkloadFlag("--remat-every", "remat_every",
                          "rematerialize every k-th conv stage only", _count, "K"),
    autotune.WorkloadFlag("--explain", "explain",
                          "print the cs231n case study's analytical breakdown beside XLA's "
                          "numbers", None),
)  # fmt: skip
