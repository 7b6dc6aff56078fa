"""The result cache: hits compile nothing, every memory-relevant change misses."""

import jax
import jax.numpy as jnp
import pytest
from steps import CountingStep, mlp_args, mlp_step, need_at

from autotune import find_max_batch
from autotune._results.cache import ResultCache

SEARCH = dict(multiple_of=8, max_batch=256)


@pytest.fixture
def budget():
    return need_at(mlp_step, mlp_args, 64)


@pytest.fixture
def cache(tmp_path):
    return ResultCache(tmp_path / "cache")


def tune(cache, budget, step=mlp_step, args=mlp_args, **kwargs):
    counting = CountingStep(step)
    result = find_max_batch(counting, args, budget_bytes=budget, cache=cache, **SEARCH, **kwargs)
    return result, counting.compiles


def test_second_identical_run_compiles_nothing(cache, budget):
    first, compiled = tune(cache, budget)
    second, recompiled = tune(cache, budget)
    assert compiled == first.compiles > 0 and recompiled == 0
    assert second.from_cache and not first.from_cache
    assert (second.batch, second.peak_bytes, second.probes) == (
        first.batch,
        first.peak_bytes,
        first.probes,
    )
    assert "from the cache" in second.render()


def test_a_renamed_step_with_the_same_program_hits(cache, budget):
    def renamed(params, x, y):
        return mlp_step(params, x, y)

    tune(cache, budget)
    _, compiled = tune(cache, budget, step=renamed)
    assert compiled == 0


def bfloat16_args(batch):
    params, x, y = mlp_args(batch)
    return params, jax.ShapeDtypeStruct(x.shape, jnp.bfloat16), y


@pytest.mark.parametrize("change", ["budget", "dtype", "remat pass", "flag", "jax version"])
def test_changes_that_miss(cache, budget, change, monkeypatch):
    tune(cache, budget)
    kwargs = {}
    if change == "budget":
        budget += 1
    elif change == "dtype":
        kwargs["args"] = bfloat16_args
    elif change == "remat pass":
        kwargs["xla_remat_pass"] = True
    elif change == "flag":
        monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    else:
        monkeypatch.setattr(jax, "__version__", "99.0.0")
    result, compiled = tune(cache, budget, **kwargs)
    assert compiled > 0 and not result.from_cache


def test_a_corrupt_entry_is_reported_and_replaced(cache, budget):
    first, _ = tune(cache, budget)
    (entry,) = cache.directory.glob("*.json")
    entry.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="ignoring the cache entry"):
        again, compiled = tune(cache, budget)
    assert compiled > 0 and again.batch == first.batch
    _, compiled = tune(cache, budget)
    assert compiled == 0


def test_a_foreign_file_is_ignored(cache, budget):
    first, _ = tune(cache, budget)
    (entry,) = cache.directory.glob("*.json")
    entry.write_text('{"format": 1, "key": "someone else", "result": {}}')
    with pytest.warns(RuntimeWarning):
        again, compiled = tune(cache, budget)
    assert compiled > 0


def test_no_temporary_files_are_left(cache, budget):
    tune(cache, budget)
    assert [p.suffix for p in cache.directory.iterdir()] == [".json"]


def test_a_program_changed_only_at_large_batches_misses(cache):
    """The key holds the program at the smallest candidate; the proof holds
    the programs at the answer and the next candidate."""

    def step_above(threshold):
        def step(params, x, y):
            if x.shape[0] >= threshold:  # shape-dependent code: more memory up there
                x = jnp.concatenate([x, x], axis=1)[:, : x.shape[1]] * 1.5
            return mlp_step(params, x, y)

        return step

    budget = need_at(mlp_step, mlp_args, 64) + 1
    first, _ = tune(cache, budget, step=step_above(10**6))
    assert first.batch == 64
    changed, compiled = tune(cache, budget, step=step_above(64))
    assert not changed.from_cache and compiled > 0
    again, recompiled = tune(cache, budget, step=step_above(64))
    assert again.from_cache and recompiled == 0 and again.batch == changed.batch


def test_an_unwritable_cache_is_reported_once_and_the_answer_stands(tmp_path, budget):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    cache = ResultCache(blocker / "cache")
    with pytest.warns(RuntimeWarning, match="cannot be written") as caught:
        first, compiled = tune(cache, budget)
        second, recompiled = tune(cache, budget)
    assert len(caught) == 1 and not cache.writable()
    assert first.batch == second.batch == 64 and compiled == recompiled > 0
