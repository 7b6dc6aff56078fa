"""A user's Flax Linen step with BatchNorm statistics (`batch_stats`) and
SGD, as a callable returning a (step, args_for_batch) pair."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(16, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        return nn.Dense(10)(x)


def make():
    model, tx = CNN(), optax.sgd(0.1, momentum=0.9)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    opt_state = jax.eval_shape(tx.init, variables["params"])

    @jax.jit
    def step(params, batch_stats, opt_state, x, y):
        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, mutable=["batch_stats"]
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updates["batch_stats"]

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    def args_for_batch(batch):
        return (
            variables["params"],
            variables["batch_stats"],
            opt_state,
            jax.ShapeDtypeStruct((batch, 8, 8, 3), jnp.float32),
            jax.ShapeDtypeStruct((batch,), jnp.int32),
        )

    return step, args_for_batch
