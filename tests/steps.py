"""Small steps that are not ours, and brute force to check the tuner against."""

import jax
import jax.numpy as jnp
import optax

from autotune._compile.remat_pass import REMAT_PASS_OFF

D, H, C = 64, 256, 10


def mlp_params():
    return {
        "w1": jax.ShapeDtypeStruct((D, H), jnp.float32),
        "w2": jax.ShapeDtypeStruct((H, C), jnp.float32),
    }


def mlp_loss(params, x, y):
    logits = jnp.tanh(x @ params["w1"]) @ params["w2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def mlp_step(params, x, y):
    loss, grads = jax.value_and_grad(mlp_loss)(params, x, y)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), loss


def mlp_args(batch):
    return (
        mlp_params(),
        jax.ShapeDtypeStruct((batch, D), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.int32),
    )


def padded_step(params, x, y):
    """Pads the batch to the next power of two above it: need(batch) is a
    staircase (monotone: the padded copy is made at every batch size)."""
    b = x.shape[0]
    size = 1 << b.bit_length()
    x = jnp.pad(x, ((0, size - b), (0, 0)))
    y = jnp.pad(y, (0, size - b))
    return mlp_step(params, x, y)


class CountingStep:
    """A jitted step that counts its compiles and can raise Ctrl-C instead."""

    def __init__(self, fn, interrupt_after=None):
        self.jitted = jax.jit(fn, donate_argnums=(0,))
        self.compiles = 0
        self.interrupt_after = interrupt_after

    def lower(self, *args):
        return _CountingLowered(self, self.jitted.lower(*args))


class _CountingLowered:
    def __init__(self, owner, lowered):
        self.owner, self.lowered = owner, lowered

    def as_text(self):
        return self.lowered.as_text()

    def compile(self, **kwargs):
        if self.owner.compiles == self.owner.interrupt_after:
            raise KeyboardInterrupt
        self.owner.compiles += 1
        return self.lowered.compile(**kwargs)


def need_at(step, args_for_batch, batch):
    jitted = step if hasattr(step, "lower") else jax.jit(step, donate_argnums=(0,))
    compiled = jitted.lower(*args_for_batch(batch)).compile(compiler_options=REMAT_PASS_OFF)
    m = compiled.memory_analysis()
    return (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )


def brute_force(step, args_for_batch, budget, multiple_of, max_batch):
    fits = [
        b
        for b in range(multiple_of, max_batch + 1, multiple_of)
        if need_at(step, args_for_batch, b) <= budget
    ]
    return max(fits, default=None)


class FailingStep:
    """A jitted step whose compile fails, as XLA's can for reasons other than
    memory, at the batches given."""

    MESSAGE = "INTERNAL: Couldn't find output tile sizes that satisfy hlo: %dot"

    def __init__(self, fn, failing, donate_argnums=(0,)):
        self.jitted = jax.jit(fn, donate_argnums=donate_argnums)
        self.failing = set(failing)

    def lower(self, *args):
        return _FailingLowered(self, self.jitted.lower(*args), args[1].shape[0])


class _FailingLowered:
    def __init__(self, owner, lowered, batch):
        self.owner, self.lowered, self.batch = owner, lowered, batch

    def as_text(self):
        return self.lowered.as_text()

    def compile(self, **kwargs):
        if self.batch in self.owner.failing:
            raise RuntimeError(FailingStep.MESSAGE)
        return self.lowered.compile(**kwargs)
