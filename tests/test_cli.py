"""The `autotune` command as a user runs it."""

import json
import os
import re
import signal

import matplotlib.image
import pytest

from autotune import load_batch_size
from autotune.cli import main

TINY = [
    "--model",
    "vgg-tiny",
    "--image-size",
    "16",
    "--classes",
    "10",
    "--target",
    "local",
    "--budget",
    "4MB",
    "--quiet",
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_one_row_per_remat_choice_and_a_json_report(tmp_path, capsys):
    out, png = tmp_path / "tune.json", tmp_path / "need.png"
    assert (
        main([*TINY, "--remat", "none,nothing_saveable", "--json", str(out), "--plot", str(png)])
        == 0
    )
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 100 and image.shape[1] > 100
    printed = capsys.readouterr().out
    assert "vgg-tiny remat=none " in printed and "vgg-tiny remat=nothing_saveable" in printed
    report = json.loads(out.read_text())
    rows = report["results"]
    assert report["recommendation"]["label"] in [r["label"] for r in rows]
    assert [r["label"] for r in rows] == ["vgg-tiny remat=none", "vgg-tiny remat=nothing_saveable"]
    none, remat = rows
    assert remat["flops_per_example"] > none["flops_per_example"] > 0
    for row in rows:
        assert row["peak_bytes"] <= row["budget"]["bytes"] < row["next_peak_bytes"]
        assert load_batch_size(out, row["label"]) == row["batch"]


def test_second_run_comes_from_the_cache(capsys):
    assert main([*TINY, "--remat", "none"]) == 0
    capsys.readouterr()
    assert main([*TINY, "--remat", "none"]) == 0
    out = capsys.readouterr().out
    assert "from the cache" in out and "(cached)" in out


def test_explain_prints_the_seed_table_beside_xla(capsys):
    args = [
        "--model",
        "vgg11",
        "--image-size",
        "32",
        "--classes",
        "10",
        "--target",
        "local",
        "--budget",
        "1GB",
        "--remat",
        "none",
        "--quiet",
        "--explain",
        "--multiple-of",
        "64",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "CONV3-64: [32x32x64]  memory: 32*32*64=66K" in printed
    assert "temporaries" in printed and "the seed's estimate" in printed


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "vgg17"], "`name` (='vgg17') must be one of"),
        (["--target", "b200-192gb"], "b200-192gb"),
        (["--optimizer", "lion"], "`optimizer` (='lion') must be one of"),
        (["--dtype", "float8"], "float8"),
        (["--remat", "sometimes"], "sometimes"),
        (["--budget=-3GB"], "`--budget` (='-3GB')"),
        (["--budget", "0"], "`budget_bytes` (=0) must be positive"),
        (["--budget", "lots"], "`--budget` (='lots') must be a byte count"),
        (["--reserve", "5MB"], "`reserve_bytes` (=5,242,880) must be below"),
        (["--reserve=-1MB"], "`--reserve` (='-1MB')"),
        (["--mesh", "2", "--verify"], "`--mesh` (=2) with --verify"),
        (["--budget", "1KB"], "smaller than the step's arguments alone"),
        (["--image-size", "18"], "`image_size` (=18)"),
        (["--multiple-of", "0"], "`multiple_of` (=0) must be a positive integer"),
        (["--max-batch", "4", "--multiple-of", "8"], "`max_batch` (=4) must be at least"),
        (["--json", "/nonexistent/dir/out.json"], "`--json` (='/nonexistent/dir/out.json')"),
        (["--plot", "/nonexistent/need.png"], "`--plot` (='/nonexistent/need.png')"),
        (["--xla-option", "triton=false"], "`--xla-option` (='triton=false') must be NAME=VALUE"),
        (["--layout", "zz"], "`--layout` (='zz') must be one of dp, fsdp"),
        (["--mem-fraction", "0"], "`--mem-fraction` (=0.0) must be a number in (0, 1]"),
        (["--mem-fraction", "2"], "`--mem-fraction` (=2.0) must be a number in (0, 1]"),
        (["--mem-fraction", "7"], "`--mem-fraction` (=7.0) must be a number in (0, 1]"),
        (["--mem-fraction", "-0.5"], "`--mem-fraction` (=-0.5) must be a number in (0, 1]"),
        (["--mem-fraction", "nan"], "`--mem-fraction` (=nan) must be a number in (0, 1]"),
        (["--verify-timeout", "-5"], "`--verify-timeout` (=-5.0) must be a positive number"),
        (["--verify-timeout", "-1"], "`--verify-timeout` (=-1.0) must be a positive number"),
        (["--verify-timeout", "0"], "`--verify-timeout` (=0.0) must be a positive number"),
        (["--verify-timeout", "inf"], "`--verify-timeout` (=inf) must be a finite number"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, capsys):
    assert main([*TINY, *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_ctrl_c_prints_the_partial_answer_and_writes_it(tmp_path, capsys, monkeypatch):
    from autotune._command import run as _command

    shown = []

    def ctrl_c_after_four(probe):  # the first round's two are over the budget
        shown.append(probe)
        if len(shown) == 4:
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))  # the handler raises here

    monkeypatch.setattr(_command, "progress", ctrl_c_after_four)
    out = tmp_path / "partial.json"
    args = [*TINY[:-1], "--remat", "none", "--budget", "40MB", "--json", str(out)]
    assert main(args) == 130
    captured = capsys.readouterr()
    assert "INTERRUPTED" in captured.err
    (row,) = json.loads(out.read_text())["results"]
    assert row["interrupted"] and row["compiles"] == 4
    assert row["peak_bytes"] <= row["budget"]["bytes"]


def test_a_config_file_dumped_from_a_gpu(tmp_path, capsys):
    pytest.importorskip("jax_plugins.xla_cuda13", reason="a described GPU needs the CUDA plugin")
    from autotune._targets.gpu import spec_config

    config = tmp_path / "l4.txtpb"
    config.write_text(spec_config("l4-24gb"))
    args = [*TINY[:6], "--target", str(config), "--remat", "none", "--quiet"]
    assert main(args) == 2
    assert "reports no memory limit: give `budget_bytes` (--budget" in capsys.readouterr().err
    assert main([*args, "--budget", "4MB"]) == 0
    out = capsys.readouterr().out
    assert f"on file:{config.resolve()}" in out and "does not fit" in out


def test_verify_and_time_run_the_answers_and_drive_the_recommendation(capsys):
    assert main([*TINY, "--remat", "none", "--verify-boundary", "--time"]) == 0
    out = capsys.readouterr().out
    ran = [int(b) for b in re.findall(r"vgg-tiny remat=none: batch (\d+): ran", out)]
    assert len(ran) == 2 and ran[1] == ran[0] + 8  # the answer and the next candidate
    assert f"at batch {ran[0]}" in out and "samples/s (measured on the device)" in out


def test_the_command_names_no_vgg_flag_or_field():
    """The command knows no workload: the VGG's flags and fields live in
    autotune.models, which it asks; only the default MODULE:ATTR names it."""
    import ast
    import dataclasses
    import io
    import pathlib
    import tokenize

    from autotune import cli
    from autotune.models import VGGConfig, vgg_workloads

    flags = {f.flag for f in vgg_workloads.command_flags}
    fields = {f.keyword for f in vgg_workloads.command_flags}
    fields |= {field.name for field in dataclasses.fields(VGGConfig)}
    root = pathlib.Path(cli.__file__).parent
    # The command's own code: its parser, and what a run of it does.
    modules = [root / "cli.py", root / "_command" / "run.py", root / "_command" / "preflight.py"]
    for module in modules:
        text = module.read_text().replace(cli.DEFAULT_WORKLOAD, "")
        assert not re.search("vgg", text, re.IGNORECASE), module
        for flag in flags:
            assert not re.search(rf"(?<![\w-]){flag}(?![\w-])", text), (module, flag)
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.NAME:
                assert token.string not in fields, (module, token.string)
            elif token.type == tokenize.STRING and not token.string.startswith(('"""', "f")):
                assert ast.literal_eval(token.string) not in fields, (module, token.string)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--json", "{d}/same", "--cache-dir", "{d}/same"], "`--json` and `--cache-dir`"),
        (["--plot", "{d}/same", "--compilation-cache-dir", "{d}/same"], "`--plot` and"),
        (["--json", "{d}/" + "x" * 300 + ".json"], "(File name too long)"),
        (["--json", "{d}/loop"], "cannot be resolved: Symlink loop"),
        (["--plot", "{d}/loop/need.png"], "cannot be resolved: Symlink loop"),
        (["--compilation-cache-dir", "{d}/loop"], "cannot be resolved: Symlink loop"),
        (["--compilation-cache-dir", "{d}/" + "z" * 300], "(File name too long)"),
        (["--compilation-cache-dir", "{d}/file/sub"], "is not a directory"),
        (["--json", ""], "`--json` (='') must be a file's path, not empty"),
        (["--plot", ""], "`--plot` (='') must be a file's path, not empty"),
        (["--cache-dir", ""], "`--cache-dir` (='') must be a directory's path, not empty"),
        (["--compilation-cache-dir", ""], "(='') must be a directory's path, not empty"),
    ],
)
def test_output_paths_are_checked_before_the_first_compile(args, message, tmp_path, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "file").write_text("")
    args = [a.replace("{d}", str(tmp_path)) for a in args]
    assert main([*TINY[:-1], "--remat", "none", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert "compiled batch" not in err and not (tmp_path / "same").exists()


def test_a_report_that_cannot_be_written_after_the_search_is_one_line(
    tmp_path, capsys, monkeypatch
):
    from autotune._command import run as _command

    out = tmp_path / "gone" / "tune.json"
    out.parent.mkdir()

    real = _command.write_json

    def folder_removed_meanwhile(*args, **kwargs):
        out.parent.rmdir()
        real(*args, **kwargs)

    monkeypatch.setattr(_command, "write_json", folder_removed_meanwhile)
    assert main([*TINY, "--remat", "none", "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert "max batch" in captured.out  # the results are printed
    (line,) = [line for line in captured.err.splitlines() if line.startswith("autotune:")]
    assert line.startswith(f"autotune: error: `--json` was not written: `path` (={str(out)!r})")
    assert "does not exist" in line


def test_accumulation_is_checked_against_the_targets_devices_before_the_search(capsys):
    argv = [*TINY, "--remat", "none", "--target", "8xh100-sxm-80gb", "--accumulate-to", "4100"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "`--accumulate-to` (=4100) must be a positive multiple of the target's device " in err
    assert "(=8)" in err and "compiled batch" not in err
