"""Running a tuned workload for real in a child process, on the CPU."""

import textwrap

import jax.numpy as jnp
import pytest

from autotune import TuneError
from autotune._command.verify import Verification, WorkloadSource, verify_workload

TINY = WorkloadSource(
    "autotune.models:vgg_workloads",
    "vgg-tiny remat=none",
    {"model": "vgg-tiny", "image_size": 16, "num_classes": 10},
)


def test_a_small_batch_runs_and_reports_its_compiled_need():
    v = verify_workload(TINY, 8, predicted_peak_bytes=1000, time_steps=2)
    assert v.ok, v.reason
    assert v.platform == "cpu" and v.peak_bytes_in_use is None and v.bytes_limit is None
    assert v.need_bytes > 0 and v.throughput.batch == 8
    assert v.relative_difference is None


def test_a_batch_far_too_large_fails_in_the_child_and_the_parent_keeps_working():
    v = verify_workload(TINY, 200_000, budget_bytes=256 << 20)
    assert not v.ok
    assert "memory" in v.reason or "child" in v.reason
    assert float(jnp.arange(4.0).sum()) == 6.0


def test_a_timeout_is_reported_as_such():
    v = verify_workload(TINY, 8, timeout_s=0.01)
    assert not v.ok and v.reason == "timed out after 0.01 s"


def test_a_users_file_runs_in_the_child_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "my_step.py").write_text(
        textwrap.dedent(
            """
            import jax, jax.numpy as jnp
            import autotune

            def step(w, x):
                return w - 0.1 * jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w)))(w), x.sum()

            def args(batch):
                return (jax.ShapeDtypeStruct((16, 16), jnp.float32),
                        jax.ShapeDtypeStruct((batch, 16), jnp.float32))

            def real(batch):
                return jnp.ones((16, 16)), jnp.ones((batch, 16))

            workload = autotune.Workload(step, args, donate_argnums=0, real_args=real)
            abstract_only = autotune.Workload(step, args)
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    v = verify_workload(WorkloadSource("my_step:workload", "workload"), 8, time_steps=1)
    assert v.ok, v.reason
    v = verify_workload(WorkloadSource("my_step:abstract_only", "abstract_only"), 8)
    assert not v.ok and "has no `real_args`" in v.reason
    v = verify_workload(WorkloadSource("my_step:workload", "other"), 8)
    assert not v.ok and "`source.label` (='other')" in v.reason


def test_bad_arguments_name_themselves():
    with pytest.raises(TuneError, match=r"`batch` \(=0\)"):
        verify_workload(TINY, 0)
    with pytest.raises(TuneError, match="`budget_bytes`"):
        verify_workload(TINY, 8, budget_bytes=-1)
    with pytest.raises(TuneError, match="`source`"):
        verify_workload({"spec": "x"}, 8)


def test_relative_difference_and_render():
    v = Verification(8, True, "", 1001, 2000, 1.0, predicted_peak_bytes=1000)
    assert v.relative_difference == pytest.approx(0.001)
    assert "+0.1000%" in v.render()
    assert "not conclusive" in v.render(budget_bytes=3000)


def test_real_args_that_build_another_batch_are_refused_before_the_run(tmp_path, monkeypatch):
    (tmp_path / "off_by_one.py").write_text(
        textwrap.dedent(
            """
            import jax, jax.numpy as jnp
            import autotune

            def args(batch):
                return (jax.ShapeDtypeStruct((batch, 4), jnp.float32),)

            workload = autotune.Workload(
                lambda x: x.sum(), args, real_args=lambda batch: (jnp.ones((batch + 1, 4)),)
            )
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    v = verify_workload(WorkloadSource("off_by_one:workload", "workload"), 8)
    assert not v.ok
    assert "`real_args(8)` of the workload 'workload' builds args[0] of shape (9, 4)" in v.reason
    assert "`args_for_batch(8)` describes (8, 4) float32" in v.reason


def test_a_boundary_that_runs_is_flagged():
    def ran(peak, limit=None):
        return Verification(48, True, "", peak, limit, 1.0, predicted_peak_bytes=5000)

    assert "CONTRADICTS THE PROOF" in ran(3000).render(4000, boundary=True)
    assert "CONTRADICTS THE PROOF" in ran(None, limit=4000).render(4000, boundary=True)
    assert "NOT CONFIRMED" in ran(None).render(4000, boundary=True)
    assert "above the budget, as proven" in ran(5000, limit=8000).render(4000, boundary=True)
    assert "PROOF" not in ran(3000).render(4000)  # the answer itself
