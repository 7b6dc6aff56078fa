"""A user's own step, from their own file, through `autotune --workload`.

Each user file is copied into a directory outside the repository and the
command runs there, as a user runs it; answers are checked against brute
force: every candidate batch compiled independently.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from steps import need_at

from autotune import TuneError, Workload, load_workloads
from autotune.cli import main

USER_STEPS = Path(__file__).parent / "user_steps"


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A directory outside the repository holding the user's files, made current."""
    for file in USER_STEPS.glob("*.py"):
        shutil.copy(file, tmp_path / file.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield tmp_path
    for name in [m for m in sys.modules if m in {f.stem for f in USER_STEPS.glob("*.py")}]:
        del sys.modules[name]


def brute_force(workload, budget, max_batch):
    """The largest batch up to `max_batch` whose independent compile fits."""
    jitted = workload.jitted()
    needs = {b: need_at(jitted, workload.args_for_batch, b) for b in range(1, max_batch + 1)}
    return max((b for b, need in needs.items() if need <= budget), default=None), needs


def tune_from_the_command(spec, capsys, user_dir, answer_near=10, max_batch=16, extra=()):
    (workload,) = load_workloads(spec)
    _, needs = brute_force(workload, 0, max_batch)
    budget = needs[answer_near] + 1
    out = user_dir / "tune.json"
    argv = [
        "--workload", spec, "--target", "local", "--budget", str(budget),
        "--multiple-of", "1", "--max-batch", str(max_batch), "--json", str(out), *extra,
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    (row,) = json.loads(out.read_text())["results"]
    expected = max(b for b, need in needs.items() if need <= budget)
    assert row["batch"] == expected
    assert row["peak_bytes"] == needs[expected]
    assert row["next_batch"] == expected + 1 and row["next_peak_bytes"] == needs[expected + 1]
    return row, capsys.readouterr()


def test_a_flax_nnx_file_is_tuned_exactly(user_dir, capsys):
    row, printed = tune_from_the_command(
        "nnx_cnn:my_workload", capsys, user_dir, answer_near=8, max_batch=12
    )
    assert row["label"] == "nnx cnn"
    assert row["probes"][0]["alias_bytes"] > 0  # the donated state is written over
    assert "compiled batch" in printed.err and "compiled batch" not in printed.out
    assert "nnx cnn on local:cpu" in printed.out


def test_a_linen_pair_with_batch_stats_is_tuned_exactly(user_dir, capsys):
    # Away from batch 10, where this step's need on the CPU dips below that
    # of batches 8 and 9: no search that assumes need grows could see it.
    row, _ = tune_from_the_command("linen_cnn:make", capsys, user_dir, answer_near=14)
    assert row["label"] == "make"


def test_a_plain_jax_workload_is_tuned_exactly(user_dir, capsys):
    row, _ = tune_from_the_command("plain_mlp:workload", capsys, user_dir, answer_near=14)
    assert row["probes"][0]["alias_bytes"] > 0


def test_a_jitted_pair_keeps_its_own_donation(user_dir, capsys):
    row, _ = tune_from_the_command("plain_mlp:jitted_pair", capsys, user_dir, answer_near=14)
    assert row["probes"][0]["alias_bytes"] > 0


def test_verify_runs_a_workload_that_builds_real_arguments(user_dir, capsys):
    argv = ["--workload", "nnx_cnn:my_workload", "--target", "local", "--budget", "8MB",
            "--max-batch", "32", "--verify", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "nnx cnn: batch 32: ran" in capsys.readouterr().out


def test_verify_is_refused_for_a_workload_without_real_arguments(user_dir, capsys):
    argv = ["--workload", "plain_mlp:workload", "--target", "local", "--budget", "8MB", "--time"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot build real arguments: give its Workload a `real_args`" in err
    assert err.count("\n") == 2  # "target: ..." and the error line


def test_why_explains_a_users_peak_on_a_described_h100(user_dir, capsys):
    pytest.importorskip(
        "jax_plugins.xla_cuda13",
        reason="compiling for a described GPU needs the CUDA plugin (the [deviceless] extra)",
    )
    out = user_dir / "tune.json"
    argv = ["--workload", "nnx_cnn:my_workload", "--target", "h100-sxm-80gb", "--budget", "1MB",
            "--multiple-of", "8", "--max-batch", "32", "--why", "--json", str(out),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    (row,) = json.loads(out.read_text())["results"]
    entries = row["peak_breakdown"]
    assert abs(sum(e["bytes"] for e in entries) - row["peak_bytes"]) <= 0.01 * row["peak_bytes"]
    # NNX names no module in XLA's op names; the stack names the model's own.
    modules = {e["module"] for e in entries}
    assert {"Net/Conv", "Net/BatchNorm"} <= modules, modules
    assert any(e["source"] and e["source"].endswith("nnx_cnn.py:20") for e in entries)
    assert "nnx cnn at batch" in printed and "what is live at the peak" in printed
    assert "Net/Conv" in printed and "the search's compile" in printed


@pytest.mark.parametrize("flag", [["--model", "vgg11"], ["--remat", "none"], ["--explain"]])
def test_the_default_workloads_flags_are_refused_beside_another(flag, user_dir, capsys):
    assert main(["--workload", "plain_mlp:workload", *flag]) == 2
    err = capsys.readouterr().err
    assert f"`{flag[0]}` is a flag of the default workload (autotune.models:vgg_workloads)" in err
    assert "--workload-arg NAME=VALUE" in err and "Traceback" not in err


def test_a_workload_over_a_mesh_of_described_or_local_devices(user_dir, capsys):
    argv = ["--workload", "plain_mlp:workload", "--target", "local", "--budget", "2MB",
            "--mesh", "8", "--layout", "fsdp", "--max-batch", "4096", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "global batch" in out and "per device" in out


@pytest.mark.parametrize(
    "spec, message",
    [
        ("plain_mlp", "must be MODULE:ATTR"),
        ("plain_mlp:", "must be MODULE:ATTR"),
        ("no_such_module:workload", "no module named 'no_such_module' in the current directory"),
        ("plain_mlp:nothing", "module 'plain_mlp' has no attribute 'nothing'"),
        ("plain_mlp:D", "(='plain_mlp:D'): D is int 32; it must be an autotune.Workload"),
        ("plain_mlp:step", "calling step raised TypeError"),
        ("broken_import:workload", "importing 'broken_import' raised ZeroDivisionError"),
    ],
)
def test_a_bad_workload_spec_is_one_clear_line(spec, message, user_dir, capsys):
    (user_dir / "broken_import.py").write_text("x = 1 / 0\n")
    assert main(["--workload", spec, "--target", "local", "--budget", "1MB"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_load_workloads_labels_and_sequences(user_dir):
    (user_dir / "several.py").write_text(
        "import autotune, plain_mlp\n"
        "def both():\n"
        "    w = plain_mlp.workload\n"
        "    return [autotune.Workload(w.step, w.args_for_batch, label='a'),\n"
        "            autotune.Workload(w.step, w.args_for_batch, label='b')]\n"
        "def same():\n"
        "    return [both()[0], both()[0]]\n"
        "def unlabelled():\n"
        "    return [plain_mlp.workload, plain_mlp.workload]\n"
        "def with_size(size=3):\n"
        "    return plain_mlp.step, lambda b: plain_mlp.args_for_batch(b * size)\n"
    )
    assert [w.label for w in load_workloads("several:both")] == ["a", "b"]
    assert [w.label for w in load_workloads("plain_mlp:workload")] == ["workload"]
    assert [w.label for w in load_workloads("several:unlabelled")] == [
        "unlabelled[0]",
        "unlabelled[1]",
    ]
    with pytest.raises(TuneError, match="the same label"):
        load_workloads("several:same")
    (w,) = load_workloads("several:with_size", {"size": 2})
    assert isinstance(w, Workload) and w.args_for_batch(4)[1].shape == (8, 32)


def test_import_autotune_loads_neither_flax_nor_models(tmp_path):
    code = (
        "import autotune, sys, importlib.util\n"
        "print([m for m in sys.modules if m.startswith(('flax', 'models', 'autotune.models'))])\n"
        "print(importlib.util.find_spec('models'))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["[]", "None"]


def test_workload_args_are_json_or_strings():
    from autotune.cli import _workload_kwargs

    items = ["blocks=12", 'remat=["none"]', "name=tiny", "rate=0.5", "empty="]
    assert _workload_kwargs(items) == {
        "blocks": 12,
        "remat": ["none"],
        "name": "tiny",
        "rate": 0.5,
        "empty": "",
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workload-arg", "blocks"], "`--workload-arg` (='blocks') must be NAME=VALUE"),
        (["--workload-arg", "2x=1"], "`--workload-arg` (='2x=1') must be NAME=VALUE"),
        (["--workload-arg", "a=1", "--workload-arg", "a=2"], "gives 'a' a second time"),
        (["--workload-arg", "a=1"], "is not a callable that takes them"),
    ],
)
def test_bad_workload_args_are_one_clear_line(argv, message, user_dir, capsys):
    assert main(["--workload", "plain_mlp:workload", "--target", "local", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_workload_args_go_to_the_default_workload(capsys):
    assert main(["--workload-arg", "blocks=2", "--target", "local"]) == 2
    err = capsys.readouterr().err
    assert "calling vgg_workloads raised TypeError" in err and "'blocks'" in err


# A workload whose step, once traced, does what follows.
TRACED = """import sys
import jax
import autotune


def args_for_batch(batch):
    return (jax.ShapeDtypeStruct((batch, 4), "float32"),)


workload = autotune.Workload(lambda x: step(x), args_for_batch)


def step(x):
"""


@pytest.mark.parametrize(
    "code, message",
    [
        (
            "import sys\nsys.exit(0)\n",
            "importing 'exits' raised SystemExit(0); a workload must not exit",
        ),
        ("import sys\nsys.exit(3)\n", "importing 'exits' raised SystemExit(3)"),
        (
            "raise KeyboardInterrupt\n",
            "importing 'exits' raised KeyboardInterrupt, and no signal came",
        ),
        ("import sys\ndef workload():\n    sys.exit(3)\n", "calling workload raised SystemExit(3)"),
        (
            "def workload():\n    raise KeyboardInterrupt\n",
            "calling workload raised KeyboardInterrupt",
        ),
        (TRACED + "    sys.exit(4)\n", "its code raised SystemExit(4) during the search"),
        (TRACED + "    raise KeyboardInterrupt\n", "raised KeyboardInterrupt during the search"),
    ],
)
def test_a_workload_that_exits_or_raises_an_interrupt_is_one_clear_line(
    code, message, user_dir, capsys
):
    (user_dir / "exits.py").write_text(code)
    sys.modules.pop("exits", None)  # the module of the case before
    assert main(["--workload", "exits:workload", "--target", "local", "--budget", "1MB"]) == 2
    err = capsys.readouterr().err
    assert "`--workload` (='exits:workload')" in err and message in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("autotune:")]
    assert "Traceback" not in err and line.startswith("autotune: error: "), err
