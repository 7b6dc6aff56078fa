"""A user's Flax NNX step: BatchNorm, dropout from a typed PRNG key, AdamW
through nnx.Optimizer, the whole state donated."""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import autotune


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 16, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.1)
        self.out = nnx.Linear(8 * 8 * 16, 10, rngs=rngs)

    def __call__(self, x, key):
        x = nnx.relu(self.bn(self.conv(x)))
        x = self.drop(x, rngs=nnx.Rngs(dropout=key))
        return self.out(x.reshape(x.shape[0], -1))


def build():
    model = Net(nnx.Rngs(0))
    return model, nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)


graphdef, state = nnx.split(nnx.eval_shape(build))


def step(state, x, y, key):
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
        logits = model(x, key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss


def args_for_batch(batch):
    return (
        state,
        jax.ShapeDtypeStruct((batch, 8, 8, 3), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.int32),
        jax.ShapeDtypeStruct((), jax.random.key(0).dtype),
    )


def real_args(batch):
    _, real_state = nnx.split(build())
    return (
        real_state,
        jnp.zeros((batch, 8, 8, 3)),
        jnp.zeros((batch,), jnp.int32),
        jax.random.key(1),
    )


my_workload = autotune.Workload(
    step, args_for_batch, donate_argnums=0, label="nnx cnn", real_args=real_args
)
