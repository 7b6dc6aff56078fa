"""One owner of the layout: on a target of several devices, the library and the
command ask the same question and give the same answer, laid out."""

import json

import pytest
from test_workload import user_dir  # noqa: F401  (fixture)

from autotune import ResultCache, find_max_batch, get_target, load_workloads
from autotune.cli import main

BUDGET = 1 << 20  # per device; the plain-JAX MLP's batches stay small


def _plugin(name):
    """Skip unless the plugin that compiles for `name` is installed."""
    try:
        get_target(name).devices()
    except Exception as e:  # a described target's plugin is missing
        pytest.skip(f"{name} needs its compiler plugin here: {e}")


@pytest.mark.parametrize(
    "several,one", [("8xh100-sxm-80gb", "h100-sxm-80gb"), ("v5litepod-4", "v5e:1x1")]
)
def test_library_and_command_give_the_same_laid_out_answer(several, one, user_dir, tmp_path):  # noqa: F811
    _plugin(several)
    (workload,) = load_workloads("plain_mlp:workload")
    cache = ResultCache(tmp_path / "cache")
    lib = find_max_batch(workload, target=several, budget_bytes=BUDGET, cache=cache)
    out = tmp_path / "tune.json"
    argv = ["--workload", "plain_mlp:workload", "--target", several, "--budget", str(BUDGET),
            "--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    (row,) = json.loads(out.read_text())["results"]
    # The command's question is the library's: its answer is the library's, from the cache.
    assert row["from_cache"] is True
    assert (row["batch"], row["peak_bytes"]) == (lib.batch, lib.peak_bytes)
    n = get_target(several).device_count
    assert lib.data_parallel_size == row["data_parallel_size"] == n
    assert lib.multiple_of == 8 and lib.batch % n == 0
    single = find_max_batch(workload, target=one, budget_bytes=BUDGET)
    assert lib.batch >= n / 2 * single.batch


def test_a_workload_laid_out_already_is_laid_out_once(user_dir):  # noqa: F811
    from autotune._workloads.layout import lay_out, on_target

    _plugin("8xh100-sxm-80gb")
    (workload,) = load_workloads("plain_mlp:workload")
    target = get_target("8xh100-sxm-80gb")
    laid = lay_out(workload, target.devices(), "fsdp")
    assert on_target(laid, target, "dp") is laid
    assert on_target(workload, get_target("h100-sxm-80gb"), "dp") is workload
    again = on_target(workload, target, "dp")
    assert again is not workload and on_target(again, target, "dp") is again
