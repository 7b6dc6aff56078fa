"""`autotune.train_workload`: an init function, a loss function and an optax
transform make a workload, for plain JAX and for Flax Linen alike."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autotune import TuneError, train_workload

FEATURES, HIDDEN, CLASSES = 6, 16, 3
INPUTS = [((FEATURES,), jnp.float32), ((), jnp.int32)]


def mlp_init(rngs):
    k1, k2 = jax.random.split(rngs["params"])
    return {
        "params": {
            "w1": jax.random.normal(k1, (FEATURES, HIDDEN)) * 0.3,
            "w2": jax.random.normal(k2, (HIDDEN, CLASSES)) * 0.3,
        }
    }


def mlp_loss(variables, x, y):
    p = variables["params"]
    logits = jnp.tanh(x @ p["w1"]) @ p["w2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Dense(HIDDEN)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.Dropout(0.5, deterministic=not train)(nn.relu(x))
        return nn.Dense(CLASSES)(x)


NET = Net()


def linen_init(rngs):
    return NET.init(rngs, jnp.zeros((1, FEATURES)))


def linen_loss(variables, x, y, rngs):
    logits, updates = NET.apply(variables, x, mutable=["batch_stats"], rngs=rngs)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {**updates, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}


def linen(**kwargs):
    args = dict(mutable=["batch_stats"], rngs=["dropout"], estimate=False)
    return train_workload(linen_init, linen_loss, optax.adamw(1e-2), INPUTS, **{**args, **kwargs})


def batch_of(n):
    return jax.random.normal(jax.random.key(7), (n, FEATURES)), jnp.arange(n) % CLASSES


def test_a_plain_jax_step_is_the_step_written_by_hand():
    tx = optax.sgd(0.1, momentum=0.9)
    workload = train_workload(mlp_init, mlp_loss, tx, INPUTS, estimate=False)
    assert workload.donate_argnums == (0, 1, 2)
    params, state, opt_state, constants, x, y, key = workload.real_args(5)
    assert state == {} and constants == {} and x.shape == (5, FEATURES) and y.shape == (5,)
    x, y = batch_of(5)
    got = jax.jit(workload.step)(params, state, opt_state, constants, x, y, key)

    @jax.jit
    def by_hand(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: mlp_loss({"params": p}, x, y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return loss, optax.apply_updates(params, updates), opt_state

    loss, want, want_opt_state = by_hand(params, opt_state)
    np.testing.assert_allclose(got[3], loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves((got[0], got[2])), jax.tree.leaves((want, want_opt_state))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert got[1] == {} and got[4] is None


def test_a_linen_step_carries_batch_stats_and_draws_dropout_keys():
    workload = linen()
    real = workload.real_args(4)
    layout = lambda tree: (  # noqa: E731
        jax.tree.structure(tree),
        [(a.shape, a.dtype) for a in jax.tree.leaves(tree)],
    )
    assert layout(real) == layout(workload.args_for_batch(4))
    params, state, opt_state, constants, _, _, key = real
    assert set(state) == {"batch_stats"} and constants == {}
    step = jax.jit(workload.step)
    x, y = batch_of(4)
    before = np.asarray(state["batch_stats"]["BatchNorm_0"]["mean"])
    params, state, opt_state, loss, aux = step(params, state, opt_state, constants, x, y, key)
    assert set(aux) == {"accuracy"} and np.isfinite(loss)
    assert not np.array_equal(before, state["batch_stats"]["BatchNorm_0"]["mean"])
    # The key feeds the "dropout" stream: two keys, two masks, two losses.
    out_1 = step(params, state, opt_state, constants, x, y, jax.random.key(1))
    out_2 = step(params, state, opt_state, constants, x, y, jax.random.key(2))
    assert out_1[3] != out_2[3]


def test_the_estimate_counts_the_mutable_state():
    with_state = train_workload(
        linen_init, linen_loss, optax.adamw(1e-2), INPUTS, mutable=["batch_stats"], rngs=["dropout"]
    ).estimate
    assert with_state is not None and with_state.per_example_bytes > 0
    params = jax.eval_shape(linen_init, {"params": jax.random.key(0), "dropout": jax.random.key(1)})
    n_params = sum(a.size for a in jax.tree.leaves(params["params"]))
    stats = sum(a.size for a in jax.tree.leaves(params["batch_stats"]))
    # params, gradients, AdamW's two moments, the statistics
    assert with_state.fixed_bytes >= 4 * (4 * n_params + stats)


def _returns_dict(rngs):
    return {"weights": jnp.zeros(3)}


def _no_stats_returned(variables, x, y, rngs):
    return linen_loss(variables, x, y, rngs)[0], {"accuracy": 1.0}


def _stats_reshaped(variables, x, y, rngs):
    loss, aux = linen_loss(variables, x, y, rngs)
    return loss, {**aux, "batch_stats": jax.tree.map(lambda a: a[:1], aux["batch_stats"])}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"init": None}, "`init` (=None) must be callable"),
        ({"loss_fn": "mse"}, "`loss_fn` (='mse') must be callable"),
        ({"tx": optax.adam}, "must be an optax.GradientTransformation"),
        ({"inputs": [((FEATURES,),)]}, "`inputs[0]` (=((6,),)) must be a jax.ShapeDtypeStruct"),
        ({"mutable": "batch_stats, cache"}, "names 'batch_stats, cache', which `init` does not"),
        ({"mutable": [1]}, "`mutable` (=[1]) must be a list of names, e.g. ['batch_stats']"),
        ({"mutable": ["batch_stats", "batch_stats"]}, "names one twice"),
        ({"mutable": ["params"]}, "`mutable` (=['params']) names \"params\""),
        ({"mutable": ["cache"]}, "`mutable` (=['cache']) names 'cache', which `init` does not"),
        ({"rngs": [None]}, "`rngs` (=[None]) must be a list of names, e.g. ['dropout']"),
        ({"rngs": ["params"]}, "`rngs` (=['params']) names \"params\""),
        ({"init": _returns_dict}, "`init` returned dict with collections 'weights'; it must"),
        ({"init": lambda rngs: 1 / 0}, "`init` raised ZeroDivisionError"),
        ({"loss_fn": _no_stats_returned}, "returned aux with keys 'accuracy'; with `mutable`"),
        ({"loss_fn": _stats_reshaped}, "returned a new 'batch_stats' that differs from the one"),
        ({"rngs": []}, "does not trace at batch=1: TypeError"),
        ({"has_aux": None}, "`has_aux` (=None) must be True or False"),
        ({"seed": 1.5}, "`seed` (=1.5) must be a non-negative integer"),
        ({"label": None}, "`label` (=None) must be a string"),
        ({"inputs": [((FEATURES,), None)]}, "the dtype (=None) must be a dtype, e.g. jnp.float32"),
        ({"inputs": [((np.float64(6),), "float32")]}, "must be a tuple of non-negative integers"),
    ],
)
def test_bad_input_is_a_tune_error_naming_it(kwargs, message):
    args = dict(init=linen_init, loss_fn=linen_loss, tx=optax.adamw(1e-2), inputs=INPUTS)
    args.update(mutable=["batch_stats"], rngs=["dropout"], estimate=False)
    args.update(kwargs)
    with pytest.raises(TuneError) as error:
        train_workload(**args)
    assert message in str(error.value)


def test_a_loss_without_aux_is_refused_when_it_returns_a_tuple():
    with pytest.raises(TuneError, match=r"returned a tuple of 2; it must return the loss"):
        train_workload(mlp_init, lambda v, x, y: (mlp_loss(v, x, y), 0), optax.sgd(0.1), INPUTS)


def test_numpy_integers_are_dimensions():
    inputs = [((np.int64(FEATURES),), np.dtype("float32")), ((), jnp.int32)]
    workload = train_workload(mlp_init, mlp_loss, optax.sgd(0.1), inputs, estimate=False)
    assert workload.args_for_batch(np.int32(4))[-3].shape == (4, FEATURES)
