"""A compile's need read from XLA's buffer assignment, before code is generated.

XLA decides a program's memory when it assigns buffers, and dumps that
assignment (`*-buffer-assignment.txt`) long before a GPU compile ends (7-55%
of the compile for the real models, `benchmarks/stopped-probes.md`). Each
allocation's header says what it is; `compiled.memory_analysis()` sums the
same allocations (XLA's `CompiledMemoryStats::PopulateBufferStatsFromAllocations`):

- argument: the allocations of entry parameters;
- output: the allocations that may be live out (`maybe-live-out`);
- alias: the parameter allocations that are also live out (donated);
- temp: the others, less thread-local and constant allocations.

So the four totals, and the need, are those of the compiled program, to the
byte, on the GPU and CPU backends (tested against full compiles in
`tests/test_assignment.py`). The allocations are counted only when the file
is whole: XLA writes the memory-usage report after the buffer assignment,
and its "Total bytes" must equal the sum of the allocations read. An
allocation in another memory space (a `color`) is not read: the host's
memory is counted apart, and guessing which is which is not exact.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from autotune._compile.dump import DumpError
from autotune._compile.records import need

ASSIGNMENT_SUFFIX = "after_optimizations-buffer-assignment.txt"
REPORT_SUFFIX = "after_optimizations-memory-usage-report.txt"

_DEFAULT_TOTAL = re.compile(
    r"^Memory Space: default \(color=0\)\nTotal bytes: (\d+) \(", re.MULTILINE
)
_HEADER = re.compile(r"^allocation (\d+): size (\d+)(.*)$", re.MULTILINE)
_TOTAL = re.compile(r"^Total bytes: (\d+)", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Assigned:
    """The totals of `memory_analysis()`, from the buffer assignment."""

    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    total_bytes: int  # every allocation, thread-local and constant ones included

    @property
    def need_bytes(self) -> int:
        return need(self.argument_bytes, self.output_bytes, self.alias_bytes, self.temp_bytes)


def read_assignment(text: str) -> Assigned:
    """The totals of a `*-buffer-assignment.txt`; DumpError if it cannot be read."""
    argument = output = alias = temp = total = 0
    seen = 0
    for m in _HEADER.finditer(text):
        index, size, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if index != seen or not rest.endswith(":"):
            raise DumpError(f"allocation {index} follows {seen - 1} or its header is cut short")
        seen += 1
        flags = rest[:-1]
        if re.search(r", color \d+", flags):
            raise DumpError(f"allocation {index} is in another memory space ({flags.strip()})")
        parameter = re.search(r", parameter \d+", flags) is not None
        live_out = "maybe-live-out" in flags
        total += size
        if parameter:
            argument += size
            alias += size if live_out else 0
        if live_out:
            output += size
        if not (parameter or live_out or "thread-local" in flags or "constant" in flags):
            temp += size
    if not seen:
        raise DumpError("the buffer assignment lists no allocation")
    return Assigned(argument, output, alias, temp, total)


def whole_assignment(directory: str | Path) -> tuple[Assigned, Path] | None:
    """The assignment of the one module compiled into `directory` once XLA
    has written it whole, and its file; None before then."""
    directory = Path(directory)
    found = _report(directory)
    if found is None:
        return None
    stem = found.name[: -len(REPORT_SUFFIX)]
    assignment = directory / (stem + ASSIGNMENT_SUFFIX)
    try:
        report = found.read_text(errors="replace")
        text = assignment.read_text(errors="replace")
    except OSError:
        return None
    totals = [int(t) for t in _TOTAL.findall(report)]
    if len(totals) != 1:
        return None  # cut short, or several memory spaces (read_assignment refuses those)
    try:
        assigned = read_assignment(text)
    except DumpError:
        if re.search(r", color \d+", text):
            raise
        return None  # still being written
    return (assigned, assignment) if assigned.total_bytes == totals[0] else None


def placed_bytes(directory: str | Path) -> int | None:
    """The bytes the TPU compiler placed in HBM (its default memory space) for
    the one module compiled into `directory`, once its memory-usage report
    says so; None before then.

    Not the need: the compiler adds the program's code, known once generated
    (`benchmarks/tpu-verdicts.md`). What it decides is whether the buffers
    fit the compiler's limit at all.
    """
    report = _report(Path(directory))
    if report is None:
        return None
    try:
        found = _DEFAULT_TOTAL.search(report.read_text(errors="replace"))
    except OSError:
        return None
    return None if found is None else int(found.group(1))


def _report(directory: Path) -> Path | None:
    """The memory-usage report of the one module compiled into `directory`;
    None before it is written; DumpError where several modules wrote one."""
    try:
        reports = [p for p in directory.iterdir() if p.name.endswith(REPORT_SUFFIX)]
    except OSError:
        return None
    if len(reports) > 1:
        raise DumpError(f"the dump holds {len(reports)} modules' memory-usage reports")
    return reports[0] if reports else None
