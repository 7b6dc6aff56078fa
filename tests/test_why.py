"""`autotune --why` on the built-in VGG: the peak by layer, beside the seed's table."""

import json

import matplotlib.image
import pytest

from autotune.cli import main

TINY = ["--model", "vgg-tiny", "--image-size", "16", "--classes", "10", "--target", "local",
        "--budget", "4MB", "--remat", "none", "--max-batch", "16", "--quiet"]  # fmt: skip


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_why_report_and_plot(tmp_path, capsys):
    plain, explained = tmp_path / "plain.png", tmp_path / "why.png"
    assert main([*TINY, "--plot", str(plain)]) == 0
    capsys.readouterr()
    out = tmp_path / "tune.json"
    argv = [*TINY, "--why", "--json", str(out), "--plot", str(explained)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    (row,) = json.loads(out.read_text())["results"]
    entries = row["peak_breakdown"]
    assert sum(e["bytes"] for e in entries) == row["peak_bytes"]
    assert row["peak_breakdown_info"]["unavailable"] == ""
    # The answer came from the cache: one more compile was made for it.
    assert "made for the breakdown" in row["peak_breakdown_info"]["obtained"]
    # The VGG names its layers; XLA's op names carry them.
    modules = set(row["peak_breakdown_info"]["bytes_by_module"])
    assert {"stage1/conv1", "stage2/conv1"} <= modules, modules
    assert "vgg-tiny remat=none at batch" in printed and "what is live at the peak" in printed
    # --plot adds a bar chart of the breakdown beside the need curve.
    wide, narrow = matplotlib.image.imread(explained), matplotlib.image.imread(plain)
    assert wide.shape[1] > 1.5 * narrow.shape[1]


def test_why_unavailable_is_one_line_not_a_table(monkeypatch, capsys):
    from autotune._explain import peak as _peak

    def broken(*args, **kwargs):
        raise _peak.DumpError("the live-range file has no 'BufferLiveRange:' section")

    monkeypatch.setattr(_peak, "parse_live_ranges", broken)
    assert main([*TINY, "--why", "--no-cache", "--max-batch", "8"]) == 0
    printed = capsys.readouterr().out
    assert "breakdown unavailable: the live-range file has no 'BufferLiveRange:' section" in printed
    assert "The 10 largest buffers" not in printed


def test_explain_puts_each_seed_row_beside_xlas_bytes_for_its_layer():
    from autotune import find_max_batch
    from autotune.models import VGGConfig, explain_vgg, vgg_layer_table
    from autotune.models.compiled_layers import by_stage, compiled_layers

    config = VGGConfig("vgg11", image_size=32, num_classes=10, hidden=16)
    (workload,) = config.workloads()
    # One compile: the only candidate is the answer.
    result = find_max_batch(workload, budget_bytes=2**30, multiple_of=2, max_batch=2, why=True)
    breakdown = result.peak_breakdown
    table = vgg_layer_table("vgg11", image_size=32, num_classes=10, hidden=16)
    layers = compiled_layers(table, breakdown, 4)
    assert [(r.name, r.module) for r in layers[:3]] == [
        ("CONV3-64", "stage1/conv1"),
        ("POOL2", "stage1/pool"),
        ("CONV3-128", "stage2/conv1"),
    ]
    assert [r.module for r in layers[-3:]] == ["fc1", "fc2", "fc3"]
    first = layers[0]
    assert first.seed_bytes == 32 * 32 * 64 * 2 * 4
    assert first.activation_bytes == breakdown.bytes_by_module["stage1/conv1"]["activation"] > 0
    stages = by_stage(layers)
    assert [s.name for s in stages] == ["stage1", "stage2", "stage3", "stage4", "stage5", "fc"]
    assert sum(s.activation_bytes for s in stages) == sum(r.activation_bytes for r in layers)
    text = explain_vgg(result, config)
    assert "CONV3-64   stage1/conv1" in text and "POOL2      stage5/pool" in text
