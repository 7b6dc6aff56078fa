"""Throughput measured on the CPU with small steps."""

import jax
import jax.numpy as jnp
import pytest

from autotune._command.timing import Throughput, carried_count, materialize, measure_throughput
from autotune._core.errors import TuneError
from autotune.models import vgg_setup


@pytest.fixture(scope="module")
def tiny():
    return vgg_setup("vgg-tiny", image_size=16, num_classes=10)


def test_vgg_step_is_timed_with_donated_state_fed_back(tiny):
    t = measure_throughput(tiny.step, tiny.args_for_batch, 8, steps=3, warmup=1)
    assert isinstance(t, Throughput) and t.batch == 8 and t.steps == 3
    assert t.seconds_per_step > 0
    assert t.samples_per_second == pytest.approx(8 / t.seconds_per_step)


def test_materialize_zeros_ints_and_prng_keys():
    real = materialize(
        {
            "w": jax.ShapeDtypeStruct((2, 3), jnp.bfloat16),
            "y": jax.ShapeDtypeStruct((4,), jnp.int32),
            "k": jax.ShapeDtypeStruct((3,), jax.random.key(0).dtype),
        }
    )
    assert real["w"].dtype == jnp.bfloat16 and not real["w"].any()
    assert real["y"].dtype == jnp.int32
    assert real["k"].shape == (3,) and jax.dtypes.issubdtype(real["k"].dtype, jax.dtypes.prng_key)


def test_carried_count_stops_at_the_first_mismatch():
    a, b = jnp.zeros(2), jnp.zeros(3)
    assert carried_count((a, b, a), (a, b, jnp.zeros(()))) == 2
    assert carried_count((a, b), (b, a)) == 0
    assert carried_count((a,), a) == 0


def test_a_step_that_donates_what_it_does_not_return_first_is_refused():
    step = jax.jit(lambda w, x: (x.sum(), w * 2), donate_argnums=(0,))

    def args(b):
        return jax.ShapeDtypeStruct((4,), jnp.float32), jax.ShapeDtypeStruct((b, 4), jnp.float32)

    with pytest.raises(TuneError, match="donated argument 0"):
        measure_throughput(step, args, 2, steps=1, warmup=1)


@pytest.mark.parametrize("name,value", [("batch", 0), ("steps", 0), ("warmup", 0)])
def test_bad_counts_name_the_argument(tiny, name, value):
    kwargs = {"batch": 8, "steps": 1, "warmup": 1, name: value}
    with pytest.raises(TuneError, match=f"`{name}` \\(={value}\\)"):
        measure_throughput(tiny.step, tiny.args_for_batch, kwargs.pop("batch"), **kwargs)
