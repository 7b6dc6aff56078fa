"""The need of a step exported once with a symbolic batch, made concrete by
the compiler, against the step's own program at that batch (described H100).

A search whose probes compiled one program for every batch would trace the
step once. This measures whether that program needs what the step's own
does, to the byte; `benchmarks/stopped-probes.md` has the figures.

    JAX_PLATFORMS=cpu python scripts/probe_any_batch.py vgg16:440 resnet18:1024 vit:376
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax

import autotune
from autotune.internal import REMAT_PASS_OFF, Prober, compiled_need

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stopped_probes import MODELS, jitted, load


def symbolic(args_at, batch: int) -> list[jax.ShapeDtypeStruct]:
    """The argument leaves at `batch`, each dimension that follows it symbolic."""
    (b,) = jax.export.symbolic_shape("b")
    at, twice = jax.tree.leaves(args_at(batch)), jax.tree.leaves(args_at(2 * batch))
    out = []
    for x, y in zip(at, twice):
        dims = tuple(d if d == e else d // batch * b for d, e in zip(x.shape, y.shape))
        out.append(jax.ShapeDtypeStruct(dims, x.dtype, sharding=x.sharding))
    return out


def needs(name: str, batch: int) -> tuple[int | None, int | None]:
    """(the program for any batch's need, the step's own) at `batch`."""
    target = autotune.get_target("h100-sxm-80gb")
    workload = load(name)
    placed = Prober.for_target(workload, target).abstract_args  # on the target's device
    options = {**REMAT_PASS_OFF, **MODELS[name][2]}
    args = placed(batch)
    leaves, treedef = jax.tree.flatten(tuple(args))
    step = jitted(workload)
    own = step.lower(*args)
    donated = tuple(i for i, info in enumerate(jax.tree.leaves(own.args_info)) if info.donated)

    def flat(*flat_leaves):
        return jax.tree.leaves(step(*jax.tree.unflatten(treedef, flat_leaves)))

    exported = jax.export.export(jax.jit(flat, donate_argnums=donated), platforms=("cuda",))(
        *symbolic(placed, batch)
    )
    any_batch = jax.jit(exported.call, donate_argnums=donated).lower(*leaves)
    return (
        compiled_need(any_batch.compile(compiler_options=options)),
        compiled_need(own.compile(compiler_options=options)),
    )


def main() -> None:
    for spec in sys.argv[1:] or ["vgg16:440"]:
        name, batch = spec.split(":")
        a, b = needs(name, int(batch))
        print(f"| {MODELS[name][0]} | {batch} | {a:,} | {b:,} | {'yes' if a == b else 'no'} |")


if __name__ == "__main__":
    main()
