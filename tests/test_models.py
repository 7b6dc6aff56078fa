"""Tests of the VGG family and its train steps (CPU, small shapes)."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax._src.ad_checkpoint import saved_residuals

from autotune.models import (
    CONFIGS,
    OPTIMIZERS,
    REMAT_POLICIES,
    VGG,
    abstract_vgg,
    make_optimizer,
    make_train_step,
    param_count,
    vgg_setup,
)

TINY = dict(image_size=16, num_classes=10)


def analytical_param_count(
    name: str, image_size: int = 224, channels: int = 3, num_classes: int = 1000, hidden: int = 4096
) -> int:
    total, cin, pools = 0, channels, 0
    for item in CONFIGS[name]:
        if item == "M":
            pools += 1
            continue
        total += 9 * cin * item + item
        cin = item
    flat = (image_size // 2**pools) ** 2 * cin
    for fan_in, fan_out in ((flat, hidden), (hidden, hidden), (hidden, num_classes)):
        total += fan_in * fan_out + fan_out
    return total


def residual_bytes(setup, batch: int, floating_only: bool = False) -> int:
    """Bytes JAX saves for the backward pass, not counting the arguments themselves."""
    x, y = setup.batch_args(batch)
    return sum(
        aval.size * aval.dtype.itemsize
        for aval, source in saved_residuals(setup.loss_fn, setup.params, x, y)
        if "from the argument" not in source
        and (not floating_only or jnp.issubdtype(aval.dtype, jnp.floating))
    )


def per_example_residual_bytes(setup, floating_only: bool = False) -> int:
    return (residual_bytes(setup, 8, floating_only) - residual_bytes(setup, 4, floating_only)) // 4


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg16", "vgg19"])
def test_param_count_matches_analytical(name):
    assert param_count(abstract_vgg(name)) == analytical_param_count(name)


def test_vgg16_param_count_exact():
    assert param_count(abstract_vgg("vgg16")) == 138_357_544


def test_tiny_param_count_and_hidden_override():
    model = abstract_vgg("vgg-tiny", hidden=7, **TINY)
    assert param_count(model) == analytical_param_count("vgg-tiny", 16, 3, 10, hidden=7)


def test_abstract_build_allocates_nothing_and_is_fast():
    start = time.perf_counter()
    model = abstract_vgg("vgg19")
    elapsed = time.perf_counter() - start
    leaves = jax.tree.leaves(nnx.state(model))
    assert leaves and all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
    assert elapsed < 10.0


def test_setup_is_abstract():
    setup = vgg_setup("vgg16", optimizer="adam")
    leaves = jax.tree.leaves((setup.params, setup.opt_state))
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
    params, opt_state, x, y = setup.args_for_batch(3)
    assert x.shape == (3, 224, 224, 3) and x.dtype == jnp.float32
    assert y.shape == (3,) and y.dtype == jnp.int32
    assert setup.input_shape == (224, 224, 3) and setup.num_classes == 1000


def test_dtypes_accepted_as_strings_or_dtypes():
    setup = vgg_setup("vgg-tiny", param_dtype="bfloat16", dtype="bfloat16", **TINY)
    assert {leaf.dtype for leaf in jax.tree.leaves(setup.params)} == {jnp.dtype(jnp.bfloat16)}
    assert setup.batch_args(2)[0].dtype == jnp.bfloat16
    model = abstract_vgg("vgg-tiny", dtype=jnp.bfloat16, param_dtype=jnp.float32, **TINY)
    assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model))} == {jnp.dtype(jnp.float32)}


def test_remat_reduces_saved_residuals():
    plain = residual_bytes(vgg_setup("vgg-tiny", **TINY), 4)
    remat = residual_bytes(vgg_setup("vgg-tiny", remat="nothing_saveable", **TINY), 4)
    assert remat < plain / 2


def test_remat_every_other_stage_is_in_between():
    kwargs = dict(image_size=32, num_classes=10)
    plain = residual_bytes(vgg_setup("vgg11", **kwargs), 2)
    every = residual_bytes(vgg_setup("vgg11", remat="nothing_saveable", **kwargs), 2)
    other = residual_bytes(vgg_setup("vgg11", remat="nothing_saveable", remat_every=2, **kwargs), 2)
    assert every < other < plain


def test_bfloat16_halves_floating_activation_residuals():
    f32 = per_example_residual_bytes(vgg_setup("vgg-tiny", **TINY), floating_only=True)
    bf16 = per_example_residual_bytes(
        vgg_setup("vgg-tiny", dtype="bfloat16", **TINY), floating_only=True
    )
    assert 0.45 <= bf16 / f32 <= 0.55


def test_bfloat16_residuals_with_relu_masks():
    """Boolean ReLU masks keep one byte per value in any dtype, so the ratio exceeds 1/2."""
    f32 = per_example_residual_bytes(vgg_setup("vgg-tiny", **TINY))
    bf16 = per_example_residual_bytes(vgg_setup("vgg-tiny", dtype="bfloat16", **TINY))
    assert 0.5 < bf16 / f32 < 0.6


@pytest.mark.parametrize("remat", ["none", "nothing_saveable"])
def test_step_compiles_with_donation(remat):
    setup = vgg_setup("vgg-tiny", remat=remat, **TINY)
    compiled = setup.step.lower(*setup.args_for_batch(8)).compile()
    stats = compiled.memory_analysis()
    if stats is None:
        pytest.skip("memory_analysis() is unavailable on this backend")
    assert stats.alias_size_in_bytes > 0


@pytest.mark.parametrize("policy", REMAT_POLICIES)
def test_every_remat_policy_traces(policy):
    setup = vgg_setup("vgg-tiny", remat=policy, **TINY)
    _, _, loss = jax.eval_shape(setup.step, *setup.args_for_batch(2))
    assert loss.shape == () and loss.dtype == jnp.float32


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_real_step_decreases_loss(optimizer):
    model = VGG("vgg-tiny", rngs=nnx.Rngs(0), **TINY)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = make_optimizer(optimizer, learning_rate=1e-2)
    opt_state = tx.init(params)
    step = make_train_step(graphdef, tx)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 16, 16, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=8), jnp.int32)
    losses = []
    for _ in range(5):
        params, opt_state, loss = step(params, opt_state, x, y)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    "call, value",
    [
        (lambda: abstract_vgg("vgg17"), "vgg17"),
        (lambda: abstract_vgg("vgg16", image_size=100), "100"),
        (lambda: abstract_vgg("vgg-tiny", image_size=18), "18"),
        (lambda: abstract_vgg("vgg-tiny", image_size=0), "0"),
        (lambda: abstract_vgg("vgg-tiny", dtype="float64"), "float64"),
        (lambda: abstract_vgg("vgg-tiny", param_dtype=jnp.int32), "int32"),
        (lambda: abstract_vgg("vgg-tiny", remat="dots"), "dots"),
        (lambda: abstract_vgg("vgg-tiny", remat="nothing_saveable", remat_every=0), "0"),
        (lambda: vgg_setup("vgg-tiny", optimizer="lamb"), "lamb"),
        (lambda: make_optimizer("rmsprop"), "rmsprop"),
        (lambda: vgg_setup("vgg-tiny", **TINY).args_for_batch(0), "0"),
        (lambda: vgg_setup("vgg-tiny", **TINY).args_for_batch(-3), "-3"),
        (lambda: vgg_setup("vgg-tiny", **TINY).batch_args(2.5), "2.5"),
    ],
)
def test_bad_input_raises_value_error_naming_value(call, value):
    with pytest.raises(ValueError, match=value):
        call()


def test_error_message_names_argument_and_rule():
    with pytest.raises(ValueError) as info:
        abstract_vgg("vgg16", image_size=100)
    assert str(info.value) == "`image_size` (=100) must be a positive multiple of 32 for vgg16"
    with pytest.raises(ValueError) as info:
        abstract_vgg("vgg17")
    assert str(info.value) == (
        "`name` (='vgg17') must be one of vgg11, vgg13, vgg16, vgg19, vgg-tiny"
    )
