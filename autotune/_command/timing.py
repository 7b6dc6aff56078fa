"""Throughput of a train step at one batch size, measured on the local device.

The step is called with real arrays made from its abstract arguments
(zeros; PRNG keys from `jax.random.key`) on the default device. The first
`warmup` calls (the first one compiles) are not timed; each timed call ends
with `jax.block_until_ready` on its outputs before the clock is read.

Assumption about the step: its outputs, a tuple, begin with the new versions
of its leading arguments, in order, as `(params, opt_state, x, y) ->
(params, opt_state, loss)` does. Those outputs are fed back as the next
call's arguments (the longest leading run whose structure, shapes and dtypes
match), so arguments the step donates are never used again after a call. A
step that donates an argument it does not return first raises `TuneError`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from autotune._core.errors import TuneError


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Samples per second at `batch`, from the median of `steps` timed calls."""

    batch: int
    samples_per_second: float
    seconds_per_step: float
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def render(self) -> str:
        return (
            f"batch {self.batch}: {self.samples_per_second:,.1f} samples/s "
            f"({self.seconds_per_step * 1e3:.2f} ms/step, median of {self.steps})"
        )


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TuneError(f"`{name}` (={value!r}) must be an integer >= {minimum}")


def _is_key(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _real_leaf(leaf: Any, seed: int) -> jax.Array:
    if isinstance(leaf, jax.Array):
        return leaf
    if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
        raise TuneError(
            f"`args_for_batch` returned a leaf of type "
            f"{type(leaf).__name__}; every leaf must be a "
            "jax.ShapeDtypeStruct or an array"
        )
    shape, dtype = tuple(leaf.shape), leaf.dtype
    if _is_key(dtype):
        keys = jax.random.split(jax.random.key(seed), max(math.prod(shape), 1))
        return keys[: math.prod(shape)].reshape(shape)
    return jnp.zeros(shape, dtype)


def materialize(abstract_args: Any, *, seed: int = 0) -> Any:
    """Real arrays (zeros; PRNG keys for key dtypes) on the default device."""
    return jax.tree.map(lambda leaf: _real_leaf(leaf, seed), abstract_args)


def _signature(tree: Any) -> tuple[Any, ...]:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(
        (tuple(getattr(x, "shape", ())), str(getattr(x, "dtype", type(x)))) for x in leaves
    )


def carried_count(args: Sequence[Any], outputs: Any) -> int:
    """How many leading arguments the outputs return new versions of."""
    if not isinstance(outputs, (tuple, list)):
        return 0
    count = 0
    for arg, out in zip(args, outputs):
        if _signature(arg) != _signature(out):
            break
        count += 1
    return count


def _donated(arg: Any) -> bool:
    return any(isinstance(x, jax.Array) and x.is_deleted() for x in jax.tree.leaves(arg))


def _check_donation(args: Sequence[Any], carried: int) -> None:
    for index in range(carried, len(args)):
        if _donated(args[index]):
            raise TuneError(
                f"the step donated argument {index} but its output {index} is "
                f"not a new version of it (the outputs return only the first "
                f"{carried} arguments); a timed step must return the new "
                "versions of its donated leading arguments first, in order"
            )


def carry_outputs(args: Sequence[Any], outputs: Any) -> list[Any]:
    """The next call's arguments: the outputs that are new versions of the
    leading arguments, then the rest of the arguments."""
    carried = carried_count(args, outputs)
    _check_donation(args, carried)
    return [*outputs[:carried], *args[carried:]]


def _call(step: Callable[..., Any], args: list[Any]) -> tuple[float, list[Any]]:
    start = time.perf_counter()
    outputs = jax.block_until_ready(step(*args))
    return time.perf_counter() - start, carry_outputs(args, outputs)


def measure_throughput(
    step: Callable[..., Any],
    args_for_batch: Callable[[int], Sequence[Any]],
    batch: int,
    *,
    steps: int = 5,
    warmup: int = 2,
    seed: int = 0,
    initial_args: Sequence[Any] | None = None,
) -> Throughput:
    """Samples per second of `step` at `batch` on the default device.

    Args:
        step: the train step, jitted or AOT-compiled; see the module
            docstring for what its outputs must be.
        args_for_batch: batch size -> abstract positional arguments.
        batch: the batch size to time.
        steps: timed calls; the median is reported.
        warmup: untimed calls first (at least 1: the first call compiles).
        seed: seed of PRNG key arguments.
        initial_args: real arguments to start from instead of new ones
            (a caller that already holds them saves their memory).
    """
    _check_count("batch", batch, 1)
    _check_count("steps", steps, 1)
    _check_count("warmup", warmup, 1)
    if initial_args is None:
        args = list(materialize(tuple(args_for_batch(batch)), seed=seed))
    else:
        args = list(initial_args)
    for _ in range(warmup):
        _, args = _call(step, args)
    times = []
    for _ in range(steps):
        seconds, args = _call(step, args)
        times.append(seconds)
    median = statistics.median(times)
    return Throughput(
        batch=batch, samples_per_second=batch / median, seconds_per_step=median, steps=steps
    )
