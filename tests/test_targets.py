"""Targets: described GPUs compile on the CPU, budgets follow the measured model."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from autotune._targets import gpu, local, plugins
from autotune._targets.gpu_specs import GPU_SPECS
from autotune._targets.registry import TargetError, get_target, known_targets

H200_BYTES_LIMIT = 112_583_507_968  # measured, fraction 0.75
MIB = 1 << 20


def _plugin_missing() -> str | None:
    try:
        plugins.check_cuda_plugin()
    except TargetError as e:
        return str(e)
    return None


needs_plugin = pytest.mark.skipif(
    _plugin_missing() is not None,
    reason=f"deviceless compiles need the CUDA plugin: {_plugin_missing()}",
)


@pytest.fixture(autouse=True)
def _no_fraction_env(monkeypatch):
    for name in local.MEM_FRACTION_ENV:
        monkeypatch.delenv(name, raising=False)


def _mlp_grad_memory(target):
    s = target.sharding()

    def spec(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=s)

    def loss(params, x, y):
        (w1, b1), (w2, b2) = params
        h = jax.nn.relu(x @ w1 + b1)
        return jnp.mean((h @ w2 + b2 - y) ** 2)

    params = ((spec(784, 256), spec(256)), (spec(256, 10), spec(10)))
    step = jax.jit(jax.value_and_grad(loss))
    return step.lower(params, spec(64, 784), spec(64, 10)).compile().memory_analysis()


@needs_plugin
@pytest.mark.parametrize("name", known_targets())
def test_named_target_compiles(name):
    target = get_target(name)
    devices = target.devices()
    assert len(devices) == 1
    assert devices[0].platform == "gpu"
    assert devices[0].device_kind == GPU_SPECS[name].product
    assert target.platform == "cuda" and target.deviceless
    memory = _mlp_grad_memory(target)
    assert memory.argument_size_in_bytes > 0
    assert memory.temp_size_in_bytes > 0


def test_required_names_are_known():
    assert {
        "h100-sxm-80gb",
        "h100-pcie-80gb",
        "h200-141gb",
        "a100-40gb",
        "a100-80gb",
        "l4-24gb",
    } <= set(known_targets())


def test_h200_budget_reproduces_measured_limit():
    target = get_target("h200-141gb")
    assert target.memory_bytes == 143771 * MIB
    assert target.budget.fraction == 0.75
    assert abs(target.default_budget_bytes - H200_BYTES_LIMIT) <= 16 * MIB
    assert target.budget.total_bytes - target.budget.reserve_bytes == (
        target.budget.free_at_start_bytes
    )


def test_fraction_scales_budget(monkeypatch):
    base = get_target("h200-141gb").default_budget_bytes
    half = get_target("h200-141gb", mem_fraction=0.375).default_budget_bytes
    assert abs(half - base / 2) <= 1
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    from_env = get_target("h200-141gb").default_budget_bytes
    assert abs(from_env - base * 0.9 / 0.75) <= 1
    assert get_target("h200-141gb", mem_fraction=0.375).default_budget_bytes == half


@pytest.mark.parametrize("value", [0.0, 1.5, -0.1])
def test_bad_fraction(value):
    with pytest.raises(TargetError, match=rf"mem_fraction.*{value}"):
        get_target("h200-141gb", mem_fraction=value)


def test_bad_fraction_env(monkeypatch):
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "most")
    with pytest.raises(TargetError, match="XLA_PYTHON_CLIENT_MEM_FRACTION.*most"):
        get_target("a100-80gb")
    monkeypatch.setenv("XLA_CLIENT_MEM_FRACTION", "0.5")
    with pytest.raises(TargetError, match="both set"):
        get_target("a100-80gb")


def test_unknown_name_lists_known_targets():
    with pytest.raises(TargetError) as raised:
        get_target("h100")
    message = str(raised.value)
    assert "'h100'" in message
    assert all(name in message for name in known_targets())


def test_missing_config_file(tmp_path):
    path = tmp_path / "nowhere.txtpb"
    with pytest.raises(TargetError, match="does not exist") as raised:
        get_target(str(path))
    assert str(path) in str(raised.value)


def test_config_file_without_required_fields(tmp_path):
    path = tmp_path / "empty.txtpb"
    path.write_text('platform_name: "CUDA"\n')
    with pytest.raises(TargetError, match="threads_per_warp") as raised:
        get_target(str(path))
    assert str(path) in str(raised.value)


@needs_plugin
def test_config_file_that_does_not_parse(tmp_path):
    path = tmp_path / "newer.txtpb"
    config = gpu.spec_config("h200-141gb")
    path.write_text(config.replace("gpu_device_info {", "gpu_device_info {\n  no_such_field: 1", 1))
    with pytest.raises(TargetError) as raised:
        get_target(str(path)).devices()
    message = str(raised.value)
    assert str(path.resolve()) in message
    assert "line 2" in message and "no_such_field" in message


@pytest.mark.parametrize(
    "installed,expected",
    [
        ({"jaxlib": "0.10.2"}, "not installed"),
        (
            {"jaxlib": "0.10.2", "jax-cuda13-plugin": "0.10.1", "jax-cuda13-pjrt": "0.10.1"},
            "0.10.1",
        ),
    ],
)
def test_cuda_plugin_errors(monkeypatch, installed, expected):
    monkeypatch.setattr(plugins, "installed_version", installed.get)
    with pytest.raises(TargetError, match=expected) as raised:
        get_target("l4-24gb").devices()
    message = str(raised.value)
    assert "'l4-24gb'" in message
    assert 'pip install "jax[cuda13-local]==0.10.2"' in message


@needs_plugin
def test_config_file_round_trip(tmp_path):
    path = tmp_path / "h200.txtpb"
    path.write_text(
        f"# {gpu.DUMP_BYTES_LIMIT}: {H200_BYTES_LIMIT}\n"
        f"# {gpu.DUMP_MEM_FRACTION}: 0.75\n" + gpu.spec_config("h200-141gb")
    )
    target = get_target(str(path))
    assert target.name == f"file:{path.resolve()}"
    assert target.memory_bytes == GPU_SPECS["h200-141gb"].device_memory_size
    assert target.default_budget_bytes == H200_BYTES_LIMIT
    assert target.devices()[0].device_kind == "NVIDIA H200"
    assert _mlp_grad_memory(target).temp_size_in_bytes > 0


def test_config_file_without_budget(tmp_path):
    path = tmp_path / "l4.txtpb"
    path.write_text(gpu.spec_config("l4-24gb"))
    target = get_target(str(path))
    assert target.default_budget_bytes is None
    assert target.description.startswith("NVIDIA L4")


def _dumped(tmp_path, name, bytes_limit, mem_fraction):
    path = tmp_path / f"{name}.txtpb"
    path.write_text(
        f"# {gpu.DUMP_BYTES_LIMIT}: {bytes_limit}\n"
        f"# {gpu.DUMP_MEM_FRACTION}: {mem_fraction}\n" + gpu.spec_config(name)
    )
    return path


def test_config_file_with_another_cards_limit(tmp_path):
    """An L4 file carrying an H100's limit would budget 63.6 GB on a 24 GB card."""
    h100_limit = get_target("h100-sxm-80gb").default_budget_bytes
    path = _dumped(tmp_path, "l4-24gb", h100_limit, 0.75)
    card = GPU_SPECS["l4-24gb"].device_memory_size
    with pytest.raises(TargetError, match=f"more than the card's `device_memory_size` .={card:,}."):
        get_target(str(path))
    ceiling = int(0.75 * card)  # the largest limit the card allows at that fraction
    assert get_target(str(_dumped(tmp_path, "l4-24gb", ceiling, 0.75))).default_budget_bytes > 0
    with pytest.raises(TargetError, match="more than the card's"):
        get_target(str(_dumped(tmp_path, "l4-24gb", ceiling + 1, 0.75)))


@pytest.mark.parametrize("fraction", ["7", "0", "-0.5", "nan", "inf", "abc", "1.000001"])
def test_config_file_with_a_fraction_outside_0_1(tmp_path, fraction):
    path = _dumped(tmp_path, "l4-24gb", 10**9, fraction)
    with pytest.raises(TargetError, match=rf"`mem_fraction` \(='{fraction}'\) must be a number in"):
        get_target(str(path))


@pytest.mark.parametrize("limit", ["-5", "0", "1.5e9", "abc", "1_000"])
def test_config_file_with_a_limit_that_is_not_a_count(tmp_path, limit):
    path = _dumped(tmp_path, "l4-24gb", limit, 0.75)
    with pytest.raises(TargetError, match=rf"`bytes_limit` \(='{limit}'\) must be a positive"):
        get_target(str(path))


def test_local_target_on_cpu():
    target = get_target("local")
    assert (target.name, target.platform) == ("local:cpu", "cpu")
    assert target.default_budget_bytes is None and not target.deviceless
    assert target.devices() == jax.devices()[:1]


def test_target_is_hashable():
    assert hash(get_target("a100-40gb")) == hash(get_target("a100-40gb"))


@needs_plugin
@pytest.mark.parametrize("target", ["get_target('h100-sxm-80gb')", "get_target('auto')"])
def test_described_target_is_quiet_without_jax_platforms(target):
    code = (
        "from autotune._targets.registry import get_target\n"
        "import jax, jax.numpy as jnp\n"
        f"t = {target}\n"
        "x = jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=t.sharding())\n"
        "jax.jit(lambda x: x @ x).lower(x).compile()\n"
        "print(t.name, jax.devices()[0].platform)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "h100-sxm-80gb cpu"
    assert "Traceback" not in run.stderr and "plugin" not in run.stderr.lower()


def test_local_deviceless_needs_a_local_gpu():
    with pytest.raises(TargetError, match="is 'cpu', not a GPU: `target` 'local-deviceless'"):
        get_target("local-deviceless")


@pytest.mark.parametrize("given", [200 * 10**9, 10**40])
def test_a_budget_above_the_cards_memory_is_capped_there_with_a_note(given):
    target = get_target("h100-sxm-80gb")
    budget, options = target.budget_for(given, 0)
    assert budget.limit_bytes == target.memory_bytes == GPU_SPECS["h100-sxm-80gb"].memory_bytes
    assert f"capped at the memory of 'h100-sxm-80gb' ({target.memory_bytes:,} B)" in budget.source
    assert f"{given:,} B" in budget.source and options == {}
    below, _ = target.budget_for(10**9, 0)
    assert (below.limit_bytes, below.source) == (10**9, "given (budget_bytes)")


@pytest.mark.parametrize("fraction", [0, 2, 7, -0.5, float("nan")])
def test_a_bad_fraction_is_refused_on_a_device_without_an_allocator_limit(fraction):
    with pytest.raises(TargetError, match=r"`mem_fraction` \(=.*\) must be a number in \(0, 1\]"):
        get_target("local", mem_fraction=fraction)


def test_a_cpu_may_use_three_quarters_of_physical_memory_by_default():
    budget, _ = get_target("local").budget_for(None, 0)
    assert budget.limit_bytes == int(0.75 * local.physical_memory_bytes())
    assert budget.source.startswith("default for a CPU: 0.75 x physical memory")


def test_a_fraction_a_cpu_cannot_take_is_refused_not_ignored():
    with pytest.raises(TargetError, match=r"`mem_fraction` \(=0.5\) sets a GPU allocator's share"):
        get_target("local", mem_fraction=0.5)


def test_a_budget_above_the_machines_memory_is_capped_on_a_cpu():
    target = get_target("local")
    budget, _ = target.budget_for(10**15, 0)
    assert budget.limit_bytes == target.memory_bytes == local.physical_memory_bytes()
    assert "capped at the memory of 'local:cpu'" in budget.source
