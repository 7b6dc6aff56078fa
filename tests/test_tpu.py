"""Described Cloud TPU slices, compiled on this CPU machine with libtpu.

Every answer is checked by independent compiles through JAX's own AOT API,
with the shardings built here: the answer compiles and the next candidate
is refused by the compiler.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from steps import mlp_args, mlp_step
from test_workload import user_dir  # noqa: F401  (fixture)

from autotune import (
    ResultCache,
    TuneError,
    Workload,
    find_max_batch,
    get_target,
    read_results,
    write_json,
)
from autotune._compile.prober import Prober
from autotune._compile.remat_pass import REMAT_PASS_OFF
from autotune._targets.plugins import MULTIPLE_LOADS
from autotune._targets.refusal import hbm_refusal
from autotune._targets.tpu import MAX_HBM_OPTION
from autotune._targets.tpu_specs import GENERATIONS
from autotune._workloads.layout import lay_out
from autotune.cli import main

pytest.importorskip(
    "libtpu", reason="compiling for a described TPU needs libtpu: pip install -e '.[tpu]'"
)

MIB = 1 << 20


def compile_at(step, args, options=None):
    """(compiled need + code, None) or (None, refusal), from JAX's AOT API."""
    try:
        compiled = (
            jax.jit(step, donate_argnums=0)
            .lower(*args)
            .compile(compiler_options={**REMAT_PASS_OFF, **(options or {})})
        )
    except Exception as e:
        refusal = hbm_refusal(e)
        assert refusal is not None, e
        return None, refusal
    m = compiled.memory_analysis()
    need = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    return need + m.temp_size_in_bytes + m.generated_code_size_in_bytes, None


def placed(args, devices, batch_spec=None, param_specs=None):
    """`args` (params, *batch) over a 1-D mesh "data": the batch split (or as
    `batch_spec` says), the params replicated (or as `param_specs` say)."""
    mesh = Mesh(np.array(devices), ("data",))

    def struct(s, spec):
        return jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(mesh, spec))

    params, *batch = args
    specs = param_specs or jax.tree.map(lambda _: P(), params)
    batch_spec = P("data") if batch_spec is None else batch_spec
    return (jax.tree.map(struct, params, specs), *(struct(s, batch_spec) for s in batch))


def wide_step(w, x):
    def loss(w):
        return jnp.mean(jnp.tanh(x @ w) ** 2)

    return w - 0.1 * jax.grad(loss)(w)


def wide_args(batch):
    """1 MiB per example: the boundary of a v5e chip's HBM near batch 16,000."""
    return (
        jax.ShapeDtypeStruct((256, 256), jnp.float32),
        jax.ShapeDtypeStruct((batch, 1024, 256), jnp.float32),
    )


def test_answer_compiles_in_the_chips_hbm_and_the_next_is_refused():
    target = get_target("v5e:1x1")
    result = find_max_batch(wide_step, wide_args, target="v5e:1x1", donate_argnums=0,
                            multiple_of=64)  # fmt: skip
    args = placed(wide_args(result.batch), target.devices())
    fits, _ = compile_at(wide_step, args)
    assert fits == result.peak_bytes <= result.budget_bytes == target.default_budget_bytes
    assert result.code_in_peak_bytes > 0
    _, refused = compile_at(wide_step, placed(wide_args(result.batch + 64), target.devices()))
    assert refused is not None and result.next_batch == result.batch + 64
    assert result.next_peak_bytes == refused.required_bytes
    assert result.xla_settings["remat_pass"] is False
    assert result.xla_settings["compiler_options"] == {}
    assert result.compiles <= 8, [p.batch for p in result.probes]


def test_a_budget_below_hbm_is_the_compilers_limit():
    """`budget_bytes` becomes xla_tpu_max_hbm_size_mib: the compiler fits into it."""
    target = get_target("v5e:1x1")
    result = find_max_batch(
        mlp_step, mlp_args, target=target, budget_bytes=2 * MIB, donate_argnums=0,
        max_batch=1 << 14,
    )  # fmt: skip
    options = {MAX_HBM_OPTION: 2}
    assert result.xla_settings["compiler_options"] == options
    fits, _ = compile_at(mlp_step, placed(mlp_args(result.batch), target.devices()), options)
    assert fits == result.peak_bytes <= result.budget_bytes == 2 * MIB
    nxt = placed(mlp_args(result.batch + 8), target.devices())
    assert compile_at(mlp_step, nxt, options)[1] is not None
    assert compile_at(mlp_step, nxt)[0] is not None, "fits the whole chip: the limit did it"
    assert "refused by the compiler" in result.render()


def test_a_tpu_answer_is_read_back_from_a_report_and_the_cache(tmp_path):
    """A TPU row's proof (compiled, next refused, code in the peak) checks out
    when read back; the GPU rules would refuse it, so a row that claims to be a
    GPU's, or a next candidate that was not refused, is refused. Every probe
    compiles in full here (placements read back: `test_tpu_verdicts.py`)."""
    in_full = dataclasses.replace(get_target("v5e:1x1"), stop_at_assignment=False)
    kwargs = dict(target=in_full, budget_bytes=2 * MIB, donate_argnums=0, max_batch=1 << 14)
    cache = ResultCache(tmp_path / "cache")
    result = find_max_batch(mlp_step, mlp_args, cache=cache, **kwargs)
    assert result.compiler_fits and result.exact
    hit = find_max_batch(mlp_step, mlp_args, cache=cache, **kwargs)
    assert hit.from_cache and (hit.batch, hit.peak_bytes) == (result.batch, result.peak_bytes)
    path = tmp_path / "tune.json"
    write_json([result], path)
    assert read_results(path) == (result,)
    data = json.loads(path.read_text())
    row = data["results"][0]
    for field, value, named in (
        ("compiler_fits", False, "required_bytes"),
        ("code_in_peak_bytes", 0, "code_in_peak_bytes"),
        ("next_batch", row["batch"] + 16, "next_batch"),
    ):
        path.write_text(json.dumps({**data, "results": [{**row, field: value}]}))
        with pytest.raises(TuneError, match=named):
            read_results(path)


def test_slice_data_parallel_through_the_command(user_dir, capsys):  # noqa: F811
    """`autotune --workload ... --target v5litepod-4`: a global batch over 4 chips."""
    out = user_dir / "tune.json"
    argv = ["--workload", "plain_mlp:workload", "--target", "v5litepod-4", "--budget", "1MB",
            "--max-batch", "65536", "--json", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "4 x TPU v5 lite chips, v5e:2x2" in printed and "global batch" in printed
    (row,) = json.loads(out.read_text())["results"]
    assert row["data_parallel_size"] == 4 and row["batch"] % 8 == 0
    import plain_mlp

    devices = get_target("v5litepod-4").devices()
    options = row["xla_settings"]["compiler_options"]
    assert options == {MAX_HBM_OPTION: 1}
    fits, _ = compile_at(plain_mlp.step, placed(plain_mlp.args_for_batch(row["batch"]), devices),
                         options)  # fmt: skip
    assert fits == row["peak_bytes"]
    nxt = placed(plain_mlp.args_for_batch(row["next_batch"]), devices)
    assert row["next_batch"] == row["batch"] + 8 and compile_at(plain_mlp.step, nxt, options)[1]
    refused = [p for p in row["probes"] if p["required_bytes"] is not None]
    assert refused and all(p["need_bytes"] == p["required_bytes"] for p in refused)


def probe(args_for_batch, batch):
    return Prober(mlp_step, args_for_batch, donate_argnums=0, compiler_options=REMAT_PASS_OFF)(
        batch
    )


def test_per_device_bytes_on_a_slice_dp_and_fsdp():
    """The layouts place each argument as placed by hand, on all 4 chips."""
    devices = get_target("v5litepod-4").devices()
    fsdp_specs = {"w1": P(None, "data"), "w2": P("data", None)}  # each's largest axis
    args = {}
    for layout, specs in (("dp", None), ("fsdp", fsdp_specs)):
        workload = lay_out(Workload(mlp_step, mlp_args, donate_argnums=0), devices, layout)
        args[layout] = probe(workload.args_for_batch, 64).argument_bytes
        by_hand = probe(lambda b, s=specs: placed(mlp_args(b), devices, param_specs=s), 64)
        assert args[layout] == by_hand.argument_bytes
    assert args["fsdp"] < args["dp"]  # TPU tiles pad small shards: no closed form


def test_a_users_own_shardings_over_the_slices_devices():
    """A 2x2 mesh of the slice's chips: batch over "data", w1 over "model"."""
    devices = np.array(get_target("v5e:2x2").devices()).reshape(2, 2)
    mesh = Mesh(devices, ("data", "model"))

    def args(batch):
        params, x, y = mlp_args(batch)
        specs = ({"w1": P(None, "model"), "w2": P()}, P("data", None), P("data"))
        return jax.tree.map(
            lambda s, spec: jax.ShapeDtypeStruct(
                s.shape, s.dtype, sharding=NamedSharding(mesh, spec)
            ),
            (params, x, y),
            specs,
        )

    result = find_max_batch(mlp_step, args, target="v5e:2x2", budget_bytes=MIB,
                            donate_argnums=0, data_parallel_size=2)  # fmt: skip
    assert result.data_parallel_size == 2 and result.per_device_batch == result.batch // 2
    options = result.xla_settings["compiler_options"]
    assert compile_at(mlp_step, args(result.batch), options)[0] == result.peak_bytes
    assert compile_at(mlp_step, args(result.next_batch), options)[1] is not None


def test_a_multi_host_slice_compiles_from_this_one_process():
    """v5litepod-16: 16 chips on 2 hosts (8 each, as Cloud TPU's v5e hosts hold)."""
    devices = get_target("v5litepod-16").devices()
    assert len(devices) == 16 and len({d.process_index for d in devices}) == 2
    workload = lay_out(Workload(mlp_step, mlp_args, donate_argnums=0), devices, "dp")
    laid = probe(workload.args_for_batch, 64)
    assert laid.argument_bytes == probe(lambda b: placed(mlp_args(b), devices), 64).argument_bytes


def test_described_gpus_and_tpus_compile_in_one_process():
    pytest.importorskip("jax_plugins.xla_cuda13", reason="needs the CUDA plugin ([deviceless])")
    for name, kind in (("h100-sxm-80gb", "NVIDIA H100"), ("v5e:1x1", "TPU v5 lite")):
        target = get_target(name)
        assert target.devices()[0].device_kind.startswith(kind)
        fits, _ = compile_at(mlp_step, placed(mlp_args(8), target.devices()))
        assert fits > 0


@pytest.mark.parametrize("name", sorted(GENERATIONS))
def test_the_hbm_table_is_libtpus(name):
    """One buffer of the table's HBM less 1 MiB compiles; of the table's HBM, is refused."""
    generation = GENERATIONS[name]
    one_chip = "1x1" if generation.dims == 2 else "1x1x1"
    devices = get_target(f"{name}:{one_chip}").devices()[:1]

    def one_buffer(size):
        args = placed(({}, jax.ShapeDtypeStruct((size,), jnp.int8)), devices, P())[1:]
        return compile_at(lambda x: x + 1, args)

    assert one_buffer(generation.hbm_bytes - MIB)[0] is not None
    assert one_buffer(generation.hbm_bytes)[1] is not None


def test_quiet_and_unlocked_without_jax_platforms():
    """A fresh process, no JAX_PLATFORMS, while this one holds libtpu: no
    libtpu warnings, no CUDA plugin traceback, no libtpu lock in the way."""
    get_target("v5e:1x1").devices()  # this process has loaded libtpu
    code = (
        "import autotune, jax, jax.numpy as jnp\n"
        "t = autotune.get_target('v5litepod-1')\n"
        "x = jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=t.sharding())\n"
        "jax.jit(lambda x: x @ x).lower(x).compile()\n"
        "print(t.devices()[0].device_kind, jax.devices()[0].platform)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", MULTIPLE_LOADS)}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "TPU v5 lite cpu"
    assert not run.stderr.strip(), run.stderr
