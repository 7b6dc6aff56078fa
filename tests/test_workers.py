"""Probes stopped at buffer assignment, in worker processes: exact, and never
a process or a folder left behind (CPU backend, small steps)."""

import _thread
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from steps import mlp_args, mlp_step, need_at

import autotune
from autotune._compile import workers
from autotune._compile.prober import Prober
from autotune._compile.remat_pass import REMAT_PASS_OFF
from autotune.models import vgg_setup

pytest.importorskip("flatbuffers", reason="jax.export serializes with flatbuffers")

IN_PROCESS = autotune.get_target("local")
STOPPING = dataclasses.replace(IN_PROCESS, stop_at_assignment=True)


@pytest.fixture(scope="module")
def tiny():
    setup = vgg_setup("vgg-tiny", image_size=8, num_classes=10)
    return autotune.Workload(setup.step, setup.args_for_batch, donate_argnums=(0, 1))


def _prober(workload, **options):
    return Prober.for_target(workload, STOPPING, compiler_options=REMAT_PASS_OFF, **options)


def _descendants():
    """The processes below this one, by /proc."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [os.getpid()]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _folders(where=None):
    return sorted(Path(where or tempfile.gettempdir()).glob(workers.FOLDER_PREFIX + "*"))


@pytest.fixture
def no_leftovers(tmp_path, monkeypatch):
    workers.stop_all()
    # Workers' folders go to a temporary folder of this test's own: another
    # process's workers (a second test run) cannot be taken for leftovers.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before, folders = _descendants(), _folders()
    yield
    workers.stop_all()
    assert _descendants() == before
    assert _folders() == folders


def test_a_stopped_probe_is_the_full_compile(tiny, no_leftovers):
    prober = _prober(tiny)
    for batch in (8, 16):
        probe = prober(batch)
        assert probe.need_bytes == need_at(tiny.step, tiny.args_for_batch, batch)
        assert prober.in_process == ""
    assert any(p.stopped for p in prober.probes.values())


def test_a_compile_whose_dump_is_kept_runs_in_process(tiny, no_leftovers):
    """The dump of a shipped program names the flat leaves, not the user's
    arguments: `--why` compiles here, and reads the dump as today."""
    from autotune._tune.why import breakdown_at

    prober = _prober(tiny, keep_dumps=True)
    breakdown = breakdown_at(prober, 16)
    assert breakdown.unavailable == "" and not prober.probes[16].stopped
    assert sum(e.bytes for e in breakdown.entries) == prober.probes[16].need_bytes


def test_a_worker_killed_mid_compile_is_one_probes_failure(tiny, no_leftovers, monkeypatch):
    real = workers.whole_assignment
    monkeypatch.setattr(workers, "whole_assignment", lambda folder: None)  # never stopped
    prober = _prober(tiny)
    pool = workers.pool_for(STOPPING, 1)

    def kill_the_child():
        while True:
            busy = [w for w in list(pool._busy) if w.child is not None]
            if busy:
                os.kill(busy[0].child, signal.SIGKILL)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_child)
    killer.start()
    prober.measure([8], lambda batch, need: None)
    killer.join()
    assert 8 not in prober.probes
    assert "killed by SIGKILL" in prober.failures[8].error
    monkeypatch.setattr(workers, "whole_assignment", real)
    assert prober(16).need_bytes == need_at(tiny.step, tiny.args_for_batch, 16)  # it goes on


def test_ctrl_c_stops_every_worker(tiny, no_leftovers):
    prober = _prober(tiny)
    pool = workers.pool_for(STOPPING, 1)

    def interrupt_once_compiling():
        while not any(w.child for w in list(pool._busy)):
            time.sleep(0.01)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_compiling, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        prober.measure([24], lambda batch, need: None)
    # no_leftovers: no worker, no child, no folder


def test_workers_of_a_killed_process_leave_by_themselves(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import dataclasses, sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            import autotune
            from autotune.models import vgg_setup
            s = vgg_setup("vgg-tiny", image_size=8, num_classes=10)
            w = autotune.Workload(s.step, s.args_for_batch)
            t = dataclasses.replace(autotune.get_target("local"), stop_at_assignment=True)
            print("searching", flush=True)
            autotune.find_max_batch(w, target=t, budget_bytes=10**9)
            """
        )
    )
    temp = tmp_path / "temp"  # the search's own: no other process's workers there
    temp.mkdir()
    folders = _folders(temp)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TMPDIR": str(temp)}
    search = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    assert search.stdout.readline().strip() == b"searching"
    deadline = time.monotonic() + 120
    while not _workers_of(search.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    spawned = _workers_of(search.pid)
    assert spawned, "the search started no worker"
    search.send_signal(signal.SIGTERM)  # no handler: the process dies at once
    search.wait()
    deadline = time.monotonic() + 10
    while any(_exists(pid) for pid in spawned) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_exists(pid) for pid in spawned)
    assert _folders(temp) == folders


def _workers_of(pid):
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if b"autotune._compile.worker" in cmdline and ppid == pid:
                found.append(int(entry.name))
    return found


def _exists(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_step_that_cannot_be_shipped_compiles_in_process(no_leftovers):
    def step(params, x, y):
        x = jax.pure_callback(lambda a: a, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
        return mlp_step(params, x, y)

    prober = Prober(
        step, mlp_args, stop_at=STOPPING, donate_argnums=0, compiler_options=REMAT_PASS_OFF
    )
    with pytest.warns(UserWarning, match="probes compile in this process, in full.*cannot be"):
        probe = prober(8)
    assert "cannot be shipped" in prober.in_process and not probe.stopped
    assert probe.need_bytes == need_at(step, mlp_args, 8)


@pytest.mark.parametrize("stop_at", [STOPPING, None], ids=["stopped", "in-process"])
def test_a_prepared_batch_is_made_ready_while_a_compile_runs(stop_at, no_leftovers, monkeypatch):
    from autotune._compile import prober as prober_module

    traced, shipped = [], []
    real_ship = prober_module.ship
    monkeypatch.setattr(prober_module, "ship", lambda *a: shipped.append(a) or real_ship(*a))
    ready = threading.Event()  # the compile of 8 ends only once 16 is traced
    real_compile = Prober._compile

    def compile_once_ready(self, batch, *rest):
        assert ready.wait(60)
        return real_compile(self, batch, *rest)

    monkeypatch.setattr(Prober, "_compile", compile_once_ready)

    def step(params, x, y):
        traced.append(x.shape[0])
        if x.shape[0] == 16:
            ready.set()
        return mlp_step(params, x, y)

    prober = Prober(
        step, mlp_args, stop_at=stop_at, donate_argnums=0, compiler_options=REMAT_PASS_OFF
    )
    prober.prepare([16, 24])
    prober.measure([8], lambda b, need: None)
    assert traced[:2] == [8, 16]  # 16 traced while 8 compiled
    ships = len(shipped)
    assert ships == len(traced) * (1 if stop_at else 0)
    before = list(traced)  # 24 too, if the compile of 8 had not ended yet
    prober.measure([16], lambda b, need: None)
    prober.measure([32], lambda b, need: None)
    assert traced == [*before, 32]  # nothing traced again, no guess left over traced later
    assert len(shipped) == ships + (1 if stop_at else 0)
    assert prober.probes[16].need_bytes == need_at(step, mlp_args, 16)


def test_workers_started_before_the_environment_changed_are_not_used(
    tiny, no_leftovers, monkeypatch
):
    """The command starts workers before the workload's module is imported,
    which may set XLA_FLAGS: the compiles must see it."""
    from autotune._compile.prober import start_workers

    start_workers(STOPPING)
    monkeypatch.setenv("AUTOTUNE_TEST_MARK", "set after the workers started")
    prober = _prober(tiny)
    assert prober(8).stopped
    pool = workers.pool_for(STOPPING, 1)
    environments = [Path(f"/proc/{w.process.pid}/environ").read_bytes() for w in pool._idle]
    assert environments and all(b"AUTOTUNE_TEST_MARK=set after" in e for e in environments)


def test_a_stopped_probes_flops_are_the_lowerings_and_made_once(no_leftovers, monkeypatch):
    from autotune._compile import prober as prober_module

    analyses = []
    real = prober_module._host_flops
    monkeypatch.setattr(
        prober_module, "_host_flops", lambda lowered: analyses.append(1) or real(lowered)
    )
    prober = Prober(mlp_step, mlp_args, stop_at=STOPPING, donate_argnums=0)
    assert prober(8).stopped and prober(8).flops is None  # no compiled cost analysis
    flops = prober.flops(8)
    assert flops == real(prober.lower(8)) and flops > 0
    assert prober.flops(8) == flops and len(analyses) == 1


def test_the_search_answers_as_in_process(tiny, no_leftovers):
    budget = 30_000_000
    stopped = autotune.find_max_batch(tiny, target=STOPPING, budget_bytes=budget)
    local = autotune.find_max_batch(tiny, target=IN_PROCESS, budget_bytes=budget)
    assert (stopped.batch, stopped.peak_bytes, stopped.next_peak_bytes) == (
        local.batch, local.peak_bytes, local.next_peak_bytes
    )  # fmt: skip
    assert all(not p.stopped for p in local.probes)
    stopped_batches = [str(p.batch) for p in stopped.probes if p.stopped]
    assert stopped_batches and f"{', '.join(stopped_batches)} stopped once XLA" in stopped.render()
    assert "stopped once XLA" not in local.render()
    some_in_full = len(stopped_batches) < len(stopped.probes)
    assert ("the others compiled in full" in stopped.render()) == some_in_full
    assert jnp.isfinite(stopped.peak_bytes)


def test_a_described_devices_probes_stop_by_default_the_local_devices_when_asked():
    for name in ("h100-sxm-80gb", "v5e:1x1"):  # a TPU's answer then compiles in full
        target = autotune.get_target(name)
        assert target.stops_at_assignment(), name
        assert not dataclasses.replace(target, stop_at_assignment=False).stops_at_assignment()
    assert not IN_PROCESS.stops_at_assignment()  # its answer warms the persistent cache
    assert STOPPING.stops_at_assignment()


def test_the_command_stops_the_local_devices_probes_when_asked(
    tiny, no_leftovers, monkeypatch, tmp_path
):
    import json

    from autotune._command import run as command
    from autotune.cli import main

    asked = []
    real = command.compare

    def compare(workloads, **kwargs):
        asked.append(kwargs["target"].stops_at_assignment())
        return real(workloads, **kwargs)

    monkeypatch.setattr(command, "compare", compare)
    argv = ["--model", "vgg-tiny", "--image-size", "8", "--classes", "10", "--remat", "none",
            "--target", "local", "--budget", "30MB", "--no-cache", "--quiet"]  # fmt: skip
    assert main([*argv, "--stop-at-assignment", "--json", str(tmp_path / "a.json")]) == 0
    assert main([*argv, "--json", str(tmp_path / "b.json")]) == 0
    assert asked == [True, False]  # the local device's default: in full, in process
    (a,), (b,) = (json.loads((tmp_path / f).read_text())["results"] for f in ("a.json", "b.json"))
    assert (a["batch"], a["peak_bytes"]) == (b["batch"], b["peak_bytes"])


@pytest.mark.parametrize("asked", [[], ["--no-stop-at-assignment"], ["--why"]])
def test_the_command_starts_its_workers_before_it_builds_the_model(
    asked, no_leftovers, monkeypatch, tmp_path
):
    from autotune._command import run as command
    from autotune.cli import main

    started = []
    real = command.load_workloads

    def load_workloads(*args, **kwargs):
        started.append(len(_descendants()))
        return real(*args, **kwargs)

    monkeypatch.setattr(command, "load_workloads", load_workloads)
    argv = ["--model", "vgg-tiny", "--image-size", "8", "--classes", "10", "--remat", "none",
            "--target", "h100-sxm-80gb", "--budget", "30MB", "--no-cache", "--quiet"]  # fmt: skip
    before = len(_descendants())
    assert main([*argv, *asked]) == 0
    assert (started[0] > before) == (not asked)  # nothing to start for compiles in process


def test_ctrl_c_in_a_tpu_answers_full_compile_stops_its_worker(no_leftovers, monkeypatch):
    pytest.importorskip("libtpu", reason="compiling for a described TPU needs libtpu")
    tpu = autotune.get_target("v5e:1x1")
    pool = workers.pool_for(tpu, 1)
    in_full = threading.Event()
    real = Prober.compile_in_full

    def compile_in_full(self, batch):
        in_full.set()
        return real(self, batch)

    def interrupt_once_compiling_in_full():
        in_full.wait()
        while not any(w.child for w in list(pool._busy)):
            time.sleep(0.01)
        _thread.interrupt_main()

    monkeypatch.setattr(Prober, "compile_in_full", compile_in_full)
    threading.Thread(target=interrupt_once_compiling_in_full, daemon=True).start()
    w = autotune.Workload(mlp_step, mlp_args, donate_argnums=0)
    with pytest.raises(KeyboardInterrupt):
        autotune.find_max_batch(w, target=tpu, budget_bytes=2 << 20, max_batch=1 << 15)
    assert in_full.is_set()
    # no_leftovers: no worker, no child, no folder


def test_the_splits_first_compile_stops_with_its_dumps_texts(tiny, no_leftovers):
    """The split reads shapes only: a stopped compile's dump gives the fixed
    bytes a full compile's dump gives."""
    stopped = _prober(tiny, dump_first=True)
    probe = stopped(16)
    assert probe.stopped and stopped.dumps[16].texts is not None
    full = Prober(
        tiny.step, tiny.args_for_batch, donate_argnums=tiny.donate_argnums,
        compiler_options=REMAT_PASS_OFF, dump_first=True,
    )  # fmt: skip
    assert not full(16).stopped
    assert stopped.fixed_bytes(16) == full.fixed_bytes(16) is not None
