"""Results read back from disk (a report, a cache entry), believed only when a
search could have produced them.

Every field must have its type (an integer is neither a float nor a bool),
every count its range, and the proof must hold together: the batch is a
multiple of `multiple_of` in [multiple_of, max_batch] and one of the row's
own compiles, whose need is `peak_bytes`, within the budget; the next
candidate that compiles is compiled and needs more than the budget, and every
candidate between them is a compile that failed (or there is none: the
answer is the largest candidate, or the search was interrupted); the derived
fields (budget bytes, headroom, batch per device, need of each compile, the
fit through the answer, the compile count, the pairs whose need falls) agree
with what they derive from. Fields this reader does not know are left alone.

A row whose compiler fits programs itself (`compiler_fits`: a TPU) is
proven by compiles alone: its probes may be refusals (the bytes the
compiler said were required), its peak counts the program code, the next
candidate is the one above the answer and was refused, and need is not
assumed to grow (no contradictions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from autotune._compile.records import CompileFailure, Probe, program_changes
from autotune._core import checks as check
from autotune._core.budget import Budget
from autotune._core.errors import TuneError
from autotune._explain.records import PeakBreakdown
from autotune._plans.policies import check_policy
from autotune._results.result import TuneResult
from autotune._targets.registry import check_stored_limit

_PROBE_BYTES = ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes")


class _Fields:
    """The fields of one JSON object, each read through a check that names it."""

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise TuneError(f"`{where}` (={check.shown(data)}) must be a JSON object")
        self.data, self.where = data, where

    def name(self, field: str) -> str:
        return f"{self.where}.{field}"

    def raw(self, field: str) -> Any:
        if field not in self.data:
            raise TuneError(f"`{self.where}` lacks the field {field!r}")
        return self.data[field]

    def fail(self, field: str, rule: str) -> TuneError:
        return TuneError(f"`{self.name(field)}` (={check.shown(self.data.get(field))}) {rule}")

    def integer(self, field: str, minimum: int | None = None) -> int:
        return check.integer(self.name(field), self.raw(field), minimum=minimum)

    def optional_integer(self, field: str, minimum: int | None = None) -> int | None:
        return check.optional_integer(self.name(field), self.raw(field), minimum=minimum)

    def number(self, field: str) -> float:
        return check.real(self.name(field), self.raw(field), minimum=0)

    def optional_number(self, field: str) -> float | None:
        return check.optional_real(self.name(field), self.raw(field), minimum=0)

    def boolean(self, field: str) -> bool:
        return check.boolean(self.name(field), self.raw(field))

    def string(self, field: str) -> str:
        return check.string(self.name(field), self.raw(field))

    def equal(self, field: str, value: int, what: str) -> None:
        if self.integer(field) != value:
            raise self.fail(field, f"must equal {what} (={value:,})")


def result_from_dict(
    data: Any,
    where: str = "result",
    expect: Mapping[str, Any] | None = None,
    version: int = 5,
) -> TuneResult:
    """`data` as a `TuneResult`, once every field and the proof check out.

    `expect` maps fields to the values the caller asked for (a cache hit must
    answer the question asked: the same budget, grid, target and settings).
    `version`: the report schema the row was written in; rows before 5 had
    no probes' `stopped` nor `placed_bytes`, rows before 4
    no `remat_plan`, `program_changes` nor probes' `program`, rows before 3
    no TPU fields, rows before 2 no `failures` and `contradictions`.
    Raises `TuneError` naming the first field that fails, and the rule.
    """
    row = _Fields(_upgraded(data, version), where)
    m = row.integer("multiple_of", 1)
    top = row.integer("max_batch", m)
    dp = row.integer("data_parallel_size", 1)
    if m % dp:
        raise row.fail("data_parallel_size", f"must divide `multiple_of` (={m})")
    batch = _candidate(row, "batch", m, top)
    budget = _budget(_Fields(row.raw("budget"), row.name("budget")))
    fits_by_compiling = row.boolean("compiler_fits")
    if fits_by_compiling:
        _compiler_limit(row, budget)
    probes = _probes(row, m, top, fits_by_compiling)
    failed = _failures(row, m, top, probes)
    peak = row.integer("peak_bytes", 0)
    if batch not in probes or probes[batch].refused:
        raise row.fail("batch", f"is not among the batches compiled ({_batches(probes)})")
    if probes[batch].placed:
        raise row.fail("batch", "was only placed, not compiled in full: it is no answer")
    code = row.integer("code_in_peak_bytes", 0)
    if code != (probes[batch].code_bytes if fits_by_compiling else 0):
        raise row.fail(
            "code_in_peak_bytes",
            "must be the answer's program code where the compiler fits programs "
            "(compiler_fits), else 0",
        )
    row.equal(
        "peak_bytes",
        probes[batch].need_bytes + code,
        f"the need of the compile at batch {batch} (with its code_in_peak_bytes)",
    )
    if peak > budget.bytes:
        raise row.fail("peak_bytes", f"exceeds the budget (={budget.bytes:,})")
    row.equal("headroom_bytes", budget.bytes - peak, "budget.bytes - peak_bytes")
    row.equal("per_device_batch", batch // dp, "batch / data_parallel_size")
    interrupted = row.boolean("interrupted")
    row.boolean("from_cache")
    if fits_by_compiling:
        _next_refused(row, batch, m, top, probes, failed, interrupted)
    else:
        _next_candidate(row, batch, m, top, budget, probes, failed, interrupted)
    fixed, per_example = row.integer("fixed_bytes"), row.integer("per_example_bytes")
    if fixed + per_example * batch != peak:
        raise row.fail(
            "fixed_bytes",
            f"plus per_example_bytes (={per_example:,}) x batch (={batch}) must equal "
            f"peak_bytes (={peak:,}): the fit passes through the answer",
        )
    row.equal("compiles", len(probes) + len(failed), "the number of probes and failures")
    _contradictions(row, {} if fits_by_compiling else probes)
    _program_changes(row, m, top, probes)
    _descriptive_fields(row)
    try:
        result = _result(data)
    except (TypeError, ValueError, KeyError) as e:
        raise TuneError(f"`{where}` does not make a result: {type(e).__name__}: {e}") from None
    for field, value in (expect or {}).items():
        if getattr(result, field) != value:
            raise row.fail(field, f"answers another question: asked for {check.shown(value)}")
    return result


def _result(data: Mapping[str, Any]) -> TuneResult:
    """The result a checked row holds: the inverse of `TuneResult.to_dict`."""
    fields = {f.name for f in dataclasses.fields(TuneResult)}
    values = {k: v for k, v in data.items() if k in fields}
    budget = {k: v for k, v in data["budget"].items() if k != "bytes"}
    probe_fields = {f.name for f in dataclasses.fields(Probe)}
    values["budget"] = Budget(**budget)
    values["probes"] = tuple(
        Probe(**{k: v for k, v in p.items() if k in probe_fields}) for p in data["probes"]
    )
    values["failures"] = tuple(CompileFailure(**f) for f in data.get("failures", ()))
    values["contradictions"] = tuple(tuple(pair) for pair in data.get("contradictions", ()))
    values["program_changes"] = tuple(tuple(pair) for pair in data.get("program_changes", ()))
    values["peak_breakdown"] = _breakdown(data)
    return TuneResult(**values)


def _breakdown(row: Mapping[str, Any]) -> PeakBreakdown | None:
    """The peak breakdown a row holds (`breakdown_to_row`'s fields), if any."""
    if "peak_breakdown_info" not in row:
        return None
    return PeakBreakdown.from_dict(
        {
            **row["peak_breakdown_info"],
            "batch": row["batch"],
            "peak_bytes": row["peak_bytes"],
            "entries": row.get("peak_breakdown") or (),
        }
    )


def check_recommendation(data: Any, results: tuple[TuneResult, ...], where: str) -> None:
    """A report's recommendation names one of its finished rows, at that row's batch."""
    rec = _Fields(data, where)
    label = rec.string("label")
    batch = rec.integer("batch", 1)
    rec.string("basis")
    rate = rec.optional_number("samples_per_second")
    if rate == 0:
        raise rec.fail("samples_per_second", "must be positive or null")
    rows = [r for r in results if r.label == label and not r.interrupted]
    if not rows:
        raise rec.fail("label", "is not the label of a finished row of this report")
    if all(r.batch != batch for r in rows):
        raise rec.fail("batch", f"is not the batch of the row {label!r}")


def check_plan_search(data: Any, where: str) -> None:
    """A report's `plan_search`: how a search over remat plans chose its rows."""
    search = _Fields(data, where)
    search.optional_integer("fit_batch", 1)
    search.integer("plans_probed", 1)
    search.string("rule")
    order = search.raw("order")
    if not isinstance(order, list) or not all(isinstance(b, str) and b for b in order):
        raise search.fail("order", "must be a list of block names")
    trials = search.raw("trials")
    if not isinstance(trials, list):
        raise search.fail("trials", "must be a list")
    for i, item in enumerate(trials):
        trial = _Fields(item, f"{where}.trials[{i}]")
        trial.integer("batch", 1)
        trial.integer("need_bytes", 0)
        trial.boolean("fits")
        trial.optional_number("flops_per_example")
        _remat_plan(trial)


def _upgraded(data: Any, version: int) -> Any:
    """A row of an older schema with the fields it lacked, as it meant them."""
    if not isinstance(data, dict) or version >= 5:
        return data
    old: dict[str, Any] = {}
    blank: dict[str, Any] = {"stopped": False, "placed_bytes": None}
    if version < 4:
        old |= {"remat_plan": None, "program_changes": []}
        blank |= {"program": ""}
    if version < 3:
        old |= {"compiler_fits": False, "code_in_peak_bytes": 0}
        blank |= {"code_bytes": 0, "required_bytes": None, "available_bytes": None}
    if version < 2:
        old |= {"failures": [], "contradictions": []}
    row = {**old, **data}
    probes = row.get("probes")
    if isinstance(probes, list):
        row["probes"] = [{**blank, **p} if isinstance(p, dict) else p for p in probes]
    return row


def _candidate(row: _Fields, field: str, m: int, top: int) -> int:
    batch = row.integer(field, 1)
    if batch % m or batch > top:
        raise row.fail(field, f"must be a multiple of `multiple_of` (={m}) in [{m}, {top}]")
    return batch


def _budget(fields: _Fields) -> Budget:
    limit = fields.integer("limit_bytes", 1)
    reserve = fields.integer("reserve_bytes", 0)
    if reserve >= limit:
        raise fields.fail("reserve_bytes", f"must be below limit_bytes (={limit:,})")
    fields.equal("bytes", limit - reserve, "limit_bytes - reserve_bytes")
    return Budget(limit, reserve, fields.string("source"))


def _probes(row: _Fields, m: int, top: int, fits_by_compiling: bool) -> dict[int, Probe]:
    items = row.raw("probes")
    if not isinstance(items, list) or not items:
        raise row.fail("probes", "must be a non-empty list of compiles")
    probes: dict[int, Probe] = {}
    for i, item in enumerate(items):
        fields = _Fields(item, f"{row.name('probes')}[{i}]")
        batch = _candidate(fields, "batch", m, top)
        if batch in probes:
            raise fields.fail("batch", "repeats a batch compiled before it")
        probe = Probe(
            batch,
            *(fields.integer(name, 0) for name in _PROBE_BYTES),
            compile_seconds=fields.number("compile_seconds"),
            flops=fields.optional_number("flops"),
            required_bytes=fields.optional_integer("required_bytes"),
            available_bytes=fields.optional_integer("available_bytes"),
            code_bytes=fields.integer("code_bytes", 0),
            stopped=fields.boolean("stopped"),
            placed_bytes=fields.optional_integer("placed_bytes", 0),
            program=fields.string("program"),
        )
        if probe.placed:
            _placement(fields, probe, fits_by_compiling)
        elif probe.stopped and fits_by_compiling:
            raise fields.fail(
                "stopped", "must be false but for a placement: a TPU's need is known in full"
            )
        elif probe.refused:
            _refusal(fields, probe, fits_by_compiling)
        elif probe.available_bytes is not None:
            raise fields.fail("available_bytes", "must be null for a compile not refused")
        else:
            fields.equal("need_bytes", probe.need_bytes, "argument + output - alias + temp bytes")
        if probe.need_bytes < 0:
            raise fields.fail("need_bytes", "must not be negative")
        probes[batch] = probe
    return probes


def _compiler_limit(row: _Fields, budget: Budget) -> None:
    """Where the compiler fits programs (a TPU), the budget is the limit it
    fitted the answer into (`autotune._targets.registry.check_stored_limit`)."""
    settings = _Fields(row.raw("xla_settings"), row.name("xla_settings"))
    options = _Fields(settings.raw("compiler_options"), settings.name("compiler_options"))
    check_stored_limit(row.string("target"), budget.bytes, options.data, options.where)


def _placement(fields: _Fields, probe: Probe, fits_by_compiling: bool) -> None:
    """A TPU compile stopped once its buffers were placed: a verdict alone."""
    if not fits_by_compiling:
        raise fields.fail(
            "placed_bytes", "must be null: only a compiler that fits programs places them"
        )
    if not probe.stopped or probe.refused:
        raise fields.fail("placed_bytes", "must be null unless the compile was stopped, unrefused")
    for name in (*_PROBE_BYTES, "code_bytes"):
        if getattr(probe, name):
            raise fields.fail(name, "must be 0 for a placement")
    fields.equal("need_bytes", probe.need_bytes, "placed_bytes, for a placement")


def _refusal(fields: _Fields, probe: Probe, fits_by_compiling: bool) -> None:
    """A compile the compiler refused: what it said was required, above what
    it had, and no buffers."""
    if not fits_by_compiling:
        raise fields.fail(
            "required_bytes", "must be null: only a compiler that fits programs refuses them"
        )
    available = probe.available_bytes
    # Sizes as the compiler prints them, rounded: "(2.00M) exceeds available HBM (2.00M)".
    if available is None or available < 1 or probe.required_bytes < available:
        raise fields.fail("required_bytes", "must be at least a positive available_bytes")
    for name in (*_PROBE_BYTES, "code_bytes"):
        if getattr(probe, name):
            raise fields.fail(name, "must be 0 for a refused compile")
    fields.equal("need_bytes", probe.need_bytes, "required_bytes, for a refused compile")


def _next_refused(
    row: _Fields,
    batch: int,
    m: int,
    top: int,
    probes: Mapping[int, Probe],
    failed: set[int],
    interrupted: bool,
) -> None:
    """Where the compiler fits programs: `next_batch` is the next candidate
    above the batch that did not fail, refused, every one between failing;
    or none, at the largest candidate or interrupted."""
    nxt = row.optional_integer("next_batch", 1)
    nxt_peak = row.optional_integer("next_peak_bytes", 0)
    largest = next((b for b in range(top // m * m, 0, -m) if b not in failed), 0)
    if nxt is None:
        if nxt_peak is not None:
            raise row.fail("next_peak_bytes", "must be null when next_batch is null")
        if not interrupted and batch != largest:
            raise row.fail(
                "next_batch",
                f"is null, so the batch (={batch}) must be the largest candidate "
                f"(={largest}) or the search interrupted",
            )
        return
    between = set(range(batch + m, nxt, m))
    if nxt <= batch or nxt not in probes or not probes[nxt].refused or not between <= failed:
        raise row.fail(
            "next_batch",
            f"must be the next candidate above the batch (={batch}), refused by the "
            "compiler, every one between failing",
        )
    row.equal("next_peak_bytes", probes[nxt].need_bytes, f"the bytes the refusal at {nxt} gave")


def _failures(row: _Fields, m: int, top: int, probes: Mapping[int, Probe]) -> set[int]:
    """The candidates that did not compile."""
    items = row.raw("failures")
    if not isinstance(items, list):
        raise row.fail("failures", "must be a list of compiles that failed")
    failed: set[int] = set()
    for i, item in enumerate(items):
        fields = _Fields(item, f"{row.name('failures')}[{i}]")
        batch = _candidate(fields, "batch", m, top)
        if batch in probes or batch in failed:
            raise fields.fail("batch", "repeats a batch compiled before it")
        fields.string("error")
        fields.number("compile_seconds")
        failed.add(batch)
    return failed


def _contradictions(row: _Fields, probes: Mapping[int, Probe]) -> None:
    """The pairs whose need falls are those the compiles show."""
    ordered = sorted(probes)
    shown = [
        [a, b] for a, b in zip(ordered, ordered[1:]) if probes[a].need_bytes > probes[b].need_bytes
    ]
    if row.raw("contradictions") != shown:
        raise row.fail(
            "contradictions", f"must be the consecutive compiles whose need falls (={shown})"
        )


def _program_changes(row: _Fields, m: int, top: int, probes: Mapping[int, Probe]) -> None:
    """Pairs of candidates a < b, among them every pair of neighbouring
    compiles whose programs differ."""
    pairs = row.raw("program_changes")
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(type(b) is int for b in p) for p in pairs
    ):
        raise row.fail("program_changes", "must be a list of pairs of batches [a, b]")
    for a, b in pairs:
        if not (0 < a < b <= top) or a % m or b % m:
            raise row.fail("program_changes", f"must pair candidates a < b, not [{a}, {b}]")
    shown = [list(pair) for pair in program_changes(tuple(probes.values()))]
    missing = [pair for pair in shown if pair not in pairs]
    if missing:
        raise row.fail(
            "program_changes", f"must hold the compiles whose programs differ (={missing})"
        )


def _next_candidate(
    row: _Fields,
    batch: int,
    m: int,
    top: int,
    budget: Budget,
    probes: Mapping[int, Probe],
    failed: set[int],
    interrupted: bool,
) -> None:
    """`next_batch` is the next candidate that compiles, compiled and over the
    budget, with every candidate between them failed; or none."""
    nxt = row.optional_integer("next_batch", 1)
    nxt_peak = row.optional_integer("next_peak_bytes", 0)
    largest = next((b for b in range(top // m * m, 0, -m) if b not in failed), 0)
    if nxt is None:
        if nxt_peak is not None:
            raise row.fail("next_peak_bytes", "must be null when next_batch is null")
        if not interrupted and batch != largest:
            raise row.fail(
                "next_batch",
                f"is null, so the batch (={batch}) must be the largest candidate "
                f"(={largest}) or the search interrupted",
            )
        return
    between = set(range(batch + m, nxt, m))
    if nxt <= batch or nxt not in probes or not between <= failed:
        raise row.fail(
            "next_batch",
            f"must be the next candidate above the batch (={batch}) that compiled, "
            f"every one between failing (batches compiled: {_batches(probes)})",
        )
    row.equal("next_peak_bytes", probes[nxt].need_bytes, f"the need of the compile at {nxt}")
    if nxt_peak <= budget.bytes:
        raise row.fail("next_peak_bytes", f"must exceed the budget (={budget.bytes:,})")


def _descriptive_fields(row: _Fields) -> None:
    """The fields no proof rests on: their types only."""
    row.optional_integer("estimate_per_example_bytes", 0)
    row.number("seconds")
    row.optional_number("flops_per_example")
    for field in ("label", "target", "target_description", "flops_source"):
        row.string(field)
    _remat_plan(row)
    _xla_settings(_Fields(row.raw("xla_settings"), row.name("xla_settings")))
    if "throughput_bound" in row.data:  # a row of several targets side by side
        _throughput_bound(row)


def _throughput_bound(row: _Fields) -> None:
    """A row's bound on samples/s (`autotune._results.bound`): its rule's
    arithmetic over the row's devices and FLOPs, or a reason for none."""
    bound = _Fields(row.raw("throughput_bound"), row.name("throughput_bound"))
    bound.string("rule")
    bound.string("source")
    reason = bound.string("reason")
    if bound.raw("dtype") is not None:
        bound.string("dtype")
    bound.equal("devices", row.integer("data_parallel_size"), "data_parallel_size")
    if bound.optional_number("flops_per_example") != row.optional_number("flops_per_example"):
        raise bound.fail("flops_per_example", "must equal the row's flops_per_example")
    rate = bound.optional_number("samples_per_second")
    peak = bound.optional_number("peak_flops_per_second")
    if rate is None:
        if not reason:
            raise bound.fail("reason", "must say why there is no bound (samples_per_second null)")
        return
    flops = row.optional_number("flops_per_example")
    if reason or not peak or not flops:
        raise bound.fail(
            "samples_per_second",
            "must be null where there is a reason, or no peak or FLOPs per example",
        )
    expected = peak * row.integer("data_parallel_size") / flops
    if abs(rate - expected) > 1e-9 * expected:
        raise bound.fail(
            "samples_per_second",
            f"must be peak_flops_per_second x devices / flops_per_example (={expected!r})",
        )


def _remat_plan(row: _Fields) -> None:
    plan = row.raw("remat_plan")
    if plan is None:
        return
    if not isinstance(plan, dict) or not plan:
        raise row.fail("remat_plan", "must be null or a JSON object of block -> policy")
    for block, policy in plan.items():
        if not block or not isinstance(policy, str):
            raise row.fail("remat_plan", f"maps {block!r} to {policy!r}: not a policy name")
        try:
            check_policy(f"remat_plan[{block!r}]", policy)
        except TuneError as e:
            raise row.fail("remat_plan", str(e)) from None


def _xla_settings(fields: _Fields) -> None:
    fields.boolean("remat_pass")
    for name in ("XLA_FLAGS", "jax", "jaxlib"):
        fields.string(name)
    if not isinstance(fields.raw("compiler_options"), dict):
        raise fields.fail("compiler_options", "must be a JSON object")


def _batches(probes: Mapping[int, Probe]) -> str:
    return ", ".join(str(b) for b in sorted(probes))
