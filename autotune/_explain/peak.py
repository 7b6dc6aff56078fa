"""The peak of a compiled step, buffer by buffer, in the user's own terms.

XLA's memory analysis gives the step's need as four totals (argument +
output - alias + temp). Its dump says what they are made of (see
`autotune._compile.dump`), and the need is, to the byte, the sum of:

- each entry parameter's buffer (a donated one is also where its new value
  is written, so it is counted once);
- each output buffer that is not a donated parameter's;
- the temporary arena, one block in which XLA places every other value at
  an offset, reusing bytes between values that are not live at the same
  time.

Parameters and outputs are held for the whole step. The arena's contents
change as the schedule runs; the breakdown takes the step at which the most
arena bytes are in use (counting bytes two values share once) and lists the
values live then. The arena bytes no live value covers at that step
(alignment, fragmentation) are one entry of kind "arena_free". The buffers
too small to list are summed in a final "rest" entry, so the entries always
sum to the need.

Kinds. Arguments by `autotune._compile.arguments`: parameter, optimizer_state,
input_batch. Values, by the op name JAX gave the op that made them:

- activation: made by the forward pass (`jvp(...)`, not `transpose(...)`).
  When the peak falls in the backward pass (it nearly always does), these
  are the activations saved for it: what rematerialization can free.
- gradient: made by the backward pass (`transpose(...)`): the gradients of
  activations and of parameters.
- temporary: anything else: convolution workspace, values recomputed under
  remat (`rematted_computation`), the optimizer's update, fusions XLA made
  without an op name (named after the first op they fuse). A copy XLA adds
  takes the name and kind of the value it copies.
- output: an output that is not written over a donated argument and is not
  a new value of an argument at the same path (which takes that argument's
  kind: an undonated step holds its parameters twice).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from autotune._compile.arguments import INPUT_BATCH, OPTIMIZER_STATE, PARAMETER, ArgumentLeaf
from autotune._compile.dump import (
    Allocation,
    DumpError,
    DumpTexts,
    Hlo,
    Instruction,
    LiveRanges,
    Value,
    parse_buffer_assignment,
    parse_hlo,
    parse_live_ranges,
)
from autotune._explain.records import PeakBreakdown, PeakEntry, unavailable

ACTIVATION = "activation"
GRADIENT = "gradient"
TEMPORARY = "temporary"
OUTPUT = "output"
ARENA_FREE = "arena_free"
REST = "rest"
KINDS = (
    PARAMETER, OPTIMIZER_STATE, INPUT_BATCH, ACTIVATION, GRADIENT, TEMPORARY, OUTPUT,
    ARENA_FREE, REST,
)  # fmt: skip

# The largest buffers are listed until those left are at most this share of the peak.
UNLISTED_SHARE = 0.01
# The dump's buffers must add up to memory_analysis()'s need within this share.
RECONCILE_SHARE = 0.01


def explain_peak(
    texts: DumpTexts,
    peak_bytes: int,
    arguments: Sequence[ArgumentLeaf],
    out_paths: Sequence[str],
    *,
    batch: int,
    obtained: str,
) -> PeakBreakdown:
    """The breakdown of a compile's dump; "unavailable" if it cannot be read.

    `peak_bytes` is the compile's need from `memory_analysis()`, `arguments`
    the step's argument leaves in order, `out_paths` its outputs' paths.
    """
    try:
        hlo = parse_hlo(texts.hlo)
        allocations = parse_buffer_assignment(texts.buffer_assignment)
        live = parse_live_ranges(texts.live_range)
        entries, unused, step = _entries(hlo, allocations, live, arguments, out_paths)
    except DumpError as e:
        return unavailable(batch, peak_bytes, str(e), obtained)
    total = sum(e.bytes for e in entries) + unused
    if abs(peak_bytes - total) > RECONCILE_SHARE * peak_bytes:
        return unavailable(
            batch,
            peak_bytes,
            f"the dump's buffers add up to {total:,} B, and memory_analysis() "
            f"gives a need of {peak_bytes:,} B",
            obtained,
        )
    if unused:
        entries.append(PeakEntry(unused, (), "", ARENA_FREE, "", None))
    by_kind: dict[str, int] = {}
    by_module: dict[str, dict[str, int]] = {}
    for e in entries:
        by_kind[e.kind] = by_kind.get(e.kind, 0) + e.bytes
        if e.kind in (ACTIVATION, GRADIENT, TEMPORARY):
            kinds = by_module.setdefault(e.module, {})
            kinds[e.kind] = kinds.get(e.kind, 0) + e.bytes
    if peak_bytes != total:  # memory_analysis() is the reference
        by_kind[REST] = peak_bytes - total
    return PeakBreakdown(
        batch=batch,
        peak_bytes=peak_bytes,
        entries=_listed(entries, peak_bytes),
        obtained=obtained,
        seconds=0.0,
        peak_step=step,
        unused_bytes=unused,
        bytes_by_kind=_largest_first(by_kind),
        bytes_by_module=dict(
            sorted(by_module.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        ),
    )


def _largest_first(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _listed(entries: list[PeakEntry], peak_bytes: int) -> tuple[PeakEntry, ...]:
    """The largest entries until what is left is small, then one "rest"."""
    ordered = sorted(entries, key=lambda e: -e.bytes)
    listed, left = [], sum(e.bytes for e in ordered)
    for e in ordered:
        if left <= UNLISTED_SHARE * peak_bytes or e.bytes == 0:
            break
        listed.append(e)
        left -= e.bytes
    rest = peak_bytes - sum(e.bytes for e in listed)
    return (*listed, PeakEntry(rest, (), "", REST, "", None, ""))


def _entries(
    hlo: Hlo,
    allocations: Sequence[Allocation],
    live: LiveRanges,
    arguments: Sequence[ArgumentLeaf],
    out_paths: Sequence[str],
) -> tuple[list[PeakEntry], int, str]:
    """(entries, unused arena bytes, the peak's step) of one dump."""
    entries = _parameter_entries(hlo, allocations, arguments)
    entries += _output_entries(hlo, allocations, live, arguments, out_paths)
    arenas = [a for a in allocations if a.role == "temp"]
    unused, step = 0, ""
    if arenas:
        at, values = peak_step(arenas, live)
        for value, nbytes in values:
            entries.append(_value_entry(hlo, value, nbytes))
        unused = sum(a.size for a in arenas) - sum(n for _, n in values)
        step = _describe_step(hlo, live, at)
    return entries, unused, step


def _parameter_entries(
    hlo: Hlo, allocations: Sequence[Allocation], arguments: Sequence[ArgumentLeaf]
) -> list[PeakEntry]:
    params = {i.parameter: i for i in hlo.instructions.values() if i.parameter is not None}
    leaf_of = _match_parameters(params, arguments)
    entries = []
    for a in allocations:
        if a.role != "parameter":
            continue
        ins = params.get(a.parameter)
        if ins is None:
            raise DumpError(f"allocation {a.index} holds parameter {a.parameter}, not in the HLO")
        leaf = arguments[leaf_of[a.parameter]] if a.parameter in leaf_of else None
        dtype, shape = parse_shape(ins.shape)
        entries.append(
            PeakEntry(
                bytes=a.size,
                shape=shape,
                dtype=dtype,
                kind=leaf.kind if leaf else PARAMETER,
                op_name=ins.op_name or (leaf.path if leaf else ins.name),
                source=None,
            )
        )
    return entries


def _match_parameters(
    params: Mapping[int, Instruction], arguments: Sequence[ArgumentLeaf]
) -> dict[int, int]:
    """Entry parameter number -> argument leaf index.

    JAX passes the flattened leaves in order, leaving out those the step
    does not use: each parameter is the next leaf of its shape whose op name
    is an argument's name followed by the leaf's path within that argument
    (what JAX writes there).
    """
    out, j = {}, 0
    for number in sorted(params):
        ins = params[number]
        _, shape = parse_shape(ins.shape)
        start = j
        while j < len(arguments) and not _same_leaf(ins, shape, arguments[j]):
            j += 1
        if j == len(arguments):
            raise DumpError(
                f"entry parameter {number} ({ins.shape} {ins.op_name!r}) matches no "
                f"argument leaf from position {start}"
            )
        out[number] = j
        j += 1
    return out


def _same_leaf(ins: Instruction, shape: tuple[int, ...], leaf: ArgumentLeaf) -> bool:
    if shape != leaf.shape and not (
        leaf.dtype.startswith("key<") and shape[: len(leaf.shape)] == leaf.shape
    ):
        return False
    if not ins.op_name:
        return True
    within = re.sub(r"^\[\d+\]", "", leaf.path)  # JAX puts the argument's name first
    name = ins.op_name[: len(ins.op_name) - len(within)]
    return (
        ins.op_name.endswith(within) and re.fullmatch(r"[A-Za-z_]\w*(\[\d+\])?", name) is not None
    )


def _output_entries(
    hlo: Hlo,
    allocations: Sequence[Allocation],
    live: LiveRanges,
    arguments: Sequence[ArgumentLeaf],
    out_paths: Sequence[str],
) -> list[PeakEntry]:
    outputs = hlo.output_values()
    path_of = dict(zip(outputs, out_paths)) if len(outputs) == len(out_paths) else {}
    kind_at = {(leaf.path, leaf.shape): leaf.kind for leaf in arguments}
    entries = []
    for a in allocations:
        if a.role != "output":
            continue
        held = [v for v in a.values if v.key in path_of] or sorted(
            a.values, key=lambda v: live.ranges.get(v.key, (0, 0))[1]
        )[-1:]
        if not held:
            entries.append(PeakEntry(a.size, (), "", OUTPUT, "", None))
            continue
        value = held[0]
        entry = _value_entry(hlo, value, a.size)
        kind = kind_at.get((path_of.get(value.key, ""), entry.shape), OUTPUT)
        entries.append(dataclasses.replace(entry, kind=kind))
    return entries


def peak_step(
    arenas: Sequence[Allocation], live: LiveRanges
) -> tuple[int, list[tuple[Value, int]]]:
    """The step with the most arena bytes in use, and each live value's share.

    Two values live at one step may share bytes (an op writing its output
    over its input's buffer): shared bytes are counted once, for the value
    defined later.
    """
    placed = [
        (live.ranges[v.key], a.index, v) for a in arenas for v in a.values if v.key in live.ranges
    ]
    if not placed:
        raise DumpError("no value of the temporary arena has a live range")
    # The sum of live sizes bounds the bytes in use from above (shared bytes
    # count twice): try the steps by that bound and stop when it cannot win.
    delta: dict[int, int] = {}
    for (first, last), _, v in placed:
        delta[first] = delta.get(first, 0) + v.size
        delta[last + 1] = delta.get(last + 1, 0) - v.size
    bound, running = {}, 0
    for step in sorted(delta):
        running += delta[step]
        bound[step] = running
    best: tuple[int, int, list[tuple[Value, int]]] = (-1, 0, [])
    for step in sorted(bound, key=lambda s: (-bound[s], s)):
        if bound[step] <= best[0]:
            break
        shares = _shares([(r, i, v) for r, i, v in placed if r[0] <= step <= r[1]])
        used = sum(n for _, n in shares)
        if used > best[0]:
            best = (used, step, shares)
    return best[1], best[2]


def _shares(alive: list[tuple[tuple[int, int], int, Value]]) -> list[tuple[Value, int]]:
    """Each value's bytes not already covered by a later-defined value."""
    covered: dict[int, list[tuple[int, int]]] = {}
    shares = []
    for _, arena, v in sorted(alive, key=lambda x: -x[0][0]):
        span = (v.offset, v.offset + v.size)
        free = _uncovered(span, covered.setdefault(arena, []))
        covered[arena].append(span)
        if free:
            shares.append((v, free))
    return shares


def _uncovered(span: tuple[int, int], covered: list[tuple[int, int]]) -> int:
    start, end = span
    overlaps = sorted((max(s, start), min(e, end)) for s, e in covered if s < end and e > start)
    free, at = 0, start
    for s, e in overlaps:
        if s > at:
            free += s - at
        at = max(at, e)
    return free + max(0, end - at)


def _value_entry(hlo: Hlo, value: Value, nbytes: int) -> PeakEntry:
    ins = hlo.named(value.name)
    dtype, shape = parse_shape(value.shape)
    if ins is None:
        return PeakEntry(nbytes, shape, dtype, TEMPORARY, "", None)
    own = hlo.named(value.name, fusions=False)  # a nameless fusion is XLA's: temporary
    return PeakEntry(
        bytes=nbytes,
        shape=shape,
        dtype=dtype,
        kind=_value_kind(own, dtype) if own is not None and own.op_name else TEMPORARY,
        op_name=ins.op_name,
        source=ins.source or None,
        module=module_of(ins.op_name, ins.stack),
    )


def _value_kind(ins: Instruction, dtype: str) -> str:
    op = ins.op_name
    if "rematted_computation" in op or dtype in ("uint8", "int8", "tuple"):
        return TEMPORARY  # recomputed, or workspace bytes and pointer tables
    if "transpose(" in op:
        return GRADIENT
    if "jvp(" in op:
        return ACTIVATION
    return TEMPORARY


def _describe_step(hlo: Hlo, live: LiveRanges, step: int) -> str:
    """Where the peak is: its step, the pass it falls in, the op scheduled there."""
    sequence = live.sequence
    name = sequence[step] if step < len(sequence) else ""
    # The op there may have no op name (a fusion XLA made): the nearest before it.
    nearest = _nearest_phase(hlo, reversed(sequence[: step + 1]))
    nearest = nearest or _nearest_phase(hlo, sequence[step + 1 :])
    phase = f"in the {nearest}" if nearest else ""
    ins, own = hlo.named(name), hlo.named(name, fusions=False)
    op = ""
    if ins is not None and ins.op_name:
        fuses = own is None or not own.op_name
        op = f" ({'fuses ' if fuses else ''}{ins.op_name})"
    return ", ".join(p for p in (f"step {step} of {len(sequence)}", phase) if p) + (
        f": {name}{op}" if name else ""
    )


def _nearest_phase(hlo: Hlo, names: Any) -> str:
    for name in names:
        ins = hlo.named(name, fusions=False)
        op = ins.op_name if ins is not None else ""
        if "transpose(" in op:
            return "backward pass"
        if "jvp(" in op:
            return "forward pass"
    return ""


# ---- names ----

_TRANSFORM = re.compile(r"^[\w-]+\((.*)\)$")
# Name-stack words that are JAX's own, not the model's.
_NOT_MODULES = frozenset(
    {"checkpoint", "remat", "remat2", "rematted_computation", "custom_jvp_call",
     "custom_vjp_call", "custom_vjp_call_jaxpr", "closed_call", "core_call", "while",
     "body", "cond", "scan",
     "branch", "vmap", "pmap", "shard_map"}
)  # fmt: skip


def module_of(op_name: str, stack: Sequence[str] = ()) -> str:
    """The model's module path of an op.

    The named scopes in its op name (Linen modules, `jax.named_scope`), else
    the `Class.method` frames nearest the op on its stack, up to the first
    other frame (an NNX model's modules, by class: "Net/Conv"), else "".
    """
    scopes = _scopes(op_name.split(";")[0])  # XLA joins the names of fused ops with ";"
    if scopes:
        return "/".join(scopes)
    classes: list[str] = []
    for frame in reversed(stack):
        if re.match(r"^[A-Za-z_]\w*\.\w+$", frame):
            classes.insert(0, frame.split(".")[0])
        elif classes:
            break
    return "/".join(classes)


def _scopes(op_name: str) -> list[str]:
    parts = _split_top(op_name)
    if len(parts) < 2 or not parts[0].startswith(("jit(", "pjit(")):
        return []
    out: list[str] = []
    for part in parts[1:-1]:
        name = part
        while (m := _TRANSFORM.match(name)) and not name.startswith(("jit(", "pjit(")):
            name = m.group(1)
        if not name or name in _NOT_MODULES or name.startswith(("jit(", "pjit(")):
            continue
        if not out or out[-1] != name:
            out.append(name)
    return out


def _split_top(op_name: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for c in op_name:
        depth += {"(": 1, ")": -1}.get(c, 0)
        if c == "/" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += c
    return [*parts, current]


_DTYPES = {
    "pred": "bool", "s8": "int8", "s16": "int16", "s32": "int32", "s64": "int64",
    "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
    "f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64",
    "c64": "complex64", "c128": "complex128",
}  # fmt: skip


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """("float32", (8, 32)) from XLA's "f32[8,32]{1,0}"; ("tuple", ()) for a tuple."""
    if text.startswith("("):
        return "tuple", ()
    m = re.match(r"^(\w+)\[([\d,\s]*)\]", text)
    if not m:
        raise DumpError(f"cannot read the shape {text!r}")
    dims = tuple(int(d) for d in m.group(2).split(",") if d.strip())
    element = m.group(1)
    return _DTYPES.get(element, element), dims
