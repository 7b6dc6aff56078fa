"""The need read from XLA's buffer assignment is memory_analysis()'s, to the byte."""

import tempfile
from pathlib import Path

import jax
import pytest
from steps import mlp_args, mlp_step, padded_step
from user_steps import deep_mlp, linen_cnn, nnx_cnn, plain_mlp

import autotune
from autotune._compile.assignment import placed_bytes, read_assignment, whole_assignment
from autotune._compile.dump import DumpError, dump_options
from autotune._compile.prober import Prober
from autotune._compile.remat_pass import REMAT_PASS_OFF
from autotune._workloads.layout import on_target
from autotune.models import vgg_setup


def _vgg(remat):
    setup = vgg_setup("vgg-tiny", image_size=8, num_classes=10, remat=remat)
    return autotune.Workload(setup.step, setup.args_for_batch, label=f"vgg-tiny {remat}")


STEPS = {
    "mlp donated": autotune.Workload(mlp_step, mlp_args, donate_argnums=0),
    "mlp kept": autotune.Workload(mlp_step, mlp_args),
    "padded": autotune.Workload(padded_step, mlp_args, donate_argnums=0),
    "plain_mlp": plain_mlp.workload,
    "deep_mlp": deep_mlp.workload,
    "linen_cnn": autotune.Workload(*linen_cnn.make()),
    "nnx_cnn": nnx_cnn.my_workload,
    "vgg-tiny": _vgg("none"),
    "vgg-tiny remat": _vgg("nothing_saveable"),
}


def _cuda():
    pytest.importorskip(
        "jax_plugins.xla_cuda13",
        reason="a described GPU needs the CUDA plugin (pip install -e '.[deviceless]')",
    )
    return autotune.get_target("h100-sxm-80gb")


def _read_and_compiled(workload, target, batch):
    """(the totals read from the dump, memory_analysis()'s) of one compile."""
    lowered = Prober.for_target(on_target(workload, target), target).lower(batch)
    with tempfile.TemporaryDirectory() as folder:
        options = {**REMAT_PASS_OFF, **dump_options(folder)}
        m = lowered.compile(compiler_options=options).memory_analysis()
        assigned, _ = whole_assignment(folder)
    sizes = (m.argument_size_in_bytes, m.output_size_in_bytes, m.alias_size_in_bytes)
    read = (assigned.argument_bytes, assigned.output_bytes, assigned.alias_bytes)
    return (*read, assigned.temp_bytes), (*sizes, m.temp_size_in_bytes)


@pytest.mark.parametrize("name", STEPS)
@pytest.mark.parametrize("batch", [8, 24])
def test_cpu_backend_totals_are_memory_analysis(name, batch):
    read, compiled = _read_and_compiled(STEPS[name], autotune.get_target("local"), batch)
    assert read == compiled


@pytest.mark.parametrize("name", STEPS)
def test_described_h100_totals_are_memory_analysis(name):
    read, compiled = _read_and_compiled(STEPS[name], _cuda(), 16)
    assert read == compiled


def test_sharded_totals_are_memory_analysis():
    if jax.device_count() < 4:
        pytest.skip("needs 4 CPU devices (tests/conftest.py sets jax_num_cpu_devices)")
    target = autotune.get_target("local", devices=4)
    for name in ("vgg-tiny", "mlp donated"):
        read, compiled = _read_and_compiled(STEPS[name], target, 32)
        assert read == compiled, name


def test_sharded_described_h100s_totals_are_memory_analysis():
    _cuda()
    target = autotune.get_target("h100-sxm-80gb", devices=2)
    read, compiled = _read_and_compiled(STEPS["vgg-tiny"], target, 32)
    assert read == compiled


ASSIGNMENT = """BufferAssignment:
allocation 0: size 64, parameter 0, shape |f32[16]| at ShapeIndex {}, maybe-live-out:
 value: <1 p.1 @0> (size=64,offset=0): f32[16]{0}
allocation 1: size 32, parameter 1, shape |f32[8]| at ShapeIndex {}:
allocation 2: size 24, output shape is |(f32[16], f32[])|, maybe-live-out:
allocation 3: size 4, constant:
allocation 4: size 4, thread-local:
allocation 5: size 128, preallocated-temp:
"""


def test_allocations_are_counted_as_memory_analysis_counts_them():
    a = read_assignment(ASSIGNMENT)
    assert (a.argument_bytes, a.output_bytes, a.alias_bytes, a.temp_bytes) == (96, 88, 64, 128)
    assert a.total_bytes == 256 and a.need_bytes == 96 + 88 - 64 + 128


def test_a_file_cut_short_or_in_another_memory_space_is_not_read(tmp_path):
    cut = ASSIGNMENT.replace("allocation 5: size 128, preallocated-temp:", "allocation 5: size 12")
    with pytest.raises(DumpError, match="cut short"):
        read_assignment(cut)
    with pytest.raises(DumpError, match="another memory space"):
        read_assignment(ASSIGNMENT.replace("size 4, constant", "size 4, color 5, constant"))
    (tmp_path / "m.after_optimizations-buffer-assignment.txt").write_text(ASSIGNMENT)
    assert whole_assignment(tmp_path) is None  # no report yet
    report = tmp_path / "m.after_optimizations-memory-usage-report.txt"
    report.write_text("Total bytes: 250 (250B)\n")
    assert whole_assignment(tmp_path) is None  # the sums disagree: still being written
    report.write_text("Total bytes: 256 (256B)\n")
    assigned, path = whole_assignment(tmp_path)
    assert assigned.total_bytes == 256 and Path(path).name.endswith("buffer-assignment.txt")


REPORT = "module_0000.jit_step.after_optimizations-memory-usage-report.txt"
TPU_REPORT = """Memory Space: default (color=0)
Total bytes: 8389120 (8.00MiB)
  cumulative_size;       size;       offset; used_by_n_values; shapes_list

Memory Space: vmem (color=1)
Total bytes: 8388608 (8.00MiB)
"""


def test_a_tpu_placement_is_the_default_memory_spaces_total_once_written(tmp_path):
    assert placed_bytes(tmp_path) is None and placed_bytes(tmp_path / "absent") is None
    report = tmp_path / REPORT
    report.write_text(TPU_REPORT[: TPU_REPORT.index(" (8.00MiB)")])  # the number may be cut
    assert placed_bytes(tmp_path) is None
    report.write_text(TPU_REPORT)
    assert placed_bytes(tmp_path) == 8_389_120  # HBM's, not VMEM's
    (tmp_path / REPORT.replace("0000", "0001")).write_text(TPU_REPORT)
    with pytest.raises(DumpError, match="2 modules"):
        placed_bytes(tmp_path)
