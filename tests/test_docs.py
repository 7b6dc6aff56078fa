"""The docs say what the code does: their links and paths exist, the JSON
schema's page documents exactly the fields a report holds, and the command's
reference is the parser's own help."""

import dataclasses
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import autotune
from autotune._results.bound import throughput_bound

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES += sorted((ROOT / "benchmarks").glob("*.md"))
# Repository paths named in backticks: a top-level folder, then a path.
FOLDERS = ("autotune", "models", "scripts", "benchmarks", "examples", "tests", "docs", ".ci")
PATH = re.compile(rf"`((?:{'|'.join(re.escape(f) for f in FOLDERS)})/[\w./-]*)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_one_page_that_opens_with_setup_and_the_default_run():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first = "\n".join(lines[:60])
    assert ".venv/bin/autotune" in first and ".venv/bin/python -m pytest" in first
    assert "<!-- output: autotune -->" in first


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name})" in readme, page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_repository_path_exists(page):
    text = page.read_text()
    missing = []
    for target in LINK.findall(text):
        if "://" not in target and not (page.parent / target).exists():
            missing.append(target)
    for path in PATH.findall(text):
        path = path.rstrip(".")
        if "*" not in path and not (ROOT / path).exists():
            missing.append(path)
    assert not missing, f"{page.relative_to(ROOT)} names what does not exist: {missing}"


def _paths(value, prefix=""):
    """Every field path of a JSON value: `results[].probes[].batch`."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            yield path
            if path not in OPEN_MAPS:
                yield from _paths(item, path)
    elif isinstance(value, list):
        for item in value:
            yield from _paths(item, prefix + "[]")


# Maps whose keys are data (option names, kinds, modules), not fields.
OPEN_MAPS = {
    "results[].xla_settings.compiler_options",
    "results[].peak_breakdown_info.bytes_by_kind",
    "results[].peak_breakdown_info.bytes_by_module",
    "results[].remat_plan",
    "plan_search.trials[].remat_plan",
}


def test_the_schema_page_and_a_written_report_hold_the_same_fields(tmp_path):
    from autotune._compile.prober import CompileFailure

    def step(w, x):
        return w - 0.1 * jax.grad(lambda w: jnp.mean(jnp.tanh(x @ w) ** 2))(w)

    def args(batch):
        return (jax.ShapeDtypeStruct((64, 64), jnp.float32),
                jax.ShapeDtypeStruct((batch, 64), jnp.float32))  # fmt: skip

    result = autotune.find_max_batch(
        step, args, target="local", budget_bytes=1 << 20, max_batch=256, why=True
    )
    result = dataclasses.replace(
        result,
        failures=(CompileFailure(8, "XLA's message", 0.1),),
        remat_plan={"block": "nothing_saveable"},
    )
    plan = autotune.RematPlan((("block", "nothing_saveable"),))
    search = autotune.PlanSearch(
        wanted=result.batch, results=(result,), order=("block",), rule="a rule", plans_probed=1,
        trials=(autotune.PlanTrial(plan, result.batch, result.peak_bytes, True, 1e6),),
        budget_bytes=result.budget_bytes,
    )  # fmt: skip
    path = tmp_path / "tune.json"
    autotune.write_json([result], path, autotune.recommend([result]), plan_search=search.to_dict())
    written = set(_paths(json.loads(path.read_text())))
    bound = throughput_bound(result, autotune.get_target("a100-40gb").peak_flops, ("float32",))
    autotune.write_json([result], path, bounds=[bound])  # several targets: rows with bounds
    written |= set(_paths(json.loads(path.read_text())))
    page = (ROOT / "docs" / "schema.md").read_text()
    documented = set(re.findall(r"(?m)^\| `([\w.\[\]]+)` \|", page))
    assert written - documented == set(), "written, not documented"
    assert documented - written == set(), "documented, not written"
    assert f"at version {json.loads(path.read_text())['version']}" in page


def test_the_command_reference_is_the_parsers_help(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "scripts/render_docs.py")
    render_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_docs)
    monkeypatch.setenv("COLUMNS", render_docs.COLUMNS)
    page = (ROOT / "docs" / "cli.md").read_text()
    shown = page.split("<!-- reference: autotune --help -->\n```\n", 1)[1].split("\n```", 1)[0]
    assert shown == render_docs.reference()


def test_the_target_list_shown_is_the_commands(capsys):
    from autotune.cli import main

    assert main(["--list-targets"]) == 0
    listed = capsys.readouterr().out.strip()
    page = (ROOT / "docs" / "targets.md").read_text()
    assert f"<!-- output: autotune --list-targets -->\n```\n{listed}\n```" in page
