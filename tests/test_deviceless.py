"""The full VGG16 step tuned for every described GPU, with no GPU present."""

import jax
import jax.numpy as jnp
import pytest

from autotune import find_max_batch, get_target, known_targets
from autotune._compile.prober import Prober
from autotune._compile.records import compiled_need
from autotune._compile.remat_pass import REMAT_PASS_OFF
from autotune._targets.gpu import H200_RESERVE_BYTES
from autotune.models import VGGConfig

pytest.importorskip(
    "jax_plugins.xla_cuda13",
    reason="compiling for a described GPU needs the CUDA plugin (pip install -e '.[deviceless]')",
)

H200_BYTES_LIMIT = 112_583_507_968  # memory_stats()["bytes_limit"] on an H200, fraction 0.75


@pytest.fixture(scope="module")
def vgg16():
    (workload,) = VGGConfig("vgg16").workloads()
    return workload


def need_at(workload, target, batch):
    """Need from jax's own AOT API, independently of the tuner's prober."""
    sharding = target.sharding()
    args = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        workload.args_for_batch(batch),
    )
    return compiled_need(workload.step.lower(*args).compile(compiler_options=REMAT_PASS_OFF))


@pytest.mark.parametrize("name", known_targets())
def test_vgg16_answer_is_exact_for_every_target(name, vgg16):
    target = get_target(name)
    assert target.default_budget_bytes == int(0.75 * (target.memory_bytes - H200_RESERVE_BYTES))
    result = find_max_batch(vgg16, target=target)
    assert result.budget_bytes == target.default_budget_bytes
    assert need_at(vgg16, target, result.batch) == result.peak_bytes <= result.budget_bytes
    assert need_at(vgg16, target, result.batch + 8) == result.next_peak_bytes
    assert result.next_peak_bytes > result.budget_bytes
    assert result.compiles <= 5, [p.batch for p in result.probes]
    error = vgg16.estimate.per_example_bytes / result.per_example_bytes - 1
    assert abs(error) < 0.15


def test_h200_budget_is_the_measured_allocator_limit():
    assert get_target("h200-141gb", mem_fraction=0.75).default_budget_bytes == H200_BYTES_LIMIT


def test_remat_choices_order_as_physics_says():
    """Saving less for the backward fits more: nothing_saveable >= dots_saveable >= none."""
    config = VGGConfig("vgg16", remat=("none", "dots_saveable", "nothing_saveable"))
    none, dots, nothing = (
        find_max_batch(w, target="h100-sxm-80gb").batch for w in config.workloads()
    )
    assert nothing >= dots >= none
    assert nothing > none


def deep_step(ws, x):
    def loss(ws):
        h = x
        for w in ws:
            h = jnp.tanh(h @ w)
        return jnp.mean(h**2)

    return [w - 0.1 * g for w, g in zip(ws, jax.grad(loss)(ws))]


def deep_args(batch):
    return [jax.ShapeDtypeStruct((1024, 1024), jnp.float32)] * 8, jax.ShapeDtypeStruct(
        (batch, 1024), jnp.float32
    )


def test_the_remat_pass_setting_is_never_answered_from_the_other_settings_compile():
    """JAX keeps executables in memory keyed by program and options, not by
    the remat flag. Above the described H100's memory the pass recomputes
    (98 GB off, 59 GB on at this batch); compiled one after the other in one
    process, each setting must still get its own program."""
    target = get_target("h100-sxm-80gb")

    def need(remat_pass):
        prober = Prober(deep_step, deep_args, sharding=target.sharding(), donate_argnums=0,
                        xla_remat_pass=remat_pass)  # fmt: skip
        return prober(2_400_000).need_bytes

    off, on, off_again = need(False), need(True), need(False)
    assert on < target.memory_bytes < off == off_again
