"""A workload for a Flax NNX model in a few lines.

    from autotune.nnx import nnx_workload

    workload = nnx_workload(
        lambda rngs: MyModel(rngs=rngs),            # built with nnx.Rngs(seed)
        optax.adamw(1e-3),                          # through nnx.Optimizer
        loss_fn,                                    # loss_fn(model, *inputs) -> loss
        inputs=[((32, 32, 3), jnp.float32), ((), jnp.int32)],   # one example each
    )

The step it builds is the usual NNX one: merge the model and optimizer,
`nnx.value_and_grad` of the loss, `optimizer.update`, return the whole
state, which is donated: parameters, optimizer state, BatchNorm statistics,
and the PRNG state of the model's `nnx.Rngs` (dropout draws fresh masks
every step). Train with the same step: `jax.jit(workload.step,
donate_argnums=0)` over `workload.real_args(batch)`.

This module imports Flax; `import autotune` does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from flax import nnx

from autotune._core import checks as check
from autotune._core.errors import TuneError
from autotune._plans.plan import RematSpace, complete_plan
from autotune._plans.policies import NONE, check_policy
from autotune._workloads.build import (
    InputSpec,
    batched,
    check_traces,
    example_inputs,
    require_optimizer,
    scalar_loss,
    try_estimate,
    zeros,
)
from autotune._workloads.estimate import estimate_step
from autotune._workloads.workload import Workload

__all__ = ["POLICIES", "block_paths", "checkpoint_blocks", "nnx_remat_space", "nnx_workload"]

POLICIES: tuple[str, ...] = tuple(
    name
    for name in (
        "nothing_saveable",
        "dots_saveable",
        "dots_with_no_batch_dims_saveable",
        "checkpoint_dots",
        "checkpoint_dots_with_no_batch_dims",
        "everything_saveable",
    )
    if hasattr(jax.checkpoint_policies, name)
)
"""`jax.checkpoint_policies` names `remat` accepts (a policy function is accepted too)."""

_REMAT_CLASSES: dict[tuple[type, Any, str], type] = {}


def nnx_workload(
    model: Callable[..., nnx.Module],
    tx: Any,
    loss_fn: Callable[..., Any],
    inputs: Sequence[InputSpec],
    *,
    has_aux: bool = False,
    remat: str | Callable[..., bool] | None = None,
    remat_blocks: type | tuple[type, ...] = (),
    remat_plan: Mapping[str, str] | None = None,
    wrt: Any = nnx.Param,
    seed: int = 0,
    label: str = "",
    estimate: bool = True,
) -> Workload:
    """A `Workload` training an NNX model with an optax transform.

    Args:
        model: called as `model(rngs=nnx.Rngs(seed))`, returns the model
            (`lambda rngs: MyModel(config, rngs=rngs)`); abstractly, through
            `nnx.eval_shape`, for the compiles.
        tx: an optax transform, applied through `nnx.Optimizer(model, tx, wrt=wrt)`.
        loss_fn: `loss_fn(model, *inputs)` returns the scalar loss, or
            `(loss, aux)` with `has_aux` (aux is returned by the step).
            Changes to the model's state during the call (BatchNorm
            statistics, PRNG counts) are kept.
        inputs: the loss's inputs for one example, each a
            `jax.ShapeDtypeStruct` or a `(shape, dtype)` pair.
        has_aux: `loss_fn` returns `(loss, aux)`.
        remat: a `jax.checkpoint_policies` name (one of `POLICIES`) or
            policy: every submodule of a `remat_blocks` type runs under
            `nnx.remat` with it (see `checkpoint_blocks`); None: no remat.
        remat_blocks: the block types `remat` applies to, e.g. the
            transformer block's class.
        remat_plan: instead of `remat`, a policy per block: block path ->
            policy ("none" or a `POLICIES` name), the blocks being the
            outermost `remat_blocks` instances by their path in the model
            ("blocks.0"; see `block_paths`); blocks not named take "none".
        wrt: the variables trained (an NNX filter), for the gradient and
            the optimizer.
        seed: seeds `nnx.Rngs` for the real arguments (`real_args`).
        label: names the answer; default: the model's class name and remat
            policy.
        estimate: attach the analytical estimate (it places the first
            compiles; the answer is exact with or without it).

    The step is `step(state, *inputs) -> (state, loss, aux)` (aux None
    without `has_aux`), `state` the `nnx.State` of `(model, optimizer)`,
    donated. `real_args(batch)` builds the model and optimizer for real and
    zeros for the inputs.
    """
    if isinstance(model, nnx.Module):
        name = type(model).__name__
        raise TuneError(
            f"`model` (=an instance of {name}) must be a factory, called as "
            f"model(rngs=nnx.Rngs(seed)) to build the model: e.g. "
            f"lambda rngs: {name}(..., rngs=rngs), not the model built"
        )
    check.function("model", model, " (rngs=nnx.Rngs) -> nnx.Module")
    _check_filter(wrt)
    require_optimizer(tx)
    check.function("loss_fn", loss_fn, " (model, *inputs) -> loss")
    examples = example_inputs(inputs)
    for arg, value in (("has_aux", has_aux), ("estimate", estimate)):
        check.boolean(arg, value)
    check.integer("seed", seed, minimum=0)
    check.string("label", label)
    policy_name, policy = _policy(remat)
    blocks = _block_types(remat_blocks)
    if policy is not None and not blocks:
        raise TuneError(
            f"`remat` (={policy_name!r}) needs `remat_blocks`: the types of the "
            "submodules to rematerialize, e.g. remat_blocks=TransformerBlock"
        )
    if remat_plan is not None and (policy is not None or not blocks):
        raise TuneError(
            f"`remat_plan` (={check.shown(remat_plan)}) needs `remat_blocks` and no `remat`: "
            "it gives each block its own policy"
        )
    plan: dict[str, str] | None = None

    def build() -> tuple[nnx.Module, nnx.Optimizer]:
        module = _construct(model, seed)
        if policy is not None:
            _wrap_blocks(module, blocks, policy, f"`remat_blocks` (={remat_blocks!r})")
        if plan is not None:
            checkpoint_blocks(module, plan)
        return module, nnx.Optimizer(module, tx, wrt=wrt)

    if remat_plan is not None:
        blocks_of_model = _paths(_abstract(lambda: _construct(model, seed)), blocks)
        plan = complete_plan(remat_plan, blocks_of_model, "remat_plan").to_dict()
    abstract = _abstract(build)
    if not jax.tree.leaves(nnx.state(abstract[0], wrt)):
        raise TuneError(f"`wrt` (={check.shown(wrt)}) selects no variable of the model to train")
    graphdef, state = nnx.split(abstract)
    objective = _objective(loss_fn, has_aux)

    def step(state: nnx.State, *batch: jax.Array) -> tuple[nnx.State, jax.Array, Any]:
        module, optimizer = nnx.merge(graphdef, state)
        grad_fn = nnx.value_and_grad(objective, argnums=nnx.DiffState(0, wrt), has_aux=True)
        (loss, aux), grads = grad_fn(module, *batch)
        optimizer.update(module, grads)
        return nnx.state((module, optimizer)), loss, aux

    def args_for_batch(batch: int) -> tuple[Any, ...]:
        return (state, *batched(examples, batch))

    def real_args(batch: int) -> tuple[Any, ...]:
        return (jax.jit(lambda: nnx.state(build()))(), *zeros(examples, batch))

    check_traces(step, args_for_batch(1))
    name = type(abstract[0]).__name__
    return Workload(
        step,
        args_for_batch,
        donate_argnums=0,
        estimate=try_estimate(lambda: _estimate(abstract, wrt, objective, examples))
        if estimate
        else None,
        label=label or (f"{name} remat={policy_name}" if policy is not None else name),
        real_args=real_args,
        remat_plan=plan,
    )


def nnx_remat_space(
    model: Callable[..., nnx.Module],
    tx: Any,
    loss_fn: Callable[..., Any],
    inputs: Sequence[InputSpec],
    *,
    remat_blocks: type | tuple[type, ...],
    policies: Sequence[str] = ("nothing_saveable",),
    seed: int = 0,
    label: str = "",
    **kwargs: Any,
) -> RematSpace:
    """The remat plans of an NNX model, for `autotune.search_plans`.

    The blocks are the outermost instances of `remat_blocks`, in model
    order, named by their path ("blocks.0"); `policies` are those a block
    may take besides "none", from the least recompute to the most. The
    other arguments are `nnx_workload`'s. Train a plan the search answers
    with `checkpoint_blocks(model, result.remat_plan)`.
    """
    types = _block_types(remat_blocks)
    if not types:
        raise TuneError(f"`remat_blocks` (={remat_blocks!r}) must name at least one block type")
    for name in ("remat", "remat_plan"):
        if name in kwargs:
            raise TuneError(f"`{name}` is given to a space of plans; its plans choose it")
    check.function("model", model, " (rngs=nnx.Rngs) -> nnx.Module")
    blocks = _paths(_abstract(lambda: _construct(model, seed)), types)
    if not blocks:
        raise TuneError(f"`remat_blocks` (={remat_blocks!r}) matches no submodule of the model")

    def build(plan: Any) -> Workload:
        return nnx_workload(
            model, tx, loss_fn, inputs, remat_blocks=types, remat_plan=plan.to_dict(),
            seed=seed, label=label, **kwargs,
        )  # fmt: skip

    return RematSpace(blocks, build, policies=policies, label=label)


def block_paths(model: nnx.Module, blocks: type | tuple[type, ...]) -> tuple[str, ...]:
    """The paths ("blocks.0") of the outermost `blocks` instances of `model`,
    in model order: the blocks a remat plan names."""
    return _paths(model, _block_types(blocks, "blocks"))


def checkpoint_blocks(
    model: nnx.Module,
    blocks: type | tuple[type, ...] | Mapping[str, str],
    policy: str | Callable[..., bool] | None = None,
) -> int:
    """Runs blocks of `model` under `nnx.remat(policy=...)`, in place.

    `checkpoint_blocks(model, Block, "nothing_saveable")`: every outermost
    submodule of a `blocks` type, under one policy. `checkpoint_blocks(model,
    plan)`: a plan (block path -> policy, as `TuneResult.remat_plan` holds
    it), each named block under its own policy ("none": as it was) and
    within a named scope of its path, as the tuner compiled it.

    Only the outermost matches are wrapped (a block inside a block is
    already recomputed with it). Each matched instance becomes an instance
    of a subclass of its type whose `__call__` is the original's under
    `nnx.remat`; its variables, their paths and values are unchanged, so a
    checkpoint restores into it. Array arguments of the call are traced;
    other arguments (flags, None) are held as they are. Call it on the
    model in the training code to train the program that was tuned.

    Returns:
        The number of submodules wrapped.
    """
    if not isinstance(model, nnx.Module):
        raise TuneError(f"`model` (={type(model).__name__}) must be an nnx.Module")
    if isinstance(blocks, Mapping):
        if policy is not None:
            raise TuneError(
                f"`policy` (={policy!r}) is given with a plan; the plan holds each block's"
            )
        return _apply_plan(model, blocks)
    types = _block_types(blocks, "blocks")
    if not types:
        raise TuneError(f"`blocks` (={blocks!r}) must name at least one nnx.Module type")
    _, remat_policy = _policy(policy, "policy", optional=False)
    return _wrap_blocks(model, types, remat_policy, f"`blocks` (={blocks!r})")


def _paths(model: nnx.Module, types: tuple[type, ...]) -> tuple[str, ...]:
    return tuple(_path_name(path) for path, _ in _outermost(model, types))


def _path_name(path: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in path)


def _outermost(model: nnx.Module, types: tuple[type, ...]) -> list[tuple[tuple, nnx.Module]]:
    found = [
        (path, module) for path, module in nnx.iter_modules(model) if isinstance(module, types)
    ]
    paths = {path for path, _ in found}
    return [(p, m) for p, m in found if not any(p[:i] in paths for i in range(len(p)))]


def _apply_plan(model: nnx.Module, plan: Mapping[str, str]) -> int:
    modules = {_path_name(path): module for path, module in nnx.iter_modules(model)}
    for block, policy in plan.items():
        if block not in modules or not block:
            raise TuneError(
                f"`plan` names {block!r}, which is no submodule path of the model "
                "(paths are dotted: 'blocks.0')"
            )
        check_policy(f"plan[{block!r}]", policy)
    for block, policy in plan.items():
        module = modules[block]
        base = getattr(type(module), "_remat_base", type(module))
        remat_policy = None if policy == NONE else getattr(jax.checkpoint_policies, policy)
        module.__class__ = _remat_class(base, remat_policy, block)
    return len(plan)


def _wrap_blocks(
    model: nnx.Module, types: tuple[type, ...], policy: Callable[..., bool], named: str
) -> int:
    outermost = [m for _, m in _outermost(model, types)]
    if not outermost:
        present = sorted({type(m).__name__ for _, m in nnx.iter_modules(model)})
        raise TuneError(
            f"{named} matches no submodule of the model; its module types are {', '.join(present)}"
        )
    for module in outermost:
        base = getattr(type(module), "_remat_base", type(module))
        module.__class__ = _remat_class(base, policy)
    return len(outermost)


def _remat_class(base: type, policy: Callable[..., bool] | None, scope: str = "") -> type:
    """The subclass of `base` whose call runs under `nnx.remat(policy=policy)`
    (as it was with None), within `jax.named_scope(scope)` if one is given."""
    key = (base, policy, scope)
    if key not in _REMAT_CLASSES:

        def __call__(self: nnx.Module, *args: Any, **kwargs: Any) -> Any:
            with jax.named_scope(scope) if scope else contextlib.nullcontext():
                if policy is None:
                    return base.__call__(self, *args, **kwargs)
                return _call_under_remat(base.__call__, policy, self, args, kwargs)

        _REMAT_CLASSES[key] = type(
            base.__name__,
            (base,),
            {
                "__call__": __call__,
                "__module__": base.__module__,
                "__qualname__": base.__qualname__,
                "__doc__": base.__doc__,
                "_remat_base": base,
            },
        )
    return _REMAT_CLASSES[key]


def _is_traced(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, nnx.Module, nnx.Variable))


def _call_under_remat(
    call: Callable[..., Any],
    policy: Callable[..., bool],
    module: nnx.Module,
    args: tuple,
    kwargs: dict,
) -> Any:
    leaves, tree = jax.tree.flatten((args, kwargs), is_leaf=_is_traced)
    traced = [i for i, leaf in enumerate(leaves) if _is_traced(leaf)]

    def run(module: nnx.Module, values: list) -> Any:
        filled = list(leaves)
        for i, value in zip(traced, values):
            filled[i] = value
        call_args, call_kwargs = jax.tree.unflatten(tree, filled)
        return call(module, *call_args, **call_kwargs)

    return nnx.remat(run, policy=policy)(module, [leaves[i] for i in traced])


def _policy(
    remat: Any, arg: str = "remat", optional: bool = True
) -> tuple[str, Callable[..., bool] | None]:
    """(name, policy) of `remat`; policy None for no remat."""
    rule = (
        f"must be {'None, ' if optional else ''}a jax.checkpoint_policies name (one of "
        f"{', '.join(POLICIES)}) or a policy function"
    )
    if remat is None and optional:
        return "none", None
    if isinstance(remat, str):
        if remat not in POLICIES:
            raise TuneError(f"`{arg}` (={remat!r}) {rule}")
        return remat, getattr(jax.checkpoint_policies, remat)
    if callable(remat):
        return getattr(remat, "__name__", "custom"), remat
    raise TuneError(f"`{arg}` (={remat!r}) {rule}")


def _block_types(blocks: Any, arg: str = "remat_blocks") -> tuple[type, ...]:
    types = blocks if isinstance(blocks, (tuple, list)) else (blocks,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, nnx.Module)):
            raise TuneError(
                f"`{arg}` (={blocks!r}) must be an nnx.Module subclass or a tuple "
                "of them: the types of the blocks to rematerialize"
            )
    return tuple(types)


def _check_filter(wrt: Any) -> None:
    """`wrt` is an NNX filter (Flax's own check fails on an f-string of its own)."""
    try:
        nnx.filterlib.to_predicate(wrt)
    except Exception:
        raise TuneError(
            f"`wrt` (={check.shown(wrt)}) must be an NNX filter: a Variable type "
            "(nnx.Param), a name, a predicate (path, value) -> bool, or a tuple of them"
        ) from None


def _construct(model: Callable[..., Any], seed: int) -> nnx.Module:
    try:
        module = model(rngs=nnx.Rngs(seed))
    except TuneError:
        raise
    except Exception as e:
        raise TuneError(
            f"`model` (={check.shown(model)}) raised {type(e).__name__} when called as "
            f"model(rngs=nnx.Rngs({seed})): {e}"
        ) from e
    if not isinstance(module, nnx.Module):
        raise TuneError(
            f"`model` (={check.shown(model)}) returned {type(module).__name__}; called as "
            "model(rngs=nnx.Rngs(seed)) it must return an nnx.Module"
        )
    return module


def _abstract(build: Callable[[], Any]) -> Any:
    try:
        return nnx.eval_shape(build)
    except TuneError:
        raise
    except Exception as e:
        raise TuneError(
            f"building the model and its nnx.Optimizer abstractly (nnx.eval_shape) "
            f"raised {type(e).__name__}: {e}"
        ) from e


def _objective(loss_fn: Callable[..., Any], has_aux: bool) -> Callable[..., tuple[Any, Any]]:
    def objective(module: nnx.Module, *batch: Any) -> tuple[Any, Any]:
        return scalar_loss(loss_fn(module, *batch), has_aux)

    return objective


def _estimate(
    abstract: tuple[nnx.Module, nnx.Optimizer],
    wrt: Any,
    objective: Callable[..., tuple[Any, Any]],
    examples: Sequence[jax.ShapeDtypeStruct],
) -> Any:
    module, optimizer = abstract
    graphdef, params, rest = nnx.split(module, wrt, ...)

    def loss(params: nnx.State, rest: nnx.State, *batch: Any) -> tuple[Any, Any]:
        return objective(nnx.merge(graphdef, params, rest), *batch)

    return estimate_step(
        loss,
        params,
        lambda b: batched(examples, b),
        opt_state=nnx.state(optimizer),
        state=rest,
        has_aux=True,
    )
