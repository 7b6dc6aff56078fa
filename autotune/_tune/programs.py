"""Whether the step is one program at every batch: a step that switches
programs at a batch (`if batch >= 256:` a leaner algorithm) may need less
above the switch, and no proof that assumes need grows holds across it.

The compiles' programs are compared, and so is the program lowered (traced,
not compiled) at the largest candidate: where it differs from the answer's,
lowering alone bisects to the two neighbouring candidates between which the
program changes.
"""

from __future__ import annotations

from autotune._compile.prober import Prober
from autotune._compile.records import program_changes


def changes(prober: Prober, answer: int, multiple_of: int, top: int) -> tuple[tuple[int, int], ...]:
    """Pairs (a, b) of batches whose programs differ beyond their shapes: the
    compiles' neighbours, and above the answer the first change up to `top`."""
    found = set(program_changes(prober.compiled()))
    ours = prober.program(answer)
    if ours and answer < top and prober.program(top) not in ("", ours):
        lo, hi = answer, top
        while hi - lo > multiple_of:
            mid = lo + (hi - lo) // 2 // multiple_of * multiple_of
            program = prober.program(mid)
            if not program:
                break
            lo, hi = (mid, hi) if program == ours else (lo, mid)
        else:
            found.add((lo, hi))
    return tuple(sorted(found))
