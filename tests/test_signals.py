"""Ctrl-C and SIGTERM during a search, as a user presses them: the command
writes what was proven and exits 130 or 143, never with a crash."""

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

USER_STEPS = Path(__file__).parent / "user_steps"
fcntl = pytest.importorskip("fcntl", reason="POSIX pipes")

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGTERM") or sys.platform == "win32",
    reason="POSIX signals",
)


def interrupted_run(directory: Path, run: int, signum: int) -> tuple[int, dict | None, str]:
    """The command on a deep MLP, sent `signum` a moment after its first compile."""
    report = directory / f"run{run}.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "autotune", "--workload", "deep_mlp:workload",
         "--target", "local", "--budget", "2GB", "--no-cache", "--json", str(report)],
        cwd=directory,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    err = []
    for line in process.stderr:
        err.append(line)
        if "compiled batch" in line:
            break
    # A moment later: while a compile runs, while the next batch is traced, or
    # between (the search's two compiles left take about 0.4 s), or after it.
    delay = random.Random(run).uniform(0, 0.4)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signum)
    _, rest = process.communicate(timeout=300)
    row = json.loads(report.read_text())["results"][0] if report.exists() else None
    return process.returncode, row, "".join(err) + rest


@pytest.mark.parametrize(
    "signum, status, runs", [(signal.SIGINT, 130, 20), (signal.SIGTERM, 143, 4)]
)
def test_a_signal_mid_search_writes_the_proven_batch_and_exits_cleanly(
    tmp_path, signum, status, runs
):
    shutil.copy(USER_STEPS / "deep_mlp.py", tmp_path / "deep_mlp.py")
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda i: interrupted_run(tmp_path, i, signum), range(runs)))
    for code, row, err in outcomes:
        assert "Traceback" not in err and "Segmentation" not in err, err
        if code == 0:  # the search ended before the signal came: a whole answer
            assert row is not None and row["next_batch"] is not None
            continue
        assert code == status, err
        assert "INTERRUPTED" in err
        assert row is not None and row["interrupted"]
        assert row["peak_bytes"] <= row["budget"]["bytes"]
        assert row["batch"] in [p["batch"] for p in row["probes"]]
    assert sum(code == status for code, _, _ in outcomes) >= runs // 2


def test_a_signal_whose_raise_python_swallows_still_interrupts_the_search(capfd):
    """A signal that lands in a finalizer (or a garbage-collector callback, as
    JAX registers one) raises where Python prints "Exception ignored" and goes
    on; the prober raises it at its next check instead, once."""
    from steps import mlp_args, mlp_step

    from autotune._compile.prober import Prober
    from autotune._core.signals import as_interrupts

    class SignalledWhenCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))  # the handler runs here, inside the finalizer

    prober = Prober(mlp_step, mlp_args)
    with as_interrupts() as received:
        SignalledWhenCollected()
        assert received.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            prober.measure([8], lambda batch, need: None)
        prober.measure([8], lambda batch, need: None)  # raised once, not again
    assert 8 in prober.probes
    assert "Exception ignored" not in capfd.readouterr().err


# ---- a signal at any moment ----------------------------------------------------

# A search that compiles once: at max_batch=16 the first compile is the answer.
QUICK = ["--workload", "plain_mlp:workload", "--target", "local", "--budget", "1GB",
         "--max-batch", "16"]  # fmt: skip

# Starts the command with a signal sent to itself while jaxlib is being imported.
SIGNAL_IN_JAXLIB_IMPORT = """
import os, runpy, signal, sys

class SignalAtJaxlib:
    def find_spec(self, name, path=None, target=None):
        if name == "jaxlib":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.{name})
            sum(range(1000))  # a handler, if any, runs here
        return None

sys.meta_path.insert(0, SignalAtJaxlib())
sys.argv = ["autotune", *sys.argv[1:]]
runpy.run_module("autotune", run_name="__main__", alter_sys=True)
"""


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (Linux's SigCgt mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt")), "0")
    return bool(int(mask, 16) >> (signal.SIGTERM - 1) & 1)


def _child_processes(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def _command(
    directory: Path, args: list[str], stdout: int = subprocess.PIPE, **env: str
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "autotune", *args],
        cwd=directory,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_clean_exit(code: int, status: int, out: str, err: str) -> None:
    assert code == status, err
    for crash in ("Traceback", "Exception ignored", "terminate called", "Aborted", "Segmentation"):
        assert crash not in out + err, err


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads the process's state from /proc"
)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_jaxlib_import_ends_the_command_by_it(tmp_path, signum, status):
    shutil.copy(USER_STEPS / "plain_mlp.py", tmp_path / "plain_mlp.py")
    child = subprocess.run(
        [sys.executable, "-c", SIGNAL_IN_JAXLIB_IMPORT.replace("{name}", signum.name),
         *QUICK, "--no-cache"],
        cwd=tmp_path,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    _assert_clean_exit(child.returncode, status, child.stdout, child.stderr)
    assert "interrupted before any batch was proven to fit" in child.stderr
    assert "compiled batch" not in child.stderr


def _signalled_at(directory: Path, signum: int, delay: float) -> tuple[int, str, str]:
    """The command, sent `signum` `delay` s after it started (once it has taken
    signals over, if it had not by then: Python's own start is not the command's)."""
    report = directory / f"{signum.name}-{delay}.json"
    process = _command(directory, [*QUICK, "--no-cache", "--json", str(report)])
    start = time.monotonic()
    while not _handles_sigterm(process.pid) and process.poll() is None:
        time.sleep(0.002)
    time.sleep(max(0.0, delay - (time.monotonic() - start)))
    process.send_signal(signum)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


@needs_proc
def test_a_signal_at_any_moment_exits_by_it_and_keeps_what_was_proven(tmp_path):
    shutil.copy(USER_STEPS / "plain_mlp.py", tmp_path / "plain_mlp.py")
    cases = [(s, d) for s in (signal.SIGINT, signal.SIGTERM) for d in (0.1, 0.3, 1.0)]
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda case: _signalled_at(tmp_path, *case), cases))
    for (signum, delay), (code, out, err) in zip(cases, outcomes):
        _assert_clean_exit(code, 128 + signum, out, err)
        report = tmp_path / f"{signum.name}-{delay}.json"
        if report.exists():  # the answer was proven first: reported whole
            (row,) = json.loads(report.read_text())["results"]
            assert row["batch"] == 16 and not row["interrupted"], err
        else:
            assert "interrupted before any batch was proven to fit" in err


def test_a_signal_once_an_answer_is_proven_waits_for_the_next_search():
    """In process: a signal raises at once during a search, but once its
    answer is proven it is only recorded, and raises when the next starts."""
    from autotune._core.signals import answer_proven, as_interrupts, raising, search_started

    with as_interrupts(raise_at_once=False) as received, raising():
        search_started()
        answer_proven()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run: the signal is recorded
        except KeyboardInterrupt:
            pytest.fail("a signal once the answer was proven raised at once")
        assert received.signum == signal.SIGTERM and received.exit_status == 143
        with pytest.raises(KeyboardInterrupt):
            search_started()
    with as_interrupts(raise_at_once=False), raising(), pytest.raises(KeyboardInterrupt):
        search_started()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)


def _full_pipe() -> tuple[int, int, int]:
    """A pipe (read end, write end) whose buffer is already full, and the
    bytes it holds: a process writing to it waits until they are read."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(write_end, False)
    held = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            held += os.write(write_end, b"#" * 4096)
    os.set_blocking(write_end, True)
    return read_end, write_end, held


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="sizes a pipe (Linux)")
@pytest.mark.parametrize(
    "signum, cache", [(signal.SIGINT, True), (signal.SIGTERM, True), (signal.SIGTERM, False)]
)
def test_a_signal_once_the_answer_is_proven_reports_it_whole(tmp_path, signum, cache):
    """The signal lands once the answer is proven: while it is completed (its
    proof hashed and stored in the cache) or while it is printed. All of it
    happens. The command's stdout is a full pipe, so it cannot print its
    answer, and exit, before the signal has landed."""
    shutil.copy(USER_STEPS / "plain_mlp.py", tmp_path / "plain_mlp.py")
    report = tmp_path / "report.json"
    caching = ["--cache-dir", str(tmp_path / "cache")] if cache else ["--no-cache"]
    read_end, write_end, held = _full_pipe()
    args = [*QUICK, *caching, "--json", str(report)]
    process = _command(tmp_path, args, stdout=write_end, PYTHONUNBUFFERED="1")
    os.close(write_end)
    err = []
    for line in process.stderr:  # the search's one compile is its last
        err.append(line)
        if "compiled batch" in line:
            break
    process.send_signal(signum)
    with ThreadPoolExecutor(1) as pool, open(read_end, encoding="utf-8") as stdout:
        out = pool.submit(stdout.read)
        rest = process.stderr.read()
        process.wait(timeout=300)
        out = out.result(timeout=60)
    assert out[:held] == "#" * held
    out = out[held:]
    _assert_clean_exit(process.returncode, 128 + signum, out, "".join(err) + rest)
    assert "batch 16" in out or "16*" in out
    (row,) = json.loads(report.read_text())["results"]
    assert row["batch"] == 16 and not row["interrupted"] and row["compiles"] == 1


# A plain MLP that can run: real arrays for --verify.
RUNNABLE_MLP = """
import jax
import jax.numpy as jnp
import numpy as np
import autotune
from plain_mlp import D, H, args_for_batch, step


def real_args(batch):
    rng = np.random.default_rng(0)
    params = {"w1": jnp.asarray(rng.normal(size=(D, H)), jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(H, 1)), jnp.float32)}
    return params, jnp.ones((batch, D)), jnp.ones((batch, 1))


workload = autotune.Workload(step, args_for_batch, donate_argnums=0, real_args=real_args)
"""


@needs_proc
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_verify_reports_the_proven_answer(tmp_path, signum):
    shutil.copy(USER_STEPS / "plain_mlp.py", tmp_path / "plain_mlp.py")
    (tmp_path / "runnable_mlp.py").write_text(RUNNABLE_MLP)
    report = tmp_path / "report.json"
    args = [*QUICK, "--no-cache", "--verify", "--json", str(report)]
    process = _command(tmp_path, ["--workload", "runnable_mlp:workload", *args[2:]])
    while not _child_processes(process.pid) and process.poll() is None:
        time.sleep(0.01)
    time.sleep(0.2)  # the child is starting: importing JAX, or running the step
    process.send_signal(signum)
    out, err = process.communicate(timeout=300)
    _assert_clean_exit(process.returncode, 128 + signum, out, err)
    (row,) = json.loads(report.read_text())["results"]
    assert row["batch"] == 16 and not row["interrupted"]
    assert "INTERRUPTED during the runs for real" in err
