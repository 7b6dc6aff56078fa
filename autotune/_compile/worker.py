"""The worker process of probes that stop at buffer assignment.

Run as `python -m autotune._compile.worker` by `autotune._compile.workers`,
never imported by the tuner. It is a fresh interpreter that imports JAX and
starts no backend; for each job it forks a child, and the child makes the
target's devices, compiles the shipped program (`autotune._compile.shipped`)
with XLA's dump into the job's folder, writes what the compile said into
that folder and exits. The parent reads the buffer assignment from the
folder while the child compiles, and kills the child once it has: Python
cannot stop a compile in its own process. Forking here, before any JAX
backend or compile thread exists, spares each probe the seconds of
importing JAX; no process that started a backend is ever forked.

Messages on the pipes are pickles, each after its length in 4 bytes: the
job in, ("forked", pid) and ("ended", status) out. Answers go to a private
copy of stdout; whatever JAX or XLA print goes to stderr, a file the parent
reads when a child dies. A worker whose parent is gone kills its child,
removes its folder and exits; a child whose worker is gone exits.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from autotune._compile.messages import read_message, write_message

# Seconds between checks that the parent is still there.
_ORPHAN_POLL_S = 0.5


def _leave_when_orphaned(parent: int, child: list[int], folder: str = "") -> None:
    while os.getppid() == parent:
        time.sleep(_ORPHAN_POLL_S)
    if child:
        with contextlib.suppress(OSError):
            os.kill(child[0], signal.SIGKILL)
            os.waitpid(child[0], 0)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
    os._exit(0)


def _run(job: dict[str, Any], target: Any) -> tuple[Any, ...]:
    from autotune._compile.dump import dump_options
    from autotune._compile.records import program_flops
    from autotune._compile.remat_pass import xla_remat_pass
    from autotune._compile.shipped import unship
    from autotune._targets.refusal import hbm_refusal

    start = time.perf_counter()
    try:
        with xla_remat_pass(job["remat_pass"]):
            lowered = unship(job["shipped"], target)
            dump = dump_options(job["dump"]) if job["dump"] else {}  # None: runs to its end
            options = {**job["options"], **dump}
            compiled = lowered.compile(compiler_options=options)
    except Exception as e:
        seconds = time.perf_counter() - start
        refusal = hbm_refusal(e)
        if refusal is not None:
            return ("refused", refusal.required_bytes, refusal.available_bytes, seconds)
        return ("failed", f"{type(e).__name__}: {e}", seconds)
    seconds = time.perf_counter() - start
    m = compiled.memory_analysis()
    if m is None:
        return ("failed", "the compiled program has no memory analysis", seconds)
    sizes = (
        m.argument_size_in_bytes,
        m.output_size_in_bytes,
        m.alias_size_in_bytes,
        m.temp_size_in_bytes,
        getattr(m, "generated_code_size_in_bytes", 0) or 0,
    )
    return ("compiled", *map(int, sizes), program_flops(compiled), seconds)


def _child(job: dict[str, Any], target: Any, worker: int) -> None:
    """In the forked child: compile, write the answer, exit."""
    threading.Thread(target=_leave_when_orphaned, args=(worker, []), daemon=True).start()
    try:
        answer = _run(job, target)
    except BaseException as e:  # the devices, or the program, did not load
        answer = ("failed", f"{type(e).__name__}: {e}", 0.0)
    answer_file = Path(job["answer"])
    partial = answer_file.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(answer))
    partial.rename(answer_file)  # whole or absent
    os._exit(0)


def main() -> None:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a print from JAX or XLA must not corrupt the answers
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops this process itself
    inp = sys.stdin.buffer
    child: list[int] = []
    parent = os.getppid()
    setup = read_message(inp)
    if setup is None:  # the parent died before it sent the set-up
        if len(sys.argv) > 1 and Path(sys.argv[1]).name.startswith("autotune-worker-"):
            shutil.rmtree(sys.argv[1], ignore_errors=True)
        return
    watch = (parent, child, setup["folder"])
    threading.Thread(target=_leave_when_orphaned, args=watch, daemon=True).start()
    try:
        _serve(inp, out, setup, child)
    finally:  # the parent is gone (a broken pipe, the end of its stream)
        if child:
            with contextlib.suppress(OSError):
                os.kill(child[0], signal.SIGKILL)
                os.waitpid(child[0], 0)  # dead, so it writes no more dump files
        shutil.rmtree(setup["folder"], ignore_errors=True)


def _serve(inp: Any, out: Any, setup: dict[str, Any], child: list[int]) -> None:
    import jax  # noqa: F401  (imported once here, for every child)

    import autotune._compile.shipped
    import autotune._targets.refusal  # noqa: F401

    target = setup["target"]
    write_message(out, ("ready", os.getpid()))
    while (job := read_message(inp)) is not None:
        pid = os.fork()
        if pid == 0:
            try:
                _child(job, target, os.getppid())
            finally:
                os._exit(1)  # never back into the worker's loop
        child[:] = [pid]
        write_message(out, ("forked", pid))
        _, status = os.waitpid(pid, 0)
        child.clear()
        write_message(out, ("ended", os.waitstatus_to_exitcode(status)))


if __name__ == "__main__":
    main()
