"""Training memory by the seed's three sources, checked by hand."""

from __future__ import annotations

import pytest

from autotune.models.breakdown import DTYPE_BYTES, OPTIMIZER_SLOTS, training_memory
from autotune.models.layers import vgg_layer_table


def test_vgg16_batch64_sgd_float32_by_hand():
    activations_per_image = 15_237_608 - 224 * 224 * 3  # INPUT row counted as data
    assert activations_per_image == 15_087_080
    activations = 2 * 64 * activations_per_image * 4  # values and gradients, float32
    assert activations == 7_724_584_960
    params = 138_357_544 * 4
    assert params == 553_430_176
    optimizer = 1 * params  # momentum: one slot
    data = 64 * (150_528 * 4 + 4)  # images and int32 labels
    assert data == 38_535_424
    total = activations + params + params + optimizer + data
    assert total == 9_423_410_912

    result = training_memory(vgg_layer_table("vgg16"), 64)
    assert result.activations_bytes == activations
    assert result.params_bytes == result.grads_bytes == params
    assert result.optimizer_bytes == optimizer
    assert result.data_bytes == data
    assert result.total_bytes == total
    assert result.fixed_bytes == 3 * params
    assert result.per_example_bytes == 2 * 15_087_080 * 4 + 150_528 * 4 + 4 == 121_298_756
    assert result.fixed_bytes + 64 * result.per_example_bytes == total


def test_adam_bfloat16_with_float32_params():
    result = training_memory(
        vgg_layer_table("vgg16"), 8, optimizer="adam", dtype="bfloat16", param_dtype="float32"
    )
    assert result.activations_bytes == 2 * 8 * 15_087_080 * 2
    assert result.params_bytes == 138_357_544 * 4
    assert result.optimizer_bytes == 2 * 138_357_544 * 4
    assert result.data_bytes == 8 * (150_528 * 2 + 4)


def test_bfloat16_halves_activations():
    table = vgg_layer_table("vgg11")
    full = training_memory(table, 16, dtype="float32")
    half = training_memory(table, 16, dtype="bfloat16")
    assert 2 * half.activations_bytes == full.activations_bytes
    assert 2 * half.params_bytes == full.params_bytes


def test_slots():
    assert OPTIMIZER_SLOTS["sgd"] == 1 and OPTIMIZER_SLOTS["adamw"] == 2
    assert OPTIMIZER_SLOTS["sgd-plain"] == 0
    assert DTYPE_BYTES == {"float32": 4, "bfloat16": 2, "float16": 2}


def test_render_golden():
    table = vgg_layer_table("vgg11", image_size=32, num_classes=10, hidden=16)
    result = training_memory(table, 2, optimizer="adam", dtype="bfloat16", param_dtype="float32")
    assert result.render() == (
        "vgg11, batch 2, adam, bfloat16 (params float32)\n"
        "source       formula                       size\n"
        "activations  2 x 2 x 182,826 x 2 B       1.4 MB\n"
        "params       9,229,130 x 4 B            35.2 MB\n"
        "gradients    9,229,130 x 4 B            35.2 MB\n"
        "optimizer    2 x 9,229,130 x 4 B        70.4 MB\n"
        "data         2 x (3,072 x 2 B + 4 B)    12.0 KB\n"
        "total                                  142.2 MB"
    )


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"batch": 0}, "`batch` (=0)"),
        ({"batch": -3}, "`batch` (=-3)"),
        ({"batch": 2.5}, "`batch` (=2.5)"),
        ({"batch": True}, "`batch` (=True)"),
        ({"optimizer": "lion"}, "'lion'"),
        ({"dtype": "float64"}, "'float64'"),
        ({"param_dtype": "int8"}, "'int8'"),
    ],
)
def test_bad_arguments_raise(kwargs, fragment):
    arguments = {"batch": 4} | kwargs
    with pytest.raises(ValueError) as error:
        training_memory(vgg_layer_table("vgg11"), **arguments)
    assert fragment in str(error.value)


def test_unknown_optimizer_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: sgd-plain, sgd, rmsprop"):
        training_memory(vgg_layer_table("vgg11"), 4, optimizer="lion")
