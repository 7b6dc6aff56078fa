"""A user's plain-JAX step: no Flax, a workload with no real arguments."""

import jax
import jax.numpy as jnp

import autotune

D, H = 32, 64


def step(params, x, y):
    def loss_fn(p):
        return jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads), loss


def args_for_batch(batch):
    params = {
        "w1": jax.ShapeDtypeStruct((D, H), jnp.float32),
        "w2": jax.ShapeDtypeStruct((H, 1), jnp.float32),
    }
    return (
        params,
        jax.ShapeDtypeStruct((batch, D), jnp.float32),
        jax.ShapeDtypeStruct((batch, 1), jnp.float32),
    )


workload = autotune.Workload(step, args_for_batch, donate_argnums=0)
jitted_pair = (jax.jit(step, donate_argnums=0), args_for_batch)
