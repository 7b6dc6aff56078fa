"""The full VGG16 step tuned for every described GPU, with no GPU present."""

import jax
import pytest

from autotune import find_max_batch, get_target, known_targets
from autotune._probe import REMAT_PASS_OFF, compiled_need
from autotune._targets import H200_RESERVE_BYTES
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
