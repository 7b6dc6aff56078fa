"""The VGG layer table against the seed's rows and independent counts."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from autotune import format_bytes
from autotune.models.layers import VGG_CONFIGS, LayerTable, format_count, vgg_layer_table

SEED = Path(__file__).parents[2] / "shared" / "seeds" / "vggnet-memory-analysis.txt"
ROW = re.compile(
    r"^(?P<name>INPUT|CONV3-\d+|POOL2|FC): \[(?P<h>\d+)x(?P<w>\d+)x(?P<c>\d+)\]"
    r"\s+memory:\s+(?P<memory>\S+)\s+weights:\s+(?P<weights>.+?)\s*$"
)


def _product(expression: str) -> int:
    return math.prod(int(f) for f in re.findall(r"\d+", expression))


def _seed_rows() -> list[dict]:
    if not SEED.exists():
        pytest.skip(f"seed text not found at {SEED}")
    rows = []
    for line in SEED.read_text(encoding="utf-8").splitlines():
        if match := ROW.match(line.strip()):
            rows.append(match.groupdict() | {"line": " ".join(line.split())})
    return rows


def test_vgg16_rows_equal_the_seed_rows():
    seed = _seed_rows()
    table = vgg_layer_table("vgg16")
    assert len(seed) == len(table.rows) == 22
    for expected, row in zip(seed, table.rows):
        assert row.name == expected["name"]
        assert row.shape == (int(expected["h"]), int(expected["w"]), int(expected["c"]))
        assert row.activations == _product(expected["memory"].split("=")[0])
        weights = expected["weights"]
        if weights == "0":
            assert row.weights == 0
        else:
            formula, printed = weights.split("=")
            assert row.weights == _product(formula) == int(printed.replace(",", ""))


def test_vgg16_rendered_rows_equal_the_seed_lines():
    seed = _seed_rows()
    rendered = vgg_layer_table("vgg16").render().splitlines()
    assert [" ".join(line.split()) for line in rendered[:-2]] == [r["line"] for r in seed]


def test_vgg16_totals():
    table = vgg_layer_table("vgg16")
    assert table.total_activations == 15_237_608
    assert table.total_weights == 138_344_128
    assert table.total_params == 138_357_544
    assert format_bytes(table.total_activations * 4) == "58.1 MB"


def test_vgg16_rendered_totals_sum_the_rows():
    lines = vgg_layer_table("vgg16").render().splitlines()
    assert lines[-2:] == [
        "TOTAL memory: 15,237,608 * 4 bytes ~= 58.1 MB / image (only forward! ~*2 for bwd)",
        "TOTAL params: 138,344,128 weights (138,357,544 with biases)",
    ]


def _independent_counts(
    convs_per_stage: tuple[int, ...], size: int = 224, classes: int = 1000, hidden: int = 4096
) -> tuple[int, int, int]:
    widths = (64, 128, 256, 512, 512)
    activations = size * size * 3
    weights = biases = 0
    fan_in = 3
    for stage, (convs, width) in enumerate(zip(convs_per_stage, widths)):
        side = size >> stage
        activations += convs * side * side * width + (side // 2) ** 2 * width
        weights += 9 * fan_in * width + (convs - 1) * 9 * width * width
        biases += convs * width
        fan_in = width
    flat = (size // 32) ** 2 * 512
    activations += 2 * hidden + classes
    weights += flat * hidden + hidden * hidden + hidden * classes
    biases += 2 * hidden + classes
    return activations, weights, weights + biases


@pytest.mark.parametrize(
    "name, convs, torchvision_params",
    [
        ("vgg11", (1, 1, 2, 2, 2), 132_863_336),
        ("vgg13", (2, 2, 2, 2, 2), 133_047_848),
        ("vgg16", (2, 2, 3, 3, 3), 138_357_544),
        ("vgg19", (2, 2, 4, 4, 4), 143_667_240),
    ],
)
def test_totals_of_every_configuration(name, convs, torchvision_params):
    table = vgg_layer_table(name)
    activations, weights, params = _independent_counts(convs)
    assert (table.total_activations, table.total_weights, table.total_params) == (
        activations,
        weights,
        params,
    )
    assert params == torchvision_params


def test_other_sizes_and_heads():
    table = vgg_layer_table("vgg16", image_size=64, channels=1, num_classes=10, hidden=32)
    assert isinstance(table, LayerTable)
    assert table.rows[0].shape == (64, 64, 1)
    assert table.rows[1].weights == 9 * 1 * 64
    assert table.rows[-4].shape == (2, 2, 512)
    assert [r.weights for r in table.rows[-3:]] == [2 * 2 * 512 * 32, 32 * 32, 32 * 10]
    assert table.rows[-1].shape == (1, 1, 10)


def test_tiny_table_renders_exactly():
    table = LayerTable(
        "tiny",
        32,
        3,
        10,
        vgg_layer_table("vgg11", image_size=32, num_classes=10, hidden=16).rows[:4],
    )
    assert table.render(dtype_bytes=2) == (
        "INPUT: [32x32x3]  memory: 32*32*3=3.1K  weights: 0\n"
        "CONV3-64: [32x32x64]  memory: 32*32*64=66K  weights: (3*3*3)*64 = 1,728\n"
        "POOL2: [16x16x64]  memory: 16*16*64=16K  weights: 0\n"
        "CONV3-128: [16x16x128]  memory: 16*16*128=33K  weights: (3*3*64)*128 = 73,728\n"
        "TOTAL memory: 117,760 * 2 bytes ~= 230.0 KB / image (only forward! ~*2 for bwd)\n"
        "TOTAL params: 75,456 weights (75,648 with biases)"
    )


def test_configs_are_the_canonical_ones():
    convs = {
        name: sum(1 for layer in config if layer != "M") for name, config in VGG_CONFIGS.items()
    }
    assert convs == {"vgg11": 8, "vgg13": 10, "vgg16": 13, "vgg19": 16}
    assert all(config.count("M") == 5 for config in VGG_CONFIGS.values())


@pytest.mark.parametrize(
    "n, text",
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KB"),
        (3277, "3.2 KB"),
        (93 * 1024**2, "93.0 MB"),
        (1_288_490_189, "1.2 GB"),
        (1024**2 - 1, "1.0 MB"),
        (-2048, "-2.0 KB"),
    ],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    "n, text",
    [
        (999, "999"),
        (4096, "4.1K"),
        (25_088, "25K"),
        (150_528, "150K"),
        (802_816, "800K"),
        (3_211_264, "3.2M"),
        (999_999, "1M"),
        (15_237_608, "15M"),
    ],
)
def test_format_count(n, text):
    assert format_count(n) == text


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"name": "vgg10"}, "'vgg10'"),
        ({"image_size": 100}, "`image_size` (=100)"),
        ({"image_size": 0}, "`image_size` (=0)"),
        ({"image_size": 224.0}, "`image_size` (=224.0)"),
        ({"channels": 0}, "`channels` (=0)"),
        ({"num_classes": -1}, "`num_classes` (=-1)"),
        ({"hidden": 0}, "`hidden` (=0)"),
    ],
)
def test_bad_arguments_raise(kwargs, fragment):
    with pytest.raises(ValueError) as error:
        vgg_layer_table(**kwargs)
    assert fragment in str(error.value)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="vgg11, vgg13, vgg16, vgg19"):
        vgg_layer_table("resnet50")
