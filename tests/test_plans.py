"""Remat plans: the space, the greedy order, and searches whose answers are proven."""

import dataclasses
import json

import pytest

import autotune
from autotune import RematPlan, RematSpace, TuneError, search_plans
from autotune._plans.order import forward_flops, greedy_order
from autotune._plans.plan import parse_plan
from autotune._results.report import read_json, read_results
from autotune._tune.tuner import prepare
from autotune.cli import main
from autotune.models.workloads import vgg_remat_space

# vgg-tiny on 32 px: stage1 holds most of what remat can free on a described
# H100 (at batch 128: 24.9 MB without remat, 20.7 MB with stage1 recomputed).
TINY = dict(model="vgg-tiny", image_size=32, num_classes=10)
GPU = "h100-sxm-80gb"
BUDGET = 22 * 10**6


@pytest.fixture(scope="module")
def space():
    return vgg_remat_space(**TINY)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def need(space, chosen, batch):
    prepared = prepare(space.workload(space.plan(chosen)), GPU, budget_bytes=BUDGET)
    return prepared.prober(batch).need_bytes


def test_a_plan_lists_every_block_in_model_order(space):
    plan = space.plan({"stage2": "dots_saveable"})
    assert plan.to_dict() == {"stage1": "none", "stage2": "dots_saveable"}
    assert plan.recomputed == ("stage2",)
    assert plan.text() == "stage2=dots_saveable"
    assert space.plan().text() == "none"
    assert space.everywhere().short() == "nothing_saveable: stage1+stage2"
    workload = space.workload(plan)
    assert workload.remat_plan == plan.to_dict()
    assert workload.label == "vgg-tiny remat[stage2=dots_saveable]"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda s: s.plan({"stage9": "nothing_saveable"}), "names 'stage9', a block this"),
        (lambda s: s.plan({"stage1": "most_saveable"}), "must be 'none' or a jax.checkpoint"),
        (lambda s: RematSpace((), s.build), "must be a non-empty sequence"),
        (lambda s: RematSpace(("a", "a"), s.build), "names a block twice"),
        (lambda s: RematSpace(("a",), s.build, policies=("none",)), "lists 'none'"),
        (lambda s: RematSpace(("a",), s.build, policies=("fastest",)), "must be 'none' or"),
        (lambda s: RematSpace(("a",), s.build, policies=()), "must name at least one"),
        (lambda s: RematSpace(("a",), "build"), "`build` (='build') must be"),
        (lambda s: RematPlan((("a", "none"), ("a", "none"))), "names a block twice"),
    ],
)
def test_bad_plans_and_spaces_are_refused_by_name(space, make, message):
    with pytest.raises(TuneError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(space)


def test_a_builder_that_fails_is_named_with_its_plan(space):
    broken = RematSpace(space.blocks, lambda plan: 1 / 0)
    with pytest.raises(TuneError, match=r"raised for plan 'none': ZeroDivisionError"):
        broken.workload(broken.plan())
    wrong = RematSpace(space.blocks, lambda plan: "a step")
    with pytest.raises(TuneError, match="must return an autotune.Workload"):
        wrong.workload(wrong.plan())


def test_the_command_reads_a_plan():
    assert parse_plan("stage1=nothing_saveable, stage2=dots_saveable") == {
        "stage1": "nothing_saveable",
        "stage2": "dots_saveable",
    }
    assert parse_plan("none") == {}
    for bad, message in (
        ("stage1", "BLOCK=POLICY pairs"),
        ("stage1=", "BLOCK=POLICY pairs"),
        ("stage1=nothing_saveable,stage1=none", "names 'stage1' twice"),
        ("stage1=remat", "must be 'none' or"),
    ):
        with pytest.raises(TuneError, match=message):
            parse_plan(bad)


def test_the_greedy_order_ranks_bytes_per_flop():
    blocks = ("a", "b", "c", "d")
    held = {"a": 100, "b": 300, "c": 100, "d": 0}
    flops = {"a": 10.0, "b": 10.0, "c": 10.0, "d": 1.0}
    assert greedy_order(blocks, held, flops) == ("b", "a", "c", "d")  # a, c tie: model order
    assert greedy_order(blocks, held, {}) == ("b", "a", "c", "d")  # no FLOPs: by bytes
    assert greedy_order(blocks, {"d": 1}, {"a": 1.0, "d": 100.0}) == ("d", "a", "b", "c")


def test_forward_flops_are_the_layers_multiply_adds(space):
    workload = space.workload(space.plan())
    flops = forward_flops(workload.jitted(), workload.args_for_batch(4), space.blocks)
    # 3x3 SAME convs: stage1 3 -> 8 channels on 32 x 32; stage2 8 -> 16 on 16 x 16.
    assert flops == {
        "stage1": 4 * 2 * 32 * 32 * 8 * 3 * 3 * 3,
        "stage2": 4 * 2 * 16 * 16 * 16 * 3 * 3 * 8,
    }


def test_fit_batch_answers_the_least_recompute_found_with_its_proof(space):
    search = search_plans(space, 128, target=GPU, budget_bytes=BUDGET, max_batch=512)
    (result,) = search.results
    assert result.remat_plan == {"stage1": "nothing_saveable", "stage2": "none"}
    assert result.batch >= 128 and result.exact
    assert result.peak_bytes <= BUDGET < result.next_peak_bytes
    # The proof, by independent compiles: the answer fits, the next candidate does not.
    chosen = {"stage1": "nothing_saveable"}
    assert need(space, chosen, result.batch) == result.peak_bytes <= BUDGET
    assert need(space, chosen, result.next_batch) > BUDGET
    assert need(space, {}, 128) > BUDGET  # the plan that recomputes nothing does not fit
    first = search.trials[0]
    assert (first.plan.text(), first.fits) == ("none", False)
    assert search.plans_probed == len(search.trials) == len({t.plan for t in search.trials})
    assert "cheapest found, not proven cheapest" in search.rule
    stage1 = next(t for t in search.trials if t.plan.text() == "stage1=nothing_saveable")
    assert stage1.fits and stage1.flops_per_example > first.flops_per_example
    assert "stage1" in search.render() and "recompute" in search.render()


def test_a_batch_no_plan_reaches_names_the_largest_any_plan_reached(space):
    with pytest.raises(TuneError, match=r"`fit_batch` \(=4096\) is reached by no plan: the "
                       r"largest batch any plan reached is \d+, with every block under "
                       "nothing_saveable"):  # fmt: skip
        search_plans(space, 4096, target=GPU, budget_bytes=BUDGET, max_batch=8192)


@pytest.mark.parametrize(
    "fit, extra, message",
    [
        (0, {}, "must be a positive integer"),
        (1024, {"max_batch": 512}, "must be at most `max_batch` (=512)"),
        (100, {}, "must be a multiple of `multiple_of` (=8)"),
        (8, {"label": "x"}, "`label` is given to a search over plans"),
    ],
)
def test_bad_fit_batches_are_refused_before_any_compile(space, fit, extra, message):
    with pytest.raises(TuneError, match=message.replace("(", r"\(").replace(")", r"\)")):
        search_plans(space, fit, target=GPU, **extra)


def test_the_frontier_grows_in_batch_and_recompute(space):
    search = search_plans(space, target=GPU, budget_bytes=BUDGET, max_batch=512)
    rows = search.results
    assert rows[0].remat_plan == {"stage1": "none", "stage2": "none"}
    assert len(rows) >= 2 and search.plans_probed == 3  # none, then each prefix of the order
    assert all(a.batch < b.batch for a, b in zip(rows, rows[1:]))
    assert all(a.flops_per_example < b.flops_per_example for a, b in zip(rows, rows[1:]))
    assert all(r.exact and r.peak_bytes <= BUDGET < r.next_peak_bytes for r in rows)
    assert search.order[0] == "stage1"


def test_the_command_fits_a_batch_and_writes_the_plan(tmp_path, capsys):
    out = tmp_path / "fit.json"
    argv = [
        "--model", "vgg-tiny", "--image-size", "32", "--classes", "10", "--target", GPU,
        "--budget", "22MB", "--max-batch", "512", "--quiet", "--fit-batch", "128",
        "--json", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "remat plan      nothing_saveable on stage1; none on stage2" in printed
    assert "searched 3 remat plans" in printed
    report = json.loads(out.read_text())
    assert report["version"] == 5
    assert report["plan_search"]["fit_batch"] == 128
    assert report["plan_search"]["plans_probed"] == len(report["plan_search"]["trials"])
    (row,) = read_json(out)
    assert row["remat_plan"] == {"stage1": "nothing_saveable", "stage2": "none"}
    (result,) = read_results(out)
    assert result.batch >= 128
    report["plan_search"]["trials"][0]["fits"] = "yes"
    out.write_text(json.dumps(report))
    with pytest.raises(TuneError, match=r"plan_search.trials\[0\].fits"):
        read_results(out)


def test_the_command_tunes_one_given_plan(capsys):
    argv = [
        "--model", "vgg-tiny", "--image-size", "32", "--classes", "10", "--target", GPU,
        "--budget", "22MB", "--max-batch", "512", "--quiet",
        "--remat-plan", "stage2=nothing_saveable",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "remat plan      nothing_saveable on stage2; none on stage1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fit-batch", "0"], "`--fit-batch` (=0) must be a positive batch size"),
        (["--fit-batch", "8", "--remat-frontier"], "ask different questions"),
        (["--fit-batch", "8", "--why"], "`--fit-batch` with --why"),
        (["--remat-frontier", "--xla-remat-pass", "both"], "with --xla-remat-pass both"),
        (["--remat-plan", "stage9=nothing_saveable"], "names 'stage9', a block this workload"),
        (["--remat-plan", "stage1=fast"], "must be 'none' or a jax.checkpoint_policies"),
        (["--fit-batch", "8", "--remat", "none"], "`remat` (=('none',)) is given to a search"),
        (
            ["--fit-batch", "8", "--workload", "plain:WORKLOAD"],
            "`--fit-batch` searches remat plans, and `--workload` (='plain:WORKLOAD') names none",
        ),
    ],
)
def test_bad_plan_options_are_one_line(args, message, capsys, monkeypatch, tmp_path):
    (tmp_path / "plain.py").write_text(
        "import jax\n"
        "WORKLOAD = (lambda x: x * 2, lambda b: (jax.ShapeDtypeStruct((b, 4), 'float32'),))\n"
    )
    monkeypatch.chdir(tmp_path)
    base = ["--target", GPU, "--quiet"]
    if "--workload" not in args:
        base += ["--model", "vgg-tiny", "--image-size", "32", "--classes", "10"]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_the_plan_types_are_public():
    for name in ("RematPlan", "RematSpace", "PlanSearch", "PlanTrial", "search_plans"):
        assert name in autotune.__all__ and getattr(autotune, name) is not None


def test_a_plan_that_fits_the_same_batch_with_less_recompute_is_recommended():
    from steps import mlp_args, mlp_step

    row = autotune.find_max_batch(
        mlp_step, mlp_args, target="local", budget_bytes=1 << 20, max_batch=64
    )
    light, heavy = (
        dataclasses.replace(row, label=label, flops_per_example=flops, remat_plan=plan)
        for label, flops, plan in (
            ("light", 1.00e9, {"a": "nothing_saveable", "b": "none"}),
            ("heavy", 1.30e9, {"a": "nothing_saveable", "b": "nothing_saveable"}),
        )
    )
    assert autotune.recommend([heavy, light]).label == "light"
    assert autotune.recommend([light, heavy]).label == "light"
