"""A small decoder-only transformer language model in Flax NNX (byte-level,
AdamW, dropout), and its train step's batch size tuned with and without
rematerializing each block.

From this directory:

    autotune --workload lm:workloads --target h100-sxm-80gb

Sizes are keywords of `workloads`: `--workload-arg blocks=12`. The fewest
blocks to rematerialize for a wanted batch (`space`, its remat plans):

    autotune --workload lm:space --target h100-sxm-80gb --fit-batch 48
"""

import dataclasses

import jax.numpy as jnp
import optax
from flax import nnx

from autotune.nnx import nnx_remat_space, nnx_workload


@dataclasses.dataclass(frozen=True)
class LMConfig:
    vocab: int = 256  # bytes
    seq_len: int = 1024  # tokens per example
    width: int = 512  # model width
    heads: int = 8  # attention heads, width // heads each
    blocks: int = 8  # transformer blocks
    dropout: float = 0.1  # on attention weights and residual branches


class Block(nnx.Module):
    """Pre-norm transformer block: causal self-attention, then a 4x MLP."""

    def __init__(self, config: LMConfig, *, rngs: nnx.Rngs):
        width = config.width
        self.attn_norm = nnx.LayerNorm(width, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            config.heads,
            width,
            dropout_rate=config.dropout,
            deterministic=False,  # training: dropout on
            decode=False,
            rngs=rngs,
        )
        self.mlp_norm = nnx.LayerNorm(width, rngs=rngs)
        self.mlp_in = nnx.Linear(width, 4 * width, rngs=rngs)
        self.mlp_out = nnx.Linear(4 * width, width, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout, rngs=rngs)

    def __call__(self, x, mask):
        x = x + self.dropout(self.attn(self.attn_norm(x), mask=mask))
        return x + self.dropout(self.mlp_out(nnx.gelu(self.mlp_in(self.mlp_norm(x)))))


class LM(nnx.Module):
    def __init__(self, config: LMConfig, *, rngs: nnx.Rngs):
        self.tokens = nnx.Embed(config.vocab, config.width, rngs=rngs)
        self.positions = nnx.Embed(config.seq_len, config.width, rngs=rngs)
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.blocks)])
        self.norm = nnx.LayerNorm(config.width, rngs=rngs)

    def __call__(self, tokens):
        x = self.tokens(tokens) + self.positions(jnp.arange(tokens.shape[-1]))
        mask = nnx.make_causal_mask(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.tokens.attend(self.norm(x))  # logits, embedding tied


def loss_fn(model, tokens, targets):
    logits = model(tokens)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def workloads(remat=("none", "nothing_saveable"), **sizes):
    """One workload per remat choice: "none", or a jax.checkpoint_policies
    name applied to every Block."""
    config = LMConfig(**sizes)
    tokens = ((config.seq_len,), jnp.int32)
    return [
        nnx_workload(
            lambda rngs: LM(config, rngs=rngs),
            optax.adamw(3e-4, weight_decay=0.1),
            loss_fn,
            inputs=[tokens, tokens],
            remat=None if policy == "none" else policy,
            remat_blocks=Block,
            label=f"lm remat={policy}",
        )
        for policy in remat
    ]


def space(**sizes):
    """The remat plans of the language model: each Block, by its path
    ("blocks.0"), recomputes nothing or everything (nothing_saveable)."""
    config = LMConfig(**sizes)
    tokens = ((config.seq_len,), jnp.int32)
    return nnx_remat_space(
        lambda rngs: LM(config, rngs=rngs),
        optax.adamw(3e-4, weight_decay=0.1),
        loss_fn,
        inputs=[tokens, tokens],
        remat_blocks=Block,
        label="lm",
    )


workloads.remat_space = space
