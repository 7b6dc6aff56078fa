"""One probe: compile a step for one batch size and read XLA's memory analysis.

Nothing is allocated: the step is lowered from `jax.ShapeDtypeStruct`
arguments and compiled ahead of time. The bytes the device needs to run the
program are `argument + output - alias + temp` (the fields of
`compiled.memory_analysis()`); `peak_memory_in_bytes` is not used because the
CPU backend reports only the argument size there.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax

from autotune._compile import kernels as _kernels
from autotune._compile import workers as _workers
from autotune._compile.arguments import argument_leaves
from autotune._compile.concurrency import CpuClock, compiles_at_once, cores
from autotune._compile.dump import Dump, compile_with_dump, persistent_cache_on
from autotune._compile.fingerprint import fingerprint
from autotune._compile.records import (
    CompileFailure,
    CompilerOptions,
    Probe,
    compile_failures_text,
    program_flops,
)
from autotune._compile.remat_pass import afresh_if_the_pass_flips, xla_remat_pass
from autotune._compile.shipped import ShipError, Shipped, ship
from autotune._core.errors import TuneError
from autotune._core.signals import delivered, raise_if_interrupted
from autotune._explain import unfused as _unfused
from autotune._explain.split import fixed_bytes, local_batch
from autotune._targets.refusal import hbm_refusal
from autotune._workloads.layout import own_sharding
from autotune._workloads.workload import as_argnums, jit_step

if TYPE_CHECKING:
    from autotune._targets.interface import Target
    from autotune._workloads.workload import Workload


def _as_struct(leaf: Any, sharding: Any) -> jax.ShapeDtypeStruct:
    if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
        raise TuneError(
            f"`args_for_batch` returned a leaf of type {type(leaf).__name__}; "
            "every leaf must be a jax.ShapeDtypeStruct or an array"
        )
    own = own_sharding(leaf)
    if isinstance(leaf, jax.ShapeDtypeStruct) and (own is not None or sharding is None):
        return leaf
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=own or sharding)


def start_workers(target: Target) -> None:
    """Start the worker processes a search for `target` compiles in, where
    its probes stop at buffer assignment: their start (importing JAX, making
    the target's devices) then runs beside the caller's own work before the
    search, such as building the model."""
    if target.stops_at_assignment():
        _workers.pool_for(target, _workers.workers_bound()).warm()


class Prober:
    """Compiles `step` at batch sizes on demand and remembers every result.

    Lowering (tracing) runs in the calling thread; compiles run in a pool of
    threads, so a round of batches compiles concurrently and the next batch
    is lowered while the previous one compiles. A Ctrl-C while
    waiting leaves the compiles in flight to finish in their threads: no
    exception is ever raised inside XLA.

    Args:
        step: the train step, plain or already jitted.
        args_for_batch: batch size -> the step's positional arguments as pytrees
            of `jax.ShapeDtypeStruct` (arrays are accepted and never copied).
        sharding: placed on every leaf that carries none, to compile for a
            described target; None compiles for the default device.
        xla_remat_pass: XLA's automatic rematerialization pass on or off.
        compiler_options: extra XLA debug options passed to `compile()`.
        donate_argnums: arguments to donate (a jitted step is wrapped to
            donate them; see `autotune.Workload`).
        on_probe: called with each new probe as soon as it is made.
        workers: compiles that may run at once; None: as many as pay,
            measured on the first compile (`autotune._compile.concurrency`).
        dump_first: dump the first compile, for `fixed_bytes`.
        keep_dumps: also dump each compile (`autotune._compile.dump`) and keep
            what the dump says in `dumps`, for the peak breakdown.
        kernel_cache: share compiled kernels between compiles
            (`autotune._compile.kernels`); for described GPUs.
        stop_at: compile in worker processes for this target, stopped once
            XLA has assigned the program's buffers (`autotune._compile.workers`);
            None compiles in this process. A step that cannot be shipped to
            a worker is compiled here, and `in_process` says why; so is a
            compile whose dump is kept (`keep_dumps`). The split's first
            (`dump_first`) stops with its dump's texts, save on a TPU.
        placed_within: with `stop_at` a target whose compiler fits programs
            (a TPU), its limit: a probe stops once the compiler has placed
            its buffers within it (`Probe.placed`, a verdict), and
            `compile_in_full` makes it good.
    """

    def __init__(
        self,
        step: Callable[..., Any],
        args_for_batch: Callable[[int], Sequence[Any]],
        *,
        sharding: Any = None,
        xla_remat_pass: bool = False,
        compiler_options: CompilerOptions | None = None,
        donate_argnums: int | Sequence[int] = (),
        on_probe: Callable[[Probe], None] | None = None,
        workers: int | None = 1,
        keep_dumps: bool = False,
        dump_first: bool = False,
        kernel_cache: bool = False,
        stop_at: Target | None = None,
        placed_within: int | None = None,
    ):
        self._jitted = jit_step(step, as_argnums(donate_argnums))
        self._args_for_batch = args_for_batch
        self._sharding = sharding
        self._remat_pass = xla_remat_pass
        self._compiler_options = dict(compiler_options or {})
        self._on_probe = on_probe
        self._workers = workers
        self._first = CpuClock()  # the cores the first compile kept busy
        self._lowered: dict[int, Any] = {}
        self._keep_dumps = keep_dumps
        self._dump_first = dump_first
        # Off where the user names a file, and once a compile failed with one.
        self._kernel_cache = kernel_cache and _kernels.OPTION not in self._compiler_options
        self.probes: dict[int, Probe] = {}
        self.failures: dict[int, CompileFailure] = {}
        self.order: list[int] = []  # batches in the order their compiles began
        self.dumps: dict[int, Dump] = {}
        self._programs: dict[int, str] = {}  # each lowered program's fingerprint
        self._stop_at = stop_at
        self._placed_within = placed_within
        # Why compiles run in this process though `stop_at` was given ("" if not).
        self.in_process = ""
        self._idle_work: list[Callable[[], Any]] = []
        self._next: list[int] = []  # batches to make ready while compiles run
        self._shipped: dict[int, Shipped] = {}
        self._flops: dict[int, float | None] = {}
        self._args: dict[int, tuple[Any, ...]] = {}

    @classmethod
    def for_target(
        cls, workload: Workload, target: Target, budget_bytes: int | None = None, **options: Any
    ) -> Prober:
        """A prober of `workload` compiling for `target`'s devices, against
        `budget_bytes` where the target's compiler fits programs into it;
        `options` as the constructor's."""
        stops = target.stops_at_assignment()
        return cls(
            workload.step,
            workload.args_for_batch,
            sharding=target.placement(),
            donate_argnums=workload.donate_argnums,
            # A kernel file's path would be in every persistent cache key, never hit again.
            kernel_cache=target.shares_kernels and not persistent_cache_on(),
            stop_at=target if stops else None,
            placed_within=budget_bytes if stops and target.compiler_fits else None,
            **options,
        )

    def when_idle(self, work: Callable[[], Any]) -> None:
        """Run `work` once while this process waits for compiles, off the
        search's critical path: lowering a batch the answer will ask about,
        say. Work that fails is dropped; whoever needs its result does it again."""
        self._idle_work.append(work)

    def prepare(self, batches: Sequence[int]) -> None:
        """Lower `batches` (and ship them to workers) while this process waits
        for compiles, ahead of the round that will ask for them; the search's
        `prepare`. Each call replaces the batches the last one named."""
        self._next = [b for b in batches if b not in self.probes and b not in self.failures]

    def _ready(self, batch: int, here: bool = False) -> tuple[Any, Shipped | None]:
        """`batch` lowered, its fingerprint taken, and unless it compiles
        `here` (or keeps its dump, read here), shipped to a worker."""
        lowered = self.lower(batch)
        self.program(batch)
        here = here or self._keep_dumps
        return lowered, None if here else self._ship(batch, lowered)

    def dump_first_compile(self) -> None:
        """Dump the first compile, for `fixed_bytes`, unless the user dumps
        compiles themselves or one has been made."""
        if "xla_dump_to" not in self._compiler_options and not self.order:
            self._dump_first = True

    @property
    def compiles(self) -> int:
        return len(self.probes) + len(self.failures)

    @property
    def workers(self) -> int:
        """Compiles to run at once: as given, or as many as the first
        compile showed to pay (one until it ends)."""
        if self._workers is not None:
            return self._workers
        if self._stopping:  # the workers' compiles keep this process idle
            return _workers.workers_bound()
        if self._first.share is None:
            return 1
        return compiles_at_once(self._first.share, cores())

    def compiled(self) -> tuple[Probe, ...]:
        """The probes made, in the order their compiles began."""
        return tuple(self.probes[b] for b in self.order if b in self.probes)

    def abstract_args(self, batch: int) -> tuple[Any, ...]:
        """The step's arguments for `batch`, as placed structs (made once)."""
        if batch not in self._args:
            self._args[batch] = self._make_args(batch)
        return self._args[batch]

    def _make_args(self, batch: int) -> tuple[Any, ...]:
        try:
            args = self._args_for_batch(batch)
        except TuneError:
            raise
        except Exception as e:
            raise TuneError(
                f"`args_for_batch` raised {type(e).__name__} for batch={batch}: {e}"
            ) from e
        if not isinstance(args, (tuple, list)):
            raise TuneError(
                f"`args_for_batch` must return a tuple of the step's positional "
                f"arguments; for batch={batch} it returned "
                f"{type(args).__name__}"
            )
        return tuple(jax.tree.map(lambda x: _as_struct(x, self._sharding), args))

    def fixed_bytes(self, batch: int) -> int | None:
        """The bytes of the compile at `batch` that do not follow the batch,
        read from its dump (`autotune._explain.split`); None without one."""
        dump, probe = self.dumps.get(batch), self.probes.get(batch)
        if dump is None or dump.texts is None or probe is None or probe.refused:
            return None
        try:  # the arguments at twice the batch tell which leaves follow it
            args = self.abstract_args(batch)
            leaves = argument_leaves(args, self.abstract_args, batch)
        except (TuneError, ValueError):
            return None
        return fixed_bytes(dump.texts, probe.need_bytes, args, leaves, batch)

    def flops(self, batch: int) -> float | None:
        """FLOPs of the program lowered for `batch`, before XLA's
        optimizations, by the host's cost analysis: for targets whose
        compiled program has none (described GPUs)."""
        if batch not in self._flops:
            try:
                flops = _host_flops(self.lower(batch))
                if flops is None:  # lower again, for the host
                    flops = program_flops(self._jitted.lower(*self._args_for_batch(batch)))
            except Exception:  # an estimate of cost, never required
                flops = None
            self._flops[batch] = flops
        return self._flops[batch]

    def unfused_boundary(self, batch: int, budget: int) -> float | None:
        """The batch at which the step's jaxpr traced at `batch`, every value
        kept to its last use, fills `budget` (`autotune._explain.unfused`); None
        where the trace does not say. JAX keeps the trace for the lowering."""
        try:
            args = self.abstract_args(batch)
            traced = self._jitted.trace(*args)
            traced = getattr(traced, "traced", traced)  # flax.nnx.jit's Traced holds JAX's
            leaves = argument_leaves(args, self.abstract_args, batch)
            local = local_batch(args, leaves, batch)
            if local is None:
                return None
            return _unfused.boundary(traced.jaxpr, batch, leaves, local, budget)
        except Exception:  # a placement, never required
            return None

    def lower(self, batch: int) -> Any:
        """The step lowered for `batch` (traced once, kept)."""
        if batch not in self._lowered:
            afresh_if_the_pass_flips(self._remat_pass)
            args = self.abstract_args(batch)
            try:
                self._lowered[batch] = self._jitted.lower(*args)
            except Exception as e:
                raise TuneError(
                    f"`step` does not trace for batch={batch}: {type(e).__name__}: {e}"
                ) from e
        return self._lowered[batch]

    def program(self, batch: int) -> str:
        """The fingerprint of the step lowered for `batch`
        (`autotune._compile.fingerprint`); "" where it does not lower."""
        if batch not in self._programs:
            try:
                self._programs[batch] = _program(self.lower(batch))
            except TuneError:
                self._programs[batch] = ""
        return self._programs[batch]

    @property
    def _stopping(self) -> bool:
        return self._stop_at is not None and not self.in_process

    def measure(self, batches: Sequence[int], record: Callable[[int, int | None], None]) -> None:
        """Compiles `batches` concurrently; records each one's need (None: it
        did not compile) as its compile ends. The search's measure."""
        try:
            self._measure(batches, record)
        except KeyboardInterrupt:
            delivered()
            _workers.stop_all()  # no worker outlives an interrupted search
            raise

    def _ship(self, batch: int, lowered: Any) -> Shipped | None:
        """The program at `batch` for a worker; None compiles it here."""
        if not self._stopping:
            return None
        if batch in self._shipped:
            return self._shipped[batch]
        assert self._stop_at is not None
        try:
            target = self._stop_at
            devices = target.devices() if target.device_count > 1 else ()
            args = self.abstract_args(batch)
            self._shipped[batch] = ship(self._jitted, args, lowered, target.platform, devices)
            return self._shipped[batch]
        except ShipError as e:
            self.in_process = f"the step cannot be shipped to a compile worker: {e}"
            warnings.warn(
                f"probes compile in this process, in full, not stopped at buffer "
                f"assignment: {self.in_process}",
                stacklevel=2,
            )
            return None

    def _measure(self, batches: Sequence[int], record: Callable[[int, int | None], None]) -> None:
        # The round is the search's; how many of its compiles run at once is this machine's.
        pool = _pool(self.workers)
        if self._stopping:  # the workers start while this process traces
            assert self._stop_at is not None
            _workers.pool_for(self._stop_at, self.workers).warm()
        pending = {}
        for batch in batches:
            if batch in self.probes or batch in self.failures:
                record(batch, self._need(batch))
                continue
            raise_if_interrupted()
            first = not self.order
            # A dump read for `--why` names the step's arguments as the user
            # does: a shipped program's are the flat leaves'. The split reads
            # shapes only, from a compile stopped once they are written, save
            # on a TPU, whose probes stop at the placement.
            texts = first and self._dump_first and self._placed_within is None
            lowered, shipped = self._ready(batch, here=first and self._dump_first and not texts)
            job = (self._compile, batch, lowered, first, shipped, texts)
            pending[pool.submit(*job)] = batch
            self.order.append(batch)
            if shipped is not None:  # no compiled cost analysis: the lowering's, ahead
                self.when_idle(functools.partial(self.flops, batch))
        while pending:
            done, _ = concurrent.futures.wait(
                pending,
                timeout=0 if self._next else _POLL_S,
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
            if not done and self._next:  # tracing lets the compiles' threads run between its steps
                with contextlib.suppress(Exception):
                    self._ready(self._next.pop(0))
            elif not done and self._idle_work:
                # Only after a wait: the round's compiles have started, and a
                # cost analysis that holds the interpreter delays none of them.
                with contextlib.suppress(Exception):
                    self._idle_work.pop(0)()
            raised = None  # every compile that ended is kept before one that raised
            for future in done:
                batch = pending.pop(future)
                try:
                    outcome = future.result()
                except BaseException as e:
                    raised = raised or e
                    continue
                if isinstance(outcome, Probe):
                    outcome = dataclasses.replace(outcome, program=self._programs[batch])
                    self.probes[batch] = outcome
                else:
                    self.failures[batch] = outcome
                record(batch, self._need(batch))
                if isinstance(outcome, Probe) and self._on_probe is not None:
                    self._on_probe(outcome)
            if raised is not None:
                raise raised
            raise_if_interrupted()
        self._next = []  # guesses for this round's successor: it is asked now

    @property
    def places(self) -> bool:
        """Whether probes stop at a verdict (`placed_within`), for
        `compile_in_full` to make good."""
        return self._stopping and self._placed_within is not None

    def compile_in_full(self, batch: int) -> Probe | CompileFailure:
        """`batch` compiled in full, in a worker where the program ships (a
        Ctrl-C stops it); its probe, or its failure, replaces a placement's.
        One made already in full is returned as it is."""
        made = self.probes.get(batch) or self.failures.get(batch)
        if made is not None and not (isinstance(made, Probe) and made.placed):
            return made
        if made is None:
            self.order.append(batch)
        try:
            outcome = self._prove(batch)
        except KeyboardInterrupt:
            delivered()
            _workers.stop_all()
            raise
        self.probes.pop(batch, None)
        if isinstance(outcome, Probe):
            outcome = dataclasses.replace(outcome, program=self.program(batch))
            self.probes[batch] = outcome
            if self._on_probe is not None:
                self._on_probe(outcome)
        else:
            self.failures[batch] = outcome
        return outcome

    def _prove(self, batch: int) -> Probe | CompileFailure:
        lowered = self.lower(batch)
        shipped = self._ship(batch, lowered)
        if shipped is None:
            return self._compile(batch, lowered, False)
        assert self._stop_at is not None
        pool = _workers.pool_for(self._stop_at, self.workers)
        with _IN_FLIGHT(batch):
            o = pool.compile(shipped, self._compiler_options, self._remat_pass, stop=False)
        return _probe_of(batch, o)

    def _need(self, batch: int) -> int | None:
        probe = self.probes.get(batch)
        return None if probe is None else probe.need_bytes

    def __call__(self, batch: int) -> Probe:
        """The probe at `batch`; a compile that fails raises TuneError."""
        self.measure([batch], lambda b, need: None)
        if batch in self.failures:
            raise TuneError(compile_failures_text([self.failures[batch]], self._compiler_options))
        return self.probes[batch]

    def _compile(
        self,
        batch: int,
        lowered: Any,
        first: bool,
        shipped: Shipped | None = None,
        texts: bool = False,
    ) -> Probe | CompileFailure:
        """One compile, in a worker thread; the prober's first is timed.
        `texts`: a stopped compile keeps its dump's texts (`dumps`)."""
        if shipped is not None:
            return self._compile_stopped(batch, shipped, texts)
        clock = self._first if first else contextlib.nullcontext()
        start = time.perf_counter()
        try:
            with _IN_FLIGHT(batch), xla_remat_pass(self._remat_pass), clock:
                compiled = self._compile_lowered(lowered, batch, dump=first and self._dump_first)
        except Exception as e:
            seconds = time.perf_counter() - start
            refusal = hbm_refusal(e)
            if refusal is None:
                return CompileFailure(batch, f"{type(e).__name__}: {e}", seconds)
            return Probe(
                batch, 0, 0, 0, 0, seconds,
                required_bytes=refusal.required_bytes,
                available_bytes=refusal.available_bytes,
            )  # fmt: skip
        seconds = time.perf_counter() - start
        analysis = compiled.memory_analysis()
        if analysis is None:
            raise TuneError(
                f"the {jax.default_backend()!r} backend returned no memory "
                "analysis for the compiled step (`memory_analysis()` is None); "
                "this backend cannot be tuned by compiling"
            )
        return Probe(
            batch=batch,
            argument_bytes=int(analysis.argument_size_in_bytes),
            output_bytes=int(analysis.output_size_in_bytes),
            alias_bytes=int(analysis.alias_size_in_bytes),
            temp_bytes=int(analysis.temp_size_in_bytes),
            compile_seconds=seconds,
            flops=program_flops(compiled),
            code_bytes=int(getattr(analysis, "generated_code_size_in_bytes", 0) or 0),
        )

    def _compile_stopped(
        self, batch: int, shipped: Shipped, texts: bool = False
    ) -> Probe | CompileFailure:
        """One compile in a worker process, stopped at buffer assignment."""
        assert self._stop_at is not None
        pool = _workers.pool_for(self._stop_at, self.workers)
        with _IN_FLIGHT(batch):
            o = pool.compile(
                shipped, self._compiler_options, self._remat_pass, texts,
                placed_within=self._placed_within,
            )  # fmt: skip
        if texts:
            error = o.dump_error or ("" if o.texts else f"no dump was read: the compile {o.kind}")
            self.dumps[batch] = Dump(o.texts, error, out_paths=())
        return _probe_of(batch, o)

    def _compile_lowered(self, lowered: Any, batch: int, dump: bool) -> Any:
        if self._kernel_cache:
            try:
                kernels = _kernels.thread_file()
            except OSError:
                self._kernel_cache = False
            else:
                options = {**self._compiler_options, _kernels.OPTION: kernels}
                try:
                    return self._compile_with(lowered, batch, dump, options)
                except Exception as e:
                    if not _kernels.blames_the_file(str(e), kernels):
                        raise  # the step's own failure: recorded once, kernels still shared
                    self._kernel_cache = False
                    _kernels.forget(kernels)
        return self._compile_with(lowered, batch, dump, self._compiler_options)

    def _compile_with(
        self, lowered: Any, batch: int, dump: bool, options: Mapping[str, Any]
    ) -> Any:
        if not (self._keep_dumps or dump):
            return lowered.compile(compiler_options=dict(options) or None)
        # A dump only for the split is not worth a compile the persistent cache saved.
        compiled, self.dumps[batch] = compile_with_dump(
            lowered, options, recompile=self._keep_dumps
        )
        return compiled


def _probe_of(batch: int, o: _workers.Outcome) -> Probe | CompileFailure:
    """The record of a compile in a worker."""
    if o.kind == "stopped":
        a = o.assigned
        assert a is not None
        sizes = (a.argument_bytes, a.output_bytes, a.alias_bytes, a.temp_bytes)
        return Probe(batch, *sizes, o.seconds, stopped=True)
    if o.kind == "placed":
        return Probe(batch, 0, 0, 0, 0, o.seconds, stopped=True, placed_bytes=o.placed)
    if o.kind == "compiled":
        assert o.sizes is not None
        *sizes, code = o.sizes
        return Probe(batch, *sizes, o.seconds, flops=o.flops, code_bytes=code)
    if o.kind == "refused":
        return Probe(
            batch, 0, 0, 0, 0, o.seconds,
            required_bytes=o.required, available_bytes=o.available,
        )  # fmt: skip
    return CompileFailure(batch, o.error, o.seconds)


# Seconds between checks for Ctrl-C while compiles run.
_POLL_S = 0.1


class _InFlight:
    """The compiles running now, in any thread: each one's batch and start."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[int, float]] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, batch: int) -> Iterator[None]:
        token = object()
        with self._lock:
            self._running[id(token)] = (batch, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                del self._running[id(token)]

    @property
    def count(self) -> int:
        return len(self._running)

    def now(self) -> list[tuple[int, float]]:
        """(batch, seconds it has compiled) of each compile running, the longest first."""
        now = time.monotonic()
        with self._lock:
            running = list(self._running.values())
        return sorted(((b, now - t) for b, t in running), key=lambda r: -r[1])


_IN_FLIGHT = _InFlight()


def compiles_in_flight() -> bool:
    """Whether a compile is running in a worker thread now."""
    return _IN_FLIGHT.count > 0


def compiles_now() -> list[tuple[int, float]]:
    """(batch, seconds so far) of the compiles running now, the longest first."""
    return _IN_FLIGHT.now()


def _program(lowered: Any) -> str:
    """The lowered program's fingerprint; "" where it has no text."""
    try:
        return fingerprint(lowered.as_text())
    except Exception:  # a check of the answer, never required
        return ""


_POOLS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}


def _pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """A process-wide pool of `workers` compile threads."""
    if workers not in _POOLS:
        _POOLS[workers] = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="autotune-compile"
        )
    return _POOLS[workers]


def _host_flops(lowered: Any) -> float | None:
    """FLOPs of a lowered program by the host backend's cost analysis."""
    try:
        from jax._src import xla_bridge
        from jax._src.lib import _jax

        module = lowered.compiler_ir("hlo").get_hlo_module()
        analysis = _jax.hlo_module_cost_analysis(xla_bridge.get_backend("cpu"), module)
    except Exception:  # private API moved
        return None
    flops = analysis.get("flops") if isinstance(analysis, Mapping) else None
    return None if flops is None else float(flops)
