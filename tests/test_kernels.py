"""Kernels shared between a search's deviceless GPU compiles change no need."""

import os

import jax
import pytest
from steps import CountingStep, mlp_args, mlp_step

from autotune import Workload, get_target
from autotune._compile import kernels as _kernels
from autotune._compile.prober import Prober

pytest.importorskip(
    "jax_plugins.xla_cuda13",
    reason="compiling for a described GPU needs the CUDA plugin (pip install -e '.[deviceless]')",
)


def prober(**options):
    target = get_target("h100-sxm-80gb")
    return Prober(mlp_step, mlp_args, sharding=target.sharding(), **options)


def test_the_same_need_with_and_without_shared_kernels():
    jax.clear_caches()
    plain = [prober()(b).need_bytes for b in (64, 72, 512)]
    jax.clear_caches()
    shared = prober(kernel_cache=True)
    assert [shared(b).need_bytes for b in (64, 72, 512)] == plain
    files = [os.path.join(_kernels._directory(), n) for n in os.listdir(_kernels._directory())]
    assert any(os.path.getsize(f) > 0 for f in files)  # the kernels were kept


def test_a_file_xla_cannot_read_costs_one_compile_more_and_no_answer(monkeypatch, tmp_path):
    bad = tmp_path / "kernels.bin"
    bad.write_bytes(b"not a kernel cache")
    monkeypatch.setattr(_kernels, "thread_file", lambda: str(bad))
    jax.clear_caches()
    p = prober(kernel_cache=True)
    expected = prober()(64).need_bytes
    jax.clear_caches()
    assert p(64).need_bytes == expected
    assert not p.failures
    assert not bad.exists()  # forgotten, and the prober goes on without one
    assert p(72).need_bytes == prober()(72).need_bytes


def test_a_file_the_user_names_is_kept(tmp_path):
    mine = tmp_path / "mine.bin"
    p = prober(kernel_cache=True, compiler_options={_kernels.OPTION: str(mine)})
    p(64)
    assert mine.exists()


def test_no_place_for_the_file_costs_no_compile(monkeypatch):
    def unwritable():
        raise PermissionError("no temporary directory")

    monkeypatch.setattr(_kernels, "thread_file", unwritable)
    p = prober(kernel_cache=True)
    assert p(64).need_bytes > 0 and not p.failures


def test_a_step_that_fails_by_itself_compiles_once_and_kernels_stay_shared():
    step = CountingStep(mlp_step)
    target = get_target("h100-sxm-80gb")
    p = Prober(
        step,
        mlp_args,
        sharding=target.sharding(),
        kernel_cache=True,
        compiler_options={"xla_no_such_option": True},
    )
    p.measure([64], lambda b, need: None)
    assert step.compiles == 1 and 64 in p.failures


def test_no_kernel_file_where_the_persistent_cache_is_on(monkeypatch):
    from autotune._compile import prober as _probe

    seen = []

    class Seeing(CountingStep):
        def lower(self, *args):
            lowered = super().lower(*args)
            compile_ = lowered.compile

            def compile(**kwargs):
                seen.append(kwargs.get("compiler_options") or {})
                return compile_(**kwargs)

            lowered.compile = compile
            return lowered

    target = get_target("h100-sxm-80gb")
    workload = Workload(Seeing(mlp_step), mlp_args)
    for cache_on in (False, True):
        monkeypatch.setattr(_probe, "persistent_cache_on", lambda on=cache_on: on)
        Prober.for_target(workload, target)(64)
    assert [_kernels.OPTION in options for options in seen] == [True, False]
