"""Memory of a training step estimated without compiling it.

The backward pass needs what the forward pass saved for it. JAX lists those
values for any differentiable function (``saved_residuals``, which traces the
function on abstract inputs and honours ``jax.checkpoint`` policies). The
per-example activation memory is modelled as the peak, over the backward
pass, of three terms:

- live residuals: at the start of the backward, all residuals of the loss;
  when a checkpointed segment (a ``checkpoint``/``remat`` equation at the top
  level of the loss's jaxpr) is recomputed, the residuals of everything
  before it plus the residuals the segment saves for its own backward once
  recomputed without its policy (its working set);
- two gradient buffers of the largest floating activation: the cotangent an
  operation receives and the one it produces;
- the batch arguments.

Measuring at two batch sizes separates a per-example from a fixed part; the
step's arguments add the parameters, their gradients and the optimizer state.

Not modelled: convolution workspace, XLA's fusion and scheduling choices
(values it never materialises, or recomputation it moves), checkpointed
segments nested inside other calls (their prefix is taken as empty), and
residuals freed during the backward before a segment's recompute other than
those after it. ``saved_residuals`` is private to JAX: if it moves, the
estimate is unavailable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

from autotune._core.errors import TuneError
from autotune._core.sizes import leaf_bytes

try:
    from jax._src.ad_checkpoint import saved_residuals as _saved_residuals
except ImportError:
    _saved_residuals = None

_EXISTING_SOURCE_PREFIX = "from "
_CHECKPOINT_PRIMITIVES = frozenset({"checkpoint", "remat2", "remat"})
_GRADIENT_BUFFERS = 2


@dataclasses.dataclass(frozen=True)
class Estimate:
    """An affine memory model: ``need(batch) = fixed + per_example * batch``."""

    fixed_bytes: int
    per_example_bytes: int

    def need(self, batch: int) -> int:
        """Bytes needed by a step at ``batch``."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
            raise ValueError(f"`batch` (={batch!r}) must be a non-negative integer")
        return self.fixed_bytes + self.per_example_bytes * batch

    def max_batch(self, budget_bytes: int) -> int:
        """The largest batch whose need fits ``budget_bytes``; 0 if none does."""
        if self.per_example_bytes <= 0:
            raise ValueError(
                f"`per_example_bytes` (={self.per_example_bytes}) must be positive"
                " to bound the batch"
            )
        return max(0, (budget_bytes - self.fixed_bytes) // self.per_example_bytes)


def tree_bytes(tree: Any) -> int:
    """Bytes of a pytree's leaves: arrays, ``ShapeDtypeStruct`` or scalars."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
            leaf = jax.eval_shape(lambda x=leaf: x)
        total += leaf_bytes(leaf)
    return total


def _require_saved_residuals() -> Callable[..., list]:
    if _saved_residuals is None:
        raise RuntimeError(
            "The no-compile estimate is unavailable in jax"
            f" {jax.__version__}: jax._src.ad_checkpoint.saved_residuals is missing"
        )
    return _saved_residuals


def residual_bytes(loss_fn: Callable[..., Any], *args: Any) -> int:
    """Bytes the forward pass of ``loss_fn(*args)`` saves for the backward pass.

    Residuals that are the arguments themselves, constants or literals are
    left out: they exist whether or not the backward pass runs.
    """
    residuals = _require_saved_residuals()(loss_fn, *args)
    return sum(
        leaf_bytes(aval)
        for aval, source in residuals
        if not source.startswith(_EXISTING_SOURCE_PREFIX)
    )


def _split_affine(small_value: int, large_value: int, small: int, large: int) -> tuple[int, int]:
    """(per_example, fixed) of a quantity measured at two batch sizes."""
    per_example = -(-(large_value - small_value) // (large - small))
    return per_example, max(0, small_value - per_example * small)


def _check_probe(probe_batches: tuple[int, int]) -> None:
    small, large = probe_batches
    if not (isinstance(small, int) and isinstance(large, int) and 0 < small < large):
        raise ValueError(
            f"`probe_batches` (={probe_batches!r}) must be two increasing positive integers"
        )


def _aval_bytes(aval: Any) -> int:
    return leaf_bytes(aval)


def _activation_sizes(jaxpr: jax_core.Jaxpr) -> list[int]:
    """Bytes of every floating value the jaxpr and its sub-jaxprs compute, in order."""
    sizes = []
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            aval = var.aval
            if hasattr(aval, "shape") and jnp.issubdtype(aval.dtype, jnp.inexact):
                sizes.append(_aval_bytes(aval))
        for sub in jax_core.jaxprs_in_params(eqn.params):
            sizes.extend(_activation_sizes(sub))
    return sizes


def _is_checkpoint(eqn: jax_core.JaxprEqn) -> bool:
    return eqn.primitive.name in _CHECKPOINT_PRIMITIVES and "jaxpr" in eqn.params


def _abstract(avals: Any) -> list[jax.ShapeDtypeStruct]:
    return [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]


def _recompute_residual_bytes(closed: jax_core.ClosedJaxpr, index: int) -> int:
    """Residuals live while the checkpointed equation ``index`` is recomputed.

    They are those of a function running the equations before it, then its
    inner jaxpr without checkpointing, returning every value used later.
    """
    jaxpr = closed.jaxpr
    eqn = jaxpr.eqns[index]
    inner = eqn.params["jaxpr"]
    if isinstance(inner, jax_core.ClosedJaxpr):
        inner_consts, inner = inner.consts, inner.jaxpr
    else:
        inner_consts = ()
    defined = {v for e in jaxpr.eqns[:index] for v in e.outvars}
    used_later = [v for e in jaxpr.eqns[index + 1 :] for v in e.invars] + [
        v for v in jaxpr.outvars if not isinstance(v, jax_core.Literal)
    ]
    live_out = list(
        dict.fromkeys(
            v
            for v in [*eqn.invars, *used_later]
            if not isinstance(v, jax_core.Literal) and v in defined
        )
    )
    debug = jaxpr.debug_info
    prefix = jaxpr.replace(
        eqns=jaxpr.eqns[:index],
        outvars=live_out,
        debug_info=debug._replace(result_paths=None) if debug is not None else None,
    )
    run_prefix = jax_core.jaxpr_as_fun(jax_core.ClosedJaxpr(prefix, closed.consts))
    run_segment = jax_core.jaxpr_as_fun(jax_core.ClosedJaxpr(inner, inner_consts))

    def before_and_segment(*args: Any) -> tuple:
        env = dict(zip(jaxpr.invars, args))
        outs = run_prefix(*args)
        env.update(zip(live_out, outs))
        ins = [v.val if isinstance(v, jax_core.Literal) else env[v] for v in eqn.invars]
        return tuple(outs), tuple(run_segment(*ins))

    return residual_bytes(before_and_segment, *_abstract(v.aval for v in jaxpr.invars))


def _activation_profile(loss_fn: Callable[..., Any], args: tuple) -> tuple[int, list[int]]:
    """(peak live residual bytes over the backward, floating activation sizes)."""
    leaves, tree = jax.tree.flatten(args)

    def flat_loss(*flat: Any) -> Any:
        return loss_fn(*jax.tree.unflatten(tree, flat))

    closed = jax.make_jaxpr(flat_loss)(*leaves)
    peak = residual_bytes(loss_fn, *args)
    for index, eqn in enumerate(closed.jaxpr.eqns):
        if _is_checkpoint(eqn):
            peak = max(peak, _recompute_residual_bytes(closed, index))
    return peak, _activation_sizes(closed.jaxpr)


def _loss_of_params(loss_fn: Callable[..., Any], has_aux: bool, with_state: bool) -> Callable:
    """``loss_fn`` as ``(params, *rest) -> loss``: the aux output dropped, and
    the mutable state (the first of ``rest``, if any) not differentiated."""

    def loss(params: Any, *rest: Any) -> Any:
        if with_state:
            rest = (jax.lax.stop_gradient(rest[0]), *rest[1:])
        out = loss_fn(params, *rest)
        return out[0] if has_aux else out

    return loss


def estimate_step(
    loss_fn: Callable[..., Any],
    params: Any,
    batch_args_for: Callable[[int], tuple],
    *,
    opt_state: Any = None,
    state: Any = None,
    has_aux: bool = False,
    grads: bool = True,
    probe_batches: tuple[int, int] = (1, 2),
) -> Estimate:
    """Estimates a step's memory from ``loss_fn(params, *batch_args_for(b))``.

    ``batch_args_for(b)`` returns the batch arguments (abstract or concrete)
    for ``b`` examples. With ``state`` (mutable state the step carries
    without differentiating it: BatchNorm statistics, PRNG counters), the
    loss is ``loss_fn(params, state, *batch_args_for(b))``. With
    ``has_aux``, ``loss_fn`` returns ``(loss, aux)`` (aux: new state,
    metrics) and only the loss is differentiated. Each term is measured at
    the two ``probe_batches`` and split into a per-example and a fixed part
    (see the module docstring):

    - fixed = params + params (gradients, if ``grads``) + ``opt_state``
      + ``state`` + fixed part of the peak live residuals + fixed
      batch-argument bytes;
    - per_example = peak live residuals per example + two gradient buffers of
      the activation that grows most per example + batch-argument bytes per
      example.

    Only tracing: nothing is compiled.
    """
    _check_probe(probe_batches)
    if not isinstance(has_aux, bool):
        raise TuneError(f"`has_aux` (={has_aux!r}) must be True or False")
    small, large = probe_batches
    args_small, args_large = batch_args_for(small), batch_args_for(large)
    with_state = state is not None
    loss = _loss_of_params(loss_fn, has_aux, with_state)
    held = (state,) if with_state else ()
    peak_small, sizes_small = _activation_profile(loss, (params, *held, *args_small))
    peak_large, sizes_large = _activation_profile(loss, (params, *held, *args_large))
    res_per, res_fixed = _split_affine(peak_small, peak_large, small, large)
    if len(sizes_small) != len(sizes_large):
        raise ValueError(
            f"`loss_fn` traced to {len(sizes_small)} and {len(sizes_large)} floating"
            f" values at `probe_batches` (={probe_batches!r}); the same computation"
            " must run at every batch size"
        )
    growth = max(
        (-(-(b - a) // (large - small)) for a, b in zip(sizes_small, sizes_large)), default=0
    )
    cotangent_per = _GRADIENT_BUFFERS * max(0, growth)
    arg_per, arg_fixed = _split_affine(tree_bytes(args_small), tree_bytes(args_large), small, large)
    param_bytes = tree_bytes(params)
    fixed = param_bytes * (2 if grads else 1) + tree_bytes(opt_state) + tree_bytes(state)
    fixed += res_fixed + arg_fixed
    return Estimate(fixed_bytes=fixed, per_example_bytes=res_per + cotangent_per + arg_per)
