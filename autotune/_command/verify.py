"""Run a tuned workload for real, in a child process.

`verify_workload(source, batch)` starts `python -m autotune._command.verify`, which
loads the same workload (`load_workloads(source.spec, source.kwargs)`, by
label), builds its real arguments (`Workload.real_args`), compiles the step
once, runs it twice at `batch` and prints one JSON line: ok, error, the
device's `peak_bytes_in_use` and `bytes_limit` (None on the CPU), the
compiled program's own need, seconds. An out-of-memory error, an abort or a
hang stays in the child; the caller gets a `Verification` with `ok=False`
and the reason. The child runs in this process's working directory, so a
`MODULE:ATTR` spec resolves there as it did here.

The child's allocator takes its limit from the memory free when it starts:
a parent that holds device memory (one that compiled or ran on the GPU)
leaves the child less, and `Verification.render` says so when `bytes_limit`
is below the budget the answer was tuned for.

`budget_bytes` is a CPU stand-in for a device limit: the child caps its own
address space (`RLIMIT_AS`, Linux only) at its usage after start-up plus
`budget_bytes`, so a batch far too large fails for real. It is refused on
other backends, where the device allocator's limit is the real one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune._command.timing import Throughput
from autotune._core.errors import TuneError
from autotune._core.units import format_bytes
from autotune._targets.local import on_host

OOM_MARKERS = (
    "resource_exhausted",
    "out of memory",
    "memoryerror",
    "bad_alloc",
    "cannot allocate memory",
)  # matched in lower case
STEPS = 2
_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Verification:
    """The outcome of running the step for real at `batch`."""

    batch: int
    ok: bool
    reason: str
    peak_bytes_in_use: int | None
    bytes_limit: int | None
    seconds: float
    predicted_peak_bytes: int | None = None
    need_bytes: int | None = None  # the child's own compile's need
    platform: str | None = None
    out_of_memory: bool = False
    throughput: Throughput | None = None

    @property
    def relative_difference(self) -> float | None:
        """(measured peak - predicted) / predicted; None without both."""
        if self.peak_bytes_in_use is None or not self.predicted_peak_bytes:
            return None
        return (self.peak_bytes_in_use - self.predicted_peak_bytes) / self.predicted_peak_bytes

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["relative_difference"] = self.relative_difference
        return data

    def render(self, budget_bytes: int | None = None, boundary: bool = False) -> str:
        """One line; `budget_bytes` (the tuned budget) flags a smaller child
        limit. A `boundary` (the next candidate, proven not to fit) that ran
        is flagged: within the budget, it contradicts the proof."""
        head = f"batch {self.batch}: " + ("ran" if self.ok else f"FAILED ({self.reason})")
        parts = [head]
        if boundary and self.ok:
            parts.append(self._boundary_ran(budget_bytes))
        if self.peak_bytes_in_use is not None:
            parts.append(
                f"peak {self.peak_bytes_in_use:,} B ({format_bytes(self.peak_bytes_in_use)})"
            )
        if self.relative_difference is not None:
            parts.append(
                f"vs predicted {self.predicted_peak_bytes:,} B: {self.relative_difference:+.4%}"
            )
        if self.need_bytes is not None and self.predicted_peak_bytes:
            parts.append(
                f"its compile needs {self.need_bytes:,} B "
                f"({self.need_bytes / self.predicted_peak_bytes - 1:+.4%})"
            )
        if self.bytes_limit is not None:
            parts.append(f"limit {self.bytes_limit:,} B")
            if budget_bytes is not None and self.bytes_limit < budget_bytes:
                parts.append(
                    f"below the tuned budget {budget_bytes:,} B (memory held "
                    "elsewhere, e.g. by the parent): not conclusive"
                )
        if self.throughput is not None:
            parts.append(f"{self.throughput.samples_per_second:,.1f} samples/s")
        parts.append(f"{self.seconds:.1f} s")
        return "; ".join(parts)

    def _boundary_ran(self, budget_bytes: int | None) -> str:
        peak, limit = self.peak_bytes_in_use, self.bytes_limit
        if budget_bytes is not None and (
            (peak is not None and peak <= budget_bytes)
            or (peak is None and limit is not None and limit <= budget_bytes)
        ):
            return (
                "CONTRADICTS THE PROOF: the next candidate, compiled to need more than the "
                "budget, ran within it"
            )
        if peak is None:
            return (
                "NOT CONFIRMED: the next candidate ran, and this device measures no peak "
                "to hold against the budget"
            )
        return "above the budget, as proven (the device has more room than the budget)"


@dataclasses.dataclass(frozen=True)
class WorkloadSource:
    """Where a child process finds a workload: `load_workloads(spec, kwargs)`,
    then the one labelled `label`."""

    spec: str  # "MODULE:ATTR"
    label: str
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # JSON-ready


def _check_positive(name: str, value: Any, kind: type = int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, kind)) or value <= 0:
        raise TuneError(f"`{name}` (={value!r}) must be a positive number")


def verify_workload(
    source: WorkloadSource,
    batch: int,
    *,
    xla_remat_pass: bool = False,
    compiler_options: Mapping[str, Any] | None = None,
    timeout_s: float = 600,
    budget_bytes: int | None = None,
    predicted_peak_bytes: int | None = None,
    time_steps: int = 0,
    env: Mapping[str, str] | None = None,
) -> Verification:
    """Runs the workload of `source` at `batch` in a child process.

    Args:
        source: where the child finds the workload.
        batch: the batch size to run.
        xla_remat_pass: XLA's remat pass, as the answer was tuned (the child
            sets `jax_compiler_enable_remat_pass`).
        compiler_options: XLA options, as the answer was tuned.
        timeout_s: the child is killed after this many seconds.
        budget_bytes: CPU only: cap the child's address space at its
            start-up usage plus this (see the module docstring).
        predicted_peak_bytes: the tuner's need at `batch`, for comparison.
        time_steps: if positive, the child also measures throughput over
            this many steps.
        env: the child's environment (default: this process's).
    """
    if not isinstance(source, WorkloadSource):
        raise TuneError(f"`source` (={source!r}) must be a WorkloadSource")
    _check_positive("batch", batch)
    _check_positive("timeout_s", timeout_s, float)
    if budget_bytes is not None:
        _check_positive("budget_bytes", budget_bytes)
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 0:
        raise TuneError(f"`time_steps` (={time_steps!r}) must be an integer >= 0")
    payload = {
        "source": dataclasses.asdict(source),
        "batch": batch,
        "xla_remat_pass": bool(xla_remat_pass),
        "compiler_options": dict(compiler_options or {}),
        "budget_bytes": budget_bytes,
        "time_steps": time_steps,
    }
    try:
        text = json.dumps(payload)
    except TypeError as e:
        raise TuneError(f"`source.kwargs` must be JSON-ready (dtypes as names): {e}") from e
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "autotune._command.verify"],
            input=text,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=_child_env(env),
        )
    except subprocess.TimeoutExpired:
        return Verification(
            batch,
            False,
            f"timed out after {timeout_s:g} s",
            None,
            None,
            time.perf_counter() - start,
            predicted_peak_bytes,
        )
    return _parse(proc, batch, time.perf_counter() - start, predicted_peak_bytes)


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment, with the directory this package was imported from first."""
    child = dict(os.environ if env is None else env)
    paths = [str(_ROOT), *filter(None, child.get("PYTHONPATH", "").split(os.pathsep))]
    child["PYTHONPATH"] = os.pathsep.join(paths)
    return child


def _last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "ok" in data:
            return data
    return None


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"the child was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the child was killed by signal {-code}"
    return f"the child exited with code {code}"


def _tail(text: str, lines: int = 3) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[-600:]


def _parse(
    proc: subprocess.CompletedProcess, batch: int, seconds: float, predicted: int | None
) -> Verification:
    data = _last_json(proc.stdout)
    error = (data or {}).get("error") or ""
    text = (error + "\n" + proc.stderr).lower()
    oom = any(m in text for m in OOM_MARKERS)
    if data is not None and data["ok"]:
        reason = ""
    elif data is not None:
        reason = ("out of memory: " if oom else "") + error
    else:
        reason = (
            ("out of memory: " if oom else "")
            + f"{_exit_text(proc.returncode)} and printed no result: "
            + (_tail(proc.stderr) or "no output")
        )
    timing = (data or {}).get("throughput")
    return Verification(
        batch=batch,
        ok=bool(data and data["ok"]),
        reason=reason,
        peak_bytes_in_use=(data or {}).get("peak_bytes_in_use"),
        bytes_limit=(data or {}).get("bytes_limit"),
        seconds=seconds,
        predicted_peak_bytes=predicted,
        need_bytes=(data or {}).get("need_bytes"),
        platform=(data or {}).get("platform"),
        out_of_memory=oom and not (data or {}).get("ok"),
        throughput=Throughput(**timing) if timing else None,
    )


def verify_result(
    result: Any, source: WorkloadSource, *, boundary: bool = False, **kwargs: Any
) -> tuple[Verification, ...]:
    """Verifies a `TuneResult`'s batch, with the XLA settings it was tuned
    under; with `boundary`, also its next candidate."""
    settings = {
        "xla_remat_pass": bool(result.xla_settings.get("remat_pass")),
        "compiler_options": result.xla_settings.get("compiler_options") or {},
    }
    checks = [
        verify_workload(
            source, result.batch, predicted_peak_bytes=result.peak_bytes, **settings, **kwargs
        )
    ]
    if boundary and result.next_batch is not None:
        kwargs.pop("time_steps", None)
        checks.append(
            verify_workload(
                source,
                result.next_batch,
                predicted_peak_bytes=result.next_peak_bytes,
                **settings,
                **kwargs,
            )
        )
    return tuple(checks)


# ---- the child --------------------------------------------------------------


def _vm_size_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise TuneError("`budget_bytes` needs /proc/self/status (Linux) to read VmSize")


def _cap_address_space(budget_bytes: int, device: Any) -> None:
    import resource

    if not on_host(device):
        platform = device.platform
        raise TuneError(
            f"`budget_bytes` (={budget_bytes}) caps the address space, a CPU "
            f"stand-in for a device limit; the child runs on {platform!r}, whose "
            "allocator limit is the real one: leave it None"
        )
    limit = _vm_size_bytes() + budget_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _run(payload: Mapping[str, Any]) -> dict[str, Any]:
    import jax

    from autotune._command.timing import carry_outputs, measure_throughput
    from autotune._compile.records import compiled_need
    from autotune._workloads.workload import load_workloads

    source = WorkloadSource(**payload["source"])
    batch = payload["batch"]
    jax.config.update("jax_compiler_enable_remat_pass", payload["xla_remat_pass"])
    device = jax.devices()[0]
    workloads = {w.label: w for w in load_workloads(source.spec, source.kwargs)}
    if source.label not in workloads:
        raise TuneError(
            f"`source.label` (={source.label!r}) is not among the workloads of "
            f"{source.spec!r}: {', '.join(map(repr, workloads))}"
        )
    workload = workloads[source.label]
    if workload.real_args is None:
        raise TuneError(
            f"the workload {source.label!r} has no `real_args`: it cannot be run for real"
        )
    if payload.get("budget_bytes"):
        _cap_address_space(payload["budget_bytes"], device)
    args = list(workload.real_args(batch))
    _check_real_args(args, list(workload.args_for_batch(batch)), batch, source.label)
    compiled = (
        workload.jitted().lower(*args).compile(compiler_options=payload["compiler_options"] or None)
    )
    for _ in range(STEPS):
        args = carry_outputs(args, jax.block_until_ready(compiled(*args)))
    stats = device.memory_stats() or {}
    result = {
        "ok": True,
        "error": None,
        "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
        "bytes_limit": stats.get("bytes_limit"),
        "need_bytes": compiled_need(compiled),
        "platform": device.platform,
        "throughput": None,
    }
    if payload.get("time_steps"):
        timing = measure_throughput(
            compiled,
            workload.args_for_batch,
            batch,
            steps=payload["time_steps"],
            warmup=1,
            initial_args=args,
        )
        result["throughput"] = timing.to_dict()
    return result


def _check_real_args(real: list[Any], abstract: list[Any], batch: int, label: str) -> None:
    """`real_args(batch)` builds the arguments `args_for_batch(batch)`
    describes, leaf by leaf: the same shapes and dtypes, so that the run is
    of the batch the answer is for."""
    import jax

    def refuse(rule: str) -> TuneError:
        return TuneError(
            f"`real_args({batch})` of the workload {label!r} {rule}; it must build "
            f"the arguments `args_for_batch({batch})` describes"
        )

    real_leaves, real_tree = jax.tree.flatten(real)
    abstract_leaves, abstract_tree = jax.tree_util.tree_flatten_with_path(abstract)
    if real_tree != jax.tree.structure(abstract):
        raise refuse("builds a pytree of another structure")
    for real_leaf, (path, leaf) in zip(real_leaves, abstract_leaves):
        shape, dtype = jax.numpy.shape(real_leaf), jax.numpy.result_type(real_leaf)
        if shape != tuple(leaf.shape) or dtype != leaf.dtype:
            raise refuse(
                f"builds args{jax.tree_util.keystr(path)} of shape {shape} and dtype {dtype}, "
                f"and `args_for_batch({batch})` describes {tuple(leaf.shape)} {leaf.dtype}"
            )


def _stats_after_failure() -> dict[str, Any]:
    """The device's limit and peak, if JAX got as far as starting it."""
    if "jax" not in sys.modules:
        return {}
    try:
        device = sys.modules["jax"].devices()[0]
        stats = device.memory_stats() or {}
    except Exception:
        return {}
    return {
        "platform": device.platform,
        "bytes_limit": stats.get("bytes_limit"),
        "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
    }


def main() -> int:
    """Child entry: JSON payload on stdin, one JSON result line on stdout."""
    start = time.perf_counter()
    try:
        result = _run(json.loads(sys.stdin.read()))
    except BaseException as e:
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:4000], **_stats_after_failure()}
    result["seconds"] = time.perf_counter() - start
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
