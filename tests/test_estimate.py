"""The no-compile estimate on small loss functions written for these tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autotune import TuneError
from autotune._workloads import estimate as estimate_module
from autotune._workloads.estimate import Estimate, estimate_step, residual_bytes, tree_bytes

FEATURES, HIDDEN, CLASSES = 8, 32, 10
NOTHING = jax.checkpoint_policies.nothing_saveable


def _cross_entropy(logits, y):
    labels = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * labels, axis=-1))


def _mlp_params(dtype=jnp.float32, depth=3):
    sizes = [FEATURES] + [HIDDEN] * depth + [CLASSES]
    return [
        (jax.ShapeDtypeStruct((a, b), dtype), jax.ShapeDtypeStruct((b,), dtype))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]


def _mlp_loss(activation=jax.nn.relu, remat=False):
    def hidden(layers, h):
        for w, b in layers:
            h = activation(h @ w + b)
        return h

    if remat:
        hidden = jax.checkpoint(hidden, policy=NOTHING)

    def loss_fn(params, x, y):
        w, b = params[-1]
        return _cross_entropy(hidden(params[:-1], x) @ w + b, y)

    return loss_fn


def _mlp_batch(dtype=jnp.float32):
    return lambda b: (
        jax.ShapeDtypeStruct((b, FEATURES), dtype),
        jax.ShapeDtypeStruct((b,), jnp.int32),
    )


def _conv_params():
    shapes = [(3, 3, 3, 8), (3, 3, 8, 16), (3, 3, 16, 16), (16, CLASSES)]
    return [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]


def _conv_loss(remat=False):
    def block(w, h):
        h = jax.lax.conv_general_dilated(
            h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jax.nn.relu(h)

    if remat:
        block = jax.checkpoint(block, policy=NOTHING)

    def loss_fn(params, x, y):
        h = x
        for w in params[:-1]:
            h = block(w, h)
        return _cross_entropy(jnp.mean(h, axis=(1, 2)) @ params[-1], y)

    return loss_fn


def _conv_batch(b):
    return (
        jax.ShapeDtypeStruct((b, 16, 16, 3), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.int32),
    )


CASES = {
    "mlp": (_mlp_loss, _mlp_params(), _mlp_batch()),
    "conv": (_conv_loss, _conv_params(), _conv_batch),
}
LARGEST_ACTIVATION = {"mlp": HIDDEN * 4, "conv": 16 * 16 * 16 * 4}
"""Bytes per example of each case's largest floating activation."""


@pytest.mark.parametrize("case", sorted(CASES))
def test_per_example_bytes_scale_linearly(case):
    make_loss, params, batch_for = CASES[case]
    loss_fn = make_loss()
    at_4 = residual_bytes(loss_fn, params, *batch_for(4))
    at_8 = residual_bytes(loss_fn, params, *batch_for(8))
    assert at_8 == 2 * at_4 > 0
    small = estimate_step(loss_fn, params, batch_for)
    large = estimate_step(loss_fn, params, batch_for, probe_batches=(4, 8))
    assert small == large
    arg_bytes = tree_bytes(batch_for(1))
    gradient_buffers = 2 * LARGEST_ACTIVATION[case]
    assert small.per_example_bytes == at_4 // 4 + gradient_buffers + arg_bytes


@pytest.mark.parametrize("case", sorted(CASES))
def test_checkpoint_lowers_per_example_bytes(case):
    make_loss, params, batch_for = CASES[case]
    saved = estimate_step(make_loss(), params, batch_for)
    remat = estimate_step(make_loss(remat=True), params, batch_for)
    assert remat.per_example_bytes < saved.per_example_bytes
    assert remat.fixed_bytes == saved.fixed_bytes


@pytest.mark.parametrize("case", sorted(CASES))
def test_recomputed_segment_working_set_is_counted(case):
    make_loss, params, batch_for = CASES[case]
    plain = estimate_step(make_loss(), params, batch_for)
    remat_loss = make_loss(remat=True)
    remat = estimate_step(remat_loss, params, batch_for)
    residuals_only = (
        residual_bytes(remat_loss, params, *batch_for(1))
        + 2 * LARGEST_ACTIVATION[case]
        + tree_bytes(batch_for(1))
    )
    assert residuals_only < remat.per_example_bytes < plain.per_example_bytes


def test_checkpoint_inside_a_jitted_loss_is_still_estimated():
    loss_fn = _conv_loss(remat=True)
    direct = estimate_step(loss_fn, _conv_params(), _conv_batch)
    jitted = estimate_step(jax.jit(loss_fn), _conv_params(), _conv_batch)
    assert 0 < jitted.per_example_bytes <= direct.per_example_bytes


def test_bfloat16_halves_residual_bytes():
    loss_fn = _mlp_loss(activation=jnp.tanh)
    full = residual_bytes(loss_fn, _mlp_params(jnp.float32), *_mlp_batch(jnp.float32)(4))
    half = residual_bytes(loss_fn, _mlp_params(jnp.bfloat16), *_mlp_batch(jnp.bfloat16)(4))
    assert full == 2 * half > 0


def test_mlp_residuals_by_hand():
    loss_fn = _mlp_loss(activation=jnp.tanh)
    batch = 4
    tanh_outputs = 3 * 2 * batch * HIDDEN * 4  # tanh(h) and 1 - tanh(h)**2 per layer
    softmax = batch * CLASSES * 4 + batch * 1 * 4 + batch * CLASSES * 4  # log-probs, max, one-hot
    got = residual_bytes(loss_fn, _mlp_params(), *_mlp_batch()(batch))
    assert got == tanh_outputs + softmax


@pytest.mark.parametrize("case", sorted(CASES))
def test_fixed_bytes_are_params_gradients_and_state(case):
    make_loss, params, batch_for = CASES[case]
    result = estimate_step(
        make_loss(), params, batch_for, opt_state=jax.ShapeDtypeStruct((250,), jnp.float32)
    )
    assert result.fixed_bytes == 2 * tree_bytes(params) + 1_000
    without_grads = estimate_step(make_loss(), params, batch_for, grads=False)
    assert without_grads.fixed_bytes == tree_bytes(params)


def test_batch_independent_residuals_are_fixed():
    params = {"w": jax.ShapeDtypeStruct((FEATURES, CLASSES), jnp.float32)}

    def loss_fn(p, x, y):
        return _cross_entropy(x @ jnp.tanh(p["w"]), y)

    result = estimate_step(loss_fn, params, _mlp_batch())
    tanh_of_w = 2 * FEATURES * CLASSES * 4  # tanh(w) and 1 - tanh(w)**2
    assert result.fixed_bytes == 2 * tree_bytes(params) + tanh_of_w
    logits_gradients = 2 * CLASSES * 4
    assert result.per_example_bytes == (
        (CLASSES + 1 + CLASSES) * 4 + logits_gradients + FEATURES * 4 + 4
    )


def test_concrete_arrays_give_the_same_estimate():
    abstract = _mlp_params()
    concrete = [(jnp.zeros(w.shape), jnp.zeros(b.shape)) for w, b in abstract]

    def batch_for(b):
        return jnp.zeros((b, FEATURES)), jnp.zeros((b,), jnp.int32)

    assert estimate_step(_mlp_loss(), concrete, batch_for) == estimate_step(
        _mlp_loss(), abstract, _mlp_batch()
    )


def test_tree_bytes():
    tree = {
        "abstract": jax.ShapeDtypeStruct((3, 5), jnp.bfloat16),
        "array": jnp.zeros((2, 2), jnp.int8),
        "numpy": np.zeros(4, np.float64),
        "scalar": 1.5,
        "key": jax.random.key(0),
        "none": None,
    }
    assert tree_bytes(tree) == 3 * 5 * 2 + 4 * 1 + 4 * 8 + 4 + 8
    assert tree_bytes([]) == 0


def test_need_and_max_batch():
    result = Estimate(fixed_bytes=100, per_example_bytes=10)
    assert result.need(0) == 100
    assert result.need(5) == 150
    assert result.max_batch(155) == 5
    assert result.max_batch(150) == 5
    assert result.max_batch(109) == 0
    assert result.max_batch(50) == 0
    largest = result.max_batch(10_000)
    assert result.need(largest) <= 10_000 < result.need(largest + 1)


@pytest.mark.parametrize("batch", [-1, 1.5, True])
def test_need_rejects_bad_batch(batch):
    with pytest.raises(ValueError, match=f"`batch` \\(={batch!r}\\)"):
        Estimate(0, 1).need(batch)


def test_max_batch_needs_per_example_bytes():
    with pytest.raises(ValueError, match="`per_example_bytes` \\(=0\\)"):
        Estimate(10, 0).max_batch(100)


@pytest.mark.parametrize("probe", [(2, 2), (0, 1), (4, 2)])
def test_bad_probe_batches(probe):
    with pytest.raises(ValueError, match="probe_batches"):
        estimate_step(_mlp_loss(), _mlp_params(), _mlp_batch(), probe_batches=probe)


def test_unavailable_in_a_jax_without_saved_residuals(monkeypatch):
    monkeypatch.setattr(estimate_module, "_saved_residuals", None)
    with pytest.raises(RuntimeError, match="unavailable in jax"):
        residual_bytes(_mlp_loss(), _mlp_params(), *_mlp_batch()(1))


# XLA's per-example need of the VGG16 step (224x224x3, float32, sgd, donated
# params and optimizer state) compiled deviceless for a described H100 with
# XLA's remat pass off: (need(64) - need(8)) / 56, jaxlib 0.10.2, measured with
#   t = get_target("h100-sxm-80gb")
#   s = vgg_setup("vgg16", remat=remat, remat_every=every)
#   p = Prober(s.step, s.args_for_batch, sharding=t.sharding(),
#              compiler_options=REMAT_PASS_OFF)
#   (p(64).need_bytes - p(8).need_bytes) / 56
XLA_H100_PER_EXAMPLE = {
    ("none", 1): 141_093_197,
    ("nothing_saveable", 1): 84_078_326,
    ("dots_saveable", 1): 90_015_670,
    ("nothing_saveable", 2): 84_078_326,
    ("dots_saveable", 2): 108_891_209,
}
TOLERANCE = 0.15


def _vgg16_estimate(remat: str, every: int) -> Estimate:
    from autotune.models import vgg_setup

    setup = vgg_setup("vgg16", remat=remat, remat_every=every)
    return estimate_step(setup.loss_fn, setup.params, setup.batch_args, opt_state=setup.opt_state)


@pytest.mark.parametrize("remat, every", sorted(XLA_H100_PER_EXAMPLE))
def test_vgg16_estimate_is_close_to_xla(remat, every):
    got = _vgg16_estimate(remat, every).per_example_bytes
    want = XLA_H100_PER_EXAMPLE[remat, every]
    assert abs(got - want) <= TOLERANCE * want, (got, want)


def _stateful_loss(params, state, x, y):
    """A loss with BatchNorm-like statistics: returns (loss, new statistics)."""
    h = x @ params["w"]
    mean = jnp.mean(h, axis=0)
    scaled = (h - mean) * state["scale"]
    loss = _cross_entropy(jnp.tanh(scaled), y)
    return loss, {"mean": 0.9 * state["mean"] + 0.1 * mean, "scale": state["scale"]}


STATE = {
    "mean": jax.ShapeDtypeStruct((CLASSES,), jnp.float32),
    "scale": jax.ShapeDtypeStruct((CLASSES,), jnp.float32),
}
W = {"w": jax.ShapeDtypeStruct((FEATURES, CLASSES), jnp.float32)}


def test_mutable_state_is_held_not_differentiated():
    with_state = estimate_step(_stateful_loss, W, _mlp_batch(), state=STATE, has_aux=True)

    def closed_over(params, x, y):  # the same loss with the statistics as constants
        ones = jnp.ones(CLASSES)
        return _stateful_loss(params, {"mean": ones, "scale": ones}, x, y)[0]

    without = estimate_step(closed_over, W, _mlp_batch())
    assert with_state.per_example_bytes == without.per_example_bytes
    assert with_state.fixed_bytes == without.fixed_bytes + tree_bytes(STATE)


def test_aux_is_not_differentiated():
    def loss_and_logits(params, x, y):
        logits = x @ params["w"]
        return _cross_entropy(logits, y), logits

    def loss_only(params, x, y):
        return loss_and_logits(params, x, y)[0]

    aux = estimate_step(loss_and_logits, W, _mlp_batch(), has_aux=True)
    assert aux == estimate_step(loss_only, W, _mlp_batch())


def test_has_aux_must_be_a_bool():
    with pytest.raises(TuneError, match=r"`has_aux` \(=1\) must be True or False"):
        estimate_step(_mlp_loss(), _mlp_params(), _mlp_batch(), has_aux=1)
