"""What one compile of the step says: the records the search and the results
are made of, apart from the engine that makes them.

The bytes the device needs to run a program are `argument + output - alias
+ temp` (the fields of `compiled.memory_analysis()`); `peak_memory_in_bytes`
is not used because the CPU backend reports only the argument size there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

# XLA's debug options as `compile(compiler_options=...)` takes them: XLA
# wants each value in its own type (a bool for a bool option, not "false").
CompilerOptions = Mapping[str, "str | bool | int | float"]


@dataclasses.dataclass(frozen=True)
class Probe:
    """XLA's memory analysis of the step compiled for one batch size."""

    batch: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    compile_seconds: float
    flops: float | None = None
    # Set when the compiler refused the program for want of HBM (TPU): the
    # bytes it said the program required and had, rounded as it prints them
    # and counting the program's code; the four fields above are then 0.
    required_bytes: int | None = None
    available_bytes: int | None = None
    # The compiled program's code (`generated_code_size_in_bytes`); a TPU
    # holds it in HBM beside the buffers, and its compiler counts both.
    code_bytes: int = 0
    # The compile was stopped once XLA had assigned its buffers, and the four
    # sizes were read from that assignment (`autotune._compile.assignment`):
    # no code was generated.
    stopped: bool = False
    # Set on a stopped TPU compile whose buffers the compiler placed within
    # its limit: their bytes, by the compiler's memory-usage report. Only a
    # verdict to be proven: the compiler counts the program's code too, known
    # once generated, and may still refuse it. The four sizes are then 0.
    placed_bytes: int | None = None
    # The lowered program's fingerprint, its batch left out
    # (`autotune._compile.fingerprint`); "" where unknown.
    program: str = ""

    @property
    def refused(self) -> bool:
        """The compiler refused the program: it does not fit."""
        return self.required_bytes is not None

    @property
    def placed(self) -> bool:
        """The compiler placed the buffers within its limit; not compiled in full."""
        return self.placed_bytes is not None

    @property
    def need_bytes(self) -> int:
        """Peak bytes the device needs to run the compiled step (a refused
        program's: what the compiler said it required; a placed one's: its
        buffers' bytes)."""
        if self.required_bytes is not None:
            return self.required_bytes
        if self.placed_bytes is not None:
            return self.placed_bytes
        return need(self.argument_bytes, self.output_bytes, self.alias_bytes, self.temp_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "need_bytes": self.need_bytes}


def program_changes(probes: Sequence[Probe]) -> tuple[tuple[int, int], ...]:
    """Pairs (a, b) of compiles, neighbours by batch, whose programs differ
    (beyond their shapes): the step is not one program at every batch."""
    known = sorted((p for p in probes if p.program), key=lambda p: p.batch)
    return tuple((a.batch, b.batch) for a, b in zip(known, known[1:]) if a.program != b.program)


def need(argument: int, output: int, alias: int, temp: int) -> int:
    """The bytes a compiled program needs: `argument + output - alias + temp`."""
    return argument + output - alias + temp


def compiled_need(compiled: Any) -> int | None:
    """`need` of a compiled program's memory analysis; None without one."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return need(
        m.argument_size_in_bytes,
        m.output_size_in_bytes,
        m.alias_size_in_bytes,
        m.temp_size_in_bytes,
    )


def program_flops(program: Any) -> float | None:
    """FLOPs from a compiled or lowered program's cost analysis, if it has one."""
    try:
        analysis = program.cost_analysis()
    except Exception:
        return None
    if isinstance(analysis, Sequence) and analysis:
        analysis = analysis[0]
    if not isinstance(analysis, Mapping) or "flops" not in analysis:
        return None
    return float(analysis["flops"])


@dataclasses.dataclass(frozen=True)
class CompileFailure:
    """A compile that failed for a reason other than memory: XLA's message."""

    batch: int
    error: str
    compile_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Compile failures with a known way around them: (what XLA says, what to do).
KNOWN_WORKAROUNDS = (
    (
        "Couldn't find output tile sizes",
        "XLA's Triton GEMM emitter found no tiling for a matrix product at this "
        "shape; compile without it: compiler_options="
        '{"xla_gpu_enable_triton_gemm": False} (the command: --xla-option '
        "xla_gpu_enable_triton_gemm=false), and train with the same option",
    ),
)


def compile_failures_text(failures: Sequence[CompileFailure], options: Mapping[str, Any]) -> str:
    """Why the step did not compile: the batches, XLA's message, the options
    in force, and a known workaround where the message matches one."""
    failures = sorted(failures, key=lambda f: f.batch)
    batches = ", ".join(str(f.batch) for f in failures)
    error = failures[0].error.strip().splitlines()[0][:800] if failures else "no compile ran"
    text = (
        f"the step does not compile for batch={batches} with compiler options "
        f"{dict(options) or '(none)'}, for a reason other than memory: {error}"
    )
    for marker, workaround in KNOWN_WORKAROUNDS:
        if any(marker in f.error for f in failures):
            text += f". Known workaround: {workaround}"
    return text
