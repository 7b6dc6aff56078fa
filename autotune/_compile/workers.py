"""Compiles that stop once XLA has assigned the program's buffers.

XLA decides a program's memory at buffer assignment, and writes it there
(`autotune._compile.assignment`); on a described GPU that is 7-55% into a
compile that then generates code. Python cannot stop a compile in its own
process, so such a probe compiles in a worker process
(`autotune._compile.worker`, a fresh interpreter, never a fork of this one):
it is sent the program (`autotune._compile.shipped`), compiles it with XLA's
dump into a private temporary folder, and this process polls that folder.
Once the buffer assignment is written whole, its need is the probe's and
the worker is killed. On a TPU, where the buffer assignment is not the need
(the compiler adds the program's code), what is read is the verdict: the
buffers placed within the compiler's limit (the compile is stopped, a
verdict a full compile must prove), or over it (the compiler refuses such a
program itself, moments later: that refusal is the outcome). A compile may
also run to its end in a worker (`stop=False`), to prove such a verdict
where a Ctrl-C can still stop it. A compile that fails, or that the compiler
refuses, says so before that; a worker that dies is that one probe's
failure, with the end of what it printed.

Workers are kept warm, one pool per target for the process (JAX imported),
and used again: a worker forks a child per compile
(`autotune._compile.worker`), and only the child is killed. Every worker is
killed, and its folder removed, when a search is interrupted (`stop_all`),
at exit (`leave`'s too), and by itself when this process is gone; workers
run in a session of their own, so that a signal to this process's group
reaches this process alone, which stops them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune._compile.assignment import Assigned, placed_bytes, whole_assignment
from autotune._compile.concurrency import MAX_WORKERS, cores
from autotune._compile.dump import DumpError, DumpTexts, read_dump
from autotune._compile.messages import read_message, write_message
from autotune._compile.shipped import Shipped
from autotune._core.signals import at_exit

# Seconds between looks at a compile's dump folder.
POLL_S = 0.02
# Seconds a worker may take to import JAX and make its target's devices.
START_TIMEOUT_S = 120.0
# Host memory one worker may hold while it compiles, to bound how many run
# at once: a described-H100 VGG16 compile at batch 440, stopped at buffer
# assignment, peaked at about 1 GB resident (benchmarks/stopped-probes.md).
WORKER_BYTES = 2 << 30
# Each worker's private temporary folder starts so.
FOLDER_PREFIX = "autotune-worker-"
# Characters of a dead worker's output kept in its failure.
_TAIL = 2000


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one compile in a worker said.

    kind: "stopped" (buffers assigned, compile stopped: `assigned`),
    "placed" (a TPU compiler placed the buffers within its limit, compile
    stopped: `placed` bytes), "compiled" (it ended first: `sizes` from
    memory_analysis()), "refused" (`required`/`available` bytes), "failed"
    (`error`).
    """

    kind: str
    seconds: float
    assigned: Assigned | None = None
    placed: int | None = None
    sizes: tuple[int, int, int, int, int] | None = None  # argument, output, alias, temp, code
    flops: float | None = None  # compiled: its cost analysis's
    required: int | None = None
    available: int | None = None
    error: str = ""
    texts: DumpTexts | None = None  # the dump's texts, when asked for and read
    dump_error: str = ""


class _Worker:
    """One worker process, its private folder, and the child compiling now."""

    def __init__(self, target: Any):
        self.folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
        self.log = self.folder / "worker.log"
        self.environment = dict(os.environ)  # XLA reads its flags from it once, at start
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                # The folder on the command line too: a worker whose parent died
                # before it sent the set-up still removes it.
                [sys.executable, "-m", "autotune._compile.worker", str(self.folder)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**self.environment, "PYTHONUNBUFFERED": "1"},
                close_fds=True,
                bufsize=0,  # `select` sees every message: none waits in a buffer
                # Signals to the tuner's process group (a terminal's, `timeout`'s)
                # do not reach workers: the tuner stops them, and cleans up.
                start_new_session=True,
            )
        self.ready = False
        self.child: int | None = None
        assert self.process.stdin is not None
        write_message(self.process.stdin, {"target": target, "folder": str(self.folder)})

    def wait_ready(self) -> None:
        """Wait until it has started; RuntimeError with its output if it died."""
        if not self.ready:
            message = self.next(START_TIMEOUT_S)
            if message is None or message[0] != "ready":
                raise RuntimeError(f"the compile worker did not start: {self.last_words(0)}")
            self.ready = True

    def next(self, timeout: float | None) -> Any:
        """The worker's next message within `timeout` s; None if none came
        (or it is gone)."""
        out = self.process.stdout
        assert out is not None
        readable, _, _ = select.select([out], [], [], timeout)
        if not readable:
            return None
        return read_message(out)

    def send(self, job: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        write_message(self.process.stdin, dict(job))

    def alive(self) -> bool:
        return self.process.poll() is None

    def current(self) -> bool:
        """Alive, and started with this process's environment as it is now:
        one set since (`XLA_FLAGS`, by the workload's own module, say) needs
        a new worker."""
        return self.alive() and self.environment == dict(os.environ)

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def last_words(self, since: int) -> str:
        """What the worker printed from byte `since` of its log, at most `_TAIL`."""
        try:
            with open(self.log, "rb") as log:
                log.seek(since)
                printed = log.read().decode(errors="replace").strip()[-_TAIL:]
        except OSError:
            printed = ""
        return f"; it printed: {printed}" if printed else ""

    def kill_child(self) -> None:
        if self.child is not None:
            with contextlib.suppress(OSError):
                os.kill(self.child, signal.SIGKILL)

    def kill(self) -> None:
        self.kill_child()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the compile's worker process was killed by {name}"
    return f"the compile's worker process exited with status {code} before it answered"


class WorkerPool:
    """Warm workers for one target; `compile` runs one probe in one of them."""

    def __init__(self, target: Any, size: int):
        self._target = target
        self.size = size
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()

    def warm(self) -> None:
        """Start workers until `size` are idle, busy or starting, in place
        of idle ones the environment has changed under."""
        self._kill_stale()
        with self._lock:
            while len(self._idle) + len(self._busy) < self.size:
                self._idle.append(_Worker(self._target))

    def _kill_stale(self) -> None:
        """Kill the idle workers that are not `current`."""
        with self._lock:
            stale = [w for w in self._idle if not w.current()]
            self._idle = [w for w in self._idle if w not in stale]
        for worker in stale:  # outside the lock: a kill waits for the process
            worker.kill()

    def _take(self) -> _Worker:
        self._kill_stale()
        with self._lock:
            worker = self._idle.pop(0) if self._idle else _Worker(self._target)
            self._busy.add(worker)
        return worker

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            was_busy = worker in self._busy
            self._busy.discard(worker)
            if was_busy and worker.current() and len(self._idle) < self.size:
                self._idle.append(worker)
                return
        worker.kill()

    def compile(
        self,
        shipped: Shipped,
        options: Mapping[str, Any],
        remat_pass: bool,
        keep_texts: bool = False,
        *,
        placed_within: int | None = None,
        stop: bool = True,
    ) -> Outcome:
        """One compile of `shipped`, stopped at buffer assignment where it
        gets there (`stop`); `keep_texts` also reads the dump's texts then.
        With `placed_within` (a TPU compiler's limit), the verdict is read
        instead of the need: stopped where the buffers were placed within it."""
        worker = self._take()
        start = time.perf_counter()
        try:
            try:
                worker.wait_ready()
            except RuntimeError as e:
                return Outcome("failed", time.perf_counter() - start, error=str(e))
            job = Path(tempfile.mkdtemp(prefix="job-", dir=worker.folder))
            try:
                reading = _Reading(stop, placed_within, keep_texts)
                return self._run(worker, job, shipped, options, remat_pass, reading)
            finally:
                shutil.rmtree(job, ignore_errors=True)
        finally:
            worker.child = None
            self._give_back(worker)

    def _run(
        self,
        worker: _Worker,
        job: Path,
        shipped: Shipped,
        options: Mapping[str, Any],
        remat_pass: bool,
        reading: _Reading,
    ) -> Outcome:
        dump, answer, since = job / "dump", job / "answer.pkl", worker.log_size()
        keep_texts = reading.keep_texts
        start = time.perf_counter()
        worker.send(
            {"shipped": shipped, "options": dict(options), "remat_pass": remat_pass,
             "dump": str(dump) if reading.stop or keep_texts else None,
             "answer": str(answer)}
        )  # fmt: skip
        forked = worker.next(START_TIMEOUT_S)
        if not forked or forked[0] != "forked":
            return _died(worker, start, None, since)
        worker.child = forked[1]
        exact = reading.stop and reading.placed_within is None
        verdict = reading.stop and reading.placed_within is not None
        while True:
            found = None
            if exact:
                try:
                    found = whole_assignment(dump)
                except DumpError:  # not to be read exactly: the compile's own end decides
                    exact = False
            if verdict:
                try:
                    placed = placed_bytes(dump)
                except DumpError:
                    placed, verdict = None, False
                if placed is not None:
                    verdict = False  # over the limit: the compiler's own refusal follows
                    assert reading.placed_within is not None
                    if placed <= reading.placed_within:
                        seconds = time.perf_counter() - start
                        worker.kill_child()
                        worker.next(START_TIMEOUT_S)  # ("ended", -9)
                        return Outcome("placed", seconds, placed=placed)
            if found is not None:
                seconds = time.perf_counter() - start
                texts, error = _texts(dump) if keep_texts else (None, "")
                worker.kill_child()
                worker.next(START_TIMEOUT_S)  # ("ended", -9)
                return Outcome("stopped", seconds, assigned=found[0], texts=texts, dump_error=error)
            message = worker.next(POLL_S)
            if message is not None and message[0] == "ended":
                if answer.exists():
                    texts, error = _texts(dump) if keep_texts else (None, "")
                    return _outcome(pickle.loads(answer.read_bytes()), texts, error)
                return _died(worker, start, message[1], since)
            if not worker.alive():
                return _died(worker, start, None, since)

    def stop_all(self) -> None:
        """Kill every worker, busy or idle, with its child; later compiles
        start new ones."""
        with self._lock:
            workers = [*self._idle, *self._busy]
            self._idle = []
            self._busy = set()
        for worker in workers:
            worker.kill()


@dataclasses.dataclass(frozen=True)
class _Reading:
    """What a compile in a worker is watched for."""

    stop: bool  # stopped once its memory is known
    placed_within: int | None  # a TPU compiler's limit: read the verdict, not the need
    keep_texts: bool


def _texts(dump: Path) -> tuple[DumpTexts | None, str]:
    try:
        return read_dump(dump), ""
    except (DumpError, OSError) as e:
        return None, str(e)


def _outcome(answer: tuple[Any, ...], texts: DumpTexts | None, dump_error: str) -> Outcome:
    kind, *rest = answer
    if kind == "compiled":
        *sizes, flops, seconds = rest
        return Outcome(
            "compiled", seconds, sizes=tuple(sizes), flops=flops, texts=texts, dump_error=dump_error
        )
    if kind == "refused":
        required, available, seconds = rest
        return Outcome("refused", seconds, required=required, available=available)
    error, seconds = rest
    return Outcome("failed", seconds, error=error)


def _died(worker: _Worker, start: float, status: int | None, since: int) -> Outcome:
    """A compile whose process died before it answered: one probe's failure."""
    if status is None:
        code = worker.process.poll()
        how = "the compile worker died" if code is None else _exit_text(code)
    else:
        how = _exit_text(status)
    error = f"{how} (out of host memory, or a crash in XLA){worker.last_words(since)}"
    return Outcome("failed", time.perf_counter() - start, error=error)


def workers_bound() -> int:
    """Workers that may compile at once: by cores and by host memory."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        available = WORKER_BYTES
    return max(1, min(cores(), MAX_WORKERS, available // WORKER_BYTES))


_POOLS: dict[bytes, WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def pool_for(target: Any, size: int) -> WorkerPool:
    """The process's pool of workers for `target`, of at least `size`."""
    key = pickle.dumps(target)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = WorkerPool(target, size)
        pool.size = max(pool.size, size)
    return pool


def stop_all() -> None:
    """Kill every worker of every pool (Ctrl-C, exit)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
    for pool in pools:
        pool.stop_all()


at_exit(stop_all)
