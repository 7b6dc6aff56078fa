"""One bounded run of the checks that need a real GPU; results as JSON and markdown.

Run on the device machine from the checkout, after installing the package
without its dependencies (they are there already; the VGG application
installs as `autotune.models`, so the checkout alone is not importable):

    python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site . &&
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.2 PYTHONPATH=/tmp/site \
        python3 scripts/device_check.py

and on a CPU machine with the package installed, to prove the script end to
end (tiny model, local CPU):

    JAX_PLATFORMS=cpu python scripts/device_check.py --dry-run

Checks, by priority (each one's failure is recorded, the rest go on):

1. VGG16, remat none and nothing_saveable: tune on the local GPU; run the
   answer for real (must fit; measured peak within 0.1% of the predicted
   need; throughput measured there) and the next candidate (must fail: out
   of memory in the child).
2. Deviceless need for the described target (h200-141gb) at the batches
   check 1 compiled on the device (or `--batches`): within 0.1% of the
   on-device need.
3. The deviceless tuner's answer for that target at the device's real
   `bytes_limit`, every probe compiled in full in process
   (`stop_at_assignment=False`), run for real.
   Then the same deviceless tune with probes stopped at buffer assignment
   (the default): the same answer and peaks, and both ways' seconds.

Every JAX computation runs in a child process; this process never starts
the GPU backend. A process holding device memory would shrink the next
child's allocator limit (fraction x memory free at its start), so tuning,
running and measuring each start from the same free memory. Deviceless
compiles run in children with `JAX_PLATFORMS=cpu` and the CUDA plugin.

Checks run in the order 1 (none), 2, 3, 1 (nothing_saveable): 2 and 3 are
cheap CPU compiles that need check 1's numbers; the second tune and its two
runs are the most expensive step and would otherwise starve them. Before
each step the time it needs is estimated; what would not fit before
`--deadline-s` is skipped and recorded as such.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

DEVICE_ENV = dict(os.environ)
os.environ["JAX_PLATFORMS"] = "cpu"  # this process only builds abstract setups
VGG_WORKLOADS = "autotune.models:vgg_workloads"

TOLERANCE = 1e-3
MARGIN_S = 5.0
DRY_BUDGET_BYTES = 16 << 20
REMATS = ("none", "nothing_saveable")
TUNE_CAP_S = 240.0  # one tune may not take the whole deadline


# ---- workers: each runs in its own child process ---------------------------


def _emit(kind: str, data: Any) -> None:
    print(json.dumps({kind: data}), flush=True)


def _vgg_config(p: Mapping[str, Any]) -> dict[str, Any]:
    """`vgg_workloads` keywords of one remat choice."""
    return {
        "model": p["model"],
        "image_size": p["image_size"],
        "num_classes": p["num_classes"],
        "remat": [p["remat"]],
    }


def worker_tune(p: Mapping[str, Any]) -> dict[str, Any]:
    """Tunes one remat choice for `p["target"]`; streams each compile."""
    import jax

    from autotune import find_max_batch, get_target
    from autotune.models import vgg_workloads

    target = get_target(p["target"])
    target = dataclasses.replace(target, stop_at_assignment=p.get("stop_at_assignment", True))
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    (workload,) = vgg_workloads(**_vgg_config(p))
    result = find_max_batch(
        workload,
        target=target,
        multiple_of=8,
        budget_bytes=p.get("budget_bytes"),
        on_probe=lambda probe: _emit("probe", probe.to_dict()),
    )
    return {
        "result": result.to_dict(),
        "bytes_limit": stats.get("bytes_limit"),
        "device_kind": device.device_kind,
        "platform": device.platform,
    }


def worker_need(p: Mapping[str, Any]) -> dict[str, Any]:
    """XLA's need at each batch, compiled for `p["target"]` (remat pass off)."""
    from autotune import get_target
    from autotune.internal import REMAT_PASS_OFF, Prober
    from autotune.models import vgg_workloads

    target = get_target(p["target"])
    (workload,) = vgg_workloads(**_vgg_config(p))
    prober = Prober(
        workload.step,
        workload.args_for_batch,
        compiler_options=REMAT_PASS_OFF,
        sharding=target.sharding() if target.deviceless else None,
        on_probe=lambda probe: _emit("probe", probe.to_dict()),
    )
    return {
        "needs": {str(b): prober(b).need_bytes for b in p["batches"]},
        "target": target.description,
    }


WORKERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "tune": worker_tune,
    "need": worker_need,
}


def run_worker(name: str) -> int:
    try:
        _emit("result", WORKERS[name](json.loads(sys.stdin.read())))
        return 0
    except BaseException as e:
        _emit("error", f"{type(e).__name__}: {e}"[:4000])
        return 1


# ---- the parent --------------------------------------------------------------


class Clock:
    """Seconds left before the deadline."""

    def __init__(self, deadline_s: float):
        self.start = time.monotonic()
        self.deadline_s = deadline_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.deadline_s - self.elapsed()


class Skipped(Exception):
    """Not enough time left for a step."""


class Report:
    """Checks as they finish, flushed to JSON and markdown after each."""

    def __init__(self, out: Path, meta: dict[str, Any]):
        self.out, self.meta, self.checks = out, meta, []
        out.mkdir(parents=True, exist_ok=True)

    def add(self, check: dict[str, Any]) -> None:
        self.checks.append(check)
        print(
            f"[{check['seconds']:6.1f} s] {check['name']}: {check['status']} - {check['summary']}",
            flush=True,
        )
        self.flush()

    def flush(self) -> None:
        data = {"meta": self.meta, "checks": self.checks}
        _write(self.out / "device_check.json", json.dumps(data, indent=2, default=str))
        _write(self.out / "device_check.md", self.markdown())

    def markdown(self) -> str:
        lines = ["# Device check", ""]
        lines += [f"- {k}: {v}" for k, v in self.meta.items()]
        lines += ["", "| check | status | summary |", "|---|---|---|"]
        lines += [f"| {c['name']} | {c['status']} | {c['summary']} |" for c in self.checks]
        return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def call_worker(
    name: str, payload: Mapping[str, Any], *, timeout_s: float, env: Mapping[str, str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Runs a worker child; returns its result and its streamed probes."""
    child_env = dict(env)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name]
    try:
        proc = subprocess.run(
            cmd,
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=child_env,
        )
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout = _text(e.stdout)
        probes = _lines(stdout, "probe")
        raise RuntimeError(
            f"worker {name!r} timed out after {timeout_s:.0f} s (probes so far: {probes})"
        ) from None
    results, errors = _lines(stdout, "result"), _lines(stdout, "error")
    if results:
        return results[-1], _lines(stdout, "probe")
    detail = errors[-1] if errors else " | ".join(stderr.strip().splitlines()[-3:])
    raise RuntimeError(f"worker {name!r} failed (exit {code}): {detail}")


def _text(data: Any) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _lines(stdout: str, kind: str) -> list[Any]:
    found = []
    for line in stdout.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and kind in data:
            found.append(data[kind])
    return found


class Checker:
    """The checks, sharing what earlier ones found."""

    def __init__(self, args: argparse.Namespace, report: Report):
        self.args, self.report = args, report
        self.clock = Clock(args.deadline_s)
        self.dry = args.dry_run
        self.tunes: dict[str, dict[str, Any]] = {}
        self.verified: dict[tuple[str, int], Any] = {}
        self.deviceless: tuple[int, dict[str, Any]] | None = None  # check 3's budget and answer
        self.deviceless_env = {**DEVICE_ENV, "JAX_PLATFORMS": "cpu"}

    @property
    def setup(self) -> dict[str, Any]:
        return {
            "model": self.args.model,
            "image_size": self.args.image_size,
            "num_classes": self.args.num_classes,
        }

    def timeout(self, need_s: float, what: str, cap_s: float | None = None) -> float:
        left = self.clock.left() - MARGIN_S
        if left < need_s:
            raise Skipped(f"{what}: needs about {need_s:.0f} s; {max(left, 0):.0f} s left")
        return left if cap_s is None else min(left, cap_s)

    def verify_estimate_s(self, batch: int) -> float:
        return 15.0 if self.dry else 25.0 + 0.2 * batch

    def run(self, name: str, fn: Callable[[], tuple[str, str, dict[str, Any]]]) -> None:
        start = self.clock.elapsed()
        try:
            status, summary, details = fn()
        except Skipped as e:
            status, summary, details = "skipped", str(e), {}
        except Exception as e:
            status, summary = "error", f"{type(e).__name__}: {e}"[:1000]
            details = {"traceback": traceback.format_exc()[-4000:]}
        self.report.add(
            {
                "name": name,
                "status": status,
                "summary": summary,
                "seconds": round(self.clock.elapsed() - start, 1),
                **details,
            }
        )

    # -- check 1 --

    def tune_local(self, remat: str) -> tuple[str, str, dict[str, Any]]:
        timeout = self.timeout(20.0 if self.dry else 90.0, "tuning", cap_s=TUNE_CAP_S)
        payload = {
            **self.setup,
            "remat": remat,
            "target": "local",
            "budget_bytes": DRY_BUDGET_BYTES if self.dry else None,
        }
        out, _ = call_worker("tune", payload, timeout_s=timeout, env=DEVICE_ENV)
        self.tunes[remat] = out
        r = out["result"]
        self.report.meta.setdefault("device", out["device_kind"])
        self.report.meta.setdefault("bytes_limit", out["bytes_limit"])
        nxt = r["next_peak_bytes"]
        summary = (
            f"batch {r['batch']} needs {r['peak_bytes']:,} B of "
            f"{r['budget']['bytes']:,} B; next {r['next_batch']} needs "
            f"{'-' if nxt is None else f'{nxt:,}'} B; {r['compiles']} compiles, "
            f"{r['seconds']:.1f} s on {out['device_kind']}"
        )
        return "pass", summary, {"tune": out}

    def verify_answer(self, remat: str) -> tuple[str, str, dict[str, Any]]:
        from autotune.internal import verify_workload

        r = self._tuned(remat)
        timeout = self.timeout(self.verify_estimate_s(r["batch"]), "the run at the answer")
        v = verify_workload(
            self._config(remat),
            r["batch"],
            timeout_s=timeout,
            predicted_peak_bytes=r["peak_bytes"],
            time_steps=5,
            env=DEVICE_ENV,
        )
        self.verified[(remat, r["batch"])] = v
        diff = v.relative_difference
        if not v.ok:
            status = "fail"
        elif diff is None:
            status = "info" if v.platform == "cpu" else "fail"
        else:
            status = "pass" if abs(diff) <= TOLERANCE else "fail"
        return status, v.render(r["budget"]["bytes"]), {"verification": v.to_dict()}

    def verify_next(self, remat: str) -> tuple[str, str, dict[str, Any]]:
        from autotune.internal import verify_workload

        r = self._tuned(remat)
        if r["next_batch"] is None:
            return "info", "no next candidate (capped at max_batch)", {}
        timeout = self.timeout(
            self.verify_estimate_s(r["next_batch"]), "the run at the next candidate"
        )
        v = verify_workload(
            self._config(remat),
            r["next_batch"],
            timeout_s=timeout,
            predicted_peak_bytes=r["next_peak_bytes"],
            env=DEVICE_ENV,
        )
        if v.platform == "cpu" or self.dry:
            status = "info"
        else:
            status = "pass" if (not v.ok and v.out_of_memory) else "fail"
        return status, v.render(r["budget"]["bytes"]), {"verification": v.to_dict()}

    # -- check 2 --

    def deviceless_needs(self) -> tuple[str, str, dict[str, Any]]:
        on_device = self._on_device_needs()
        timeout = self.timeout(30.0, "the deviceless compiles")
        out, _ = call_worker(
            "need",
            {
                **self.setup,
                "remat": "none",
                "target": self.args.target,
                "batches": sorted(on_device),
            },
            timeout_s=timeout,
            env=self.deviceless_env,
        )
        rows = []
        for batch, need in sorted(on_device.items()):
            described = out["needs"][str(batch)]
            rows.append(
                {
                    "batch": batch,
                    "deviceless": described,
                    "on_device": need,
                    "relative_difference": (described - need) / need,
                }
            )
        worst = max(abs(row["relative_difference"]) for row in rows)
        status = "info" if self.dry else ("pass" if worst <= TOLERANCE else "fail")
        summary = ", ".join(f"{row['batch']}: {row['relative_difference']:+.4%}" for row in rows)
        return status, f"deviceless vs on-device need at {summary}", {"rows": rows}

    def _on_device_needs(self) -> dict[int, int]:
        if self.args.batches:
            timeout = self.timeout(20.0 + 30.0 * len(self.args.batches), "the on-device compiles")
            out, _ = call_worker(
                "need",
                {**self.setup, "remat": "none", "target": "local", "batches": self.args.batches},
                timeout_s=timeout,
                env=DEVICE_ENV,
            )
            return {int(b): n for b, n in out["needs"].items()}
        probes = self._tuned("none")["probes"]
        return {p["batch"]: p["need_bytes"] for p in probes}

    # -- check 3 --

    def deviceless_answer(self) -> tuple[str, str, dict[str, Any]]:
        from autotune.internal import verify_workload

        limit = self.tunes.get("none", {}).get("bytes_limit")
        budget = DRY_BUDGET_BYTES if self.dry else limit
        if budget is None:
            raise RuntimeError("no bytes_limit: check 1 (remat none) did not report one")
        r = self._deviceless_tune(budget, "the deviceless tune", stop_at_assignment=False)
        head = f"{self.args.target} at budget {budget:,} B: batch {r['batch']}"
        done = self.verified.get(("none", r["batch"]))
        if done is None:
            timeout = self.timeout(self.verify_estimate_s(r["batch"]), "the run")
            done = verify_workload(
                self._config("none"),
                r["batch"],
                timeout_s=timeout,
                predicted_peak_bytes=r["peak_bytes"],
                env=DEVICE_ENV,
            )
            head += " (run here)"
        else:
            head += " (the answer of check 1, run there)"
        status = "pass" if done.ok else "fail"
        self.deviceless = (budget, r)
        return status, f"{head}; {done.render(budget)}", {"tune": r, "verification": done.to_dict()}

    def stopped_probes(self) -> tuple[str, str, dict[str, Any]]:
        if self.deviceless is None:
            raise Skipped("needs check 3's deviceless tune, which failed or was skipped")
        budget, full = self.deviceless
        r = self._deviceless_tune(
            budget, "the deviceless tune with stopped probes", stop_at_assignment=True
        )
        keys = ("batch", "peak_bytes", "next_peak_bytes")
        same = all(r[k] == full[k] for k in keys)
        stopped = sum(bool(p["stopped"]) for p in r["probes"])
        summary = (
            f"batch {r['batch']}, peak {r['peak_bytes']:,} B, "
            f"{'the same as' if same else 'NOT the same as'} in process; "
            f"{len(r['probes'])} probes, {stopped} stopped: {r['seconds']:.1f} s, "
            f"against {full['seconds']:.1f} s in process ({len(full['probes'])} probes)"
        )
        return ("pass" if same and stopped else "fail"), summary, {"tune": r}

    def _deviceless_tune(self, budget: int, what: str, **options: Any) -> dict[str, Any]:
        """The deviceless tune of remat=none for the described target at `budget`."""
        out, _ = call_worker(
            "tune",
            {**self.setup, "remat": "none", "target": self.args.target, "budget_bytes": budget,
             **options},
            timeout_s=self.timeout(30.0, what),
            env=self.deviceless_env,
        )  # fmt: skip
        return out["result"]

    def _tuned(self, remat: str) -> dict[str, Any]:
        if remat not in self.tunes:
            raise Skipped(
                f"needs the tune of remat={remat}, which failed or was skipped (see its row)"
            )
        return self.tunes[remat]["result"]

    def _config(self, remat: str) -> Any:
        from autotune.internal import WorkloadSource

        config = _vgg_config({**self.setup, "remat": remat})
        return WorkloadSource(VGG_WORKLOADS, f"{self.args.model} remat={remat}", config)

    def all(self) -> None:
        first, *rest = REMATS
        self._check_one(first)
        self.run("2 deviceless vs on-device need", self.deviceless_needs)
        self.run("3 deviceless answer run for real", self.deviceless_answer)
        self.run("3 deviceless tune, probes stopped at buffer assignment", self.stopped_probes)
        for remat in rest:
            self._check_one(remat)

    def _check_one(self, remat: str) -> None:
        self.run(f"1 tune remat={remat}", lambda: self.tune_local(remat))
        self.run(f"1 run answer remat={remat}", lambda: self.verify_answer(remat))
        self.run(f"1 run next remat={remat}", lambda: self.verify_next(remat))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--deadline-s", type=float, default=480.0)
    p.add_argument("--out", default=os.environ.get("OUT") or "device-results")
    p.add_argument(
        "--dry-run", action="store_true", help="tiny model on the local CPU, a fixed budget"
    )
    p.add_argument("--target", default="h200-141gb", help="the described GPU (checks 2, 3)")
    p.add_argument(
        "--batches",
        default="",
        help="comma-separated batches for check 2 (default: those check 1 compiled on the device)",
    )
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    return p


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    import jax

    return {
        "dry_run": args.dry_run,
        "model": args.model,
        "image_size": args.image_size,
        "jax": jax.__version__,
        "python": sys.version.split()[0],
        "mem_fraction_env": DEVICE_ENV.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
        "deadline_s": args.deadline_s,
        "target": args.target,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        os.environ.clear()
        os.environ.update(DEVICE_ENV)
        return run_worker(args.worker)
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    args.model, args.image_size, args.num_classes = (
        ("vgg-tiny", 16, 10) if args.dry_run else ("vgg16", 224, 1000)
    )
    report = Report(Path(args.out), _meta(args))
    checker = Checker(args, report)
    checker.all()
    report.meta["seconds"] = round(checker.clock.elapsed(), 1)
    report.flush()
    print(f"wrote {Path(args.out) / 'device_check.json'} and device_check.md")
    failed = [c["name"] for c in report.checks if c["status"] in ("fail", "error")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
