"""`autotune.nnx`: a Flax NNX model, an optax transform, a loss and the inputs
of one example make a workload; `checkpoint_blocks` rematerializes blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.extend import core as jax_core

from autotune import TuneError
from autotune._workloads.estimate import tree_bytes
from autotune.nnx import POLICIES, checkpoint_blocks, nnx_workload

FEATURES, CLASSES = 8, 4
INPUTS = [((FEATURES,), jnp.float32), ((), jnp.int32)]


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(FEATURES, FEATURES, rngs=rngs)
        self.norm = nnx.BatchNorm(FEATURES, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x, scale=1.0, *, train=True):
        return self.drop(jnp.tanh(self.norm(self.linear(x), use_running_average=not train)) * scale)


class Outer(nnx.Module):
    """A block holding a block: only the outer one is rematerialized."""

    def __init__(self, rngs: nnx.Rngs):
        self.inner = Block(rngs)

    def __call__(self, x):
        return self.inner(x)


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, depth: int = 2):
        self.blocks = nnx.List([Block(rngs) for _ in range(depth)])
        self.outer = Outer(rngs)
        self.head = nnx.Linear(FEATURES, CLASSES, rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x, 2.0, train=True)
        return self.head(self.outer(x))


def loss_fn(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def loss_with_accuracy(model, x, y):
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}


def make(**kwargs):
    args = dict(model=lambda rngs: Net(rngs), tx=optax.adamw(1e-2), loss_fn=loss_fn, inputs=INPUTS)
    return nnx_workload(**{**args, **kwargs})


def batch_of(n, seed=0):
    x = jax.random.normal(jax.random.key(seed), (n, FEATURES))
    return x, jnp.arange(n) % CLASSES


def flat(state):
    """{path: array} of a state; PRNG keys as their data."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {
        jax.tree_util.keystr(path): np.asarray(
            jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v
        )
        for path, v in leaves
    }


def layout(tree):
    return jax.tree.structure(tree), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]


def test_the_step_trains_the_model_and_carries_its_state():
    workload = make(loss_fn=loss_with_accuracy, has_aux=True)
    assert workload.donate_argnums == (0,)
    real = workload.real_args(4)
    assert layout(real) == layout(workload.args_for_batch(4))
    state = real[0]
    before = flat(state)
    step = jax.jit(workload.step, donate_argnums=workload.donate_argnums)
    state, loss, aux = step(state, *batch_of(4))
    after = flat(state)
    assert before.keys() == after.keys() and np.isfinite(loss)
    assert set(aux) == {"accuracy"} and 0 <= float(aux["accuracy"]) <= 1
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    assert any("['kernel']" in path for path in changed)  # parameters trained
    assert any("['mean']" in path for path in changed)  # BatchNorm statistics carried
    assert any("['rngs']['count']" in path for path in changed)  # new dropout masks
    assert any("['step']" in path for path in changed)  # the optimizer's own count
    state, _, _ = step(state, *batch_of(4))  # the outputs are the next step's inputs


def test_labels_name_the_model_and_the_policy():
    assert make(estimate=False).label == "Net"
    remat = make(remat="nothing_saveable", remat_blocks=Block, estimate=False)
    assert remat.label == "Net remat=nothing_saveable"
    assert make(label="mine", estimate=False).label == "mine"


def _remat_equations(jaxpr):
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name in {"checkpoint", "remat2", "remat"}
        for sub in jax_core.jaxprs_in_params(eqn.params):
            count += _remat_equations(sub)
    return count


def test_checkpoint_blocks_wraps_the_outermost_blocks_and_changes_no_value():
    plain, wrapped = Net(nnx.Rngs(0)), Net(nnx.Rngs(0))
    assert checkpoint_blocks(wrapped, Block, "nothing_saveable") == 3  # 2 + Outer's inner
    assert checkpoint_blocks(Net(nnx.Rngs(0)), (Block, Outer), "dots_saveable") == 3
    assert flat(nnx.state(plain)).keys() == flat(nnx.state(wrapped)).keys()
    x, y = batch_of(4)

    def grads(model):
        graphdef, state = nnx.split(model)

        def grad(state):
            return nnx.grad(loss_fn)(nnx.merge(graphdef, state), x, y)

        return jax.make_jaxpr(grad)(state).jaxpr, jax.jit(grad)(state)

    plain_jaxpr, plain_grads = grads(plain)
    wrapped_jaxpr, wrapped_grads = grads(wrapped)
    assert _remat_equations(plain_jaxpr) == 0 and _remat_equations(wrapped_jaxpr) == 3
    for a, b in zip(jax.tree.leaves(plain_grads), jax.tree.leaves(wrapped_grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_checkpoint_blocks_again_changes_the_policy():
    model = Net(nnx.Rngs(0), depth=1)
    checkpoint_blocks(model, Block, "nothing_saveable")
    checkpoint_blocks(model, Block, "dots_saveable")
    assert type(model.blocks[0]).__mro__[1] is Block
    assert type(model.blocks[0]) is not Block


def test_remat_lowers_the_estimate():
    plain = make().estimate
    remat = make(remat="nothing_saveable", remat_blocks=Block).estimate
    assert remat.per_example_bytes < plain.per_example_bytes
    model, optimizer = nnx.eval_shape(
        lambda: (m := Net(nnx.Rngs(0)), nnx.Optimizer(m, optax.adamw(1e-2), wrt=nnx.Param))
    )
    params, rest = nnx.state(model, nnx.Param, ...)
    held = 2 * tree_bytes(params) + tree_bytes(nnx.state(optimizer)) + tree_bytes(rest)
    assert held <= remat.fixed_bytes < held + 4 * remat.per_example_bytes
    assert make(estimate=False).estimate is None


def test_policies_are_jax_checkpoint_policies():
    assert "nothing_saveable" in POLICIES and "dots_saveable" in POLICIES
    assert all(callable(getattr(jax.checkpoint_policies, name)) for name in POLICIES)


def _not_a_module(rngs):
    return "model"


def _raises(rngs):
    raise RuntimeError("no weights here")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": 3}, "`model` (=3) must be callable"),
        ({"model": _not_a_module}, "returned str; called as model(rngs=nnx.Rngs(seed)) it must"),
        ({"model": _raises}, "raised RuntimeError when called as model(rngs=nnx.Rngs(0))"),
        ({"tx": "adam"}, "`tx` (='adam') must be an optax.GradientTransformation"),
        ({"loss_fn": None}, "`loss_fn` (=None) must be callable"),
        ({"inputs": ()}, "`inputs` (=()) must be a list with one entry per input"),
        ({"inputs": [(8, "float32")]}, "`inputs[0]` (=(8, 'float32')): the shape (=8) must"),
        ({"inputs": [((8,), "floaty")]}, "the dtype (='floaty') is not a dtype"),
        ({"inputs": [((-1,), jnp.float32)]}, "must be a tuple of non-negative integers"),
        ({"inputs": [jnp.zeros(3)]}, "must be a jax.ShapeDtypeStruct or a (shape, dtype) pair"),
        ({"has_aux": 1}, "`has_aux` (=1) must be True or False"),
        ({"estimate": "yes"}, "`estimate` (='yes') must be True or False"),
        ({"seed": -1}, "`seed` (=-1) must be a non-negative integer"),
        ({"label": 7}, "`label` (=7) must be a string"),
        ({"remat": "nothing"}, "`remat` (='nothing') must be None, a jax.checkpoint_policies name"),
        ({"remat": 3}, "`remat` (=3) must be None, a jax.checkpoint_policies name"),
        ({"remat": "nothing_saveable"}, "`remat` (='nothing_saveable') needs `remat_blocks`"),
        ({"remat": "nothing_saveable", "remat_blocks": nnx.Conv}, "`remat_blocks` (=<class"),
        ({"remat_blocks": int}, "`remat_blocks` (=<class 'int'>) must be an nnx.Module subclass"),
        ({"loss_fn": loss_with_accuracy}, "returned a tuple of 2; it must return the loss"),
        ({"has_aux": True}, "returned shape () and dtype float32; it must return (loss, aux)"),
        ({"loss_fn": lambda m, x, y: m(x)}, "a loss of shape (1, 4) and dtype float32; the loss"),
        ({"loss_fn": lambda m, x, y: m(y)}, "does not trace at batch=1: TypeError"),
        ({"model": Net(nnx.Rngs(0))}, "`model` (=an instance of Net) must be a factory"),
        ({"wrt": 42}, "`wrt` (=42) must be an NNX filter: a Variable type (nnx.Param)"),
        ({"wrt": 1.5}, "`wrt` (=1.5) must be an NNX filter"),
        ({"wrt": "no_such_tag"}, "`wrt` (='no_such_tag') selects no variable of the model"),
        ({"inputs": [((FEATURES,), None)]}, "the dtype (=None) must be a dtype, e.g. jnp.float32"),
    ],
)  # fmt: skip
def test_bad_input_is_a_tune_error_naming_it(kwargs, message):
    with pytest.raises(TuneError) as error:
        make(**kwargs)
    assert message in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_numpy_integers_are_dimensions():
    inputs = [((np.int64(FEATURES),), jnp.float32), ((), jnp.int32)]
    x, y = make(inputs=inputs).args_for_batch(16)[1:]
    assert x.shape == (16, FEATURES) and type(x.shape[1]) is int and y.shape == (16,)


def test_no_matching_block_names_the_types_present():
    with pytest.raises(TuneError, match="matches no submodule of the model; its module types are"):
        make(remat="nothing_saveable", remat_blocks=nnx.Conv)


@pytest.mark.parametrize(
    "args, message",
    [
        (("net", Block, "nothing_saveable"), "`model` (=str) must be an nnx.Module"),
        ((None, (), "nothing_saveable"), "`blocks` (=()) must name at least one"),
        ((None, Block, None), "`policy` (=None) must be a jax.checkpoint_policies name"),
        ((None, Block, "all"), "`policy` (='all') must be a jax.checkpoint_policies name"),
        (
            (None, nnx.Conv, "nothing_saveable"),
            "`blocks` (=<class 'flax.nnx.nn.linear.Conv'>) matches no",
        ),
    ],
)
def test_checkpoint_blocks_bad_input(args, message):
    model, blocks, policy = args
    with pytest.raises(TuneError) as error:
        checkpoint_blocks(Net(nnx.Rngs(0)) if model is None else model, blocks, policy)
    assert message in str(error.value)


def test_a_space_of_plans_names_each_block_by_its_path_and_trains_the_plan_tuned():
    from autotune.nnx import block_paths, nnx_remat_space

    space = nnx_remat_space(
        lambda rngs: Net(rngs), optax.adamw(1e-2), loss_fn, INPUTS, remat_blocks=Block
    )
    assert space.blocks == ("blocks.0", "blocks.1", "outer.inner")
    workload = space.workload(space.plan({"blocks.1": "nothing_saveable"}))
    assert workload.remat_plan == {
        "blocks.0": "none", "blocks.1": "nothing_saveable", "outer.inner": "none",
    }  # fmt: skip
    jaxpr = jax.make_jaxpr(workload.jitted())(*workload.args_for_batch(4))
    assert _remat_equations(jaxpr.jaxpr) == 1  # blocks.1 alone is recomputed
    text = workload.jitted().lower(*workload.args_for_batch(4)).as_text(debug_info=True)
    assert all(f"jvp({path})/" in text for path in space.blocks)  # a named scope per block
    model = Net(nnx.Rngs(0))
    assert block_paths(model, Block) == space.blocks
    assert checkpoint_blocks(model, workload.remat_plan) == 3
    assert isinstance(model.blocks[1], Block)
    with pytest.raises(TuneError, match="names 'blocks.9', which is no submodule path"):
        checkpoint_blocks(Net(nnx.Rngs(0)), {"blocks.9": "nothing_saveable"})
    with pytest.raises(TuneError, match=r"`policy` \(='dots_saveable'\) is given with a plan"):
        checkpoint_blocks(Net(nnx.Rngs(0)), {"blocks.0": "none"}, "dots_saveable")
    with pytest.raises(TuneError, match="names 'blocks.7', a block this workload lacks"):
        make(remat_blocks=Block, remat_plan={"blocks.7": "nothing_saveable"})
    with pytest.raises(TuneError, match="needs `remat_blocks` and no `remat`"):
        make(remat_plan={"blocks.0": "nothing_saveable"})
