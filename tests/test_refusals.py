"""Bad input at the API boundary: one error type, naming the argument, its value
and the rule; numpy integers are counts like any other."""

import json
import re

import numpy as np
import pytest
from steps import mlp_args, mlp_step, need_at

from autotune import TuneError, Workload, find_max_batch, get_target

SEARCH = dict(multiple_of=8, max_batch=256)


@pytest.fixture(scope="module")
def budget():
    return need_at(mlp_step, mlp_args, 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target=42), "`target` (=42) must be 'local', 'auto', a described GPU's name"),
        (dict(target=None), "`target` (=None) must be"),
        (dict(estimate="big"), "`estimate` (='big') must be an autotune.Estimate"),
        (dict(cache="dir"), "`cache` (='dir') must be an autotune.ResultCache or None"),
        (dict(on_probe=42), "`on_probe` (=42) must be callable or None"),
        (dict(compiler_options=42), "`compiler_options` (=42) must be a mapping or None"),
        (dict(xla_remat_pass="yes"), "`xla_remat_pass` (='yes') must be True or False"),
        (dict(label=42), "`label` (=42) must be a string"),
        (
            dict(budget_bytes=1.5e6),
            "`budget_bytes` (=1500000.0) must be an integer number of bytes",
        ),
        (dict(reserve_bytes=-1), "`reserve_bytes` (=-1) must be zero or positive"),
        (dict(multiple_of=8.0), "`multiple_of` (=8.0) must be a positive integer"),
        (dict(max_batch=True), "`max_batch` (=True) must be a positive integer"),
        (dict(data_parallel_size=0), "`data_parallel_size` (=0) must be a positive integer"),
        (dict(donate_argnums="0"), "`donate_argnums` (='0') must be a non-negative integer"),
    ],
)
def test_a_bad_argument_is_one_tune_error(budget, kwargs, message):
    with pytest.raises(TuneError, match=re.escape(message)):
        find_max_batch(mlp_step, mlp_args, **{"budget_bytes": budget, **SEARCH, **kwargs})


@pytest.mark.parametrize("step, args", [(42, mlp_args), (mlp_step, 42), (mlp_step, None)])
def test_a_step_or_argument_builder_that_is_not_one(budget, step, args):
    with pytest.raises(TuneError, match=r"`(step|args_for_batch)` \(="):
        find_max_batch(step, args, budget_bytes=budget)


def test_numpy_integers_are_counts(budget):
    result = find_max_batch(
        mlp_step,
        mlp_args,
        budget_bytes=np.int64(budget),
        reserve_bytes=np.int32(0),
        multiple_of=np.int64(8),
        max_batch=np.uint16(256),
        data_parallel_size=np.int8(1),
        donate_argnums=np.int64(0),
    )
    assert result.batch == 64 and result.budget_bytes == budget
    for value in (result.multiple_of, result.max_batch, result.data_parallel_size):
        assert type(value) is int
    json.dumps(result.to_dict())  # the report can hold it
    assert Workload(mlp_step, mlp_args, donate_argnums=np.int64(0)).donate_argnums == (0,)
    target = get_target("h100-sxm-80gb", devices=np.int64(2), mem_fraction=np.float32(0.5))
    assert (target.device_count, target.budget.fraction) == (2, 0.5)
    assert type(target.device_count) is int


def test_the_layout_helpers_take_numpy_counts_and_refuse_others():
    from autotune import agree_across_hosts
    from autotune._layout import accumulation_plan

    assert agree_across_hosts(np.int64(64)) == 64
    assert accumulation_plan(np.int64(256), np.int32(64), np.int8(1)) == accumulation_plan(
        256, 64, 1
    )
    with pytest.raises(TuneError, match=re.escape("`batch` (='64') must be a positive integer")):
        agree_across_hosts("64")
