"""The per-layer table of cs231n's VGGNet case study, for any VGG configuration.

Each row gives a layer's output volume (H, W, C), its activation count and its
weight count, counted as the seed counts them: 3x3 convolutions with stride 1
and pad 1, 2x2 max-pools with stride 2, then three fully connected layers;
weights exclude biases. For VGG16 at 224x224x3 every row equals the seed's row.

The seed's total line ("24M * 4 bytes ~= 93MB / image") does not follow from
its own rows: they sum to 15,237,608 values (58.1 MB per image in float32).
The table reports the sum of its rows.
"""

from __future__ import annotations

import dataclasses

from autotune import format_bytes

from .vgg import CONFIGS

# The seed's family (configurations A, B, D, E): the models' own definitions.
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    name: config for name, config in CONFIGS.items() if name != "vgg-tiny"
}

_DOWNSAMPLING = 32
# Decimal steps for counts, as in the seed's "3.2M" and "150K".
_COUNT_UNITS = ("", "K", "M", "B", "T")


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One layer of the table: its output volume and its weights."""

    name: str
    shape: tuple[int, int, int]
    activations: int
    weights: int
    biases: int


@dataclasses.dataclass(frozen=True)
class LayerTable:
    """A network's layers in order, the INPUT row first."""

    name: str
    image_size: int
    channels: int
    num_classes: int
    rows: tuple[LayerRow, ...]

    @property
    def total_activations(self) -> int:
        """Activation values per image, INPUT row included."""
        return sum(row.activations for row in self.rows)

    @property
    def input_activations(self) -> int:
        """Values of one input image."""
        return self.rows[0].activations

    @property
    def total_weights(self) -> int:
        """Weights without biases."""
        return sum(row.weights for row in self.rows)

    @property
    def total_params(self) -> int:
        """Weights and biases."""
        return sum(row.weights + row.biases for row in self.rows)

    def render(self, dtype_bytes: int = 4) -> str:
        """The table in the seed's layout, with totals that sum its rows."""
        lines = [_render_row(row, previous) for previous, row in zip((None, *self.rows), self.rows)]
        forward = self.total_activations * dtype_bytes
        lines.append(
            f"TOTAL memory: {self.total_activations:,} * {dtype_bytes} bytes"
            f" ~= {format_bytes(forward)} / image (only forward! ~*2 for bwd)"
        )
        lines.append(
            f"TOTAL params: {self.total_weights:,} weights ({self.total_params:,} with biases)"
        )
        return "\n".join(lines)


def format_count(n: int) -> str:
    """Formats a count with two significant digits and decimal suffixes.

    Counts below 1000 are printed in full ("512"); larger ones are rounded to
    two significant digits as the seed's rows are: 150,528 -> "150K",
    3,211,264 -> "3.2M", 802,816 -> "800K", 25,088 -> "25K".
    """
    if n < 0:
        return "-" + format_count(-n)
    if n < 1000:
        return str(int(n))
    rounded = float(f"{n:.2g}")
    power = 0
    while rounded >= 1000 and power < len(_COUNT_UNITS) - 1:
        rounded /= 1000
        power += 1
    text = f"{rounded:.1f}" if rounded < 10 else f"{rounded:.0f}"
    return text.removesuffix(".0") + _COUNT_UNITS[power]


def _weights_formula(row: LayerRow, previous: LayerRow) -> str:
    ph, pw, pc = previous.shape
    c = row.shape[2]
    if row.name != "FC":
        return f"(3*3*{pc})*{c}"
    if previous.name == "FC":
        return f"{pc}*{c}"
    return f"{ph}*{pw}*{pc}*{c}"


def _render_row(row: LayerRow, previous: LayerRow | None) -> str:
    h, w, c = row.shape
    if row.name == "FC":
        memory = str(row.activations)
    else:
        memory = f"{h}*{w}*{c}={format_count(row.activations)}"
    weights = "0"
    if row.weights:
        weights = f"{_weights_formula(row, previous)} = {row.weights:,}"
    return f"{row.name}: [{h}x{w}x{c}]  memory: {memory}  weights: {weights}"


def _check_positive(argument: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{argument}` (={value!r}) must be a positive integer")


def _check_arguments(
    name: str, image_size: int, channels: int, num_classes: int, hidden: int
) -> None:
    if name not in VGG_CONFIGS:
        raise ValueError(f"Unknown `name`: {name!r}; known: {', '.join(sorted(VGG_CONFIGS))}")
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or image_size <= 0
        or image_size % _DOWNSAMPLING
    ):
        raise ValueError(
            f"`image_size` (={image_size!r}) must be a positive multiple of"
            f" {_DOWNSAMPLING} (VGG halves it five times)"
        )
    _check_positive("channels", channels)
    _check_positive("num_classes", num_classes)
    _check_positive("hidden", hidden)


def _conv_row(size: int, cin: int, cout: int) -> LayerRow:
    return LayerRow(
        name=f"CONV3-{cout}",
        shape=(size, size, cout),
        activations=size * size * cout,
        weights=3 * 3 * cin * cout,
        biases=cout,
    )


def _pool_row(size: int, channels: int) -> LayerRow:
    return LayerRow("POOL2", (size, size, channels), size * size * channels, 0, 0)


def _fc_row(fan_in: int, fan_out: int) -> LayerRow:
    return LayerRow("FC", (1, 1, fan_out), fan_out, fan_in * fan_out, fan_out)


def vgg_layer_table(
    name: str = "vgg16",
    *,
    image_size: int = 224,
    channels: int = 3,
    num_classes: int = 1000,
    hidden: int = 4096,
) -> LayerTable:
    """The seed's per-layer table for a VGG configuration and input size.

    Raises:
      ValueError: unknown ``name``, ``image_size`` not a positive multiple of 32,
        or a non-positive ``channels``, ``num_classes`` or ``hidden``.
    """
    _check_arguments(name, image_size, channels, num_classes, hidden)
    size, depth = image_size, channels
    rows = [LayerRow("INPUT", (size, size, depth), size * size * depth, 0, 0)]
    for layer in VGG_CONFIGS[name]:
        if layer == "M":
            size //= 2
            rows.append(_pool_row(size, depth))
        else:
            rows.append(_conv_row(size, depth, layer))
            depth = layer
    rows += [
        _fc_row(size * size * depth, hidden),
        _fc_row(hidden, hidden),
        _fc_row(hidden, num_classes),
    ]
    return LayerTable(name, image_size, channels, num_classes, tuple(rows))
