"""A workload from an init function, a loss function and an optax transform:
for Flax Linen (`model.init`, `model.apply`) and plain JAX alike.

Variables are a mapping of collections, as Linen's: `"params"` is trained;
the `mutable` collections (`"batch_stats"`) are updated by the loss and
carried from step to step; any other collection is held constant. PRNG
streams (`"dropout"`) get a fresh key each step, from a key the step takes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from autotune._core import checks as check
from autotune._core.errors import TuneError
from autotune._workloads.build import (
    InputSpec,
    batched,
    check_traces,
    example_inputs,
    key_struct,
    require_optimizer,
    scalar_loss,
    try_estimate,
    zeros,
)
from autotune._workloads.estimate import estimate_step
from autotune._workloads.workload import Workload

_AUX_RULE = (
    ", aux a mapping holding the new value of each `mutable` collection (what Linen's "
    "apply(..., mutable=...) returns as its second value) and any metrics"
)


def train_workload(
    init: Callable[[dict[str, jax.Array]], Mapping[str, Any]],
    loss_fn: Callable[..., Any],
    tx: Any,
    inputs: Sequence[InputSpec],
    *,
    mutable: Sequence[str] = (),
    rngs: Sequence[str] = (),
    has_aux: bool = False,
    seed: int = 0,
    label: str = "",
    estimate: bool = True,
) -> Workload:
    """A `Workload` training `init`'s parameters on `loss_fn` with `tx`.

    Args:
        init: `init(rngs)` returns the variables, a mapping with a
            `"params"` collection; `rngs` maps `"params"` and each stream
            of `rngs` to a key (Linen: `lambda rngs: model.init(rngs, x)`).
            Called abstractly (`jax.eval_shape`) for the compiles.
        loss_fn: `loss_fn(variables, *inputs)` returns the scalar loss, or
            `(loss, aux)` with `has_aux` or `mutable`; with `rngs` it is
            called with `rngs=` too, a dict of one key per stream.
        tx: an optax transform (`optax.sgd(0.1, momentum=0.9)`).
        inputs: the loss's inputs for one example, each a
            `jax.ShapeDtypeStruct` or a `(shape, dtype)` pair.
        mutable: the collections the loss updates: `aux` then maps each to
            its new value (`logits, updates = model.apply(variables, x,
            mutable=["batch_stats"])`; `return loss, updates`); other
            entries of `aux` are metrics, returned by the step.
        rngs: the PRNG streams the loss draws from (`["dropout"]`).
        has_aux: `loss_fn` returns `(loss, aux)` (implied by `mutable`).
        seed: seeds `init` for the real arguments (`real_args`).
        label: names the answer.
        estimate: attach the analytical estimate (it places the first
            compiles; the answer is exact with or without it).

    The step is `step(params, state, opt_state, constants, *inputs, key) ->
    (params, state, opt_state, loss, aux)`: `state` the mutable
    collections, `constants` the others; the first three are donated.
    """
    check.function("init", init, " (rngs) -> variables")
    check.function("loss_fn", loss_fn, " (variables, *inputs) -> loss")
    require_optimizer(tx)
    examples = example_inputs(inputs)
    collections = _names("mutable", mutable)
    streams = _names("rngs", rngs)
    for arg, value in (("has_aux", has_aux), ("estimate", estimate)):
        check.boolean(arg, value)
    check.integer("seed", seed, minimum=0)
    check.string("label", label)
    if "params" in collections or "params" in streams:
        named = "mutable" if "params" in collections else "rngs"
        raise TuneError(
            f"`{named}` (={list(mutable if named == 'mutable' else rngs)!r}) names "
            '"params": the parameters are trained by `tx`, and init draws them from '
            'its own "params" stream'
        )

    def init_variables() -> Any:
        return init(_stream_keys(jax.random.key(seed), ("params", *streams)))

    params, state, constants = _split(_abstract_variables(init_variables), collections)
    opt_state = _abstract_opt_state(tx, params)
    returns_aux = has_aux or bool(collections)

    def objective(params: Any, held: tuple[Any, Any], *batch_and_key: Any) -> tuple[Any, Any]:
        state, constants = held
        *batch, key = batch_and_key
        variables = {"params": params, **state, **constants}
        extra = {"rngs": _stream_keys(key, streams)} if streams else {}
        loss, aux = scalar_loss(
            loss_fn(variables, *batch, **extra), returns_aux, _AUX_RULE if collections else ""
        )
        if not collections:
            return loss, ({}, aux)
        new_state, metrics = _take_collections(aux, collections, state)
        return loss, (new_state, metrics or None)

    def step(params: Any, state: Any, opt_state: Any, constants: Any, *batch_and_key: Any) -> tuple:
        import optax  # here, not at import: `import autotune` imports JAX alone

        grad_fn = jax.value_and_grad(objective, has_aux=True)
        (loss, (state, aux)), grads = grad_fn(params, (state, constants), *batch_and_key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss, aux

    def args_for_batch(batch: int) -> tuple[Any, ...]:
        return (params, state, opt_state, constants, *batched(examples, batch), key_struct())

    def init_all() -> tuple[Any, Any, Any, Any]:
        params, state, constants = _split(init_variables(), collections)
        return params, state, tx.init(params), constants

    def real_args(batch: int) -> tuple[Any, ...]:
        return (*jax.jit(init_all)(), *zeros(examples, batch), jax.random.key(seed + 1))

    check_traces(step, args_for_batch(1))

    def make_estimate() -> Any:
        return estimate_step(
            objective,
            params,
            lambda b: (*batched(examples, b), key_struct()),
            opt_state=opt_state,
            state=(state, constants),
            has_aux=True,
        )

    return Workload(
        step,
        args_for_batch,
        donate_argnums=(0, 1, 2),
        estimate=try_estimate(make_estimate) if estimate else None,
        label=label,
        real_args=real_args,
    )


def _names(arg: str, value: Any) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise TuneError(f"`{arg}` (={value!r}) must be a list of names, e.g. [{_EXAMPLE[arg]!r}]")
    if len(set(names)) != len(names):
        raise TuneError(f"`{arg}` (={value!r}) names one twice")
    return tuple(names)


_EXAMPLE = {"mutable": "batch_stats", "rngs": "dropout"}


def _stream_keys(key: jax.Array, streams: Sequence[str]) -> dict[str, jax.Array]:
    return {name: jax.random.fold_in(key, i) for i, name in enumerate(streams)}


def _abstract_variables(init_variables: Callable[[], Any]) -> Any:
    try:
        return jax.eval_shape(init_variables)
    except TuneError:
        raise
    except Exception as e:
        raise TuneError(
            f"`init` raised {type(e).__name__} when called as init(rngs) (abstractly, "
            f"through jax.eval_shape): {e}"
        ) from e


def _split(variables: Any, collections: tuple[str, ...]) -> tuple[Any, dict, dict]:
    """(params, mutable collections, other collections) of `init`'s variables."""
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TuneError(
            f"`init` returned {type(variables).__name__}"
            + (
                f" with collections {', '.join(map(repr, variables))}"
                if isinstance(variables, Mapping)
                else ""
            )
            + '; it must return a mapping of collections with "params" (as Linen\'s '
            'init does; plain JAX: {"params": params})'
        )
    missing = [c for c in collections if c not in variables]
    if missing:
        raise TuneError(
            f"`mutable` (={list(collections)!r}) names {missing[0]!r}, which `init` does "
            f"not return; its collections are {', '.join(map(repr, variables))}"
        )
    state = {c: variables[c] for c in collections}
    constants = {c: v for c, v in variables.items() if c != "params" and c not in collections}
    return variables["params"], state, constants


def _abstract_opt_state(tx: Any, params: Any) -> Any:
    try:
        return jax.eval_shape(tx.init, params)
    except Exception as e:
        raise TuneError(f"`tx` (={tx!r}): tx.init(params) raised {type(e).__name__}: {e}") from e


def _take_collections(aux: Any, collections: tuple[str, ...], state: dict) -> tuple[dict, dict]:
    """(new mutable collections, metrics) from the loss's aux, checked against `state`."""
    if not isinstance(aux, Mapping) or any(c not in aux for c in collections):
        raise TuneError(
            f"`loss_fn` returned aux {_describe(aux)}; with `mutable` (={list(collections)!r}) "
            f"it must return (loss, aux){_AUX_RULE}"
        )
    for c in collections:
        if _layout(aux[c]) != _layout(state[c]):
            raise TuneError(
                f"`loss_fn` returned a new {c!r} that differs from the one `init` made "
                "(its keys, shapes or dtypes): the step carries it to the next step"
            )
    # The container types may differ (a dict for a FrozenDict): keep init's.
    new_state = {
        c: jax.tree.unflatten(jax.tree.structure(state[c]), jax.tree.leaves(aux[c]))
        for c in collections
    }
    return new_state, {k: v for k, v in aux.items() if k not in collections}


def _layout(tree: Any) -> list[tuple[str, tuple[int, ...], Any]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(jax.tree_util.keystr(path), tuple(x.shape), x.dtype) for path, x in leaves]


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"with keys {', '.join(map(repr, value))}"
    return f"of type {type(value).__name__}"
