"""Running a tuned configuration for real in a child process, on the CPU."""

import jax.numpy as jnp
import pytest

from autotune.errors import TuneError
from autotune.verify import Verification, check_config, verify_vgg

TINY = {"model": "vgg-tiny", "image_size": 16, "num_classes": 10}


def test_a_small_batch_runs_and_reports_its_compiled_need():
    v = verify_vgg(TINY, 8, predicted_peak_bytes=1000, time_steps=2)
    assert v.ok, v.reason
    assert v.platform == "cpu" and v.peak_bytes_in_use is None and v.bytes_limit is None
    assert v.need_bytes > 0 and v.throughput.batch == 8
    assert v.relative_difference is None


def test_a_batch_far_too_large_fails_in_the_child_and_the_parent_keeps_working():
    v = verify_vgg(TINY, 200_000, budget_bytes=256 << 20)
    assert not v.ok
    assert "memory" in v.reason or "child" in v.reason
    assert float(jnp.arange(4.0).sum()) == 6.0


def test_a_timeout_is_reported_as_such():
    v = verify_vgg(TINY, 8, timeout_s=0.01)
    assert not v.ok and v.reason == "timed out after 0.01 s"


@pytest.mark.parametrize(
    "config,match",
    [
        ({**TINY, "model": "vgg99"}, r"`config\['model'\]` \(='vgg99'\)"),
        ({**TINY, "image_size": 15}, r"`image_size` \(=15\)"),
        ({**TINY, "colour": 1}, "unknown keys"),
        ({**TINY, "xla_remat_pass": "no"}, "xla_remat_pass"),
    ],
)
def test_a_bad_config_is_refused_before_spawning(config, match):
    with pytest.raises(TuneError, match=match):
        check_config(config)


def test_bad_arguments_name_themselves():
    with pytest.raises(TuneError, match=r"`batch` \(=0\)"):
        verify_vgg(TINY, 0)
    with pytest.raises(TuneError, match="`budget_bytes`"):
        verify_vgg(TINY, 8, budget_bytes=-1)


def test_relative_difference_and_render():
    v = Verification(8, True, "", 1001, 2000, 1.0, predicted_peak_bytes=1000)
    assert v.relative_difference == pytest.approx(0.001)
    assert "+0.1000%" in v.render()
    assert "not conclusive" in v.render(budget_bytes=3000)
