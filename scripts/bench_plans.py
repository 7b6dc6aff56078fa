"""Remat plans on real models: the plan `--fit-batch` answers, checked by an
independent model with the same blocks rematerialized.

    JAX_PLATFORMS=cpu python scripts/bench_plans.py --target h100-sxm-80gb

1. VGG16 (`autotune.models`), `search_plans(..., 600)`: the plan, its proven
   max batch and FLOPs per example, beside the plan with every stage
   rematerialized (tuned for its own max batch).
2. An independent Linen VGG16 (written here: 224 px, SGD momentum 0.9,
   parameters and optimizer state donated) with `nn.remat` on the stages the
   plan names, and without remat, each tuned by `find_max_batch`: the batch
   each fits on the same target and budget.
3. The language model of `examples/lm.py`, `search_plans(space(), 96)`: the
   fewest blocks found that fit 96 sequences of 1024 tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import autotune
from autotune.models import vgg_remat_space

STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class LinenStage(nn.Module):
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for width in self.widths:
            x = nn.relu(nn.Conv(width, (3, 3), padding="SAME")(x))
        return nn.max_pool(x, (2, 2), strides=(2, 2))


class LinenVGG16(nn.Module):
    remat_stages: tuple[int, ...] = ()  # 1-based

    @nn.compact
    def __call__(self, x):
        for i, widths in enumerate(STAGES, start=1):
            stage = LinenStage
            if i in self.remat_stages:
                stage = nn.remat(LinenStage, policy=jax.checkpoint_policies.nothing_saveable)
            x = stage(widths, name=f"stage{i}")(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(4096)(x))
        x = nn.relu(nn.Dense(4096)(x))
        return nn.Dense(1000)(x)


def linen_workload(remat_stages: tuple[int, ...]) -> autotune.Workload:
    model, tx = LinenVGG16(remat_stages), optax.sgd(1e-2, momentum=0.9)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    opt_state = jax.eval_shape(tx.init, params)

    def step(params, opt_state, x, y):
        def loss(p):
            logits = model.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def args(batch):
        return (params, opt_state, jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32),
                jax.ShapeDtypeStruct((batch,), jnp.int32))  # fmt: skip

    label = f"linen vgg16 remat stages {list(remat_stages) or 'none'}"
    return autotune.Workload(step, args, donate_argnums=(0, 1), label=label)


def timed(what, run):
    start = time.perf_counter()
    value = run()
    print(f"[{what}: {time.perf_counter() - start:.1f} s]")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="h100-sxm-80gb")
    parser.add_argument("--fit-batch", type=int, default=600)
    parser.add_argument("--lm-batch", type=int, default=96)
    args = parser.parse_args()
    kwargs = dict(target=args.target)

    space = vgg_remat_space(model="vgg16")
    search = timed("vgg16 fit", lambda: autotune.search_plans(space, args.fit_batch, **kwargs))
    print(search.render())
    print(search.result.render())
    every = timed(
        "vgg16 every stage",
        lambda: autotune.find_max_batch(space.workload(space.everywhere()), **kwargs),
    )
    print(every.render())
    chosen, all_stages = search.result.flops_per_example, every.flops_per_example
    print(f"\nFLOPs per example: plan {chosen:.4g}, every stage {all_stages:.4g} "
          f"({chosen / all_stages - 1:+.1%})\n")  # fmt: skip

    stages = tuple(int(b.removeprefix("stage")) for b in search.result.remat_plan
                   if search.result.remat_plan[b] != "none")  # fmt: skip
    for remat_stages in ((), stages):
        result = timed(
            f"linen {remat_stages}",
            lambda rs=remat_stages: autotune.find_max_batch(linen_workload(rs), **kwargs),
        )
        print(result.render())
        verdict = "fits" if result.batch >= args.fit_batch else "does not fit"
        print(f"  -> batch {args.fit_batch} {verdict} the independent Linen VGG16\n")

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import lm

    lm_search = timed("lm fit", lambda: autotune.search_plans(lm.space(), args.lm_batch, **kwargs))
    print(lm_search.render())
    print(lm_search.result.render())


if __name__ == "__main__":
    main()
