"""Every target side by side: `--target a,b,c` and `autotune.compare_targets`
answer one row per target and choice, each proven, in one table with an upper
bound on samples/s from each target's peak FLOP/s; bad lists are refused."""

import dataclasses
import json
import os
import re
import shutil
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from autotune import (
    ResultCache,
    TuneError,
    compare_targets,
    find_max_batch,
    get_target,
    load_batch_size,
    load_workloads,
    read_results,
    write_json,
)
from autotune._compile.compute_dtype import program_dtypes
from autotune._results.bound import throughput_bound
from autotune._targets.gpu_specs import GPU_SPECS
from autotune._targets.peak_flops import PeakFlops
from autotune._targets.tpu_specs import GENERATIONS
from autotune.cli import main

TARGETS = ("h100-sxm-80gb", "a100-40gb", "v5e:1x1")
BUDGET = 1 << 20  # per device: the TPU compiler takes whole MiB
STEP = 256  # candidates are its multiples: few compiles each
USER_STEPS = Path(__file__).parent / "user_steps"
F32 = jnp.float32


def _plugins():
    for name in TARGETS:
        try:
            get_target(name).devices()
        except Exception as e:  # a described target's plugin is missing
            pytest.skip(f"{name} needs its compiler plugin here: {e}")


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's directory holding plain_mlp.py, made current, with a cache."""
    where = tmp_path_factory.mktemp("user")
    shutil.copy(USER_STEPS / "plain_mlp.py", where / "plain_mlp.py")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)
        mp.syspath_prepend(str(where))
        mp.setenv("XDG_CACHE_HOME", str(where / "xdg"))
        yield where


@pytest.fixture(scope="module")
def tuned(user):
    """The library's comparison of the plain-JAX MLP on the three targets."""
    _plugins()
    (workload,) = load_workloads("plain_mlp:workload")
    cache = ResultCache(user / "cache")
    return compare_targets(workload, TARGETS, budget_bytes=BUDGET, multiple_of=STEP, cache=cache)


def _argv(user, *more):
    cache = str(user / "cache")
    return ["--workload", "plain_mlp:workload", "--budget", str(BUDGET),
            "--multiple-of", str(STEP), "--cache-dir", cache, "--quiet", *more]  # fmt: skip


def test_three_targets_answer_three_rows_each_proven(tuned):
    assert [r.target for r in tuned.results] == list(TARGETS)
    for r in tuned.results:
        probes = {p.batch: p for p in r.probes}
        assert r.exact and r.budget_bytes == BUDGET and r.peak_bytes <= BUDGET
        assert r.next_batch == r.batch + STEP
        nxt = probes[r.next_batch]
        assert nxt.refused if r.compiler_fits else nxt.need_bytes > BUDGET
    gpu, tpu = tuned.on("a100-40gb")[0], tuned.on("v5e:1x1")[0]
    assert not gpu.compiler_fits and tpu.compiler_fits


def test_the_command_prints_one_table_and_answers_as_the_library(user, tuned, capsys):
    out = user / "targets.json"
    assert main(_argv(user, "--target", ",".join(TARGETS), "--json", str(out))) == 0
    printed = capsys.readouterr().out
    assert printed.count("samples/s bound") == 2  # the header, and the rule below the table
    table = printed.strip().split("\n\n")[0].splitlines()
    assert table[0].split()[:4] == ["target", "choice", "max", "batch"]
    rows = [line.split() for line in table[2:5]]
    assert [row[0] for row in rows] == list(TARGETS)
    assert "an upper bound, not a measurement" in printed
    data = json.loads(out.read_text())
    assert "recommendation" not in data  # no one row answers for several targets
    for row, lib in zip(data["results"], tuned.results):
        # The command's question is the library's: its answer comes from the cache.
        assert row["target"] == lib.target and row["from_cache"] is True
        assert (row["batch"], row["peak_bytes"]) == (lib.batch, lib.peak_bytes)
        assert row["throughput_bound"]["samples_per_second"] == pytest.approx(
            tuned.rows[tuned.results.index(lib)].bound.samples_per_second
        )
    for row, line in zip(data["results"], rows):
        assert line[2] == str(row["batch"]) and line[3:6] == [str(row["batch"]), "x", "1"]
    assert len(read_results(out)) == 3
    for name in TARGETS:
        assert load_batch_size(out, "workload", target=name) == tuned.on(name)[0].batch
    with pytest.raises(TuneError, match="names 3 rows.*name its `target`"):
        load_batch_size(out, "workload")


def test_one_target_is_answered_as_today(user, tuned, capsys):
    assert main(_argv(user, "--target", "a100-40gb")) == 0
    printed = capsys.readouterr().out
    assert "samples/s bound" not in printed and "recommended:" in printed
    assert find_max_batch(
        load_workloads("plain_mlp:workload")[0], target="a100-40gb", budget_bytes=BUDGET,
        multiple_of=STEP, cache=ResultCache(user / "cache"),
    ).batch == tuned.on("a100-40gb")[0].batch  # fmt: skip


def test_the_bound_is_the_spec_figure_times_devices_over_flops(tuned):
    a100, h100, v5e = (tuned.rows[i] for i in (1, 0, 2))
    # The datasheets' figures: A100 TF32 156 TFLOPS dense; H100 SXM 989 with sparsity.
    assert GPU_SPECS["a100-40gb"].peak_flops.float32 == 156e12
    assert GPU_SPECS["h100-sxm-80gb"].peak_flops.bfloat16 == 1979e12 / 2
    assert GENERATIONS["v5e"].peak_flops.bfloat16 == 197e12
    for row, figure in ((a100, 156e12), (h100, 494.5e12), (v5e, 197e12)):
        assert row.bound.dtypes == ("float32",) and row.bound.peak_flops_per_second == figure
        flops = row.result.flops_per_example
        assert flops > 0
        assert row.bound.samples_per_second == pytest.approx(figure * 1 / flops, rel=1e-12)
    sliced = dataclasses.replace(a100.result, data_parallel_size=8, batch=8 * a100.result.batch)
    peak = GPU_SPECS["a100-40gb"].peak_flops
    bound = throughput_bound(sliced, peak, ("float32",))
    per_example = a100.result.flops_per_example
    assert bound.samples_per_second == pytest.approx(156e12 * 8 / per_example, rel=1e-12)
    # Several dtypes: the fastest figure, so that every FLOP is bounded.
    mixed = throughput_bound(a100.result, peak, ("bfloat16", "float32"))
    assert mixed.peak_flops_per_second == 312e12


def test_no_figure_no_bound_with_the_reason(tuned):
    tpu = tuned.rows[2].result
    half = throughput_bound(tpu, get_target("v5e:1x1").peak_flops, ("float16",))
    assert half.samples_per_second is None and "no float16 figure" in half.reason
    unknown = throughput_bound(tpu, get_target("v5e:1x1").peak_flops, ())
    assert unknown.samples_per_second is None and "dtype is unknown" in unknown.reason
    nothing = throughput_bound(tpu, None, ("float32",))
    assert nothing.samples_per_second is None and "no published peak FLOP/s" in nothing.reason
    blank = PeakFlops(float32=None, bfloat16=1.0, float16=None, source="a page")
    assert "a page gives no float32 figure" in throughput_bound(tpu, blank, ("float32",)).reason
    shown = dataclasses.replace(tuned, rows=(dataclasses.replace(tuned.rows[2], bound=half),))
    assert "no bound for v5e:1x1 workload: " in shown.render()


def test_a_tpu7x_device_has_half_its_chips_figure():
    assert get_target("tpu7x-2").peak_flops.bfloat16 == 2307e12 / 2
    assert get_target("v5p-8").peak_flops.bfloat16 == 459e12  # megacore: a chip per device


def test_the_compute_dtype_is_that_of_the_dots_and_convolutions():
    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", preferred_element_type=jnp.float32
        )

    def lowered(f, *shapes):
        return jax.jit(f).lower(*(jax.ShapeDtypeStruct(s, d) for s, d in shapes)).as_text()

    bf16 = jnp.bfloat16
    assert program_dtypes(lowered(conv, ((2, 3, 8, 8), bf16), ((4, 3, 3, 3), bf16))) == (
        "bfloat16",
    )
    mixed = lowered(
        lambda a, b, c: (a @ a, b @ b), ((4, 4), bf16), ((4, 4), jnp.float32), ((1,), bf16)
    )
    assert program_dtypes(mixed) == ("bfloat16", "float32")
    assert program_dtypes(lowered(lambda a: jnp.tanh(a).sum(), ((4, 4), jnp.float32))) == ()


def test_rows_without_a_bound_are_read_and_a_wrong_bound_is_refused(tuned, tmp_path):
    path = tmp_path / "tune.json"
    write_json(tuned.results, path)  # rows of one target at a time carry no bound
    assert len(read_results(path)) == 3
    write_json(tuned.results, path, bounds=tuned.bounds)
    data = json.loads(path.read_text())
    data["results"][1]["throughput_bound"]["samples_per_second"] *= 2
    path.write_text(json.dumps(data))
    with pytest.raises(TuneError, match=r"results\[1\].throughput_bound.samples_per_second"):
        read_results(path)
    with pytest.raises(TuneError, match="`bounds` holds 1 bounds for 3 results"):
        write_json(tuned.results, path, bounds=tuned.bounds[:1])


def test_the_plot_draws_a_panel_per_target(user, tuned, tmp_path):
    pytest.importorskip("matplotlib")
    from autotune._results.plot import plot_comparison

    png = tmp_path / "targets.png"
    plot_comparison(tuned, png)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    "targets,said",
    [
        ("", "`--target` (='') must name at least one target"),
        (",", "`--target` (=',') must name at least one target"),
        ("a100-40gb,,v5e:1x1", "`--target` (='a100-40gb,,v5e:1x1') has an empty name"),
        ("a100-40gb,a100-40gb", "names one target twice: 'a100-40gb' and 'a100-40gb'"),
        ("v5e:1x1,a100-40gb,v5litepod-1", "names one target twice: 'v5e:1x1' and 'v5litepod-1'"),
        ("a100-40gb,h100x", "`target` (='h100x') is not a known target"),
    ],
)
def test_a_bad_list_is_one_line_naming_it(targets, said, user, capsys):
    assert main(_argv(user, "--target", targets)) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    "flags,said",
    [
        (["--verify"], "lists several targets, and --verify, --verify-boundary and --time"),
        (["--time"], "lists several targets, and --verify, --verify-boundary and --time"),
        (["--mesh", "2"], "`--mesh` (=2) with a list of targets"),
        (["--mem-fraction", "0.5"], "`mem_fraction` (=0.5) sets a GPU allocator's share"),
    ],
)
def test_what_cannot_apply_to_a_list_is_refused(flags, said, user, capsys):
    assert main(_argv(user, "--target", "a100-40gb,v5e:1x1", *flags)) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1, err


def test_the_library_refuses_a_bad_list_too():
    workload = None  # refused for its targets before it is looked at
    with pytest.raises(TuneError, match=r"`targets` \(=\[\]\) must name at least one target"):
        compare_targets(workload, [])
    with pytest.raises(TuneError, match="must be a sequence of targets"):
        compare_targets(workload, "a100-40gb,v5e:1x1")
    with pytest.raises(TuneError, match="'v5e:1x1' and 'v5e-1' are both"):
        compare_targets(workload, ["v5e:1x1", "v5e-1"])


def test_the_docs_show_the_figures_the_specs_hold():
    page = (Path(__file__).parents[1] / "docs" / "targets.md").read_text()
    row = r"(?m)^\| (`[\w*-]+`(?:, `[\w*-]+`)*) \| ([\d.]+) \| ([\d.]+) \| ([\d.-]+) \|"
    rows = re.findall(row, page)
    one_of = {"v4": "v4-8", "v5litepod": "v5litepod-1", "v5p": "v5p-8", "v6e": "v6e-1"}
    one_of["tpu7x"] = "tpu7x-2"
    shown = set()
    for names, *cells in rows:
        for name in re.findall(r"`([\w*-]+)`", names):
            name = one_of.get(name.removesuffix("-*"), name)
            peak = get_target(name).peak_flops
            held = [peak.of(d) for d in ("float32", "bfloat16", "float16")]
            assert held == [None if c == "-" else float(c) * 1e12 for c in cells], name
            shown.add(name)
    assert shown >= {*GPU_SPECS, *one_of.values()}


def test_several_choices_give_a_row_per_target_and_choice(user, tuned):
    (workload,) = load_workloads("plain_mlp:workload")
    both = compare_targets(
        {"a": workload, "b": workload}, ["a100-40gb", "v5e:1x1"], budget_bytes=BUDGET,
        multiple_of=STEP, cache=ResultCache(user / "cache"),
    )  # fmt: skip
    assert [(r.target, r.label) for r in both.results] == [
        ("a100-40gb", "a"), ("a100-40gb", "b"), ("v5e:1x1", "a"), ("v5e:1x1", "b"),
    ]  # fmt: skip
    assert all(r.from_cache for r in both.results)  # each target's answers are its own
    assert [r.batch for r in both.on("v5e:1x1")] == [tuned.on("v5e:1x1")[0].batch] * 2
    assert both.render().count("\n  a100-40gb: NVIDIA A100 datasheet") == 1


@pytest.mark.parametrize("in_full", [False, True])
def test_ctrl_c_reports_the_targets_tuned_before_it(user, capsys, monkeypatch, in_full):
    """Ctrl-C at the TPU's second probe: the GPU's row stands; the TPU's is
    there, marked partial, where a probe compiled in full proved a batch. A
    placement proves none (its code was not generated), so stopped probes
    leave the TPU no row."""
    from autotune._command import targets as command

    announced, shown = [], []

    def ctrl_c_on_the_second_target(probe):
        shown.append(len(announced))
        if shown.count(2) == 2:
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))  # the handler raises here

    monkeypatch.setattr(command, "_announce", announced.append)
    monkeypatch.setattr(command, "progress", ctrl_c_on_the_second_target)
    out = user / "partial.json"
    argv = _argv(user, "--target", "a100-40gb,v5e:1x1", "--no-cache", "--json", str(out))
    argv += ["--no-stop-at-assignment"] * in_full
    assert main([a for a in argv if a != "--quiet"]) == 130
    captured = capsys.readouterr()
    assert "INTERRUPTED" in captured.err
    first, *rest = json.loads(out.read_text())["results"]
    assert (first["target"], first["interrupted"]) == ("a100-40gb", False)
    assert any(p["stopped"] for p in first["probes"]) is not in_full
    if not in_full:
        assert rest == []
        return
    (second,) = rest
    assert (second["target"], second["interrupted"], second["compiles"]) == ("v5e:1x1", True, 2)
    assert captured.out.strip().splitlines()[3].split()[:3] == [
        "v5e:1x1",
        "workload",
        f"{second['batch']}*",
    ]
