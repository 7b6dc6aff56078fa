"""A deep plain-JAX MLP whose compile takes a while on a CPU."""

import jax
import jax.numpy as jnp

import autotune

DEPTH, WIDTH = 48, 256


def step(params, x):
    def loss_fn(params):
        h = x
        for w in params:
            h = jnp.tanh(h @ w)
        return jnp.mean(h**2)

    grads = jax.grad(loss_fn)(params)
    return [w - 0.01 * g for w, g in zip(params, grads)], loss_fn(params)


def args_for_batch(batch):
    params = [jax.ShapeDtypeStruct((WIDTH, WIDTH), jnp.float32) for _ in range(DEPTH)]
    return params, jax.ShapeDtypeStruct((batch, WIDTH), jnp.float32)


workload = autotune.Workload(step, args_for_batch, donate_argnums=0)
