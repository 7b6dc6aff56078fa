"""find_max_batch on steps that are not ours: exact against brute-force compiles."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import optax
import pytest
from steps import (
    C,
    CountingStep,
    FailingStep,
    brute_force,
    mlp_args,
    mlp_step,
    need_at,
    padded_step,
)

from autotune import SearchInterrupted, TuneError, Workload, compare, find_max_batch
from autotune._workloads.estimate import Estimate


@pytest.mark.parametrize("step", [mlp_step, padded_step], ids=["affine", "staircase"])
@pytest.mark.parametrize("answer", [40, 72])
def test_exact_against_brute_force(step, answer):
    budget = need_at(step, mlp_args, answer) + 1
    counting = CountingStep(step)
    result = find_max_batch(counting, mlp_args, budget_bytes=budget, multiple_of=8, max_batch=128)
    assert result.batch == brute_force(step, mlp_args, budget, 8, 128)
    assert result.peak_bytes <= result.budget_bytes < result.next_peak_bytes
    assert result.next_batch == result.batch + 8
    assert result.headroom_bytes == budget - result.peak_bytes
    assert result.compiles == counting.compiles == len(result.probes)


def test_plain_step_is_jitted_with_donation():
    budget = need_at(mlp_step, mlp_args, 64)
    result = find_max_batch(
        mlp_step, mlp_args, budget_bytes=budget, donate_argnums=(0,), multiple_of=8, max_batch=256
    )
    assert result.batch == 64
    assert result.probe.alias_bytes > 0


def test_flax_linen_model():
    class CNN(linen.Module):
        @linen.compact
        def __call__(self, x):
            x = linen.relu(linen.Conv(8, (3, 3))(x))
            x = linen.avg_pool(x, (2, 2), (2, 2)).reshape(x.shape[0], -1)
            return linen.Dense(C)(x)

    model, tx = CNN(), optax.adam(1e-3)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    opt_state = jax.eval_shape(tx.init, params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    def args(batch):
        return (
            params,
            opt_state,
            jax.ShapeDtypeStruct((batch, 16, 16, 3), jnp.float32),
            jax.ShapeDtypeStruct((batch,), jnp.int32),
        )

    budget = need_at(step, args, 48) + 1
    result = find_max_batch(step, args, budget_bytes=budget, multiple_of=16, max_batch=256)
    assert result.batch == brute_force(step, args, budget, 16, 256) == 48


def test_estimate_places_the_first_probes():
    """The first round is the estimate's guess and the candidate above it;
    the line through them places the next: the proven pair."""
    budget = need_at(mlp_step, mlp_args, 400)
    estimate = Estimate(fixed_bytes=0, per_example_bytes=budget // 300)
    result = find_max_batch(
        mlp_step,
        mlp_args,
        budget_bytes=budget,
        estimate=estimate,
        donate_argnums=(0,),
        multiple_of=8,
        max_batch=4096,
        workers=1,
    )
    first = result.probes[0]
    assert first.batch == estimate.max_batch(budget) // 8 * 8 == 296
    assert [p.batch for p in result.probes] == [296, 304, 400, 408]
    assert result.batch == brute_force(mlp_step, mlp_args, budget, 8, 512) == 400
    assert result.estimate_per_example_bytes == estimate.per_example_bytes


def test_compare_gives_one_row_per_variant():
    budget = need_at(mlp_step, mlp_args, 64)
    results = compare(
        {"plain": Workload(mlp_step, mlp_args), "padded": Workload(padded_step, mlp_args)},
        budget_bytes=budget,
        multiple_of=8,
        max_batch=256,
    )
    assert [r.label for r in results] == ["plain", "padded"]
    assert results[0].batch == 64
    assert results[1].batch == brute_force(padded_step, mlp_args, budget, 8, 256)


def ctrl_c_after(count):
    """An `on_probe` that presses Ctrl-C, in the calling thread, after `count` probes."""
    made = []

    def on_probe(probe):
        made.append(probe)
        if len(made) == count:
            raise KeyboardInterrupt

    return on_probe


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupt_keeps_the_best_batch_proven(workers):
    budget = need_at(padded_step, mlp_args, 200)
    with pytest.raises(SearchInterrupted) as e:
        find_max_batch(
            CountingStep(padded_step),
            mlp_args,
            budget_bytes=budget,
            multiple_of=8,
            max_batch=4096,
            on_probe=ctrl_c_after(3),
            workers=workers,
        )
    (partial,) = e.value.results
    assert partial.interrupted and not partial.exact
    assert partial.compiles == 3
    assert partial.peak_bytes <= budget
    assert partial.batch == max(p.batch for p in partial.probes if p.need_bytes <= budget)


def test_interrupt_in_compare_keeps_finished_rows():
    budget = need_at(mlp_step, mlp_args, 64)
    with pytest.raises(SearchInterrupted) as e:
        compare(
            {
                "done": Workload(mlp_step, mlp_args),
                "cut": Workload(CountingStep(mlp_step, interrupt_after=0), mlp_args),
            },
            workers=1,
            budget_bytes=budget,
            multiple_of=8,
            max_batch=256,
        )
    assert [r.label for r in e.value.results] == ["done"]


def test_budget_below_the_arguments_is_refused_before_compiling():
    counting = CountingStep(mlp_step)
    with pytest.raises(TuneError, match=r"budget \(1,000 B.*smaller than the step's arguments"):
        find_max_batch(counting, mlp_args, budget_bytes=1000)
    assert counting.compiles == 0


def test_arguments_that_shrink_as_the_batch_grows_are_not_a_floor_at_the_smallest():
    """Need that falls, then rises: the arguments alone exceed the budget at
    the smallest candidate and fit at the next, and the search finds them."""

    @jax.jit  # nothing donated: the table is no output's
    def step(table, x):
        return table.sum() + (x * x).sum()

    def args(batch):
        rows = max(1, 8192 // batch)  # a table split finer as the batch grows
        return (
            jax.ShapeDtypeStruct((rows, 64), jnp.float32),
            jax.ShapeDtypeStruct((batch, 64), jnp.float32),
        )

    needs = {b: need_at(step, args, b) for b in range(8, 1025, 8)}
    budget = (needs[8] + needs[16]) // 2
    assert needs[8] > budget >= needs[16] and needs[1024] > budget
    result = find_max_batch(step, args, budget_bytes=budget, max_batch=1024)
    assert result.batch == max(b for b, n in needs.items() if n <= budget)


def test_step_that_does_not_fit_at_the_smallest_batch():
    budget = need_at(mlp_step, mlp_args, 8) - 1
    with pytest.raises(TuneError, match="does not fit at the smallest candidate batch=8"):
        find_max_batch(mlp_step, mlp_args, budget_bytes=budget)


def test_args_for_batch_that_raises():
    def bad(batch):
        raise RuntimeError("no data for you")

    with pytest.raises(
        TuneError, match=r"`args_for_batch` raised RuntimeError for batch=8: no data"
    ):
        find_max_batch(mlp_step, bad, budget_bytes=10**9)


def test_args_for_batch_with_the_wrong_structure():
    with pytest.raises(TuneError, match="must return a tuple.*returned dict"):
        find_max_batch(mlp_step, lambda b: {"x": 1}, budget_bytes=10**9)
    with pytest.raises(TuneError, match="returned a leaf of type str"):
        find_max_batch(mlp_step, lambda b: ("x",), budget_bytes=10**9)


def test_backend_without_memory_analysis():
    class NoAnalysis:
        def lower(self, *args):
            return self

        def compile(self, **kwargs):
            return self

        def memory_analysis(self):
            return None

    with pytest.raises(TuneError, match="returned no memory analysis"):
        find_max_batch(NoAnalysis(), mlp_args, budget_bytes=10**9)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(budget_bytes=0), r"`budget_bytes` \(=0\) must be positive"),
        (dict(budget_bytes=-5), r"`budget_bytes` \(=-5\) must be positive"),
        (
            dict(budget_bytes=10**9, reserve_bytes=-1),
            r"`reserve_bytes` \(=-1\) must be zero or positive",
        ),
        (
            dict(budget_bytes=10**9, reserve_bytes=10**9),
            r"`reserve_bytes` \(=1,000,000,000\) must be below",
        ),
        (
            dict(budget_bytes=10**9, multiple_of=0),
            r"`multiple_of` \(=0\) must be a positive integer",
        ),
        (
            dict(budget_bytes=10**9, max_batch=2.5),
            r"`max_batch` \(=2.5\) must be a positive integer",
        ),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(TuneError, match=message):
        find_max_batch(mlp_step, mlp_args, **kwargs)


def test_step_that_does_not_trace():
    def broken(params, x, y):
        return x @ x  # (batch, D) @ (batch, D): shapes do not match

    with pytest.raises(TuneError, match=r"`step` does not trace for batch=\d+: TypeError"):
        find_max_batch(broken, mlp_args, budget_bytes=10**9)


def test_step_that_does_not_compile():
    class Refused:
        def lower(self, *args):
            return self

        def compile(self, **kwargs):
            raise RuntimeError("RESOURCE_EXHAUSTED: out of memory while compiling")

        def as_text(self):
            return ""

    with pytest.raises(
        TuneError, match=r"the step does not compile for batch=8, 16, .*RuntimeError: RESOURCE"
    ):
        find_max_batch(Refused(), mlp_args, budget_bytes=10**9)


def _keyed_step(params, x, y, key):
    """The MLP step with dropout drawn from a typed PRNG key argument."""
    keep = jax.random.bernoulli(key, 0.9, x.shape)
    return mlp_step(params, jnp.where(keep, x, 0.0), y)


def _keyed_args(batch):
    return (*mlp_args(batch), jax.ShapeDtypeStruct((), jax.random.key(0).dtype))


def test_typed_prng_key_among_the_arguments():
    budget = need_at(_keyed_step, _keyed_args, 48) + 1
    result = find_max_batch(
        _keyed_step, _keyed_args, budget_bytes=budget, donate_argnums=0, max_batch=72
    )
    assert result.batch == brute_force(_keyed_step, _keyed_args, budget, 8, 72) == 48


def test_donation_given_for_a_jitted_step_is_honoured():
    budget = need_at(mlp_step, mlp_args, 64)  # jitted with argument 0 donated
    undonated = jax.jit(mlp_step)
    result = find_max_batch(
        undonated, mlp_args, budget_bytes=budget, donate_argnums=(0,), max_batch=256
    )
    assert result.batch == 64
    assert result.probe.alias_bytes > 0
    without = find_max_batch(undonated, mlp_args, budget_bytes=budget, max_batch=256)
    assert all(p.alias_bytes == 0 for p in without.probes)


def test_a_workload_is_tuned_as_its_fields_are():
    budget = need_at(mlp_step, mlp_args, 64)
    workload = Workload(mlp_step, mlp_args, donate_argnums=(0,), label="mlp")
    result = find_max_batch(workload, budget_bytes=budget, max_batch=256)
    assert (result.batch, result.label) == (64, "mlp")
    assert find_max_batch(workload, budget_bytes=budget, max_batch=256, label="x").label == "x"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(donate_argnums=(0,)), r"`donate_argnums` given beside it"),
        (dict(estimate=Estimate(0, 1)), r"`estimate` given beside it"),
    ],
)
def test_a_workload_refuses_its_fields_given_twice(kwargs, message):
    with pytest.raises(TuneError, match=message):
        find_max_batch(Workload(mlp_step, mlp_args), budget_bytes=10**9, **kwargs)


def test_a_workload_refuses_args_for_batch_beside_it():
    with pytest.raises(TuneError, match=r"`args_for_batch` given beside it"):
        find_max_batch(Workload(mlp_step, mlp_args), mlp_args, budget_bytes=10**9)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(step=42, args_for_batch=mlp_args), r"`step` \(=42\) must be callable"),
        (dict(step=mlp_step, args_for_batch=None), r"`args_for_batch` \(=None\) must be"),
        (dict(step=mlp_step, args_for_batch=mlp_args, donate_argnums=-1), "`donate_argnums`"),
        (dict(step=mlp_step, args_for_batch=mlp_args, estimate="big"), r"`estimate` \(='big'\)"),
    ],
)
def test_a_bad_workload_names_the_field(fields, message):
    with pytest.raises(TuneError, match=message):
        Workload(**fields)


def test_step_without_args_for_batch():
    with pytest.raises(TuneError, match=r"`args_for_batch` \(=None\) is required"):
        find_max_batch(mlp_step, budget_bytes=10**9)


def test_compare_takes_a_sequence_of_workloads_and_remat_pass_settings():
    budget = need_at(mlp_step, mlp_args, 64)
    results = compare(
        [Workload(mlp_step, mlp_args, donate_argnums=0, label="mlp")],
        xla_remat_pass=(False, True),
        budget_bytes=budget,
        max_batch=256,
    )
    assert [r.label for r in results] == ["mlp", "mlp +xla-pass"]
    assert [r.xla_settings["remat_pass"] for r in results] == [False, True]
    with pytest.raises(TuneError, match="labels that repeat"):
        compare([Workload(mlp_step, mlp_args, label="a")] * 2, budget_bytes=budget)
    with pytest.raises(TuneError, match="at least one workload"):
        compare([], budget_bytes=budget)


@pytest.mark.parametrize("workers", [1, 2])
def test_batches_that_do_not_compile_are_searched_around(workers):
    budget = need_at(mlp_step, mlp_args, 64) + 1
    failing = {64, 72}  # the answer and the next candidate do not compile
    step = FailingStep(mlp_step, failing)
    result = find_max_batch(step, mlp_args, budget_bytes=budget, max_batch=256, workers=workers)
    fits = [
        b for b in range(8, 257, 8) if b not in failing and need_at(mlp_step, mlp_args, b) <= budget
    ]
    assert result.batch == max(fits) == 56
    assert result.next_batch == 80 and result.next_peak_bytes > budget
    assert result.exact
    assert {f.batch for f in result.failures} == failing
    assert all(FailingStep.MESSAGE in f.error for f in result.failures)
    assert "64, 72 did not compile" in result.render()


def test_a_step_that_never_compiles_names_the_message_the_options_and_a_workaround():
    step = FailingStep(mlp_step, range(8, 4097, 8))
    with pytest.raises(TuneError) as e:
        find_max_batch(step, mlp_args, budget_bytes=10**9, compiler_options={"xla_foo": True})
    message = str(e.value)
    assert "does not compile for batch=8" in message and "{'xla_foo': True}" in message
    assert "Couldn't find output tile sizes" in message
    assert '"xla_gpu_enable_triton_gemm": False' in message


def test_the_batches_compiled_are_the_same_whatever_the_workers():
    """A round's batches are the target's, not the machine's: how many
    compiles run at once changes nothing that is compiled."""
    budget = need_at(mlp_step, mlp_args, 200) + 1
    orders = [
        [p.batch for p in find_max_batch(mlp_step, mlp_args, budget_bytes=budget, workers=w).probes]
        for w in (1, 3, None)
    ]
    assert orders[0] == orders[1] == orders[2]


def switching_step(params, x, y):
    """A heavier algorithm below batch 256 (a sort of 512 copies of the
    input), a leaner one from 256 on: 104 is the largest batch below the
    switch that fits, and every batch from 256 to 512 fits too."""
    if x.shape[0] < 256:
        x = jnp.sort(x[:, :, None] * jnp.arange(1.0, 513.0), axis=-1)[..., 0]
    return mlp_step(params, x, y)


def test_a_step_that_switches_programs_at_a_batch_is_not_exact():
    budget = need_at(switching_step, mlp_args, 112) + 1
    result = find_max_batch(switching_step, mlp_args, budget_bytes=budget, max_batch=512)
    assert need_at(switching_step, mlp_args, 512) <= budget  # past the switch, it fits
    assert result.program_changes == ((248, 256),)
    assert not result.exact
    assert "the step's program changes between batch 248 and 256" in result.render()
    assert len({p.program for p in result.probes}) == 1  # the compiles were all below it


def test_a_step_of_one_program_is_exact():
    budget = need_at(mlp_step, mlp_args, 64) + 1
    result = find_max_batch(mlp_step, mlp_args, budget_bytes=budget, max_batch=512)
    assert result.program_changes == () and result.exact
    assert len({p.program for p in result.probes}) == 1 and result.probes[0].program
