"""Sharded probes on a mesh of 8 fake CPU devices: dp, fsdp, global batches."""

import jax
import jax.numpy as jnp
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from autotune import TuneError, Workload, agree_across_hosts, find_max_batch
from autotune._compile.prober import Prober
from autotune._compile.remat_pass import REMAT_PASS_OFF
from autotune._core.sizes import device_bytes
from autotune._targets import gpu, plugins
from autotune._targets.registry import TargetError, get_target, local_target
from autotune._workloads.layout import (
    LAYOUTS,
    accumulation_plan,
    fsdp_spec,
    lay_out,
    make_mesh,
)
from autotune.models import vgg_setup

N = 8

pytestmark = pytest.mark.skipif(
    jax.device_count() < N,
    reason=f"needs {N} CPU devices: jax_num_cpu_devices={N} must be set before "
    "JAX's backends start (tests/conftest.py)",
)


@pytest.fixture(scope="module")
def setup():
    return vgg_setup("vgg-tiny", image_size=8, num_classes=10, optimizer="adam")


def laid(setup, n, layout="dp", devices=None):
    """The VGG setup's workload laid out over `n` devices."""
    workload = Workload(setup.step, setup.args_for_batch)
    return lay_out(workload, devices or jax.devices()[:n], layout)


def _probe(sharded, batch):
    return Prober(sharded.step, sharded.args_for_batch, compiler_options=REMAT_PASS_OFF)(batch)


def test_layouts_are_named():
    assert LAYOUTS == ("dp", "fsdp")


def test_dp_need_per_device_falls_with_device_count(setup):
    needs = [_probe(laid(setup, n, "dp"), 32).need_bytes for n in (1, 2, 4, 8)]
    assert needs == sorted(needs, reverse=True)
    assert len(set(needs)) == 4


def test_fsdp_splits_params_and_optimizer_state(setup):
    fsdp = laid(setup, N, "fsdp")
    dp = laid(setup, N, "dp")
    batch = 32
    state = device_bytes((setup.params, setup.opt_state))
    x, y = setup.batch_args(batch)
    examples = device_bytes((x, y))
    replicated = sum(
        leaf.size * leaf.dtype.itemsize
        for leaf in jax.tree.leaves((setup.params, setup.opt_state))
        if fsdp_spec(leaf.shape, N) == P()
    )
    got = _probe(fsdp, batch).argument_bytes
    assert got == device_bytes(fsdp.args_for_batch(batch))
    assert abs(got - (state + examples) / N) <= replicated
    assert _probe(dp, batch).argument_bytes == state + examples // N


def test_fsdp_spec_shards_the_largest_divisible_axis():
    assert fsdp_spec((3, 3, 8, 16), 8) == P(None, None, None, "data")
    assert fsdp_spec((256, 32), 8) == P("data", None)
    assert fsdp_spec((10,), 8) == P()
    assert fsdp_spec((), 8) == P()


def test_find_max_batch_on_dp_step_is_exact(setup):
    sharded = laid(setup, N, "dp")
    brute = Prober(sharded.step, sharded.args_for_batch, compiler_options=REMAT_PASS_OFF)
    candidates = range(N, 7 * N + 1, N)
    needs = {b: brute(b).need_bytes for b in candidates}
    budget = (needs[5 * N] + needs[6 * N]) // 2
    result = find_max_batch(sharded, budget_bytes=budget, multiple_of=N, max_batch=7 * N)
    assert result.batch == max(b for b, need in needs.items() if need <= budget)
    assert result.batch == 5 * N
    assert result.next_batch == 6 * N
    assert result.peak_bytes == needs[5 * N]


def test_user_step_with_own_shardings(setup):
    mesh = make_mesh(jax.devices()[:N])
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    d, h, c = 32, 64, 10

    def step(params, x, y):
        def loss(p):
            logits = jnp.tanh(x @ p["w1"]) @ p["w2"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        value, grads = jax.value_and_grad(loss)(params)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), value

    def args(batch):
        params = {
            "w1": jax.ShapeDtypeStruct((d, h), jnp.float32, sharding=replicated),
            "w2": jax.ShapeDtypeStruct((h, c), jnp.float32, sharding=replicated),
        }
        return (
            params,
            jax.ShapeDtypeStruct((batch, d), jnp.float32, sharding=split),
            jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=split),
        )

    params_bytes = (d * h + h * c) * 4
    small = find_max_batch(
        step, args, budget_bytes=10**9, multiple_of=N, max_batch=16 * N, donate_argnums=0
    )
    per_example = small.per_example_bytes
    assert per_example > 0
    budget = small.probe.need_bytes + 5 * N * per_example
    result = find_max_batch(
        step, args, budget_bytes=budget, multiple_of=N, max_batch=64 * N, donate_argnums=0
    )
    assert result.batch % N == 0 and result.exact
    assert result.peak_bytes <= budget < result.next_peak_bytes
    assert result.probe.argument_bytes == params_bytes + result.batch * (d + 1) * 4 // N


def test_global_batch_must_divide_over_the_mesh(setup):
    sharded = laid(setup, N, "dp")
    with pytest.raises(TuneError, match=r"`batch` \(=12\).*data-parallel size \(=8"):
        sharded.args_for_batch(12)


def test_mesh_larger_than_devices_present():
    with pytest.raises(
        TargetError,
        match=r"`devices` \(=16\).*larger than the "
        "devices present",
    ):
        local_target(devices=16)


def test_unknown_layout(setup):
    with pytest.raises(TuneError, match=r"`layout` \(='tp'\) must be one of dp, fsdp"):
        laid(setup, N, "tp")


def test_local_target_with_devices():
    target = local_target(devices=N)
    assert target.device_count == N and len(target.devices()) == N
    assert target.name == "local:8xcpu"


@pytest.mark.parametrize(
    "desired, fits, size, plan",
    [
        (64, 96, 8, (1, 64)),
        (256, 96, 8, (4, 64)),
        (96, 96, 8, (1, 96)),
        (104, 96, 8, (13, 8)),
        (1024, 200, 16, (8, 128)),
    ],
)
def test_accumulation_plan(desired, fits, size, plan):
    steps, micro = accumulation_plan(desired, fits, size)
    assert (steps, micro) == plan
    assert steps * micro == desired and micro % size == 0 and micro <= fits


def test_accumulation_plan_refuses_what_it_cannot_reach():
    with pytest.raises(
        ValueError,
        match=r"`desired_global` \(=100\).*multiple of "
        r"the data-parallel size \(=8\).*96 or 104",
    ):
        accumulation_plan(100, 96, 8)
    with pytest.raises(ValueError, match=r"`max_fitting_global` \(=4\)"):
        accumulation_plan(64, 4, 8)


def test_agree_across_hosts_single_process():
    assert agree_across_hosts(40) == 40


def test_described_gpu_counts():
    target = get_target("8xh100-sxm-80gb")
    assert target.device_count == 8 and target.name == "8xh100-sxm-80gb"
    assert target == get_target("h100-sxm-80gb", devices=8)
    assert target.default_budget_bytes == get_target("h100-sxm-80gb").default_budget_bytes
    assert gpu.topology(8) == "1x1x8" and gpu.topology(16) == "1x2x8"
    with pytest.raises(TargetError, match=r"`devices` \(=12\).*multiple of 8"):
        get_target("h100-sxm-80gb", devices=12)
    with pytest.raises(TargetError, match=r"`devices` \(=2048\) exceeds"):
        get_target("h100-sxm-80gb", devices=2048)
    with pytest.raises(TargetError, match=r"`devices` \(=0\)"):
        get_target("h100-sxm-80gb", devices=0)
    with pytest.raises(TargetError, match="names a device count"):
        get_target("8xh100-sxm-80gb", devices=4)


def _plugin_missing():
    try:
        plugins.check_cuda_plugin()
    except TargetError as e:
        return str(e)
    return None


@pytest.mark.skipif(
    _plugin_missing() is not None,
    reason=f"deviceless compiles need the CUDA plugin: {_plugin_missing()}",
)
def test_dp_step_for_8_described_h100s(setup):
    target = get_target("h100-sxm-80gb", devices=8)
    devices = target.devices()
    assert len(devices) == 8 and devices[0].device_kind.startswith("NVIDIA H100")
    sharded = laid(setup, N, "dp", devices)
    result = find_max_batch(sharded, target=target, multiple_of=N, max_batch=2 * N)
    assert result.batch == 2 * N
    x, y = setup.batch_args(2 * N)
    state = device_bytes((setup.params, setup.opt_state))
    assert result.probe.argument_bytes == state + device_bytes((x, y)) // N


def test_result_reports_global_and_per_device_batch(setup):
    from autotune._results.result import comparison_table

    sharded = laid(setup, N, "dp")
    with pytest.raises(
        TuneError,
        match=r"`multiple_of` \(=12\) must be a multiple "
        r"of `data_parallel_size` \(=8\)",
    ):
        find_max_batch(
            sharded,
            budget_bytes=10**9,
            multiple_of=12,
            data_parallel_size=N,
        )
    result = find_max_batch(
        sharded,
        budget_bytes=10**9,
        multiple_of=N,
        max_batch=2 * N,
        data_parallel_size=N,
        label="tiny dp",
    )
    assert result.batch == 2 * N and result.per_device_batch == 2
    assert result.to_dict()["per_device_batch"] == 2
    assert "2 examples on each of 8 devices" in result.render()
    table = comparison_table([result])
    assert "global batch" in table and "2 x 8" in table


def test_fsdp_arguments_are_checked_per_device(setup):
    fsdp = laid(setup, N, "fsdp")
    args = fsdp.args_for_batch(N)
    one_device = device_bytes(args)
    whole = device_bytes(jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), args))
    assert one_device < whole
    result = find_max_batch(
        fsdp,
        multiple_of=N,
        max_batch=N,
        budget_bytes=10**9,
        data_parallel_size=N,
    )
    assert result.probe.argument_bytes == one_device


def test_cli_mesh_and_accumulation(capsys, tmp_path, monkeypatch):
    from autotune.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    args = [
        "--model",
        "vgg-tiny",
        "--image-size",
        "8",
        "--classes",
        "10",
        "--target",
        "local",
        "--budget",
        "4MB",
        "--quiet",
        "--remat",
        "none",
        "--mesh",
        "8",
        "--layout",
        "fsdp",
        "--max-batch",
        "64",
    ]
    assert main([*args, "--accumulate-to", "1024"]) == 0
    out = capsys.readouterr().out
    assert "global batch" in out and "per device" in out
    assert "global batch 1024 = " in out
    assert main([*args, "--accumulate-to", "100"]) == 2
    assert "`--accumulate-to` (=100)" in capsys.readouterr().err
    assert main([*args, "--layout", "tp"]) == 2
    assert "`--layout` (='tp') must be one of dp, fsdp" in capsys.readouterr().err
    assert main([*args, "--mesh", "16"]) == 2
    assert "larger than the devices present" in capsys.readouterr().err


def test_flops_per_example_do_not_depend_on_the_device_count(setup):
    def flops(n):
        sharded = laid(setup, n, "dp")
        result = find_max_batch(
            sharded,
            budget_bytes=10**9,
            multiple_of=N,
            max_batch=32 * N,
            data_parallel_size=n,
        )
        assert result.flops_source.startswith("compiled")
        return result.flops_per_example

    one, eight = flops(1), flops(N)
    assert abs(eight / one - 1) < 0.05


def test_layout_places_by_what_follows_the_batch():
    """A time-major batch (seq, batch, d) is split along its batch axis; a
    typed PRNG key and the parameters are replicated; a leaf the user
    sharded keeps its sharding."""
    mesh = make_mesh(jax.devices()[:N])
    own = NamedSharding(mesh, P(None, "data"))

    def args(batch):
        return (
            {"w": jax.ShapeDtypeStruct((16, 64), jnp.float32)},
            {"v": jax.ShapeDtypeStruct((4, 64), jnp.float32, sharding=own)},
            jax.ShapeDtypeStruct((5, batch, 16), jnp.float32),
            jax.ShapeDtypeStruct((), jax.random.key(0).dtype),
        )

    def step(params, extra, x, key):
        return params, (x @ params["w"]).sum() + extra["v"].sum() + jax.random.normal(key)

    for layout in LAYOUTS:
        params, extra, x, key = lay_out(
            Workload(step, args), jax.devices()[:N], layout
        ).args_for_batch(2 * N)
        assert x.sharding.spec == P(None, "data", None)
        assert key.sharding.spec == P()
        assert extra["v"].sharding is own
        assert params["w"].sharding.spec == (P() if layout == "dp" else P(None, "data"))


def test_layout_gives_the_estimate_per_device(setup):
    from autotune import Estimate

    workload = Workload(setup.step, setup.args_for_batch, estimate=Estimate(800, 160))
    assert lay_out(workload, jax.devices()[:N], "dp").estimate == Estimate(800, 20)
    assert lay_out(workload, jax.devices()[:N], "fsdp").estimate == Estimate(100, 20)
