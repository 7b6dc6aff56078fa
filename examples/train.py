"""Train what was tuned: the loop around a builder's `workload.step`.

`autotune.train_workload` (and `autotune.nnx.nnx_workload`) make a step

    step(params, state, opt_state, constants, *batch, key)
        -> (params, state, opt_state, loss, aux)

whose first three arguments are donated: each call's outputs are the next
call's inputs, and the old arrays are gone. `state` is the mutable
collections (BatchNorm statistics), `constants` what is neither trained nor
updated, and `key` a fresh PRNG key per step (dropout), split from one kept
by the loop. From this directory, on any machine (the CPU included):

    python train.py

tunes the CNN of `cnn.py` for this machine's default device within 256 MB,
then trains it a few steps at the batch found, on random data.
"""

import jax
import jax.numpy as jnp
from cnn import workload as cnn_workload

import autotune


def train(workload, batches, *, seed=0):
    """Runs `workload.step` over `batches` (tuples of arrays: images,
    labels); returns the trained (params, state, opt_state) and the losses."""
    step = jax.jit(workload.step, donate_argnums=workload.donate_argnums)
    first = next(iter(batches))
    # Real parameters, mutable state, optimizer state and constants, as the
    # workload initializes them; the zeros batch and the key it adds are not used.
    params, state, opt_state, constants = workload.real_args(len(first[0]))[:4]
    key = jax.random.key(seed)
    losses = []
    for batch in batches:
        key, step_key = jax.random.split(key)  # a fresh key every step
        params, state, opt_state, loss, _aux = step(
            params, state, opt_state, constants, *batch, step_key
        )
        losses.append(float(loss))
    return (params, state, opt_state), losses


def random_batches(batch, image_size, steps, classes=10, seed=1):
    key = jax.random.key(seed)
    out = []
    for _ in range(steps):
        key, k1, k2 = jax.random.split(key, 3)
        images = jax.random.normal(k1, (batch, image_size, image_size, 3), jnp.float32)
        out.append((images, jax.random.randint(k2, (batch,), 0, classes)))
    return out


def main():
    workload = cnn_workload(image_size=32, widths=(16, 32))
    result = autotune.find_max_batch(workload, target="local", budget_bytes=256 << 20)
    print(result.render())
    _, losses = train(workload, random_batches(result.batch, 32, steps=3))
    print("losses:", ", ".join(f"{loss:.3f}" for loss in losses))


if __name__ == "__main__":
    main()
