"""The peak breakdown: what is live at a compiled step's peak, from XLA's dump."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
import pytest
from steps import CountingStep, mlp_args, mlp_step, need_at

import autotune
from autotune import find_max_batch, peak_breakdown
from autotune._compile.dump import DumpTexts, compile_with_dump, parse_hlo, read_dump
from autotune._compile.prober import Prober
from autotune._compile.records import compiled_need
from autotune._compile.remat_pass import REMAT_PASS_OFF
from autotune._explain.peak import REST, explain_peak, module_of
from autotune._explain.table import render_breakdown

B, D, H, C = 64, 8, 512, 8
TX = optax.sgd(0.1, momentum=0.9)


def loss_fn(params, x, y):
    with jax.named_scope("hidden"):
        h = jnp.tanh(x @ params["w1"])
    with jax.named_scope("head"):
        logits = h @ params["w2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = TX.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def args_for_batch(batch):
    params = {
        "w1": jax.ShapeDtypeStruct((D, H), jnp.float32),
        "w2": jax.ShapeDtypeStruct((H, C), jnp.float32),
    }
    return (
        params,
        jax.eval_shape(TX.init, params),
        jax.ShapeDtypeStruct((batch, D), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.int32),
    )


PARAM_BYTES = (D * H + H * C) * 4
DONATED = autotune.Workload(step, args_for_batch, donate_argnums=(0, 1), label="mlp")


@pytest.fixture(scope="module")
def donated():
    return peak_breakdown(DONATED, B)


@pytest.fixture(scope="module")
def dump_texts():
    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(*args_for_batch(B))
    _, dump = compile_with_dump(lowered, REMAT_PASS_OFF)
    assert dump.texts is not None, dump.error
    return dump


def test_entries_sum_to_the_compiled_need(donated):
    jitted = jax.jit(step, donate_argnums=(0, 1))
    need = compiled_need(jitted.lower(*args_for_batch(B)).compile(compiler_options=REMAT_PASS_OFF))
    assert donated.unavailable == ""
    assert donated.peak_bytes == need
    assert sum(e.bytes for e in donated.entries) == need
    assert sum(donated.bytes_by_kind.values()) == need
    *listed, rest = donated.entries
    assert rest.kind == REST and all(e.kind != REST for e in listed)
    assert sum(e.bytes for e in listed) >= 0.95 * need
    assert [e.bytes for e in listed] == sorted((e.bytes for e in listed), reverse=True)


def test_kinds_known_by_hand(donated):
    kinds = donated.bytes_by_kind
    assert kinds["parameter"] == PARAM_BYTES  # donated: new values written over them
    assert kinds["optimizer_state"] == PARAM_BYTES  # momentum: one slot per parameter
    assert kinds["input_batch"] == B * D * 4 + B * 4
    # The backward of tanh needs h = tanh(x @ w1): it is live, saved by the
    # forward, while the backward computes the gradient of the same shape.
    saved = [e for e in donated.entries if e.kind == "activation"]
    assert any(e.shape == (B, H) and e.module == "hidden" for e in saved), saved
    for e in saved:
        assert "jvp(" in e.op_name and "transpose(" not in e.op_name
        assert e.source.endswith(f"{os.path.basename(__file__)}:{_line_of('jnp.tanh')}")
    grads = [e for e in donated.entries if e.kind == "gradient"]
    assert any(e.shape == (B, H) for e in grads), grads
    assert all("transpose(" in e.op_name for e in grads)
    assert donated.bytes_by_module["hidden"]["activation"] >= B * H * 4
    params = {e.op_name: e for e in donated.entries if e.kind == "parameter"}
    assert params["params['w1']"].shape == (D, H) and params["params['w1']"].bytes == D * H * 4


def _line_of(text):
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if text in line and "def" not in line)


def test_an_undonated_step_holds_its_parameters_twice(donated):
    kept = peak_breakdown(autotune.Workload(step, args_for_batch, label="mlp"), B)
    assert sum(e.bytes for e in kept.entries) == kept.peak_bytes
    # The new parameters and optimizer state are outputs of their own, at the
    # paths of the arguments they replace.
    assert kept.bytes_by_kind["parameter"] == 2 * PARAM_BYTES
    assert kept.bytes_by_kind["optimizer_state"] == 2 * PARAM_BYTES
    assert kept.peak_bytes > donated.peak_bytes


def test_arguments_the_step_does_not_use_are_matched_by_name():
    """JAX drops unused arguments from the program: each parameter is matched
    to its leaf by the argument name and path in its op name."""

    def uses_only_the_momentum(params, opt_state, x):
        return opt_state[0].trace["w"] * x.sum()

    def args(batch):
        params = {"w": jax.ShapeDtypeStruct((D, H), jnp.float32)}
        return (
            params,
            jax.eval_shape(TX.init, params),
            jax.ShapeDtypeStruct((batch, D), jnp.float32),
        )

    b = peak_breakdown(autotune.Workload(uses_only_the_momentum, args), B)
    assert b.unavailable == ""
    assert "parameter" not in b.bytes_by_kind  # params['w'] is not in the program
    assert b.bytes_by_kind["optimizer_state"] == D * H * 4
    (state,) = [e for e in b.entries if e.kind == "optimizer_state"]
    assert state.op_name == "opt_state[0].trace['w']"


def test_the_dump_changes_no_byte_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    lowered = jax.jit(mlp_step, donate_argnums=(0,)).lower(*mlp_args(24))
    compiled, dump = compile_with_dump(lowered, REMAT_PASS_OFF)
    assert dump.texts is not None and dump.error == ""
    assert compiled_need(compiled) == compiled_need(lowered.compile(REMAT_PASS_OFF))
    assert list(tmp_path.iterdir()) == []


def test_the_dump_changes_no_byte_for_a_described_h100():
    pytest.importorskip(
        "jax_plugins.xla_cuda13",
        reason="compiling for a described GPU needs the CUDA plugin (the [deviceless] extra)",
    )
    sharding = autotune.get_target("h100-sxm-80gb").sharding()
    args = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), args_for_batch(B)
    )
    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(*args)
    compiled, dump = compile_with_dump(lowered, REMAT_PASS_OFF)
    assert dump.error == "" and dump.texts is not None
    assert compiled_need(compiled) == compiled_need(lowered.compile(REMAT_PASS_OFF))


def test_why_reuses_the_search_compiles_and_changes_no_answer(tmp_path):
    budget = need_at(mlp_step, mlp_args, 40)
    plain, explained = CountingStep(mlp_step), CountingStep(mlp_step)
    kwargs = dict(budget_bytes=budget, multiple_of=8, max_batch=128)
    a = find_max_batch(plain, mlp_args, **kwargs)
    cache = autotune.ResultCache(tmp_path)
    b = find_max_batch(explained, mlp_args, why=True, cache=cache, **kwargs)
    assert a.peak_breakdown is None
    assert (b.batch, b.peak_bytes, b.compiles) == (a.batch, a.peak_bytes, a.compiles)
    assert explained.compiles == plain.compiles == a.compiles
    assert [p.need_bytes for p in b.probes] == [p.need_bytes for p in a.probes]
    assert b.peak_breakdown.obtained.endswith(f"the search's compile at batch {b.batch}")
    assert sum(e.bytes for e in b.peak_breakdown.entries) == b.peak_bytes

    # A cached answer has no compile to read: one more, at the answer.
    hit = find_max_batch(explained, mlp_args, why=True, cache=cache, **kwargs)
    assert hit.from_cache and explained.compiles == a.compiles + 1
    assert "made for the breakdown" in hit.peak_breakdown.obtained
    assert hit.peak_breakdown.entries == b.peak_breakdown.entries
    cached = json.loads(next(tmp_path.glob("*.json")).read_text())["result"]
    assert "peak_breakdown" not in cached  # the cache keeps answers, not explanations


def test_an_unreadable_dump_gives_a_reason_not_a_table(dump_texts):
    texts = dump_texts.texts
    arguments = _arguments()
    good = explain_peak(texts, _need(), arguments, dump_texts.out_paths, batch=B, obtained="")
    assert good.unavailable == ""
    cases = {
        "no 'BufferLiveRange:' section": DumpTexts(texts.hlo, texts.buffer_assignment, "x"),
        "lists no allocation": DumpTexts(texts.hlo, "BufferAssignment:\n", texts.live_range),
        "the optimized HLO has no instruction": DumpTexts(
            "", texts.buffer_assignment, texts.live_range
        ),
    }
    for reason, broken in cases.items():
        b = explain_peak(broken, _need(), arguments, (), batch=B, obtained="")
        assert reason in b.unavailable and b.entries == ()
        assert f"breakdown unavailable: {b.unavailable}" in render_breakdown(b)
    wrong_args = explain_peak(texts, _need(), arguments[2:], (), batch=B, obtained="")
    assert "matches no argument leaf" in wrong_args.unavailable
    wrong_need = explain_peak(texts, 2 * _need(), arguments, (), batch=B, obtained="")
    assert "add up to" in wrong_need.unavailable and wrong_need.entries == ()


def test_a_bad_batch_is_refused():
    with pytest.raises(autotune.TuneError, match=r"`batch` \(=0\) must be a positive integer"):
        peak_breakdown(DONATED, 0)


def test_a_missing_dump_is_reported(tmp_path):
    (tmp_path / "module_0001.jit_step.cpu_after_optimizations.txt").write_text("")
    with pytest.raises(Exception, match="buffer-assignment.txt"):
        read_dump(tmp_path)


def _arguments():
    from autotune._compile.arguments import argument_leaves

    return argument_leaves(args_for_batch(B), args_for_batch, B)


def _need():
    prober = Prober(step, args_for_batch, donate_argnums=(0, 1))
    return prober(B).need_bytes


@pytest.mark.parametrize(
    "op_name, stack, module",
    [
        ("jit(step)/transpose(jvp(CNN))/BatchNorm_0/mul", (), "CNN/BatchNorm_0"),
        ("jit(step)/transpose(jvp(stage2))/jvp(stage2)/checkpoint/conv1/select_n", (),
         "stage2/conv1"),
        ("jit(step)/jvp(fc1)/jit(relu)/max", (), "fc1"),
        ("jit(step)/transpose(jvp(head))/mul;jit(step)/transpose(jvp())/broadcast_in_dim", (),
         "head"),
        ("jit(step)/jvp()/conv_general_dilated",
         ("step", "loss_fn", "Net.__call__", "Conv.__call__"), "Net/Conv"),
        ("jit(step)/jvp()/jit(relu)/max", ("loss_fn", "Net.__call__", "relu"), "Net"),
        ("jit(step)/add", ("step", "apply_updates", "apply_updates.<locals>.<lambda>"), ""),
        ("params['w1']", (), ""),
    ],
)  # fmt: skip
def test_module_paths(op_name, stack, module):
    assert module_of(op_name, stack) == module


SHIFTED_FRAMES = """HloModule m, entry_computation_layout={(f32[2]{0})->f32[2]{0}}

FileNames
1 "/home/u/train.py"
2 "/venv/lib/python3.11/site-packages/flax/nnx/nn/linear.py"

FunctionNames
1 "step"
2 "Net.__call__"
3 "Linear.__call__"

FileLocations
1 {file_name_id=1 function_name_id=1 line=10 end_line=10 column=1 end_column=2}
2 {file_name_id=1 function_name_id=2 line=20 end_line=20 column=1 end_column=2}
3 {file_name_id=2 function_name_id=3 line=30 end_line=30 column=1 end_column=2}

StackFrames
1 {file_location_id=1 parent_frame_id=1}
2 {file_location_id=2 parent_frame_id=2}
3 {file_location_id=3 parent_frame_id=3}


ENTRY %main (p: f32[2]) -> f32[2] {
  %p = f32[2]{0} parameter(0), metadata={op_name="params[\\'w\\']"}
  ROOT %t = f32[2]{0} tanh(%p), metadata={op_name="jit(step)/jvp()/tanh" stack_frame_id=3}
}
"""


FUSED = """HloModule m, entry_computation_layout={(f32[2]{0})->f32[2]{0}}

%fused_max (param_0: f32[2]) -> f32[2] {
  %param_0 = f32[2]{0} parameter(0)
  ROOT %m = f32[2]{0} maximum(%param_0, %param_0), metadata={op_name="jit(s)/jvp(stage1)/pool/max"}
}

ENTRY %main (p: f32[2]) -> f32[2] {
  %p = f32[2]{0} parameter(0), metadata={op_name="x"}
  %fusion = f32[2]{0} fusion(%p), kind=kLoop, calls=%fused_max, metadata={scheduling_name="fusion"}
  ROOT %copy = f32[2]{0} copy(%fusion), metadata={scheduling_name="copy"}
}
"""


def test_ops_xla_made_take_the_name_of_what_they_fuse_or_copy():
    hlo = parse_hlo(FUSED)
    assert hlo.instructions["fusion"].op_name == ""
    assert hlo.named("fusion").op_name == "jit(s)/jvp(stage1)/pool/max"
    assert hlo.named("fusion", fusions=False).op_name == ""  # a name, not a phase
    assert hlo.named("copy").op_name == "jit(s)/jvp(stage1)/pool/max"
    assert hlo.named("p").op_name == "x"


def test_stack_frames_name_the_users_line_and_modules():
    hlo = parse_hlo(SHIFTED_FRAMES)
    assert hlo.instructions["p"].op_name == "params['w']" and hlo.instructions["p"].parameter == 0
    t = hlo.instructions["t"]
    assert t.stack == ("step", "Net.__call__", "Linear.__call__")
    assert t.source == "/home/u/train.py:20"  # the innermost frame outside installed packages
    assert module_of(t.op_name, t.stack) == "Net/Linear"
    assert hlo.root_operands == ("t",)


def test_argument_kinds_of_user_steps():
    import sys
    from pathlib import Path

    from autotune._compile.arguments import argument_leaves

    sys.path.insert(0, str(Path(__file__).parent / "user_steps"))
    try:
        import linen_cnn
        import nnx_cnn
    finally:
        sys.path.pop(0)
    leaves = argument_leaves(nnx_cnn.args_for_batch(4), nnx_cnn.args_for_batch, 4)
    kinds = {leaf.path: leaf.kind for leaf in leaves}
    assert kinds["[0][0]['conv']['kernel'].value"] == "parameter"
    assert kinds["[0][0]['bn']['mean'].value"] == "parameter"  # batch statistics
    assert kinds["[0][1]['opt_state'][0]['mu']['conv']['kernel'].value"] == "optimizer_state"
    assert kinds["[0][1]['step'].value"] == "optimizer_state"  # an nnx.OptState
    assert kinds["[1]"] == kinds["[2]"] == "input_batch"
    _, linen_args = linen_cnn.make()
    leaves = argument_leaves(linen_args(4), linen_args, 4)
    # params, batch_stats, then the momentum (an optax TraceState) of each param
    assert [leaf.kind for leaf in leaves].count("parameter") == 6 + 2
    traces = [leaf.path for leaf in leaves if leaf.kind == "optimizer_state"]
    assert len(traces) == 6 and all(path.startswith("[2][0].trace[") for path in traces)
    assert leaves[-2].kind == leaves[-1].kind == "input_batch"
    assert sum(leaf.nbytes for leaf in leaves) == sum(
        x.size * x.dtype.itemsize for x in jax.tree.leaves(linen_args(4))
    )


PERSISTENT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import jax
    jax.config.update("jax_compilation_cache_dir", sys.argv[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    sys.path.insert(0, "tests")
    from steps import mlp_args, mlp_step, need_at
    import autotune

    def entries():
        return sorted(p.name for p in Path(sys.argv[1]).iterdir() if "mlp_step" in p.name)

    def tune():
        return autotune.find_max_batch(mlp_step, mlp_args, donate_argnums=(0,), why=True,
                                       budget_bytes=need_at(mlp_step, mlp_args, 32),
                                       multiple_of=8, max_batch=64)

    first = tune()
    before = entries()
    need_at(mlp_step, mlp_args, first.batch)  # a plain compile of the answer
    print(entries() == before and len(before) > 0)
    # The dump options miss JAX's in-memory cache: these compiles come from
    # the persistent one, which writes no dump.
    second = tune()
    for b in (first.peak_breakdown, second.peak_breakdown):
        print(b.unavailable or "ok", len(b.entries))
""")


def test_the_dump_survives_jaxs_persistent_compilation_cache(tmp_path):
    """The dump options leave the cache key alone: a --why search stores the
    compile a training job finds, and a second one, served from that cache,
    still gets its dump (compiled once more under a key of its own)."""
    done = subprocess.run(
        [sys.executable, "-c", PERSISTENT, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    hit, first, second = done.stdout.strip().split("\n")
    assert hit == "True"  # the plain compile of the answer found the --why search's
    assert first.startswith("ok ") and second == first, done.stdout
