"""How many compiles to run at once: measured on the first compile, not assumed.

A deviceless GPU compile runs XLA's passes on one thread, then compiles its
kernels on several (LLVM threads, `ptxas` processes). How many cores it keeps
busy depends on the program: on 2 cores, GPT-2's and ViT-B/16's searches took
27.0 and 21.4 s with the proven pair compiled at once, 33.5 and 26.2 s one
compile after the other (benchmarks/real-models.md); two VGG16 compiles side
by side took as long as two in a row. So the tuner times the CPU its first
compile used (in this process and the processes it started) against its wall
time, and runs further compiles at once only where the cores it left idle
make that pay.
"""

from __future__ import annotations

import dataclasses
import os
import time

# Compiles at once, at most, whatever the cores.
MAX_WORKERS = 4
# A further compile at once must add at least this share of one compile's
# speed, by the cores the first compile left idle: two compiles side by side
# run somewhat slower than the idle cores promise, and a round of two may
# compile a batch a round of one would not.
PAYS = 0.35


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its child processes that ended."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclasses.dataclass
class CpuClock:
    """Times a block: `share` is the cores it kept busy on average."""

    share: float | None = None
    _cpu: float = 0.0
    _wall: float = 0.0

    def __enter__(self) -> CpuClock:
        self._cpu, self._wall = _cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        if wall > 0:
            self.share = max(_cpu_seconds() - self._cpu, 0.0) / wall


def compiles_at_once(share: float, cores: int, cap: int = MAX_WORKERS) -> int:
    """How many compiles to run at once, where one compile alone keeps
    `share` cores of `cores` busy: the most, up to `cap` and `cores`, for
    which each further one adds at least `PAYS` of one compile's speed."""
    speedup = cores / max(share, 1e-9)  # k compiles at once: min(k, speedup) times one's speed
    k = 1
    while k < min(cap, cores) and min(k + 1, speedup) - min(k, speedup) >= PAYS:
        k += 1
    return k
