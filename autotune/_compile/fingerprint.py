"""What a lowered program is, whatever its batch: the count of each kind of
operation in its StableHLO text, hashed.

A step whose program is the same at every batch but for its shapes has one
fingerprint; one that switches programs at a batch (`if batch >= 256:` a
leaner algorithm) has two, and the probes on either side of the switch show
it. Shapes, constants and names are left out: only which operations, and how
many of each.
"""

from __future__ import annotations

import collections
import hashlib
import re

# The operation a line of MLIR applies: after `%x = ` or `%x:2 = `, or first.
_OPERATION = re.compile(r"^\s*(?:%[\w#:.]+(?:\s*,\s*%[\w#:.]+)*\s*=\s*)?\"?([a-z_][\w.]*)\b")


def fingerprint(text: str) -> str:
    """A short hash of the counts of each operation in `text` (MLIR)."""
    counts = collections.Counter(
        match.group(1) for line in text.splitlines() if (match := _OPERATION.match(line))
    )
    canonical = "\n".join(f"{op} {n}" for op, n in sorted(counts.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
