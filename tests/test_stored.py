"""Stored data is untrusted: a tampered cache entry or report never reaches a
caller as a batch size.

Every field of a real cache entry and of a real report is tampered with in
turn (a wrong type, a value off by one or by a candidate, another string, a
deleted key). A wrong type or a deleted key is always refused, naming the
field; a tamper of a field the answer's proof rests on is always refused;
whatever is accepted leaves the batch as it was.
"""

import copy
import dataclasses
import json
import re
import warnings

import pytest
from steps import CountingStep, mlp_args, mlp_step, need_at

from autotune import (
    ResultCache,
    TuneError,
    find_max_batch,
    get_target,
    load_batch_size,
    write_json,
)

SEARCH = dict(multiple_of=8, max_batch=256)
HEADROOM = 100


def tampers(value):
    """(kind, tampered value) pairs: "type" changes the JSON type, "value" keeps it."""
    if isinstance(value, bool):
        return [("type", int(value)), ("type", str(value).lower()), ("type", None)] + [
            ("value", not value)
        ]
    if isinstance(value, int):
        typed = [("type", str(value)), ("type", float(value)), ("type", value + 0.9)]
        typed += [("type", True)]
        values = {value + 1, value - 1, -value - 1, 0, value + 8, None}
        return typed + [("value", v) for v in values if v != value]
    if isinstance(value, float):
        return [("type", str(value)), ("type", True), ("type", float("nan"))] + [
            ("type", float("inf")),
            ("value", 2 * value + 1),
            ("value", -1.0),
            ("value", None),
        ]
    if isinstance(value, str):
        return [("type", 42), ("type", True), ("type", None), ("value", value + "x")]
    if value is None:
        return [("type", "x"), ("type", True), ("value", 0)]
    other = [] if isinstance(value, dict) else {}
    return [("type", "x"), ("type", None), ("type", 42), ("type", other)]


def paths(tree, path=()):
    """Every node of a JSON tree below the root, containers included."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        yield (*path, key), value
        if isinstance(value, (dict, list)):
            yield from paths(value, (*path, key))


def dotted(path):
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else f".{key}"
    return text.lstrip(".")


def replaced(tree, path, value=None, delete=False):
    tree = copy.deepcopy(tree)
    node = tree
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return tree


def cases(tree, under):
    """(path, kind, tampered tree) for every node under `under`."""
    for path, value in paths(tree):
        if path[: len(under)] != under or len(path) == len(under):
            continue
        for kind, bad in tampers(value):
            yield path, kind, replaced(tree, path, bad)
        if isinstance(path[-1], str):
            yield path, "delete", replaced(tree, path, delete=True)


def proof_paths(row, prefix):
    """The fields the answer stands on: tampering with any must be refused."""
    fields = ["batch", "peak_bytes", "next_batch", "next_peak_bytes", "headroom_bytes"]
    fields += ["per_device_batch", "multiple_of", "data_parallel_size", "compiles"]
    fields += ["fixed_bytes", "per_example_bytes", "interrupted"]
    found = {(*prefix, f) for f in fields}
    found |= {(*prefix, "budget", f) for f in ("limit_bytes", "reserve_bytes", "bytes")}
    for i, probe in enumerate(row["probes"]):
        if probe["batch"] in (row["batch"], row["next_batch"]):
            # A program's code is part of the proof only where the peak counts
            # it; what a refusing compiler said it had is its rounded message;
            # a GPU's need is exact whether its compile stopped or not.
            loose = ("compile_seconds", "flops", "available_bytes")
            loose += () if row["compiler_fits"] else ("code_bytes", "stopped")
            found |= {(*prefix, "probes", i, f) for f in probe if f not in loose}
        found.add((*prefix, "probes", i, "need_bytes"))
    return found


def judge(tree, under, proof, outcome):
    """Runs every tamper; returns the violations of the rules in the docstring."""
    violations = []
    for path, kind, bad in cases(tree, under):
        refused, batch, message = outcome(bad)
        where = f"{dotted(path)} ({kind})"
        if kind in ("type", "delete"):
            named = dotted(path) if kind == "type" else dotted(path[:-1])
            if not refused or named not in message:
                violations.append(f"{where}: not refused naming {named!r}: {message!r}")
        elif path in proof and not refused:
            violations.append(f"{where}: a tampered proof was accepted")
        if not refused and batch != tree_batch(tree, under):
            violations.append(f"{where}: accepted with batch {batch!r}")
    return violations


def tree_batch(tree, under):
    node = tree
    for key in under:
        node = node[key]
    return node["batch"]


@pytest.fixture(scope="module")
def budget():
    return need_at(mlp_step, mlp_args, 64) + HEADROOM


@pytest.fixture(scope="module")
def cached(tmp_path_factory, budget):
    """A real cache entry, the key it is stored under and what a hit must answer."""
    cache = ResultCache(tmp_path_factory.mktemp("cache"))
    first = find_max_batch(mlp_step, mlp_args, budget_bytes=budget, cache=cache, **SEARCH)
    assert first.exact and first.batch == 64
    asked = []
    get = cache.get

    def spy(key, expect=None):
        asked.append((key, expect))
        return get(key, expect=expect)

    cache.get = spy
    hit = find_max_batch(mlp_step, mlp_args, budget_bytes=budget, cache=cache, **SEARCH)
    assert hit.from_cache and hit.batch == first.batch
    ((key, expect),) = asked
    cache.get = get
    entry = json.loads(cache._path(key).read_text())
    return cache, key, expect, entry


def test_every_tampered_cache_field_is_refused_or_harmless(cached):
    cache, key, expect, entry = cached
    path = cache._path(key)

    def outcome(bad):
        path.write_text(json.dumps(bad))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hit = cache.get(key, expect=expect)
        result = None if hit is None else hit[0]
        messages = [str(w.message) for w in caught]
        assert len(messages) == (result is None), messages  # reported once, if at all
        return result is None, getattr(result, "batch", None), " ".join(messages)

    # A hit must answer the question asked: every field the key covers counts.
    asked = {("result", f) for f in expect} | {("result", "budget", "source")}
    asked |= {("result", "xla_settings", f) for f in entry["result"]["xla_settings"]}
    proof = proof_paths(entry["result"], ("result",)) | asked | {("result", "max_batch")}
    try:
        violations = judge(entry, ("result",), proof, outcome)
        assert not violations, "\n".join(violations)
    finally:
        path.write_text(json.dumps(entry))
    assert cache.get(key, expect=expect)[0].batch == 64


@pytest.mark.parametrize(
    "entry",
    ["[]", "null", "42", '"text"', "{}", '{"format": true}', '{"format": "1"}', "{not json"],
)
def test_cache_entries_of_the_wrong_shape_are_misses(cached, entry):
    cache, key, expect, good = cached
    path = cache._path(key)
    try:
        path.write_text(entry)
        with pytest.warns(RuntimeWarning, match="ignoring the cache entry") as caught:
            assert cache.get(key, expect=expect) is None
        assert len(caught) == 1
        path.write_text(json.dumps({**good, "key": "0" * 64}))
        with pytest.warns(RuntimeWarning, match="`key` is not the entry's file name"):
            assert cache.get(key, expect=expect) is None
    finally:
        path.write_text(json.dumps(good))


@pytest.mark.parametrize("batch", [512, -8, "64", None, 72])
def test_a_tampered_entry_is_searched_again_and_replaced(tmp_path, budget, batch):
    cache = ResultCache(tmp_path)
    find_max_batch(CountingStep(mlp_step), mlp_args, budget_bytes=budget, cache=cache, **SEARCH)
    (path,) = tmp_path.glob("*.json")
    entry = json.loads(path.read_text())
    entry["result"]["batch"] = batch
    path.write_text(json.dumps(entry))
    counting = CountingStep(mlp_step)
    with pytest.warns(RuntimeWarning, match=r"ignoring the cache entry .*: `result\.(batch|peak)"):
        again = find_max_batch(counting, mlp_args, budget_bytes=budget, cache=cache, **SEARCH)
    assert (again.batch, again.from_cache) == (64, False) and counting.compiles > 0
    counting = CountingStep(mlp_step)
    hit = find_max_batch(counting, mlp_args, budget_bytes=budget, cache=cache, **SEARCH)
    assert (hit.batch, hit.from_cache, counting.compiles) == (64, True, 0)


@pytest.fixture(scope="module")
def report(tmp_path_factory, budget):
    result = find_max_batch(mlp_step, mlp_args, budget_bytes=budget, label="mlp", **SEARCH)
    path = tmp_path_factory.mktemp("report") / "tune.json"
    write_json([result], path)
    return path, json.loads(path.read_text())


def test_every_tampered_report_field_is_refused_or_harmless(report, tmp_path):
    good, data = report
    path = tmp_path / "tune.json"

    def outcome(bad):
        path.write_text(json.dumps(bad))
        try:
            batch = load_batch_size(path, "mlp")
        except TuneError as e:
            message = str(e)
            assert str(path) in message and re.search(r"results\[0\]|`label`", message)
            return True, None, message
        assert isinstance(batch, int) and not isinstance(batch, bool)
        return False, batch, ""

    proof = proof_paths(data["results"][0], ("results", 0))
    violations = judge(data, ("results", 0), proof, outcome)
    assert not violations, "\n".join(violations)


def forged(row, **changes):
    """`row` with `changes`, and every field derived from them made to agree."""
    row = {**copy.deepcopy(row), **changes}
    budget = row["budget"]
    budget["bytes"] = budget["limit_bytes"] - budget["reserve_bytes"]
    row["headroom_bytes"] = budget["bytes"] - row["peak_bytes"]
    row["per_device_batch"] = row["batch"] // row["data_parallel_size"]
    row["fixed_bytes"] = row["peak_bytes"] - row["per_example_bytes"] * row["batch"]
    return row


def with_probe_at(row, batch):
    """`row` with one more compile, at `batch`, made to look like the answer's."""
    answer = next(p for p in row["probes"] if p["batch"] == row["batch"])
    smaller = {**answer, "batch": batch, "temp_bytes": answer["temp_bytes"] // 2}
    smaller["need_bytes"] = answer["need_bytes"] - (answer["temp_bytes"] - smaller["temp_bytes"])
    return {**row, "probes": [*row["probes"], smaller], "compiles": row["compiles"] + 1}


def need(row, batch):
    return next(p["need_bytes"] for p in row["probes"] if p["batch"] == batch)


FORGERIES = {
    "budget below the answer's need": (
        lambda r: forged(r, budget={**r["budget"], "limit_bytes": r["peak_bytes"] - 1}),
        r"`results\[0\]\.peak_bytes` \(=\d+\) exceeds the budget",
    ),
    "budget above the next candidate's need": (
        lambda r: forged(r, budget={**r["budget"], "limit_bytes": r["next_peak_bytes"]}),
        r"`results\[0\]\.next_peak_bytes` \(=\d+\) must exceed the budget",
    ),
    "a smaller answer whose next candidate is not the next multiple": (
        lambda r: forged(with_probe_at(r, 8), batch=8, peak_bytes=need(with_probe_at(r, 8), 8)),
        r"`results\[0\]\.next_batch` \(=72\) must be the next candidate above the batch \(=8\)",
    ),
    "a device count that does not divide the grid": (
        lambda r: forged(r, data_parallel_size=3),
        r"`results\[0\]\.data_parallel_size` \(=3\) must divide `multiple_of` \(=8\)",
    ),
    "no next candidate below the largest one": (
        lambda r: forged(r, next_batch=None, next_peak_bytes=None),
        r"is null, so the batch \(=64\) must be the largest candidate \(=256\)",
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_proof_made_to_look_whole_is_refused(report, tmp_path, forgery):
    """Several fields changed together so that every derived field agrees."""
    _, data = report
    forge, message = FORGERIES[forgery]
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({**data, "results": [forge(data["results"][0])]}))
    with pytest.raises(TuneError, match=message):
        load_batch_size(path)


@pytest.mark.parametrize("batch", [-8, 0, True, 440.9, 64.0, "64", None, 65, 512, 56, 72])
def test_load_batch_size_never_returns_a_tampered_batch(report, tmp_path, batch):
    _, data = report
    path = tmp_path / "tune.json"
    path.write_text(json.dumps(replaced(data, ("results", 0, "batch"), batch)))
    with pytest.raises(TuneError, match=re.escape(f"`path` (={str(path)!r})")) as raised:
        load_batch_size(path)
    assert re.search(r"`results\[0\]\.(batch|peak_bytes)`", str(raised.value))


def test_an_interrupted_row_is_a_batch_size_only_when_asked(report, tmp_path):
    _, data = report
    row = {**data["results"][0], "interrupted": True, "next_batch": None}
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({**data, "results": [{**row, "next_peak_bytes": None}]}))
    with pytest.raises(TuneError, match="interrupted search.*allow_interrupted=True"):
        load_batch_size(path)
    assert load_batch_size(path, allow_interrupted=True) == 64
    with pytest.raises(TuneError, match=r"`allow_interrupted` \(=1\) must be True or False"):
        load_batch_size(path, allow_interrupted=1)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"version": True}, "report version True"),
        ({"version": 1.0}, "report version 1.0"),
        ({"version": "1"}, "report version '1'"),
        ({"schema": ["autotune.result"]}, "is not an autotune report"),
        ({"results": {}}, r"`results` \(=\{\}\) must be a list"),
        ({"results": [[]]}, r"`results\[0\]` \(=\[\]\) must be a JSON object"),
        ({"recommendation": []}, r"`recommendation` \(=\[\]\) must be a JSON object"),
        (
            {
                "recommendation": {
                    "label": "other",
                    "batch": 64,
                    "basis": "",
                    "samples_per_second": None,
                }
            },
            "recommendation.label",
        ),
        (
            {
                "recommendation": {
                    "label": "mlp",
                    "batch": 72,
                    "basis": "",
                    "samples_per_second": None,
                }
            },
            "recommendation.batch",
        ),
    ],
)
def test_a_tampered_report_envelope_is_refused(report, tmp_path, change, message):
    _, data = report
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({**data, **change}))
    with pytest.raises(TuneError, match=message):
        load_batch_size(path)


def test_a_label_that_names_two_rows_is_refused(report, tmp_path):
    _, data = report
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({**data, "results": data["results"] * 2}))
    with pytest.raises(TuneError, match=r"`label` \(='mlp'\) names 2 rows"):
        load_batch_size(path, "mlp")


@pytest.mark.parametrize("stop", [False, True], ids=["full", "placed"])
def test_every_tampered_field_of_a_tpu_report_is_refused_or_harmless(tmp_path, stop):
    """A TPU row's proof (the answer compiled, the candidate above refused, the
    code in the peak) holds against every tamper, as a GPU row's does; with
    probes stopped at their placement too."""
    pytest.importorskip("libtpu", reason="compiling for a described TPU needs libtpu")
    target = dataclasses.replace(get_target("v5e:1x1"), stop_at_assignment=stop)
    result = find_max_batch(
        mlp_step, mlp_args, target=target, budget_bytes=2 << 20, donate_argnums=0,
        label="mlp", max_batch=1 << 14,
    )  # fmt: skip
    assert result.compiler_fits and result.exact
    assert any(p.placed for p in result.probes) == stop
    good = tmp_path / "good.json"
    write_json([result], good)
    data = json.loads(good.read_text())
    path = tmp_path / "tune.json"

    def outcome(bad):
        path.write_text(json.dumps(bad))
        try:
            return False, load_batch_size(path, "mlp"), ""
        except TuneError as e:
            return True, None, str(e)

    proof = proof_paths(data["results"][0], ("results", 0)) | {("results", 0, "compiler_fits")}
    proof |= {("results", 0, "code_in_peak_bytes")}
    violations = judge(data, ("results", 0), proof, outcome)
    assert not violations, "\n".join(violations)
