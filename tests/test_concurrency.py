"""How many compiles run at once: from the cores the first compile kept busy."""

import concurrent.futures
import subprocess
import sys
import time

import jax
import pytest
from steps import mlp_args, mlp_step

from autotune._compile import prober as _probe
from autotune._compile.concurrency import MAX_WORKERS, CpuClock, compiles_at_once
from autotune._compile.prober import Prober


@pytest.mark.parametrize(
    "share, cores, at_once",
    [
        (1.31, 2, 2),  # a core left mostly idle: a second compile pays
        (1.65, 2, 1),  # both cores nearly busy: it does not
        (1.75, 2, 1),
        (1.0, 1, 1),
        (1.7, 16, MAX_WORKERS),
        (1.7, 3, 2),
        (1.0, 64, MAX_WORKERS),
        (0.0, 2, 2),
    ],
)
def test_compiles_at_once(share, cores, at_once):
    assert compiles_at_once(share, cores) == at_once


def test_the_clock_counts_child_processes():
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    start = time.perf_counter()
    with CpuClock() as clock:
        subprocess.run([sys.executable, "-c", busy], check=True)
    # The CPU counted holds the child's 0.5 s, though this process only waited
    # (a share of the wall time would also count how loaded the machine is).
    assert clock.share * (time.perf_counter() - start) >= 0.45


def test_the_clock_of_a_block_that_waits():
    with CpuClock() as clock:
        time.sleep(0.3)
    assert clock.share < 0.3


def test_the_prober_decides_after_its_first_compile(monkeypatch):
    monkeypatch.setattr(_probe, "compiles_at_once", lambda share, cores: 3)
    prober = Prober(mlp_step, mlp_args, workers=None)
    assert prober.workers == 1  # nothing measured yet
    prober(8)
    assert prober.workers == 3
    assert Prober(mlp_step, mlp_args, workers=2).workers == 2


class InterruptedAt:
    """A step whose compile at one batch raises Ctrl-C."""

    def __init__(self, batch):
        self.jitted, self.batch = jax.jit(mlp_step), batch

    def lower(self, *args):
        lowered, batch = self.jitted.lower(*args), args[1].shape[0]

        class Lowered:
            def as_text(self):
                return lowered.as_text()

            def compile(self, **kwargs):
                if batch == interrupted:
                    raise KeyboardInterrupt
                return lowered.compile(**kwargs)

        interrupted = self.batch
        return Lowered()


def test_compiles_that_end_with_one_that_raises_are_kept(monkeypatch):
    wait = concurrent.futures.wait

    def both_ended(fs, timeout=None, return_when=None):
        """Both compiles end before the prober looks; the one that raised first."""
        done, pending = wait(fs, return_when=concurrent.futures.ALL_COMPLETED)
        return sorted(done, key=lambda f: f.exception() is None), pending

    monkeypatch.setattr(_probe.concurrent.futures, "wait", both_ended)
    prober = Prober(InterruptedAt(16), mlp_args, workers=2)
    recorded = []
    with pytest.raises(KeyboardInterrupt):
        prober.measure([8, 16], lambda batch, need: recorded.append(batch))
    assert recorded == [8] and 8 in prober.probes
