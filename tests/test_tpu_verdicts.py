"""A TPU's verdict at buffer assignment is not its compiler's: probes asked
to stop there stop at a placement, and the answer is compiled in full
(libtpu, small programs)."""

import dataclasses
import json
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
from autotune._compile.remat_pass import REMAT_PASS_OFF
from autotune._core.errors import TuneError
from autotune._targets.refusal import hbm_refusal

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


def _search(target, budget=2 << 20, **kwargs):
    w = autotune.Workload(mlp_step, mlp_args, donate_argnums=0)
    return autotune.find_max_batch(w, target=target, budget_bytes=budget, max_batch=1 << 15,
                                   compiler_options=REMAT_PASS_OFF, **kwargs)  # fmt: skip


def test_placements_stop_the_compile_and_the_answer_is_compiled_in_full(tmp_path, monkeypatch):
    """A TPU probe stops once the compiler placed its buffers:
    same answer, peak and next batch as compiles in full; the answer and the
    refusal above it are the compiler's own word; no worker or folder left."""
    workers.stop_all()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tpu = autotune.get_target("v5e:1x1")
    in_full = dataclasses.replace(tpu, stop_at_assignment=False)
    assert tpu.stops_at_assignment() and not in_full.stops_at_assignment()
    placed, full = _search(tpu), _search(in_full)
    assert (placed.batch, placed.peak_bytes, placed.next_batch, placed.next_peak_bytes) == (
        full.batch, full.peak_bytes, full.next_batch, full.next_peak_bytes
    )  # fmt: skip
    by_batch = {p.batch: p for p in placed.probes}
    answer, nxt = by_batch[placed.batch], by_batch[placed.next_batch]
    assert not answer.stopped and answer.code_bytes > 0 and nxt.refused and not nxt.stopped
    stopped = [p for p in placed.probes if p.placed]
    assert stopped and all(p.placed_bytes <= placed.budget.bytes for p in stopped)
    assert all(p.need_bytes == p.placed_bytes and not p.code_bytes for p in stopped)
    assert not any(p.stopped for p in full.probes)
    assert "stopped once the compiler had placed their buffers" in placed.how()
    workers.stop_all()
    assert not os.listdir(tmp_path)


def test_a_report_with_placements_reads_back_and_a_placed_answer_is_refused(tmp_path):
    result = _search(autotune.get_target("v5e:1x1"))
    path = tmp_path / "r.json"
    autotune.write_json([result], path)
    (back,) = autotune.read_results(path)
    assert back.probes == result.probes and any(p.placed for p in back.probes)
    data = json.loads(path.read_text())
    row = data["results"][0]
    placement = next(p for p in row["probes"] if p["placed_bytes"] is not None)
    answer = next(p for p in row["probes"] if p["batch"] == row["batch"])
    sizes = ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "code_bytes")
    answer.update(dict.fromkeys(sizes, 0), stopped=True)
    answer.update(placed_bytes=placement["need_bytes"], need_bytes=placement["need_bytes"])
    path.write_text(json.dumps(data))
    with pytest.raises(TuneError, match=r"results\[0\]\.batch.*only placed"):
        autotune.read_results(path)


def test_a_slices_probes_stop_too_and_answer_as_in_full(tmp_path, monkeypatch):
    """Over v5e:2x2 each leaf ships with its layout over the 4 devices: the
    same answer and peak as compiles in full, the answer compiled in full."""
    workers.stop_all()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    slice_ = autotune.get_target("v5e:2x2")
    in_full = dataclasses.replace(slice_, stop_at_assignment=False)
    assert slice_.stops_at_assignment()
    placed, full = _search(slice_, budget=4 << 20), _search(in_full, budget=4 << 20)
    assert (placed.batch, placed.peak_bytes, placed.next_batch) == (
        full.batch, full.peak_bytes, full.next_batch
    )  # fmt: skip
    assert placed.data_parallel_size == 4 and any(p.placed for p in placed.probes)
    assert not {p.batch: p for p in placed.probes}[placed.batch].stopped
    workers.stop_all()
    assert not os.listdir(tmp_path)


def test_the_command_says_why_a_gpu_meshs_probes_compile_in_full(monkeypatch, capsys):
    pytest.importorskip("jax_plugins.xla_cuda13", reason="needs the CUDA plugin ([deviceless])")
    from autotune._command import run as command
    from autotune.cli import main

    monkeypatch.setattr(command, "_tune", lambda *a: [])
    argv = ["--model", "vgg-tiny", "--image-size", "8", "--classes", "10", "--remat", "none",
            "--target", "h100-sxm-80gb", "--mesh", "2", "--no-cache", "--quiet"]  # fmt: skip
    main(argv)
    printed = capsys.readouterr().err
    assert "probes: compiled in full, not stopped at buffer assignment" in printed
    assert "several devices" in printed
    main([*argv, "--no-stop-at-assignment"])  # asked for: nothing to explain
    assert "probes: compiled in full" not in capsys.readouterr().err


def test_an_answer_compiled_in_a_worker_keeps_its_cost_analysis():
    tpu = autotune.get_target("v5e:1x1")
    placed, full = _search(tpu), _search(dataclasses.replace(tpu, stop_at_assignment=False))
    assert placed.flops_source == full.flops_source == "compiled program's cost analysis"
    assert placed.flops_per_example == full.flops_per_example
