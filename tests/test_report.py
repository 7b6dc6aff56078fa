"""The JSON report: versioned schema, round trip, the one-line reader."""

import dataclasses
import json
import os
import re

import pytest
from steps import mlp_args, mlp_step, need_at

from autotune import TuneError, find_max_batch, load_batch_size, write_json
from autotune._results.recommend import recommend
from autotune._results.report import read_json, read_results


@pytest.fixture(scope="module")
def results():
    budget = need_at(mlp_step, mlp_args, 64)
    return tuple(
        find_max_batch(
            mlp_step,
            mlp_args,
            budget_bytes=budget + extra,
            donate_argnums=(0,),
            multiple_of=8,
            max_batch=256,
            label=label,
        )
        for label, extra in (("small", 0), ("large", 10**6))
    )


def test_round_trip(results, tmp_path):
    path = tmp_path / "tune.json"
    write_json(results, path, recommend(results))
    assert read_results(path) == results
    data = json.loads(path.read_text())
    assert (data["schema"], data["version"]) == ("autotune.result", 5)
    assert "peak_breakdown" not in data["results"][0]  # only when asked for
    assert data["recommendation"]["label"] in ("small", "large")
    assert [p.name for p in tmp_path.iterdir()] == ["tune.json"]


def test_version_1_reports_still_read(results, tmp_path):
    path = tmp_path / "tune.json"
    write_json(results, path)
    data = json.loads(path.read_text())
    data["version"] = 1
    path.write_text(json.dumps(data))
    assert read_results(path) == results
    assert load_batch_size(path, "small") == 64


def test_a_breakdown_round_trips(results, tmp_path):
    explained = find_max_batch(
        mlp_step, mlp_args, budget_bytes=results[0].budget_bytes, donate_argnums=(0,),
        multiple_of=8, max_batch=256, why=True,
    )  # fmt: skip
    path = tmp_path / "tune.json"
    write_json([explained], path)
    (row,) = json.loads(path.read_text())["results"]
    assert sum(e["bytes"] for e in row["peak_breakdown"]) == row["peak_bytes"]
    assert set(row["peak_breakdown"][0]) == {
        "bytes", "shape", "dtype", "kind", "op_name", "source", "module"
    }  # fmt: skip
    assert row["peak_breakdown"][-1]["kind"] == "rest"
    assert read_results(path) == (explained,)


def test_load_batch_size(results, tmp_path):
    path = tmp_path / "tune.json"
    write_json(results, path)
    assert load_batch_size(path, "small") == results[0].batch == 64
    assert load_batch_size(path, "large") == results[1].batch
    with pytest.raises(TuneError, match=r"`label` \(=None\): .* holds 2 results"):
        load_batch_size(path)
    with pytest.raises(TuneError, match=r"`label` \(='medium'\) is not in"):
        load_batch_size(path, "medium")
    write_json(results[:1], path)
    assert load_batch_size(path) == 64


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "is not valid JSON"),
        ('{"schema": "other"}', "is not an autotune report"),
        ('{"schema": "autotune.result", "version": 99, "results": []}', "report version 99"),
    ],
)
def test_bad_reports(tmp_path, text, message):
    path = tmp_path / "tune.json"
    path.write_text(text)
    with pytest.raises(TuneError, match=message):
        read_json(path)


def test_missing_report(tmp_path):
    with pytest.raises(TuneError, match="does not exist"):
        read_json(tmp_path / "absent.json")


def older_report(results, path, version):
    """`results` written as a report of schema `version`: without the fields
    that version lacked (1: failures, contradictions, the TPU fields and the
    remat plan and the programs; 2: the TPU fields, the plan and the programs;
    3: the plan and the programs; every version before 5: the probes'
    `stopped` and `placed_bytes`)."""
    write_json(results, path)
    data = json.loads(path.read_text())
    for row in data["results"]:
        for probe in row["probes"]:
            del probe["stopped"], probe["placed_bytes"]
        if version == 4:
            continue
        del row["remat_plan"], row["program_changes"]
        for probe in row["probes"]:
            del probe["program"]
        if version < 3:
            del row["compiler_fits"], row["code_in_peak_bytes"]
            for probe in row["probes"]:
                del probe["code_bytes"], probe["required_bytes"], probe["available_bytes"]
        if version < 2:
            del row["failures"], row["contradictions"]
    return {**data, "version": version}


def without_programs(results):
    """`results` as a report from before version 4 holds them."""
    return tuple(
        dataclasses.replace(
            r,
            probes=tuple(dataclasses.replace(p, program="") for p in r.probes),
            program_changes=(),
        )
        for r in results
    )


def test_a_version_1_report_without_failures_or_contradictions_is_read(results, tmp_path):
    path = tmp_path / "tune.json"
    data = older_report(results, path, 1)
    path.write_text(json.dumps(data))
    assert read_results(path) == without_programs(results)
    path.write_text(json.dumps({**data, "version": 2}))
    with pytest.raises(TuneError, match="lacks the field 'failures'"):
        read_results(path)


def test_a_version_2_report_without_tpu_fields_is_read(results, tmp_path):
    path = tmp_path / "tune.json"
    data = older_report(results, path, 2)
    path.write_text(json.dumps(data))
    assert read_results(path) == without_programs(results)
    path.write_text(json.dumps({**data, "version": 3}))
    with pytest.raises(TuneError, match="lacks the field 'compiler_fits'"):
        read_results(path)


def test_a_version_3_report_without_a_remat_plan_is_read(results, tmp_path):
    path = tmp_path / "tune.json"
    data = older_report(results, path, 3)
    path.write_text(json.dumps(data))
    assert read_results(path) == without_programs(results)
    path.write_text(json.dumps({**data, "version": 4}))
    with pytest.raises(TuneError, match="lacks the field '(remat_plan|program)'"):
        read_results(path)


def test_a_version_4_report_without_stopped_probes_is_read(results, tmp_path):
    path = tmp_path / "tune.json"
    data = older_report(results, path, 4)
    path.write_text(json.dumps(data))
    assert read_results(path) == results
    path.write_text(json.dumps({**data, "version": 5}))
    with pytest.raises(TuneError, match="lacks the field 'stopped'"):
        read_results(path)


def test_a_remat_plan_round_trips_and_a_bad_one_is_refused(results, tmp_path):
    plan = {"stage1": "nothing_saveable", "stage2": "none"}
    planned = (dataclasses.replace(results[0], remat_plan=plan),)
    path = tmp_path / "tune.json"
    write_json(planned, path)
    assert read_results(path)[0].remat_plan == plan
    data = json.loads(path.read_text())
    for bad, rule in (
        ({"stage1": "most_saveable"}, "must be 'none' or a jax.checkpoint_policies name"),
        ({}, "must be null or a JSON object"),
        (["stage1"], "must be null or a JSON object"),
        ({"stage1": 3}, "not a policy name"),
    ):
        data["results"][0]["remat_plan"] = bad
        path.write_text(json.dumps(data))
        with pytest.raises(TuneError, match=re.escape(rule)):
            read_results(path)


def test_a_version_3_report_without_programs_is_read_as_such(results, tmp_path):
    path = tmp_path / "tune.json"
    data = older_report(results, path, 3)
    path.write_text(json.dumps(data))
    assert read_results(path) == without_programs(results)
    path.write_text(json.dumps({**data, "version": 4}))
    with pytest.raises(TuneError, match="lacks the field 'program"):
        read_results(path)


def test_write_json_names_its_path_when_it_cannot_write(results, tmp_path):
    with pytest.raises(TuneError, match=r"`path` \(=.*\) is a directory"):
        write_json(results, tmp_path)
    long_name = tmp_path / ("x" * 300 + ".json")
    with pytest.raises(TuneError, match="cannot be written: File name too long"):
        write_json(results, long_name)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(TuneError, match=r"`path` \(=.*loop/out.json'\): the directory"):
        write_json(results, tmp_path / "loop" / "out.json")
    # Any name the directory takes is written: the temporary file's is short.
    write_json(results, tmp_path / ("y" * 250))
    assert read_results(tmp_path / ("y" * 250)) == tuple(results)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_write_json_into_a_read_only_folder_names_its_path(results, tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    with pytest.raises(TuneError, match=r"read-only/out.json'\) cannot be written: Permission"):
        write_json(results, folder / "out.json")


def test_an_integer_too_long_to_read_names_the_file_and_the_field(results, tmp_path):
    path = tmp_path / "tune.json"
    write_json(results, path)
    text = path.read_text()
    row = json.loads(text)["results"][0]
    path.write_text(text.replace(f'"batch": {row["batch"]}', '"batch": ' + "9" * 5000, 1))
    with pytest.raises(TuneError) as caught:
        load_batch_size(path)
    message = str(caught.value)
    assert f"`path` (={str(path)!r}): `results[0].batch` is an integer of 5000 digits" in message
    assert len(message.splitlines()) == 1


def test_a_tpu_row_may_skip_a_candidate_that_failed_to_compile():
    """Where the compiler fits programs, the candidates between the answer
    and the refused one above it are those that failed."""
    from autotune._compile.records import Probe
    from autotune._results.validate import _Fields, _next_refused

    fits = Probe(4856, 1, 1, 0, 1, 1.0)
    refused = Probe(4872, 0, 0, 0, 0, 1.0, required_bytes=3 << 20, available_bytes=2 << 20)
    row = _Fields({"next_batch": 4872, "next_peak_bytes": 3 << 20}, "row")
    probes = {4856: fits, 4872: refused}
    _next_refused(row, 4856, 8, 1 << 14, probes, {4864}, False)
    with pytest.raises(TuneError, match="every one between failing"):
        _next_refused(row, 4856, 8, 1 << 14, probes, set(), False)


def test_a_program_change_round_trips_and_is_not_exact(results, tmp_path):
    switched = dataclasses.replace(results[0], program_changes=((248, 256),))
    assert not switched.exact and "program changes between batch 248 and 256" in switched.render()
    path = tmp_path / "tune.json"
    write_json([switched], path)
    assert read_results(path) == (switched,)
    data = json.loads(path.read_text())
    data["results"][0]["program_changes"] = [[256, 248]]
    path.write_text(json.dumps(data))
    with pytest.raises(TuneError, match="must pair candidates a < b"):
        read_results(path)
