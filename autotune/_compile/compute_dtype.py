"""The dtypes a step computes in: those of the operands of its dots and
convolutions, read from its lowered (StableHLO) program.

These ops carry nearly all of a train step's FLOPs, and a device's peak
FLOP/s depends on their operands' dtype (`autotune._targets.peak_flops`).
A program with none of them has no compute dtype here.
"""

from __future__ import annotations

import re

_OP = re.compile(r"\bstablehlo\.(?:dot_general|dot|convolution)\b")
_OPERANDS = re.compile(r":\s*\(([^()]*)\)\s*->")
_ELEMENT = re.compile(r"tensor<(?:[0-9?]+x)*([a-z][a-z0-9]*)")
_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "f64": "float64"}


def program_dtypes(program: str) -> tuple[str, ...]:
    """The operand dtypes of every dot and convolution in `program`, sorted,
    named as numpy names them ("float32", "bfloat16"; others as StableHLO does)."""
    found: set[str] = set()
    for line in program.splitlines():
        if not _OP.search(line):
            continue
        operands = _OPERANDS.findall(line)
        if operands:
            found.update(_NAMES.get(t, t) for t in _ELEMENT.findall(operands[-1]))
    return tuple(sorted(found))
