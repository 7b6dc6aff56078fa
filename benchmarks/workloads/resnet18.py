"""ResNet-18 with BatchNorm, as in Flax's ImageNet example (Linen), at 128 px:
SGD with momentum and Nesterov, batch statistics updated by the step."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import autotune


class ResNetBlock(nn.Module):
    filters: int
    strides: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x):
        conv = partial(nn.Conv, use_bias=False, dtype=jnp.float32)
        norm = partial(nn.BatchNorm, use_running_average=False, momentum=0.9, epsilon=1e-5)
        residual = x
        y = conv(self.filters, (3, 3), self.strides)(x)
        y = nn.relu(norm()(y))
        y = conv(self.filters, (3, 3))(y)
        y = norm(scale_init=nn.initializers.zeros_init())(y)
        if residual.shape != y.shape:
            residual = conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
            residual = norm(name="norm_proj")(residual)
        return nn.relu(residual + y)


class ResNet18(nn.Module):
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(64, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, blocks in enumerate((2, 2, 2, 2)):
            for j in range(blocks):
                strides = (2, 2) if i > 0 and j == 0 else (1, 1)
                x = ResNetBlock(64 * 2**i, strides=strides)(x)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


def workload(image_size: int = 128) -> autotune.Workload:
    model, tx = ResNet18(), optax.sgd(0.1, momentum=0.9, nesterov=True)
    shape = (image_size, image_size, 3)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))
    opt_state = jax.eval_shape(tx.init, variables["params"])

    def step(params, batch_stats, opt_state, x, y):
        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, mutable=["batch_stats"]
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updates["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, loss

    def args_for_batch(batch):
        return (
            variables["params"],
            variables["batch_stats"],
            opt_state,
            jax.ShapeDtypeStruct((batch, *shape), jnp.float32),
            jax.ShapeDtypeStruct((batch,), jnp.int32),
        )

    return autotune.Workload(step, args_for_batch, donate_argnums=(0, 1, 2), label="resnet18")
