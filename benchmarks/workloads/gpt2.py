"""A GPT-2-small decoder in Flax Linen: 12 blocks of width 768 with 12 heads,
sequence 512, vocabulary 50,257, float32 parameters and bfloat16 compute,
AdamW. The step takes token ids and predicts the next token."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import autotune

VOCAB, SEQ, WIDTH, HEADS, LAYERS = 50257, 512, 768, 12, 12


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        dense = dict(dtype=jnp.bfloat16)
        h = nn.LayerNorm(dtype=jnp.bfloat16)(x)
        mask = nn.make_causal_mask(jnp.ones(x.shape[:2]))
        h = nn.MultiHeadDotProductAttention(num_heads=HEADS, **dense)(h, h, mask=mask)
        x = x + h
        h = nn.LayerNorm(dtype=jnp.bfloat16)(x)
        h = nn.Dense(4 * WIDTH, **dense)(h)
        h = nn.Dense(WIDTH, **dense)(nn.gelu(h))
        return x + h


class GPT2(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(VOCAB, WIDTH, dtype=jnp.bfloat16)
        position = self.param("position", nn.initializers.normal(0.02), (SEQ, WIDTH))
        x = embed(tokens) + position[: tokens.shape[1]].astype(jnp.bfloat16)
        for _ in range(LAYERS):
            x = Block()(x)
        x = nn.LayerNorm(dtype=jnp.bfloat16)(x)
        return embed.attend(x).astype(jnp.float32)


def workload() -> autotune.Workload:
    model, tx = GPT2(), optax.adamw(3e-4, weight_decay=0.1)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, SEQ), jnp.int32))
    opt_state = jax.eval_shape(tx.init, params)

    def step(params, opt_state, tokens):
        def loss_fn(params):
            logits = model.apply(params, tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def args_for_batch(batch):
        return params, opt_state, jax.ShapeDtypeStruct((batch, SEQ + 1), jnp.int32)

    return autotune.Workload(step, args_for_batch, donate_argnums=(0, 1), label="gpt2-small")
