"""XLA's dump of one compiled program, read back as data.

`compile_with_dump` compiles a lowered step with `xla_dump_to` pointing at a
private temporary directory (the option is passed to this one compile; the
process-wide `XLA_FLAGS`, read once when the backend starts, are untouched),
keeps three of the files XLA writes, and removes the directory:

- the optimized HLO (`*after_optimizations.txt`): every instruction's shape
  and metadata (op name, source location or stack frame);
- the buffer assignment (`*-buffer-assignment.txt`): each allocation, what
  it is (an entry parameter, an output, the temporary arena), and each value
  placed in it at an offset;
- the live ranges (`*-live-range.txt`): when each value is live, in steps of
  the schedule.

The parsers are defensive: the format is XLA's debug output and differs
between versions. Anything they cannot read raises `DumpError` with the
reason; nothing is guessed.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax

_HLO_SUFFIX = "after_optimizations.txt"
_BUFFERS_SUFFIX = "after_optimizations-buffer-assignment.txt"
_LIVE_SUFFIX = "after_optimizations-live-range.txt"


class DumpError(Exception):
    """The dump is missing or not in a form this module can read."""


@dataclasses.dataclass(frozen=True)
class DumpTexts:
    """The three files of one compiled module, as text."""

    hlo: str
    buffer_assignment: str
    live_range: str


@dataclasses.dataclass(frozen=True)
class Dump:
    """What one compile's dump says, or why it cannot be read."""

    texts: DumpTexts | None
    error: str  # "" when `texts` were read
    out_paths: tuple[str, ...]  # the step's outputs, as `jax.tree_util.keystr` paths


def compile_with_dump(
    lowered: Any, options: Mapping[str, Any], *, recompile: bool = True
) -> tuple[Any, Dump]:
    """Compile `lowered` with `options` and XLA's dump: (compiled, dump).

    The dump directory is a fresh temporary one, removed before returning.
    Compile errors propagate; a dump that cannot be read is reported in
    `Dump.error`. The dump options leave JAX's persistent compilation cache
    key unchanged, so a compile found there writes no dump: with `recompile`
    it is then compiled once more under a key of its own (`_UNCACHED`).
    """
    compiled, texts, error = _compile_and_read(lowered, options)
    if texts is None and recompile and persistent_cache_on():
        _, texts, error = _compile_and_read(lowered, {**options, **_UNCACHED})
    return compiled, Dump(texts, error, out_paths(lowered))


# A dump option JAX keeps in its cache key and the compiled program ignores.
_UNCACHED = {"xla_dump_large_constants": True}


def _compile_and_read(
    lowered: Any, options: Mapping[str, Any]
) -> tuple[Any, DumpTexts | None, str]:
    try:
        directory = tempfile.mkdtemp(prefix="autotune-xla-dump-")
    except OSError as e:  # no dump, and the compile as it would be without one
        return lowered.compile(compiler_options=dict(options) or None), None, str(e)
    try:
        compiled = lowered.compile(compiler_options={**options, **dump_options(directory)})
        try:
            return compiled, read_dump(directory, _module_name(lowered)), ""
        except (DumpError, OSError) as e:
            return compiled, None, str(e)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def persistent_cache_on() -> bool:
    try:
        return bool(jax.config.jax_compilation_cache_dir) and bool(
            jax.config.jax_enable_compilation_cache
        )
    except AttributeError:
        return False


def _module_name(lowered: Any) -> str:
    try:
        first = lowered.as_text().split("\n", 1)[0]
    except Exception:
        return ""
    m = re.match(r"^module @([\w.\-]+)", first)
    return m.group(1) if m else ""


def out_paths(lowered: Any) -> tuple[str, ...]:
    """The step's outputs, as `jax.tree_util.keystr` paths."""
    try:
        flat, _ = jax.tree_util.tree_flatten_with_path(lowered.out_info)
    except Exception:
        return ()
    return tuple(jax.tree_util.keystr(path) for path, _ in flat)


def dump_options(directory: str) -> dict[str, Any]:
    """The compile options that write the dump into `directory`."""
    return {"xla_dump_to": directory, "xla_dump_hlo_as_text": True}


def read_dump(directory: str | Path, module: str = "") -> DumpTexts:
    """The texts of the module compiled into `directory` (named `module`, if
    given: the compiler may dump modules of its own beside it)."""
    files = {p.name: p for p in Path(directory).iterdir()}
    hlo = [n for n in files if n.endswith(_HLO_SUFFIX)]
    if len(hlo) > 1 and module:
        hlo = [n for n in hlo if f".{module}." in n]
    if len(hlo) > 1:
        hlo = [n for n in hlo if n[: -len(_HLO_SUFFIX)] + _BUFFERS_SUFFIX in files]
    if len(hlo) != 1:
        raise DumpError(
            f"expected one optimized HLO module in the dump, found {len(hlo)}"
            + (f" ({', '.join(sorted(hlo))})" if hlo else "")
        )
    stem = hlo[0][: -len(_HLO_SUFFIX)]
    texts = []
    for suffix in (_HLO_SUFFIX, _BUFFERS_SUFFIX, _LIVE_SUFFIX):
        name = stem + suffix
        if name not in files:
            raise DumpError(f"XLA wrote no {name!r} (its version may not write it)")
        texts.append(files[name].read_text(errors="replace"))
    return DumpTexts(*texts)


# ---- buffer assignment ----


@dataclasses.dataclass(frozen=True)
class Value:
    """One HLO value placed in an allocation."""

    name: str  # the defining instruction
    index: str  # shape index within a tuple-shaped instruction, "{}" for the whole
    size: int
    offset: int
    shape: str  # as XLA prints it, e.g. "f32[8,32]{1,0}"

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.index


@dataclasses.dataclass(frozen=True)
class Allocation:
    """A contiguous buffer the program needs and the values placed in it."""

    index: int
    size: int
    parameter: int | None  # entry parameter number, if it holds one
    role: str  # "parameter", "output", "temp", "thread-local", "constant" or "other"
    values: tuple[Value, ...]


_ALLOCATION = re.compile(r"^allocation (\d+): size (\d+)(.*)$")
_VALUE = re.compile(r"^\s*value: <\d+ (\S+?)(\{[\d,]*\})? @\d+> \(size=(\d+),offset=(\d+)\): (.*)$")


def parse_buffer_assignment(text: str) -> tuple[Allocation, ...]:
    """The allocations of a `*-buffer-assignment.txt`, in order."""
    allocations: list[Allocation] = []
    header: re.Match[str] | None = None
    values: list[Value] = []

    def close() -> None:
        if header is not None:
            allocations.append(_allocation(header, values))

    for line in text.splitlines():
        m = _ALLOCATION.match(line)
        if m:
            close()
            header, values = m, []
            continue
        v = _VALUE.match(line)
        if v and header is not None:
            name, index, size, offset, shape = v.groups()
            values.append(Value(name, index or "{}", int(size), int(offset), shape.strip()))
        elif line.strip() and not line.startswith((" ", "\t")) and header is not None:
            close()  # the allocation list ends where other sections begin
            header = None
    close()
    if not allocations:
        raise DumpError("the buffer assignment lists no allocation")
    return tuple(allocations)


def _allocation(header: re.Match[str], values: list[Value]) -> Allocation:
    index, size, rest = int(header.group(1)), int(header.group(2)), header.group(3)
    param = re.search(r"\bparameter (\d+)", rest)
    if param:
        role = "parameter"
    elif "preallocated-temp" in rest:
        role = "temp"
    elif "thread-local" in rest:
        role = "thread-local"
    elif "constant" in rest:
        role = "constant"
    elif "maybe-live-out" in rest or "output" in rest:
        role = "output"
    else:
        role = "other"
    return Allocation(index, size, int(param.group(1)) if param else None, role, tuple(values))


# ---- live ranges ----


@dataclasses.dataclass(frozen=True)
class LiveRanges:
    """When each value is live, in steps of the flattened schedule."""

    ranges: Mapping[tuple[str, str], tuple[int, int]]  # (name, index) -> (first, last)
    sequence: tuple[str, ...]  # the instruction at each step


_LIVE = re.compile(r"^\s+(\S+?)(\{[\d,]*\}):(\d+)-(\d+)\s*$")
_STEP = re.compile(r"^\s+(\d+):(\S+)\s*$")


def parse_live_ranges(text: str) -> LiveRanges:
    """The live ranges (inclusive) and the schedule of a `*-live-range.txt`."""
    start = text.find("BufferLiveRange:")
    if start < 0:
        raise DumpError("the live-range file has no 'BufferLiveRange:' section")
    ranges: dict[tuple[str, str], tuple[int, int]] = {}
    for line in text[start:].splitlines()[1:]:
        m = _LIVE.match(line)
        if not m:
            if ranges:
                break  # the next section
            continue
        name, index, first, last = m.groups()
        ranges[(name, index)] = (int(first), int(last))
    if not ranges:
        raise DumpError("the live-range file lists no live range")
    steps = {}
    for line in text[: text.find("BufferLiveRange:")].splitlines():
        m = _STEP.match(line)
        if m:
            steps[int(m.group(1))] = m.group(2)
    sequence = tuple(steps.get(i, "") for i in range(max(steps, default=-1) + 1))
    return LiveRanges(ranges, sequence)


# ---- optimized HLO ----


@dataclasses.dataclass(frozen=True)
class Instruction:
    """What the optimized HLO says about one instruction."""

    name: str
    shape: str
    opcode: str
    op_name: str
    source: str  # "file:line", or "" where the metadata has none
    stack: tuple[str, ...]  # function names, outermost first, where known
    parameter: int | None  # entry parameter number
    operand: str = ""  # the operand of a get-tuple-element, bitcast or copy
    tuple_index: int | None = None  # a get-tuple-element's index
    called: str = ""  # the computation a fusion calls


@dataclasses.dataclass(frozen=True)
class Hlo:
    instructions: Mapping[str, Instruction]
    root_operands: tuple[str, ...]  # the entry's ROOT tuple operands, in order
    # computation -> its first instruction that has an op name
    named_in: Mapping[str, Instruction] = dataclasses.field(default_factory=dict)

    def output_values(self) -> tuple[tuple[str, str], ...]:
        """The value (instruction, shape index) of each output, in order."""
        return tuple(self._defining(name) for name in self.root_operands)

    def named(self, name: str, fusions: bool = True) -> Instruction | None:
        """`name`'s instruction or, when it has no op name, the instruction
        that names it: the one a copy XLA added copies, and, with `fusions`,
        the first named op a fusion XLA made fuses (a name, not a phase: the
        fusion may run in the backward pass an op of the forward)."""
        ins = self.instructions.get(name)
        seen = set()
        while ins is not None and not ins.op_name and ins.name not in seen:
            seen.add(ins.name)
            if ins.opcode in _FORWARDING and ins.operand in self.instructions:
                ins = self.instructions[ins.operand]
            elif fusions and ins.called in self.named_in:
                return dataclasses.replace(ins, **_naming(self.named_in[ins.called]))
            else:
                break
        return ins

    def _defining(self, name: str) -> tuple[str, str]:
        indices: list[int] = []
        seen = set()
        while name in self.instructions and name not in seen:
            seen.add(name)
            ins = self.instructions[name]
            if ins.opcode == "get-tuple-element" and ins.tuple_index is not None:
                indices.insert(0, ins.tuple_index)
            elif ins.opcode != "bitcast" or indices:
                break
            name = ins.operand
        return name, "{" + ",".join(map(str, indices)) + "}"


# Ops that pass a value on (a copy makes a new buffer of the same contents).
_FORWARDING = ("get-tuple-element", "bitcast", "copy")
_INSTRUCTION = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+) = (.*)$")


def parse_hlo(text: str) -> Hlo:
    """Instructions by name, with the metadata that names them."""
    frames = _StackFrames.parse(text)
    instructions: dict[str, Instruction] = {}
    named_in: dict[str, Instruction] = {}
    root: tuple[str, ...] = ()
    in_entry, computation = False, ""
    for line in text.splitlines():
        if line.startswith(("ENTRY ", "%")) and line.rstrip().endswith("{"):
            in_entry = line.startswith("ENTRY ")
            computation = line.split()[1 if in_entry else 0].lstrip("%")
            continue
        if line.startswith("}"):
            in_entry, computation = False, ""
            continue
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        is_root, name, rest = m.groups()
        shape, rest = _split_shape(rest)
        opcode = rest.split("(", 1)[0].strip()
        meta = _metadata(rest)
        parameter = None
        if in_entry and opcode == "parameter":
            p = re.match(r"parameter\((\d+)\)", rest)
            parameter = int(p.group(1)) if p else None
        if in_entry and is_root:
            root = _operands(rest) if opcode == "tuple" else (name,)
        source, stack = _source(meta, frames)
        operand, tuple_index = "", None
        if opcode in _FORWARDING:
            operand = next(iter(_operands(rest)), "")
            index = re.search(r"\bindex=(\d+)", rest)
            tuple_index = int(index.group(1)) if index else None
        called = re.search(r"\bcalls=%?([\w.\-]+)", rest) if opcode == "fusion" else None
        ins = Instruction(
            name,
            shape,
            opcode,
            _unescape(meta.get("op_name", "")),
            source,
            stack,
            parameter,
            operand,
            tuple_index,
            called.group(1) if called else "",
        )
        instructions[name] = ins
        if ins.op_name and computation and computation not in named_in:
            named_in[computation] = ins
    if not instructions:
        raise DumpError("the optimized HLO has no instruction")
    return Hlo(instructions, root, named_in)


def _naming(ins: Instruction) -> dict[str, Any]:
    return {"op_name": ins.op_name, "source": ins.source, "stack": ins.stack}


def _split_shape(rest: str) -> tuple[str, str]:
    """("shape", "opcode(...) ...") from the text after '='."""
    if rest.startswith("("):
        depth = 0
        for i, c in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(c, 0)
            if depth == 0:
                return rest[: i + 1], rest[i + 1 :].strip()
        raise DumpError(f"unbalanced tuple shape in {rest[:80]!r}")
    shape, _, tail = rest.partition(" ")
    return shape, tail


def _operands(rest: str) -> tuple[str, ...]:
    inside = rest[rest.index("(") + 1 :]
    depth, out, current = 0, [], ""
    for c in inside:
        if c == ")" and depth == 0:
            break
        depth += {"(": 1, ")": -1, "{": 1, "}": -1}.get(c, 0)
        if c == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += c
    out.append(current)
    # An operand prints as "%name" or "f32[8]{0} %name".
    return tuple(o.strip().split()[-1].lstrip("%") for o in out if o.strip())


_META_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s}]+)')


def _metadata(rest: str) -> dict[str, str]:
    start = rest.find("metadata={")
    if start < 0:
        return {}
    body, in_string, escaped = [], False, False
    for c in rest[start + len("metadata={") :]:
        if c == "}" and not in_string:
            break
        body.append(c)
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            in_string = not in_string
    fields = {}
    for key, value in _META_FIELD.findall("".join(body)):
        fields[key] = value[1:-1] if value.startswith('"') else value
    return fields


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _source(meta: Mapping[str, str], frames: _StackFrames) -> tuple[str, tuple[str, ...]]:
    if "source_file" in meta:
        line = meta.get("source_line", "")
        return f"{_unescape(meta['source_file'])}:{line}".rstrip(":"), ()
    frame = meta.get("stack_frame_id")
    if frame and frame.isdigit():
        return frames.source(int(frame)), frames.functions(int(frame))
    return "", ()


_LIBRARY_DIRS = ("site-packages", "dist-packages")
_ENGINE = Path(__file__).resolve().parent


def _is_engine(file: str) -> bool:
    """A frame of this package (which lowers the step), not of the model."""
    path = Path(file)
    return path.parent == _ENGINE or path.parent.resolve() == _ENGINE


@dataclasses.dataclass(frozen=True)
class _StackFrames:
    """The stack-frame tables printed before the computations (newer XLA)."""

    files: Mapping[int, str]
    functions_: Mapping[int, str]
    locations: Mapping[int, tuple[int, int, int]]  # id -> (file, function, line)
    parents: Mapping[int, tuple[int, int]]  # frame -> (location, parent frame or 0)

    @classmethod
    def parse(cls, text: str) -> _StackFrames:
        head = text.split("\nENTRY ", 1)[0]
        sections: dict[str, list[str]] = {}
        current = None
        for line in head.splitlines():
            if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
                current = sections.setdefault(line, [])
            elif not line.strip():
                current = None
            elif current is not None:
                current.append(line)
        files = _numbered_strings(sections.get("FileNames", []))
        functions = _numbered_strings(sections.get("FunctionNames", []))
        locations = {}
        for line in sections.get("FileLocations", []):
            f = _numbered_fields(line)
            if f and {"file_name_id", "function_name_id", "line"} <= f[1].keys():
                d = f[1]
                locations[f[0]] = (d["file_name_id"], d["function_name_id"], d["line"])
        raw = {}
        for line in sections.get("StackFrames", []):
            f = _numbered_fields(line)
            if f and "file_location_id" in f[1]:
                raw[f[0]] = (f[1]["file_location_id"], f[1].get("parent_frame_id", 0))
        # XLA 0.10 prints each parent as its id plus one (frame 1's parent as
        # 1): a frame that names itself as parent means that convention.
        shifted = any(parent == frame for frame, (_, parent) in raw.items())
        parents = {k: (loc, p - 1 if shifted else p) for k, (loc, p) in raw.items()}
        return cls(files, functions, locations, parents)

    def _chain(self, frame: int) -> list[tuple[str, str, int]]:
        """(file, function, line) from the innermost frame outwards, up to
        the frame that lowered the step: the frames beyond called the trace."""
        out, seen = [], set()
        while frame in self.parents and frame not in seen:
            seen.add(frame)
            location, frame = self.parents[frame]
            if location in self.locations:
                file, function, line = self.locations[location]
                name = self.files.get(file, "?")
                if _is_engine(name):
                    break
                out.append((name, self.functions_.get(function, "?"), line))
        return out

    def source(self, frame: int) -> str:
        """The innermost frame outside installed packages, else the innermost."""
        chain = self._chain(frame)
        if not chain:
            return ""
        own = [c for c in chain if not any(d in Path(c[0]).parts for d in _LIBRARY_DIRS)]
        file, _, line = (own or chain)[0]
        return f"{file}:{line}"

    def functions(self, frame: int) -> tuple[str, ...]:
        return tuple(function for _, function, _ in reversed(self._chain(frame)))


def _numbered_strings(lines: list[str]) -> dict[int, str]:
    out = {}
    for line in lines:
        m = re.match(r'^(\d+) "((?:[^"\\]|\\.)*)"$', line.strip())
        if m:
            out[int(m.group(1))] = _unescape(m.group(2))
    return out


def _numbered_fields(line: str) -> tuple[int, dict[str, int]] | None:
    m = re.match(r"^(\d+) \{(.*)\}$", line.strip())
    if not m:
        return None
    fields = {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", m.group(2))}
    return int(m.group(1)), fields
