"""A small convolutional classifier in Flax Linen, with BatchNorm and
dropout, trained with SGD with momentum: the user's side of tuning its
batch size.

From this directory:

    autotune --workload cnn:workload --target h100-sxm-80gb

Sizes are keywords of `workload`: `--workload-arg image_size=64`.
"""

import flax.linen as nn
import jax.numpy as jnp
import optax

import autotune


class CNN(nn.Module):
    widths: tuple[int, ...] = (64, 128, 256)  # conv channels per stage, each then halved
    classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = True):
        for width in self.widths:
            x = nn.Conv(width, (3, 3))(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        x = nn.Dropout(0.2, deterministic=not train)(x.mean(axis=(1, 2)))
        return nn.Dense(self.classes)(x)


def workload(image_size=32, widths=(64, 128, 256), classes=10):
    model = CNN(tuple(widths), classes)

    def loss_fn(variables, images, labels, rngs):
        logits, updates = model.apply(variables, images, mutable=["batch_stats"], rngs=rngs)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, updates

    return autotune.train_workload(
        lambda rngs: model.init(rngs, jnp.zeros((1, image_size, image_size, 3))),
        loss_fn,
        optax.sgd(0.1, momentum=0.9),
        inputs=[((image_size, image_size, 3), jnp.float32), ((), jnp.int32)],
        mutable=["batch_stats"],
        rngs=["dropout"],
        label="cnn",
    )
