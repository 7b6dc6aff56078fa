"""One probe: compile a step for one batch size and read XLA's memory analysis.

Nothing is allocated: the step is lowered from `jax.ShapeDtypeStruct`
arguments and compiled ahead of time. The bytes the device needs to run the
program are `argument + output - alias + temp` (the fields of
`compiled.memory_analysis()`); `peak_memory_in_bytes` is not used because the
CPU backend reports only the argument size there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax

from autotune._errors import TuneError
from autotune._layout import own_sharding
from autotune._refusal import hbm_refusal
from autotune._workload import as_argnums, jit_step

# XLA's debug options as `compile(compiler_options=...)` takes them: XLA
# wants each value in its own type (a bool for a bool option, not "false").
CompilerOptions = Mapping[str, "str | bool | int | float"]

REMAT_PASS_FLAG = "jax_compiler_enable_remat_pass"
# The XLA option that flag sets, for compiles made outside `xla_remat_pass`.
REMAT_PASS_OFF = {"xla_disable_hlo_passes": "rematerialization"}


@contextlib.contextmanager
def xla_remat_pass(enabled: bool) -> Iterator[None]:
    """XLA's automatic rematerialization pass on or off for the compiles inside.

    The pass makes need(batch) non-affine near the limit it aims for, and that
    limit differs between devices and described targets. It is switched with
    JAX's own flag, as a training job does
    (`jax.config.update("jax_compiler_enable_remat_pass", False)`), so both
    compile the same program and share JAX's persistent compilation cache.
    """
    before = getattr(jax.config, REMAT_PASS_FLAG)
    jax.config.update(REMAT_PASS_FLAG, enabled)
    try:
        yield
    finally:
        jax.config.update(REMAT_PASS_FLAG, before)


@dataclasses.dataclass(frozen=True)
class Probe:
    """XLA's memory analysis of the step compiled for one batch size."""

    batch: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    compile_seconds: float
    flops: float | None = None
    # Set when the compiler refused the program for want of HBM (TPU): the
    # bytes it said the program required and had, rounded as it prints them
    # and counting the program's code; the four fields above are then 0.
    required_bytes: int | None = None
    available_bytes: int | None = None
    # The compiled program's code (`generated_code_size_in_bytes`); a TPU
    # holds it in HBM beside the buffers, and its compiler counts both.
    code_bytes: int = 0

    @property
    def refused(self) -> bool:
        """The compiler refused the program: it does not fit."""
        return self.required_bytes is not None

    @property
    def need_bytes(self) -> int:
        """Peak bytes the device needs to run the compiled step (a refused
        program's: what the compiler said it required)."""
        if self.required_bytes is not None:
            return self.required_bytes
        return need(self.argument_bytes, self.output_bytes, self.alias_bytes, self.temp_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "need_bytes": self.need_bytes}


def need(argument: int, output: int, alias: int, temp: int) -> int:
    """The bytes a compiled program needs: `argument + output - alias + temp`."""
    return argument + output - alias + temp


def compiled_need(compiled: Any) -> int | None:
    """`need` of a compiled program's memory analysis; None without one."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return need(
        m.argument_size_in_bytes,
        m.output_size_in_bytes,
        m.alias_size_in_bytes,
        m.temp_size_in_bytes,
    )


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


def _flops(program: Any) -> float | None:
    """FLOPs from a compiled or lowered program's cost analysis, if it has one."""
    try:
        analysis = program.cost_analysis()
    except Exception:
        return None
    if isinstance(analysis, Sequence) and analysis:
        analysis = analysis[0]
    if not isinstance(analysis, Mapping) or "flops" not in analysis:
        return None
    return float(analysis["flops"])


class Prober:
    """Compiles `step` at batch sizes on demand and remembers every result.

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
    ):
        self._jitted = jit_step(step, as_argnums(donate_argnums))
        self._args_for_batch = args_for_batch
        self._sharding = sharding
        self._remat_pass = xla_remat_pass
        self._compiler_options = dict(compiler_options or {})
        self._on_probe = on_probe
        self._lowered: dict[int, Any] = {}
        self.probes: dict[int, Probe] = {}

    @property
    def compiles(self) -> int:
        return len(self.probes)

    def abstract_args(self, batch: int) -> tuple[Any, ...]:
        """The step's arguments for `batch`, as placed structs."""
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

    def host_flops(self, batch: int) -> float | None:
        """FLOPs of the step lowered for the host backend, before XLA's
        optimizations: for targets whose compiled program has no cost
        analysis (described GPUs)."""
        try:
            args = self._args_for_batch(batch)
            return _flops(self._jitted.lower(*args))
        except Exception:
            return None

    def lower(self, batch: int) -> Any:
        """The step lowered for `batch` (traced once, kept for the compile)."""
        if batch not in self._lowered:
            args = self.abstract_args(batch)
            try:
                self._lowered[batch] = self._jitted.lower(*args)
            except Exception as e:
                raise TuneError(
                    f"`step` does not trace for batch={batch}: {type(e).__name__}: {e}"
                ) from e
        return self._lowered[batch]

    def __call__(self, batch: int) -> Probe:
        if batch in self.probes:
            return self.probes[batch]
        start = time.perf_counter()
        lowered = self.lower(batch)
        try:
            with xla_remat_pass(self._remat_pass):
                compiled = lowered.compile(compiler_options=self._compiler_options or None)
        except Exception as e:
            refusal = hbm_refusal(e)
            if refusal is None:
                raise TuneError(
                    f"`step` does not compile for batch={batch}: {type(e).__name__}: {e}"
                ) from e
            del self._lowered[batch]
            seconds = time.perf_counter() - start
            return self._record(
                Probe(
                    batch, 0, 0, 0, 0, seconds,
                    required_bytes=refusal.required_bytes,
                    available_bytes=refusal.available_bytes,
                )
            )  # fmt: skip
        del self._lowered[batch]
        seconds = time.perf_counter() - start
        analysis = compiled.memory_analysis()
        if analysis is None:
            raise TuneError(
                f"the {jax.default_backend()!r} backend returned no memory "
                "analysis for the compiled step (`memory_analysis()` is None); "
                "this backend cannot be tuned by compiling"
            )
        probe = Probe(
            batch=batch,
            argument_bytes=int(analysis.argument_size_in_bytes),
            output_bytes=int(analysis.output_size_in_bytes),
            alias_bytes=int(analysis.alias_size_in_bytes),
            temp_bytes=int(analysis.temp_size_in_bytes),
            compile_seconds=seconds,
            flops=_flops(compiled),
            code_bytes=int(getattr(analysis, "generated_code_size_in_bytes", 0) or 0),
        )
        return self._record(probe)

    def _record(self, probe: Probe) -> Probe:
        self.probes[probe.batch] = probe
        if self._on_probe is not None:
            self._on_probe(probe)
        return probe
