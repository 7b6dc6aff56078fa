"""The examples, tuned by the command the README shows, at small sizes, on the
CPU; each answer is checked against every candidate compiled on its own.

Two candidates keep this fast (a compile of the small language model takes
seconds on two cores): the answer is the first, the second is shown not to
fit. That remat fits the larger batch is a fact of a GPU compile: on the CPU
backend remat does not lower the need per example (an 8-layer tanh MLP
needs 10 activations per example with each layer rematerialized, 3
without). `benchmarks/examples.md` measures it for a described H100,
against every candidate compiled.
"""

import json
import sys
from pathlib import Path

import pytest

from autotune import load_workloads
from autotune._compile.records import compiled_need
from autotune._compile.remat_pass import xla_remat_pass
from autotune.cli import main

ROOT = Path(__file__).parents[1]
TINY_LM = {"vocab": 16, "seq_len": 16, "width": 16, "heads": 1, "blocks": 2}
TINY_CNN = {"image_size": 8, "widths": [4, 8]}
STEP = 4  # --multiple-of
CANDIDATES = [4, 8]  # up to --max-batch


@pytest.fixture
def from_directory(monkeypatch, tmp_path):
    """Runs the command from a directory, as a user would; forgets the examples after."""

    def chdir(path):
        monkeypatch.chdir(path)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    yield chdir
    for name in [
        m for m in sys.modules if m in {"lm", "cnn", "examples"} or m.startswith("examples.")
    ]:
        del sys.modules[name]


def needs(workload):
    """need(batch) of every candidate, each compiled on its own."""
    jitted = workload.jitted()
    result = {}
    for batch in CANDIDATES:
        with xla_remat_pass(False):
            result[batch] = compiled_need(jitted.lower(*workload.args_for_batch(batch)).compile())
    return result


def arguments(sizes):
    return [
        arg
        for name, value in sizes.items()
        for arg in ("--workload-arg", f"{name}={json.dumps(value)}")
    ]


def tune(spec, sizes, budget, out):
    argv = ["--workload", spec, *arguments(sizes), "--target", "local", "--budget", str(budget),
            "--multiple-of", str(STEP), "--max-batch", str(CANDIDATES[-1]),
            "--json", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    return {row["label"]: row for row in json.loads(out.read_text())["results"]}


def assert_exact(row, need, budget):
    """The row's answer is the largest candidate that fits, the next one proven not to."""
    fits = [b for b in CANDIDATES if need[b] <= budget]
    assert fits == CANDIDATES[: len(fits)] and len(fits) < len(CANDIDATES)
    assert row["batch"] == fits[-1] and row["peak_bytes"] == need[fits[-1]]
    assert row["next_batch"] == fits[-1] + STEP
    assert row["next_peak_bytes"] == need[fits[-1] + STEP] > budget


def test_the_language_model_is_tuned_exactly_with_and_without_remat(from_directory, tmp_path):
    from_directory(ROOT / "examples")
    plain, remat = load_workloads("lm:workloads", TINY_LM)
    assert (plain.label, remat.label) == ("lm remat=none", "lm remat=nothing_saveable")
    need_plain, need_remat = needs(plain), needs(remat)
    budget = max(need_plain[4], need_remat[4]) + 1
    rows = tune("lm:workloads", TINY_LM, budget, tmp_path / "lm.json")
    assert rows.keys() == {plain.label, remat.label}
    assert_exact(rows[plain.label], need_plain, budget)
    assert_exact(rows[remat.label], need_remat, budget)
    # Each block is recomputed in the backward pass: more FLOPs per example.
    assert rows[remat.label]["flops_per_example"] > rows[plain.label]["flops_per_example"]


def test_the_linen_cnn_with_batch_stats_and_dropout_is_tuned_exactly(from_directory, tmp_path):
    from_directory(ROOT / "examples")
    (workload,) = load_workloads("cnn:workload", TINY_CNN)
    need = needs(workload)
    budget = need[4] + 1
    rows = tune("cnn:workload", TINY_CNN, budget, tmp_path / "cnn.json")
    assert_exact(rows["cnn"], need, budget)
    assert rows["cnn"]["probes"][0]["alias_bytes"] > 0  # parameters and statistics donated


@pytest.mark.parametrize("spec", ["examples.lm:workloads", "examples.cnn:workload"])
def test_the_examples_load_from_the_repository_root(spec, from_directory):
    from_directory(ROOT)
    sizes = {**TINY_LM, "remat": ["nothing_saveable"]} if "lm" in spec else TINY_CNN
    (workload,) = load_workloads(spec, sizes)
    assert workload.estimate is not None and workload.real_args is not None
    inputs = [a for a in workload.args_for_batch(3) if hasattr(a, "shape") and a.shape]
    assert inputs and all(a.shape[0] == 3 for a in inputs)


def test_the_training_loop_feeds_each_steps_outputs_to_the_next(from_directory, monkeypatch):
    """examples/train.py: the README's loop trains what was tuned; the donated
    outputs come back as inputs, BatchNorm statistics move, and every step
    draws a fresh dropout key."""
    import jax
    import numpy as np

    from_directory(ROOT / "examples")
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import cnn
    import train

    workload = cnn.workload(**TINY_CNN)
    batches = train.random_batches(4, TINY_CNN["image_size"], steps=3)
    before = workload.real_args(4)[:2]
    (params, state, _), losses = train.train(workload, batches)
    assert len(losses) == 3 and all(np.isfinite(losses))
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b), (params, state), before)
    assert all(jax.tree.leaves(moved[0])[:1]) and any(jax.tree.leaves(moved[1]))
    sys.modules.pop("train", None)


def test_the_language_model_answers_a_wanted_batch_with_the_fewest_blocks_found(
    from_directory, tmp_path
):
    from_directory(ROOT / "examples")
    sizes = {"vocab": 64, "seq_len": 64, "width": 64, "heads": 2, "blocks": 4}
    out = tmp_path / "fit.json"
    # At batch 64 on a described H100: 96 MB without remat, 78 MB with one
    # block recomputed, 33 MB with all four; a 60 MB budget takes two. Candidates
    # 32 apart keep the answer's own search to a few compiles (each takes seconds).
    argv = ["--workload", "lm:space", *arguments(sizes), "--target", "h100-sxm-80gb",
            "--budget", "60MB", "--multiple-of", "32", "--max-batch", "128", "--fit-batch", "64",
            "--json", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    (row,) = report["results"]
    recomputed = [b for b, p in row["remat_plan"].items() if p != "none"]
    assert len(recomputed) == 2 and len(row["remat_plan"]) == 4
    assert row["batch"] >= 64 and row["peak_bytes"] <= row["budget"]["bytes"]
    assert row["next_peak_bytes"] > row["budget"]["bytes"]
    trials = report["plan_search"]["trials"]
    one_block = [t for t in trials if sum(p != "none" for p in t["remat_plan"].values()) == 1]
    assert one_block and not any(t["fits"] for t in one_block)  # one block is not enough
