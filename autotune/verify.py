"""Run a tuned VGG configuration for real, in a child process.

`verify_vgg(config, batch)` starts `python -m autotune.verify`, which builds
the step with `models.vgg_setup`, initializes a real `models.VGG` and its
optimizer state, compiles the step once, runs it twice at `batch` and prints
one JSON line: ok, error, the device's `peak_bytes_in_use` and `bytes_limit`
(None on the CPU), the compiled program's own need, seconds. An
out-of-memory error, an abort or a hang stays in the child; the caller gets
a `Verification` with `ok=False` and the reason.

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

from autotune.errors import TuneError
from autotune.timing import Throughput
from autotune.units import format_bytes

SETUP_KEYS = (
    "image_size",
    "channels",
    "num_classes",
    "optimizer",
    "dtype",
    "param_dtype",
    "remat",
    "remat_every",
    "hidden",
)
CONFIG_KEYS = ("model", *SETUP_KEYS, "xla_remat_pass")
OOM_MARKERS = (
    "resource_exhausted",
    "out of memory",
    "memoryerror",
    "bad_alloc",
    "cannot allocate memory",
)  # matched in lower case
STEPS = 2
# Initialization runs once: optimizing its random-number program costs ~15 s
# of CPU compile for nothing.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
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

    def render(self, budget_bytes: int | None = None) -> str:
        """One line; `budget_bytes` (the tuned budget) flags a smaller child limit."""
        head = f"batch {self.batch}: " + ("ran" if self.ok else f"FAILED ({self.reason})")
        parts = [head]
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


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with defaults, validated by building its abstract setup."""
    from models import CONFIGS, vgg_setup

    if not isinstance(config, Mapping):
        raise TuneError(f"`config` (={config!r}) must be a mapping of VGG setup keywords")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise TuneError(f"`config` has unknown keys {unknown}; allowed: {', '.join(CONFIG_KEYS)}")
    full = {"model": "vgg16", "xla_remat_pass": False, **config}
    if full["model"] not in CONFIGS:
        raise TuneError(
            f"`config['model']` (={full['model']!r}) must be one of {', '.join(CONFIGS)}"
        )
    if not isinstance(full["xla_remat_pass"], bool):
        raise TuneError(
            f"`config['xla_remat_pass']` (={full['xla_remat_pass']!r}) must be True or False"
        )
    try:
        vgg_setup(full["model"], **_setup_kwargs(full))
    except ValueError as e:
        raise TuneError(f"`config` is not a valid VGG setup: {e}") from e
    try:
        json.dumps(full)
    except TypeError as e:
        raise TuneError(f"`config` must be JSON-serializable (dtypes as names): {e}") from e
    return full


def _setup_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: config[k] for k in SETUP_KEYS if k in config}


def _check_positive(name: str, value: Any, kind: type = int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, kind)) or value <= 0:
        raise TuneError(f"`{name}` (={value!r}) must be a positive number")


def verify_vgg(
    config: Mapping[str, Any],
    batch: int,
    *,
    timeout_s: float = 600,
    budget_bytes: int | None = None,
    predicted_peak_bytes: int | None = None,
    time_steps: int = 0,
    env: Mapping[str, str] | None = None,
) -> Verification:
    """Runs the VGG step of `config` at `batch` in a child process.

    Args:
        config: `model` and the `models.vgg_setup` keywords (see
            `CONFIG_KEYS`), plus `xla_remat_pass` (default False: the child
            sets `jax_compiler_enable_remat_pass` off, as the tuner compiles).
        batch: the batch size to run.
        timeout_s: the child is killed after this many seconds.
        budget_bytes: CPU only: cap the child's address space at its
            start-up usage plus this (see the module docstring).
        predicted_peak_bytes: the tuner's need at `batch`, for comparison.
        time_steps: if positive, the child also measures throughput over
            this many steps with `autotune.timing.measure_throughput`.
        env: the child's environment (default: this process's).
    """
    full = check_config(config)
    _check_positive("batch", batch)
    _check_positive("timeout_s", timeout_s, float)
    if budget_bytes is not None:
        _check_positive("budget_bytes", budget_bytes)
    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 0:
        raise TuneError(f"`time_steps` (={time_steps!r}) must be an integer >= 0")
    payload = {
        "config": full,
        "batch": batch,
        "budget_bytes": budget_bytes,
        "time_steps": time_steps,
    }
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "autotune.verify"],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=_ROOT,
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
    result: Any, config: Mapping[str, Any], *, boundary: bool = False, **kwargs: Any
) -> tuple[Verification, ...]:
    """Verifies a `TuneResult`'s batch; with `boundary`, also its next candidate."""
    checks = [verify_vgg(config, result.batch, predicted_peak_bytes=result.peak_bytes, **kwargs)]
    if boundary and result.next_batch is not None:
        kwargs.pop("time_steps", None)
        checks.append(
            verify_vgg(
                config, result.next_batch, predicted_peak_bytes=result.next_peak_bytes, **kwargs
            )
        )
    return tuple(checks)


# ---- the child --------------------------------------------------------------


def _vm_size_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise TuneError("`budget_bytes` needs /proc/self/status (Linux) to read VmSize")


def _cap_address_space(budget_bytes: int, platform: str) -> None:
    import resource

    if platform != "cpu":
        raise TuneError(
            f"`budget_bytes` (={budget_bytes}) caps the address space, a CPU "
            f"stand-in for a device limit; the child runs on {platform!r}, whose "
            "allocator limit is the real one: leave it None"
        )
    limit = _vm_size_bytes() + budget_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _real_state(config: Mapping[str, Any]) -> tuple[Any, Any]:
    """Real parameters of a `models.VGG` (`nnx.Rngs(0)`) and optimizer state,
    made by one compiled program rather than op by op."""
    import jax
    from flax import nnx

    from models import VGG, make_optimizer

    kwargs = {k: v for k, v in _setup_kwargs(config).items() if k != "optimizer"}
    tx = make_optimizer(config.get("optimizer", "sgd"))

    def init() -> tuple[Any, Any]:
        model = VGG(config["model"], rngs=nnx.Rngs(0), **kwargs)
        _, params = nnx.split(model, nnx.Param)
        return params, tx.init(params)

    lowered = jax.jit(init).lower()
    try:
        compiled = lowered.compile(compiler_options=FAST_COMPILE)
    except Exception:  # noqa: BLE001 - the options are an optimization only
        compiled = lowered.compile()
    return compiled()


def _need(compiled: Any) -> int | None:
    m = compiled.memory_analysis()
    if m is None:
        return None
    return (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )


def _run(payload: Mapping[str, Any]) -> dict[str, Any]:
    import jax

    from autotune.timing import materialize, measure_throughput
    from models import vgg_setup

    config, batch = payload["config"], payload["batch"]
    if not config["xla_remat_pass"]:
        jax.config.update("jax_compiler_enable_remat_pass", False)
    device = jax.devices()[0]
    setup = vgg_setup(config["model"], **_setup_kwargs(config))
    if payload.get("budget_bytes"):
        _cap_address_space(payload["budget_bytes"], device.platform)
    params, opt_state = _real_state(config)
    x, y = materialize(setup.batch_args(batch))
    compiled = setup.step.lower(params, opt_state, x, y).compile()
    for _ in range(STEPS):
        params, opt_state, loss = compiled(params, opt_state, x, y)
        jax.block_until_ready((params, opt_state, loss))
    stats = device.memory_stats() or {}
    result = {
        "ok": True,
        "error": None,
        "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
        "bytes_limit": stats.get("bytes_limit"),
        "need_bytes": _need(compiled),
        "platform": device.platform,
        "throughput": None,
    }
    if payload.get("time_steps"):
        timing = measure_throughput(
            compiled,
            setup.args_for_batch,
            batch,
            steps=payload["time_steps"],
            warmup=1,
            initial_args=(params, opt_state, x, y),
        )
        result["throughput"] = timing.to_dict()
    return result


def _stats_after_failure() -> dict[str, Any]:
    """The device's limit and peak, if JAX got as far as starting it."""
    if "jax" not in sys.modules:
        return {}
    try:
        device = sys.modules["jax"].devices()[0]
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - best effort after a failure
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
    except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:4000], **_stats_after_failure()}
    result["seconds"] = time.perf_counter() - start
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
