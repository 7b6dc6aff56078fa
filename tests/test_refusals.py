"""What is refused, and how: bad input at the API boundary is one `TuneError`
naming the argument, its value and the rule (numpy integers are counts like any
other); the command checks its outputs and its environment before the first
compile and says what is wrong on one line, exit status 2."""

import json
import os
import re
import sys

import numpy as np
import pytest
from steps import mlp_args, mlp_step, need_at

from autotune import TuneError, Workload, find_max_batch, get_target
from autotune._command.preflight import check_xla_flags
from autotune._compile.prober import Prober
from autotune.cli import main

SEARCH = dict(multiple_of=8, max_batch=256)


@pytest.fixture(scope="module")
def budget():
    return need_at(mlp_step, mlp_args, 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target=42), "`target` (=42) must be 'local', 'auto', a described GPU's name"),
        (dict(target=None), "`target` (=None) must be"),
        (dict(estimate="big"), "`estimate` (='big') must be an autotune.Estimate"),
        (dict(cache="dir"), "`cache` (='dir') must be an autotune.ResultCache or None"),
        (dict(on_probe=42), "`on_probe` (=42) must be callable or None"),
        (dict(compiler_options=42), "`compiler_options` (=42) must be a mapping or None"),
        (dict(xla_remat_pass="yes"), "`xla_remat_pass` (='yes') must be True or False"),
        (dict(label=42), "`label` (=42) must be a string"),
        (dict(layout="tp"), "`layout` (='tp') must be one of dp, fsdp"),
        (
            dict(budget_bytes=1.5e6),
            "`budget_bytes` (=1500000.0) must be an integer number of bytes",
        ),
        (dict(reserve_bytes=-1), "`reserve_bytes` (=-1) must be zero or positive"),
        (dict(multiple_of=8.0), "`multiple_of` (=8.0) must be a positive integer"),
        (dict(max_batch=True), "`max_batch` (=True) must be a positive integer"),
        (dict(data_parallel_size=0), "`data_parallel_size` (=0) must be a positive integer"),
        (dict(donate_argnums="0"), "`donate_argnums` (='0') must be a non-negative integer"),
    ],
)
def test_a_bad_argument_is_one_tune_error(budget, kwargs, message):
    with pytest.raises(TuneError, match=re.escape(message)):
        find_max_batch(mlp_step, mlp_args, **{"budget_bytes": budget, **SEARCH, **kwargs})


@pytest.mark.parametrize("step, args", [(42, mlp_args), (mlp_step, 42), (mlp_step, None)])
def test_a_step_or_argument_builder_that_is_not_one(budget, step, args):
    with pytest.raises(TuneError, match=r"`(step|args_for_batch)` \(="):
        find_max_batch(step, args, budget_bytes=budget)


def test_numpy_integers_are_counts(budget):
    result = find_max_batch(
        mlp_step,
        mlp_args,
        budget_bytes=np.int64(budget),
        reserve_bytes=np.int32(0),
        multiple_of=np.int64(8),
        max_batch=np.uint16(256),
        data_parallel_size=np.int8(1),
        donate_argnums=np.int64(0),
    )
    assert result.batch == 64 and result.budget_bytes == budget
    for value in (result.multiple_of, result.max_batch, result.data_parallel_size):
        assert type(value) is int
    json.dumps(result.to_dict())  # the report can hold it
    assert Workload(mlp_step, mlp_args, donate_argnums=np.int64(0)).donate_argnums == (0,)
    target = get_target("h100-sxm-80gb", devices=np.int64(2), mem_fraction=np.float32(0.5))
    assert (target.device_count, target.budget.fraction) == (2, 0.5)
    assert type(target.device_count) is int


def test_the_layout_helpers_take_numpy_counts_and_refuse_others():
    from autotune import agree_across_hosts
    from autotune._workloads.layout import accumulation_plan

    assert agree_across_hosts(np.int64(64)) == 64
    assert accumulation_plan(np.int64(256), np.int32(64), np.int8(1)) == accumulation_plan(
        256, 64, 1
    )
    with pytest.raises(TuneError, match=re.escape("`batch` (='64') must be a positive integer")):
        agree_across_hosts("64")


# The command, on a tiny VGG; see tests/test_cli.py.
TINY = ["--model", "vgg-tiny", "--image-size", "16", "--classes", "10", "--target", "local"]
TINY += ["--budget", "4MB", "--remat", "none", "--quiet"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def no_compile(monkeypatch):
    """The refusal must come before the first compile."""

    def compile_(self, batch):
        raise AssertionError(f"compiled batch {batch} before refusing")

    monkeypatch.setattr(Prober, "__call__", compile_)


def refused(args, capsys):
    """The one line the command printed, after exiting with status 2."""
    assert main([*TINY, *args]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("autotune: error: ")]
    assert "Traceback" not in err and errors == err.splitlines()[-1:], err
    return errors[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget", "0.5"], "`--budget` (='0.5') is 0.5 B, less than one byte"),
        (["--remat", ","], "`--remat` (=',') must name at least one remat choice"),
        (["--target", "h100-sxm-80gb", "--verify"], "`--target` (='h100-sxm-80gb') is a described"),
        (["--json", "/dev/null"], "`--json` (='/dev/null') exists and is not a regular file"),
    ],
)
def test_the_command_refuses_on_one_line(args, message, capsys, no_compile):
    assert message in refused(args, capsys)


def test_json_to_a_directory(tmp_path, capsys, no_compile):
    err = refused(["--json", str(tmp_path)], capsys)
    assert f"`--json` (={str(tmp_path)!r}) is a directory" in err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, where nothing is created")
def test_json_to_a_read_only_place(capsys, no_compile):
    err = refused(["--json", "/proc/tune.json"], capsys)
    assert "`--json` (='/proc/tune.json'): a file cannot be written in '/proc'" in err


def test_json_and_plot_to_the_same_file(tmp_path, capsys, no_compile):
    same = str(tmp_path / "out")
    assert "name the same path" in refused(["--json", same, "--plot", same], capsys)


def test_compilation_cache_dir_that_is_a_file(tmp_path, capsys, no_compile):
    file = tmp_path / "a file"
    file.write_text("")
    err = refused(["--compilation-cache-dir", str(file)], capsys)
    assert f"`--compilation-cache-dir` (={str(file)!r}) exists and is not a directory" in err


def test_plot_without_matplotlib(tmp_path, capsys, monkeypatch, no_compile):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    err = refused(["--plot", str(tmp_path / "need.png")], capsys)
    assert "`--plot` needs matplotlib" in err


def test_an_unwritable_cache_warns_and_the_answer_is_printed_and_written(tmp_path, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    out = tmp_path / "tune.json"
    with pytest.warns(RuntimeWarning, match="cannot be written") as caught:
        args = ["--cache-dir", str(blocker), "--json", str(out), "--max-batch", "8"]
        assert main([*TINY, *args]) == 0
    assert len(caught) == 1
    batch = json.loads(out.read_text())["results"][0]["batch"]
    assert f"max batch       {batch}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, reason",
    [
        ("--bogus", "Unknown flag in XLA_FLAGS: --bogus"),
        ("garbage", 'Could not open file "garbage"'),
        ("--xla_cpu_enable_fast_math=maybe", "Couldn't interpret value maybe"),
    ],
)
def test_xla_flags_that_xla_refuses(flags, reason, capsys, monkeypatch, no_compile):
    monkeypatch.setenv("XLA_FLAGS", flags)
    err = refused([], capsys)
    assert f"`XLA_FLAGS` (={flags!r}) is refused by XLA: {reason}" in err


def test_xla_flags_that_xla_takes_pass(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false --xla_gpu_autotune_level=0")
    check_xla_flags()


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("XLA_PYTHON_CLIENT_MEM_FRACTION", "abc", "(='abc') must be a number"),
        ("XLA_PYTHON_CLIENT_MEM_FRACTION", "7", "(=7.0) must be a number in (0, 1]"),
        ("XLA_PYTHON_CLIENT_ALLOCATOR", "weird", "XLA_PYTHON_CLIENT_ALLOCATOR env var must be"),
    ],
)
def test_gpu_client_environment_on_a_local_target(
    name, value, message, capsys, monkeypatch, no_compile
):
    monkeypatch.delenv("XLA_CLIENT_MEM_FRACTION", raising=False)
    monkeypatch.setenv(name, value)
    err = refused([], capsys)
    assert name in err and message in err


def test_every_test_the_refusal_table_names_exists():
    """docs/refusals.md, "What it refuses": each row names tests that exist."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "docs", "refusals.md")) as f:
        section = f.read().split("# What it refuses", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`test_" in line]
    assert len(rows) >= 14
    for row in rows:
        named, file = [], None
        for path, name, alone in re.findall(r"(test_\w+\.py)(?:::(test_\w+))?|`(test_\w+)`", row):
            file = path or file
            if name or alone:
                named.append((file, name or alone))
        assert named, row
        for file, name in named:
            with open(os.path.join(root, "tests", file)) as f:
                assert f"def {name}(" in f.read(), f"{file} has no {name}"
