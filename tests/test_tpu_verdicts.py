"""A TPU's verdict at buffer assignment is not its compiler's, so TPU probes
compile in full even when asked to stop there (libtpu, small programs)."""

import dataclasses
import os
import re
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from steps import mlp_args, mlp_step

import autotune
from autotune._compile import workers
from autotune._compile.prober import Prober
from autotune._compile.remat_pass import REMAT_PASS_OFF
from autotune._targets.refusal import hbm_refusal
from autotune._targets.tpu import MAX_HBM_OPTION

pytest.importorskip(
    "libtpu", reason="compiling for a described TPU needs libtpu: pip install -e '.[tpu]'"
)

# The largest donated int8 buffer a v5e chip compiles (benchmarks/tpu-hbm.md).
EDGE = 16_909_218_816
_DEFAULT_TOTAL = re.compile(r"Memory Space: default \(color=0\)\nTotal bytes: (\d+)")


def _compile_dumped(size, folder):
    """(compiled, refusal) of `x + 1` on `size` donated bytes on v5e:1x1, and
    the default memory space's total in the memory-usage report."""
    device = autotune.get_target("v5e:1x1").devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    arg = jax.ShapeDtypeStruct((size,), jnp.int8, sharding=sharding)
    lowered = jax.jit(lambda x: x + 1, donate_argnums=0).lower(arg)
    refusal = None
    try:
        lowered.compile({"xla_dump_to": str(folder), "xla_dump_hlo_as_text": True})
    except Exception as e:
        refusal = hbm_refusal(e)
        assert refusal is not None, e
    (report,) = Path(folder).glob("*after_optimizations-memory-usage-report.txt")
    return refusal, int(_DEFAULT_TOTAL.search(report.read_text()).group(1))


def test_buffers_placed_within_hbm_are_refused_once_the_code_is_counted(tmp_path):
    """The verdict at buffer assignment ("within HBM") is the full compile's at
    the edge, and not 512 B above it: the compiler counts the code it generates."""
    hbm = autotune.get_target("v5e:1x1").default_budget_bytes
    refusal, total = _compile_dumped(EDGE, tmp_path / "fits")
    assert refusal is None and total <= hbm
    refusal, total = _compile_dumped(EDGE + 512, tmp_path / "over")
    assert total <= hbm, "its buffers were placed within HBM"
    assert refusal is not None and refusal.required_bytes > refusal.available_bytes


def test_a_tpu_asked_to_stop_compiles_in_full(tmp_path, monkeypatch):
    workers.stop_all()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tpu = autotune.get_target("v5e:1x1")
    asked = dataclasses.replace(tpu, stop_at_assignment=True)
    assert not asked.stops_at_assignment()
    assert "benchmarks/tpu-verdicts.md" in asked.full_compile_reason()
    options = {**REMAT_PASS_OFF, MAX_HBM_OPTION: 2}
    w = autotune.Workload(mlp_step, mlp_args, donate_argnums=0)
    stopped = Prober.for_target(w, asked, compiler_options=options)
    full = Prober.for_target(w, tpu, compiler_options=options)
    for batch in (8, 1 << 14):  # fits, refused
        a, b = stopped(batch), full(batch)
        assert not a.stopped and a.refused == b.refused == (batch > 8)
        assert (a.need_bytes, a.code_bytes) == (b.need_bytes, b.code_bytes)
    assert not list(tmp_path.glob(workers.FOLDER_PREFIX + "*")), "a worker was started"
    assert not os.listdir(tmp_path)


def test_the_command_says_why_tpu_probes_compile_in_full(monkeypatch, capsys):
    from autotune._command import run as command
    from autotune.cli import main

    monkeypatch.setattr(command, "_tune", lambda *a: [])
    argv = ["--model", "vgg-tiny", "--image-size", "8", "--classes", "10", "--remat", "none",
            "--target", "v5e:1x1", "--no-cache", "--quiet", "--stop-at-assignment"]  # fmt: skip
    main(argv)
    printed = capsys.readouterr().err
    assert "probes: compiled in full, not stopped at buffer assignment" in printed
    assert "benchmarks/tpu-verdicts.md" in printed
