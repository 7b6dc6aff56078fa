"""Cloud TPU targets by name, their budgets and the compiler's refusals; no libtpu needed."""

import pytest

from autotune import TuneError, get_target, known_targets
from autotune._targets.listing import render_target_list
from autotune._targets.refusal import hbm_refusal
from autotune._targets.tpu import MAX_HBM_OPTION
from autotune._targets.tpu_specs import GENERATIONS, accelerator_types, parse_tpu_name
from autotune.cli import main

GIB, MIB = 1 << 30, 1 << 20


@pytest.mark.parametrize(
    "name, topology, devices, device, hosts",
    [
        # Cloud TPU's tables: accelerator type, topology, hosts.
        ("v4-8", "v4:2x2x1", 4, "chip", 1),
        ("v4-128", "v4:4x4x4", 64, "chip", 16),
        ("v5litepod-1", "v5e:1x1", 1, "chip", 1),
        ("v5litepod-4", "v5e:2x2", 4, "chip", 1),
        ("v5litepod-8", "v5e:2x4", 8, "chip", 1),
        ("v5litepod-16", "v5e:4x4", 16, "chip", 2),
        ("v5litepod-256", "v5e:16x16", 256, "chip", 32),
        ("v5e-8", "v5e:2x4", 8, "chip", 1),
        ("v5p-8", "v5p:2x2x1", 4, "chip", 1),
        ("v5p-16", "v5p:2x2x2", 8, "chip", 2),
        ("v5p-64", "v5p:2x4x4", 32, "chip", 8),
        ("v5p-256", "v5p:4x4x8", 128, "chip", 32),
        ("v5p-4096", "v5p:8x16x16", 2048, "chip", 512),
        ("v5p-12288", "v5p:16x16x24", 6144, "chip", 1536),
        ("v6e-1", "v6e:1x1", 1, "chip", 1),
        ("v6e-256", "v6e:16x16", 256, "chip", 32),
        ("tpu7x-2", "tpu7x:1x1x1", 2, "TensorCore", 1),
        ("tpu7x-8", "tpu7x:2x2x1", 8, "TensorCore", 1),
        ("v5e:2x2", "v5e:2x2", 4, "chip", 1),
        ("v5:2x2x1", "v5p:2x2x1", 4, "chip", 1),
        ("tpu7x:2x2x2", "tpu7x:2x2x2", 16, "TensorCore", 2),
        ("v5p:1x1x1", "v5p:1x1x1", 1, "chip", 1),
    ],
)
def test_names_users_know_map_to_slices(name, topology, devices, device, hosts):
    tpu = parse_tpu_name(name)
    assert tpu.topology == topology
    assert tpu.device_count == devices and tpu.generation.device == device
    assert tpu.hosts == hosts
    target = get_target(name)
    assert target.platform == "tpu" and target.deviceless and target.device_count == devices
    assert target.default_budget_bytes == tpu.generation.hbm_bytes


def test_accelerator_type_and_topology_agree():
    """Every listed accelerator type names the slice its own topology names."""
    for generation in GENERATIONS.values():
        for name in accelerator_types(generation):
            tpu = parse_tpu_name(name)
            assert tpu.accelerator_type == name
            assert parse_tpu_name(tpu.topology).accelerator_type == name
            assert tpu.chips >= tpu.generation.min_chips


def test_known_targets_stays_the_gpus_and_names_tpus_on_request():
    gpus = known_targets()
    assert "h100-sxm-80gb" in gpus and not any(parse_tpu_name(n) for n in gpus)
    everything = known_targets(tpu=True)
    assert everything[: len(gpus)] == gpus
    assert {"v4-8", "v5litepod-4", "v5p-8", "v6e-256", "tpu7x-8"} <= set(everything)


@pytest.mark.parametrize(
    "name, message",
    [
        ("v5litepod-3", r"`target` \(='v5litepod-3'\) is not a v5e slice: the number counts "
         r"chips.*did you mean 'v5litepod-4'\?"),
        ("v5p-10", r"counts TensorCores.*v5p-8, v5p-16.*did you mean 'v5p-8'\?"),
        ("v5p-8576", r"not a v5p slice.*did you mean 'v5p-8448'\?"),
        ("v5e:3x3", r"`target` \(='v5e:3x3'\) is not a TPU topology: v5e topologies are 1x1, "
         r"2x2, 2x4"),
        ("v5e:2x2x1", r"v5e topologies are 1x1"),
        ("v5p:6x2x1", r"v5p topologies are AxBxC, every side at most 4 or a multiple of 4"),
        ("v4:32x32x32", r"at most 4096 chips"),
        ("v5lite-4", r"`target` \(='v5lite-4'\) is not a known target.*did you mean 'v5litepod-4'"),
    ],
)  # fmt: skip
def test_bad_tpu_names_say_the_rule(name, message):
    with pytest.raises(TuneError, match=message):
        get_target(name)


def test_a_slice_is_all_its_devices():
    assert get_target("v5litepod-4", devices=4).device_count == 4
    with pytest.raises(TuneError, match=r"`devices` \(=2\) must be 1 or 4 for `target`"):
        get_target("v5litepod-4", devices=2)
    with pytest.raises(TuneError, match=r"`devices` \(=4\) must be 1 for `target`"):
        get_target("v5e:1x1", devices=4)
    with pytest.raises(TuneError, match=r"`mem_fraction` \(=0.9\).*TPU"):
        get_target("v5e:1x1", mem_fraction=0.9)


def test_budget_is_the_compilers_hbm_or_what_it_is_told_to_aim_at():
    target = get_target("v5e:1x1")
    hbm = target.default_budget_bytes
    budget, options = target.budget_for(None, 0)
    assert budget.bytes == hbm and options == {}
    budget, options = target.budget_for(None, 2 * GIB)
    assert options == {MAX_HBM_OPTION: (hbm - 2 * GIB) // MIB}
    assert budget.bytes == (hbm - 2 * GIB) // MIB * MIB and budget.reserve_bytes == 2 * GIB
    budget, options = target.budget_for(10 * GIB + 12_345, 0)
    assert options == {MAX_HBM_OPTION: 10 * 1024} and budget.bytes == 10 * GIB
    assert "rounded down to 10,737,418,240 B" in budget.source
    budget, options = target.budget_for(100 * GIB, 0)
    assert budget.bytes == hbm and options == {MAX_HBM_OPTION: hbm // MIB}
    assert "capped at the TPU compiler's HBM" in budget.source
    with pytest.raises(TuneError, match=r"`reserve_bytes` \(=17,179,869,184\)"):
        target.budget_for(None, 16 * GIB)


BEFORE = (
    "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
    "temporaries (16.62G) exceeds available HBM (15.75G)."
)
AFTER = (
    "RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: XLA:TPU compile permanent error. Ran out "
    "of memory in memory space hbm. Used 2.04M of 2.00M hbm. Exceeded hbm capacity by 39.0K."
    "\n\nTotal hbm usage >= 260.04M:\n    reserved        258.00M \n    program 738.0K"
)


def test_refusals_in_both_messages_libtpu_writes():
    """The two messages libtpu 0.0.42.1 gave for programs that do not fit."""
    before = hbm_refusal(RuntimeError(BEFORE))
    assert before.required_bytes == round(16.62 * GIB) and before.available_bytes == round(
        15.75 * GIB
    )
    after = hbm_refusal(RuntimeError(AFTER))
    assert after.available_bytes == 2 * MIB and after.required_bytes == 2 * MIB + 39 * 1024


@pytest.mark.parametrize(
    "text",
    [
        "RESOURCE_EXHAUSTED: Ran out of memory in memory space vmem. Used 17.0M of 16.0M vmem.",
        "INTERNAL: Ran out of memory on HBM, the total memory required for HLO temporaries "
        "(16.62G) exceeds available HBM (15.75G).",
        "INVALID_ARGUMENT: shapes do not match",
    ],
)
def test_other_errors_are_not_refusals(text):
    assert hbm_refusal(RuntimeError(text)) is None


def test_list_targets_names_gpus_and_tpus_with_their_memory(capsys):
    assert main(["--list-targets"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == render_target_list()
    lines = out.splitlines()
    assert any(line.split()[:1] == ["h100-sxm-80gb"] and "79.6 GB" in line for line in lines)
    row = next(line.split() for line in lines if line.startswith("v5litepod-16 "))
    assert row == ["v5litepod-16", "v5e:4x4", "16", "chips", "2", "15.7", "GB"]
    row = next(line.split() for line in lines if line.startswith("tpu7x-8 "))
    assert row == ["tpu7x-8", "tpu7x:2x2x1", "8", "TensorCores", "1", "94.7", "GB"]


def test_bad_tpu_target_on_the_command_line_is_one_line(capsys):
    assert main(["--target", "v5litepod-3", "--remat", "none"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "v5litepod-3" in err and "Traceback" not in err
