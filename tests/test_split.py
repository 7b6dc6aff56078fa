"""A line from one compile: the bytes that follow the batch, read from its dump."""

import tempfile

import jax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from user_steps import deep_mlp
from user_steps.deep_mlp import step

from autotune import find_max_batch
from autotune._compile.dump import DumpTexts
from autotune._compile.prober import Prober
from autotune._search.need import calibration_batch


def args_for_batch(batch, sharding=None, batch_sharding=None):
    """The deep MLP's arguments, placed by the shardings given."""
    params, x = deep_mlp.args_for_batch(batch)
    params = [jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=sharding) for p in params]
    return params, jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=batch_sharding)


def line_from_one_compile(prober, batch):
    need = prober(batch).need_bytes
    fixed = prober.fixed_bytes(batch)
    assert fixed is not None and 0 < fixed < need
    return lambda b: fixed + (need - fixed) * b / batch


def test_one_compile_gives_the_need_at_other_batches():
    prober = Prober(step, args_for_batch, donate_argnums=0, dump_first=True)
    line = line_from_one_compile(prober, 88)
    for batch in (200, 1000):
        assert prober(batch).need_bytes == line(batch)


def test_one_device_share_of_the_batch_on_a_mesh():
    mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    prober = Prober(
        step,
        lambda b: args_for_batch(b, replicated, split),
        donate_argnums=0,
        dump_first=True,
    )
    line = line_from_one_compile(prober, 88)
    assert prober(200).need_bytes == line(200)


def test_only_the_first_compile_is_dumped():
    prober = Prober(step, args_for_batch, donate_argnums=0, dump_first=True)
    prober(88), prober(200)
    assert set(prober.dumps) == {88}
    assert prober.fixed_bytes(200) is None


def test_an_unreadable_dump_gives_no_line():
    prober = Prober(step, args_for_batch, donate_argnums=0, dump_first=True)
    prober(88)
    texts = prober.dumps[88].texts
    prober.dumps[88] = prober.dumps[88].__class__(
        DumpTexts(texts.hlo, "garbage", texts.live_range), "", ()
    )
    assert prober.fixed_bytes(88) is None


def test_the_search_takes_one_compile_and_the_proven_pair():
    budget = Prober(step, args_for_batch, donate_argnums=0)(600).need_bytes + 1
    result = find_max_batch(step, args_for_batch, donate_argnums=0, budget_bytes=budget)
    assert [p.batch for p in result.probes][1:] == [600, 608]
    assert result.probes[0].batch < 600
    assert result.batch == 600 and result.next_peak_bytes > budget


@pytest.mark.parametrize(
    "m, top, batch",
    [(8, 65536, 88), (1, 65536, 67), (16, 65536, 176), (128, 65536, 1408), (8, 40, 40)],
)
def test_calibration_batch(m, top, batch):
    assert calibration_batch(m, top) == batch


@pytest.mark.parametrize("recompile, compiles", [(True, 2), (False, 1)])
def test_a_compile_the_persistent_cache_saved_is_recompiled_only_on_request(
    monkeypatch, recompile, compiles
):
    from autotune._compile import dump as _xla_dump

    calls = []

    def cached(lowered, options):  # a persistent-cache hit writes no dump
        calls.append(options)
        return "compiled", None, "no dump"

    monkeypatch.setattr(_xla_dump, "_compile_and_read", cached)
    monkeypatch.setattr(_xla_dump, "persistent_cache_on", lambda: True)
    compiled, dump = _xla_dump.compile_with_dump(object(), {}, recompile=recompile)
    assert compiled == "compiled" and dump.texts is None
    assert len(calls) == compiles


def test_arguments_that_refuse_twice_the_batch_give_no_line_and_no_error():
    def only_up_to_100(batch):
        if batch > 100:
            raise ValueError("this dataset holds 100 examples")
        return args_for_batch(batch)

    prober = Prober(step, only_up_to_100, donate_argnums=0, dump_first=True)
    prober(88)
    assert prober.fixed_bytes(88) is None
    result = find_max_batch(step, only_up_to_100, donate_argnums=0, max_batch=96)
    assert result.batch == 96


def test_no_place_for_the_dump_changes_no_answer(monkeypatch):
    budget = Prober(step, args_for_batch, donate_argnums=0)(88).need_bytes
    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent-directory")
    result = find_max_batch(step, args_for_batch, donate_argnums=0, budget_bytes=budget)
    assert result.batch == 88 and not result.failures


def test_a_users_own_dump_is_left_alone(tmp_path):
    options = {"xla_dump_to": str(tmp_path), "xla_dump_hlo_as_text": True}
    budget = Prober(step, args_for_batch, donate_argnums=0)(600).need_bytes
    result = find_max_batch(
        step, args_for_batch, donate_argnums=0, budget_bytes=budget, compiler_options=options
    )
    assert result.batch == 600
    assert any("buffer-assignment" in p.name for p in tmp_path.iterdir())
    assert len({p.name.split(".")[0] for p in tmp_path.glob("*buffer-assignment*")}) == len(
        result.probes
    )


def test_one_compile_gives_the_slope_from_its_split():
    result = find_max_batch(step, args_for_batch, donate_argnums=0, max_batch=40)
    assert result.compiles == 1 and result.batch == 40
    line = line_from_one_compile(
        Prober(step, args_for_batch, donate_argnums=0, dump_first=True), 40
    )
    assert result.per_example_bytes == round(line(1) - line(0))
