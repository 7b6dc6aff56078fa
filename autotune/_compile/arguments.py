"""The step's arguments leaf by leaf: a name, one device's bytes, and a kind.

A leaf's name is its path over the step's positional arguments
(`jax.tree_util.keystr`, e.g. `[0]['fc1']['kernel'].value`). Its kind is
decided by these rules, in order:

1. **input batch**: its shape follows the batch (it differs between the
   arguments built for `batch` and for `2 * batch`);
2. **optimizer state**: a node on its path is an optax state (a type
   defined in the `optax` package), or an NNX optimizer variable
   (`OptState`, `OptArray`, `OptVariable`), or a dictionary key on its path
   is `"opt_state"` (what `nnx.Optimizer` becomes after `nnx.split`);
3. **parameter**: everything else the step keeps from one step to the next
   (parameters, batch statistics, PRNG keys, a hand-written optimizer's
   state that none of the rules above recognizes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax

from autotune._core.sizes import array_bytes, shard_shape

PARAMETER = "parameter"
OPTIMIZER_STATE = "optimizer_state"
INPUT_BATCH = "input_batch"

_OPTIMIZER_VARIABLES = frozenset({"OptState", "OptArray", "OptVariable"})
_OPTIMIZER_KEYS = frozenset({"opt_state"})


@dataclasses.dataclass(frozen=True)
class ArgumentLeaf:
    """One leaf of the step's arguments, as one device holds it."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    kind: str


def argument_leaves(args: Sequence[Any], args_for_batch: Callable[[int], Any], batch: int):
    """The leaves of `args` (the arguments for `batch`), in flattening order."""
    other = jax.tree.leaves(tuple(args_for_batch(2 * batch)))
    leaves = _leaves_with_owners(tuple(args))
    if len(other) != len(leaves):
        raise ValueError(
            f"`args_for_batch` returned {len(leaves)} leaves for batch={batch} and "
            f"{len(other)} for batch={2 * batch}; only leaf shapes may follow the batch"
        )
    out = []
    for (path, owners, leaf), twice in zip(leaves, other):
        shape = shard_shape(leaf)
        out.append(
            ArgumentLeaf(
                path=jax.tree_util.keystr(path),
                shape=shape,
                dtype=str(leaf.dtype),
                nbytes=array_bytes(shape, leaf.dtype),
                kind=_kind(path, owners, tuple(leaf.shape) != tuple(twice.shape)),
            )
        )
    return tuple(out)


def _kind(path: tuple[Any, ...], owners: tuple[type, ...], follows_batch: bool) -> str:
    if follows_batch:
        return INPUT_BATCH
    if any(_is_optimizer_node(t) for t in owners):
        return OPTIMIZER_STATE
    keys = {getattr(k, "key", None) for k in path}
    if keys & _OPTIMIZER_KEYS:
        return OPTIMIZER_STATE
    return PARAMETER


def _is_optimizer_node(t: type) -> bool:
    module = getattr(t, "__module__", "") or ""
    if module == "optax" or module.startswith("optax."):
        return True
    return module.startswith("flax") and t.__name__ in _OPTIMIZER_VARIABLES


def _leaves_with_owners(tree: Any) -> list[tuple[tuple[Any, ...], tuple[type, ...], Any]]:
    """(path, types of the nodes above, leaf) for every leaf, in flattening order."""
    out: list[tuple[tuple[Any, ...], tuple[type, ...], Any]] = []

    def walk(node: Any, path: tuple[Any, ...], owners: tuple[type, ...]) -> None:
        children, _ = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
        if len(children) == 1 and children[0][0] == () and children[0][1] is node:
            out.append((path, owners, node))
            return
        for key, child in children:
            if child is None:
                continue
            walk(child, path + key, owners + (type(node),))

    walk(tree, (), ())
    return out
