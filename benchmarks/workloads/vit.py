"""ViT-B/16 in Flax Linen: 224 px images in 16 px patches, 12 blocks of width
768 with 12 heads and MLP 3072, a class token, 1000 classes, AdamW."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import autotune

PATCH, WIDTH, HEADS, MLP, LAYERS, CLASSES = 16, 768, 12, 3072, 12, 1000


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.MultiHeadDotProductAttention(num_heads=HEADS)(nn.LayerNorm()(x))
        x = x + h
        h = nn.Dense(WIDTH)(nn.gelu(nn.Dense(MLP)(nn.LayerNorm()(x))))
        return x + h


class ViT(nn.Module):
    @nn.compact
    def __call__(self, images):
        x = nn.Conv(WIDTH, (PATCH, PATCH), strides=(PATCH, PATCH), padding="VALID")(images)
        x = x.reshape(x.shape[0], -1, WIDTH)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, WIDTH))
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, WIDTH)), x], axis=1)
        x = x + self.param("position", nn.initializers.normal(0.02), (1, x.shape[1], WIDTH))
        for _ in range(LAYERS):
            x = Encoder()(x)
        return nn.Dense(CLASSES)(nn.LayerNorm()(x[:, 0]))


def workload(image_size: int = 224) -> autotune.Workload:
    model, tx = ViT(), optax.adamw(1e-3, weight_decay=0.05)
    shape = (image_size, image_size, 3)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))
    opt_state = jax.eval_shape(tx.init, params)

    def step(params, opt_state, x, y):
        def loss_fn(params):
            logits = model.apply(params, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def args_for_batch(batch):
        return (
            params,
            opt_state,
            jax.ShapeDtypeStruct((batch, *shape), jnp.float32),
            jax.ShapeDtypeStruct((batch,), jnp.int32),
        )

    return autotune.Workload(step, args_for_batch, donate_argnums=(0, 1), label="vit-b16")
