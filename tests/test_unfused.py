"""Where the step's own jaxpr fills the budget: the place of the first compile."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from user_steps import deep_mlp, nnx_cnn

from autotune import SearchInterrupted, compare, find_max_batch
from autotune._compile.prober import Prober
from autotune._explain import unfused as _unfused
from autotune._search.need import calibration_batch

N = 16


def args_for_batch(batch, sharding=None, batch_sharding=None):
    w = jax.ShapeDtypeStruct((N, N), jnp.float32, sharding=sharding)
    return w, jax.ShapeDtypeStruct((batch, N), jnp.float32, sharding=batch_sharding)


def flat(w, x):
    y = x @ w
    return (y * jnp.exp(y) + jnp.tanh(y)).sum()


def nested(w, x):
    @jax.jit
    def inner(y):
        return jax.checkpoint(lambda y: y * jnp.exp(y))(y) + jnp.tanh(y)

    return inner(x @ w).sum()


def profile(step, batch):
    return _unfused.live_bytes(jax.jit(step).trace(*args_for_batch(batch)).jaxpr, batch)


def test_bytes_live_at_each_equation():
    b, row = 40, 40 * N * 4
    # y = x @ w; e = exp(y); m = y * e; t = tanh(y); s = m + t; sum(s)
    assert profile(flat, b) == [(0, row), (0, 2 * row), (0, 3 * row), (0, 3 * row),
                                (0, 3 * row), (4, row)]  # fmt: skip


def test_calls_are_inlined():
    """A jitted and a checkpointed function's values are the step's own."""
    assert profile(nested, 40) == profile(flat, 40)


def test_a_function_called_twice_is_inlined_twice():
    """One jitted function called once a layer: its jaxpr is one object, and
    each call's values are freed after their own last use."""
    layer = jax.jit(lambda y: jnp.tanh(jnp.exp(y) * y))

    def twice(w, x):
        return layer(layer(x @ w)).sum()

    def written_out(w, x):
        y = x @ w
        y = jnp.tanh(jnp.exp(y) * y)
        return jnp.tanh(jnp.exp(y) * y).sum()

    assert profile(twice, 40) == profile(written_out, 40)


def test_boundary_where_arguments_and_the_peak_fill_the_budget():
    """need(B) = w + x + 3 rows of the batch at the peak: 4 rows of N floats
    an example, past the weights."""
    weights, budget = N * N * 4, 1_000_000
    prober = Prober(flat, args_for_batch)
    assert prober.unfused_boundary(40, budget) == pytest.approx((budget - weights) / (4 * N * 4))


def test_one_device_share_on_a_mesh():
    mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    weights, budget = N * N * 4, 1_000_000
    prober = Prober(flat, lambda b: args_for_batch(b, replicated, split))
    assert prober.unfused_boundary(40, budget) == pytest.approx((budget - weights) / (2 * N * 4))


def test_no_boundary_when_the_fixed_bytes_exceed_the_budget():
    assert Prober(flat, args_for_batch).unfused_boundary(40, N * N * 4 - 1) is None


def test_loops_and_branches_are_single_equations():
    def step(w, x):
        y = jax.lax.fori_loop(0, 3, lambda i, y: jnp.tanh(y @ w), x)
        y = jax.lax.cond(y.sum() > 0, jnp.sin, jnp.cos, y)
        return jax.lax.scan(lambda c, r: (c + r.sum(), None), 0.0, y)[0]

    assert Prober(step, args_for_batch).unfused_boundary(40, 10**6) > 0


def test_a_loop_holds_its_body_s_values_while_it_runs():
    """The while loop's (batch, 4N) product lives only inside its body."""

    def step(w, x):
        wide = jnp.ones((N, 4 * N))

        def body(c):
            return c[0] + 1, c[1] + jnp.tanh(c[1] @ w @ wide).sum(1, keepdims=True)

        return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, x))[1].sum()

    assert max(f for _, f in profile(step, 40)) >= 40 * 4 * N * 4


def test_a_step_without_a_trace_has_no_boundary():
    class LowersOnly:
        def __init__(self):
            self._jitted = jax.jit(flat)

        def lower(self, *args):
            return self._jitted.lower(*args)

    prober = Prober(LowersOnly(), args_for_batch)
    assert prober.unfused_boundary(40, 10**6) is None
    assert prober(40).need_bytes > 0


def test_a_flax_nnx_jit_step_has_the_boundary_of_its_jax_jit():
    args = nnx_cnn.args_for_batch
    jax_jit = Prober(jax.jit(nnx_cnn.step), args).unfused_boundary(88, 10**9)
    assert jax_jit is not None
    assert Prober(nnx.jit(nnx_cnn.step), args).unfused_boundary(88, 10**9) == jax_jit


@pytest.mark.parametrize(
    "m, top, room, batch",
    [
        (8, 65536, None, 88),
        (8, 65536, 2985.5, 2984),  # 8 x 373
        (8, 65536, 2983, 2936),  # 8 x 367: 368 to 372 are not prime
        (8, 65536, 100, 88),
        (8, 65536, float("inf"), 88),
        (8, 65536, float("nan"), 88),
        (8, 1000, 10**9, 904),  # 8 x 113, the largest at or below the top
        (8, 40, 10**9, 40),
        (1, 65536, 1000, 997),
    ],
)
def test_calibration_batch_at_or_below_the_room(m, top, room, batch):
    assert calibration_batch(m, top, room) == batch


def test_the_first_compile_aims_at_half_the_unfused_boundary():
    step, args = deep_mlp.step, deep_mlp.args_for_batch
    budget = Prober(step, args, donate_argnums=0)(2000).need_bytes + 1
    boundary = Prober(step, args, donate_argnums=0).unfused_boundary(88, budget)
    first = calibration_batch(8, 65536, boundary * _unfused.MARGIN)
    assert 88 < first < 2000
    result = find_max_batch(step, args, donate_argnums=0, budget_bytes=budget)
    assert [p.batch for p in result.probes] == [first, 2000, 2008]


def test_a_boundary_that_raises_changes_no_answer(monkeypatch):
    step, args = deep_mlp.step, deep_mlp.args_for_batch
    budget = Prober(step, args, donate_argnums=0)(600).need_bytes + 1

    def broken(*_):
        raise RuntimeError("a jaxpr this module does not know")

    monkeypatch.setattr(_unfused, "boundary", broken)
    result = find_max_batch(step, args, donate_argnums=0, budget_bytes=budget)
    assert [p.batch for p in result.probes] == [88, 600, 608]


def test_a_first_compile_whose_arguments_cannot_be_made_goes_to_88(monkeypatch):
    """A step whose data holds 1,000 examples: the placement is dropped where
    its arguments cannot be made, and the answer is found below it."""
    step, args = deep_mlp.step, deep_mlp.args_for_batch
    budget = Prober(step, args, donate_argnums=0)(600).need_bytes + 1

    def dataset(batch):
        if batch > 1000:
            raise ValueError("the dataset holds 1,000 examples")
        return args(batch)

    monkeypatch.setattr(Prober, "unfused_boundary", lambda self, b, budget: 10**6)
    result = find_max_batch(step, dataset, donate_argnums=0, budget_bytes=budget)
    assert [p.batch for p in result.probes] == [88, 600, 608]


def test_ctrl_c_while_placing_keeps_the_rows_already_tuned(monkeypatch):
    calls = []

    def interrupted_the_second_time(self, batch, budget):
        calls.append(batch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return None

    monkeypatch.setattr(Prober, "unfused_boundary", interrupted_the_second_time)
    workloads = {"first": deep_mlp.workload, "second": deep_mlp.workload}
    with pytest.raises(SearchInterrupted) as caught:
        compare(workloads, max_batch=96)
    assert [r.label for r in caught.value.results] == ["first"]
    assert caught.value.results[0].batch == 96
