"""Cloud TPU slices by the names users know, mapped to what libtpu compiles for.

A slice is named by its accelerator type (`v5litepod-4`, `v6e-256`, `v4-8`,
`v5p-128`, `tpu7x-8`) or by a topology string (`v5e:2x2`, `v5p:2x2x1`).
Each maps to what `jax.experimental.topologies.get_topology_desc(platform=
"tpu", ...)` takes: a topology name, a chip config and the chips per host.

What the number in an accelerator type counts (Cloud TPU's convention):

- v5e (`v5litepod-N`, also written `v5e-N`) and v6e (`v6e-N`): chips. One
  TensorCore per chip, one JAX device per chip.
- v4 (`v4-N`), v5p (`v5p-N`) and TPU7x (`tpu7x-N`): TensorCores, two per
  chip. v4 and v5p run as "megacore" (the two cores are one JAX device per
  chip); TPU7x shows each TensorCore as a JAX device.

Slice shapes (Cloud TPU's documentation): v5e and v6e are 2-D, one of
`SHAPES_2D`, with up to 8 chips per host. v4, v5p and TPU7x are 3-D, AxBxC
with every side at most 4 or a multiple of 4, four chips (2x2x1) per host;
the smallest v4 and v5p accelerator types are 2x2x1, but a topology string
may name one chip (`v5p:1x1x1`), as libtpu does.
An accelerator type's topology is the most cube-like shape of its chips:
2x2x1, 2x2x2, 2x2x4 or 2x4x4 up to 32 chips, beyond that sides that are
multiples of 4 with the shortest longest side, then the smallest sum, and no
side above 256. (This reproduces every v5p shape in MaxText's table of
accelerator types; the sizes it leaves out are those with no such shape.)

`hbm_mib` is the HBM one device's program may use as the compiler counts it
(buffers and the program's own code), measured with libtpu 0.0.42.1 by
`scripts/measure_tpu_hbm.py` (`benchmarks/tpu-hbm.md`): the chip's HBM less
what libtpu reserves. The search never decides by it: on TPU a batch fits
when it compiles.

`peak_flops` is one chip's dense bfloat16 peak from Cloud TPU's page of its
generation ("Peak compute per chip (bf16)"), named beside each; float32 dots
run at it under XLA's default precision (one bfloat16 pass), and Cloud TPU
publishes no float16 figure. A TPU7x chip's two TensorCores, two JAX
devices, share it (`TpuGeneration.device_peak_flops`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re

from autotune._core.errors import TargetError
from autotune._targets.peak_flops import TERA, PeakFlops

SHAPES_2D: tuple[tuple[int, int], ...] = (
    (1, 1),
    (2, 2),
    (2, 4),
    (4, 4),
    (4, 8),
    (8, 8),
    (8, 16),
    (16, 16),
)
_SMALL_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4)}
_CUBE = 4  # a 3-D slice beyond 32 chips is made of 4x4x4 cubes
_LONGEST_SIDE = 256
_CHIPS_PER_HOST_2D = (2, 4)


@dataclasses.dataclass(frozen=True)
class TpuGeneration:
    """One Cloud TPU generation."""

    name: str  # the topology prefix: "v5e" in "v5e:2x2"
    accelerator_prefix: str  # "v5litepod" in "v5litepod-4"
    device_kind: str  # what libtpu's devices report
    dims: int  # 2 (v5e, v6e) or 3
    chip_config: str  # libtpu's chip config: "default" or "megacore"
    cores_per_chip: int  # TensorCores per chip
    devices_per_chip: int  # JAX devices per chip under `chip_config`
    hbm_mib: int  # per device, as the compiler counts it (module docstring)
    max_chips: int  # a whole pod
    min_chips: int  # the smallest accelerator type (a topology may be one chip)
    aliases: tuple[str, ...] = ()  # other accelerator prefixes: "v5e" for v5litepod
    peak_flops: PeakFlops | None = None  # one chip's (module docstring)

    @property
    def type_counts_cores(self) -> bool:
        """The accelerator type counts TensorCores (else chips)."""
        return self.cores_per_chip > 1

    @property
    def device(self) -> str:
        """What one JAX device is: a chip or a TensorCore."""
        return "chip" if self.devices_per_chip == 1 else "TensorCore"

    @property
    def hbm_bytes(self) -> int:
        return self.hbm_mib << 20

    @property
    def device_peak_flops(self) -> PeakFlops | None:
        """One JAX device's share of its chip's peak FLOP/s."""
        if self.peak_flops is None:
            return None
        return self.peak_flops.divided(self.devices_per_chip)


def _bf16_peak(tflops: float, page: str) -> PeakFlops:
    """A chip's published bfloat16 peak, which float32 dots also run at."""
    return PeakFlops(
        float32=tflops * TERA,
        bfloat16=tflops * TERA,
        float16=None,
        source=f"Cloud TPU {page} page, peak compute per chip (bf16): {tflops:g} TFLOPs",
    )


GENERATIONS: dict[str, TpuGeneration] = {
    g.name: g
    for g in (
        TpuGeneration(
            "v4", "v4", "TPU v4", 3, "megacore", 2, 1, 31485, 4096, 4,
            peak_flops=_bf16_peak(275, "v4 (https://cloud.google.com/tpu/docs/v4)"),
        ),
        TpuGeneration(
            "v5e", "v5litepod", "TPU v5 lite", 2, "default", 1, 1, 16126, 256, 1, aliases=("v5e",),
            peak_flops=_bf16_peak(197, "v5e (https://cloud.google.com/tpu/docs/v5e)"),
        ),
        TpuGeneration(
            "v5p", "v5p", "TPU v5", 3, "megacore", 2, 1, 98041, 8960, 4,
            peak_flops=_bf16_peak(459, "v5p (https://cloud.google.com/tpu/docs/v5p)"),
        ),
        TpuGeneration(
            "v6e", "v6e", "TPU v6 lite", 2, "default", 1, 1, 31996, 256, 1,
            peak_flops=_bf16_peak(918, "v6e (https://cloud.google.com/tpu/docs/v6e)"),
        ),
        TpuGeneration(
            "tpu7x", "tpu7x", "TPU7x", 3, "default", 2, 2, 97020, 9216, 1,
            peak_flops=_bf16_peak(2307, "TPU7x (https://cloud.google.com/tpu/docs/tpu7x)"),
        ),
    )
}  # fmt: skip
# Topology prefixes libtpu also takes for these generations.
_TOPOLOGY_ALIASES = {"v5": "v5p"}


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    """A TPU slice: what to ask libtpu for, and what it holds."""

    name: str  # as the user named it
    generation: TpuGeneration
    shape: tuple[int, ...]  # chips along each side

    @property
    def topology(self) -> str:
        """The topology name libtpu takes: "v5e:2x2"."""
        return f"{self.generation.name}:{'x'.join(map(str, self.shape))}"

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    @property
    def device_count(self) -> int:
        return self.chips * self.generation.devices_per_chip

    @property
    def accelerator_type(self) -> str:
        """Cloud TPU's name for a slice of this many chips."""
        count = self.chips * self.generation.cores_per_chip
        return f"{self.generation.accelerator_prefix}-{count}"

    @property
    def chips_per_host_bounds(self) -> tuple[int, int, int]:
        if self.generation.dims == 2:
            if self.chips <= math.prod(_CHIPS_PER_HOST_2D):
                return (*self.shape, 1)
            return (*_CHIPS_PER_HOST_2D, 1)
        a, b, _ = self.shape
        return (min(a, 2), min(b, 2), 1)

    @property
    def hosts(self) -> int:
        return self.chips // math.prod(self.chips_per_host_bounds)

    def describe(self) -> str:
        """Devices, what they are, topology and hosts: "4 x TPU v5 lite chips,
        v5e:2x2, 1 host"."""
        g = self.generation
        per_chip = f" ({g.devices_per_chip} per chip)" if g.devices_per_chip > 1 else ""
        hosts = "1 host" if self.hosts == 1 else f"{self.hosts} hosts"
        return (
            f"{self.device_count} x {g.device_kind} {g.device}s{per_chip}, {self.topology}, {hosts}"
        )


def parse_tpu_name(name: str) -> TpuSlice | None:
    """The slice `name` denotes; None if it names no TPU generation.

    Raises `TargetError` for a TPU generation with a count or topology that
    is not a Cloud TPU slice.
    """
    text = name.strip().lower()
    topology = re.fullmatch(r"([a-z0-9]+):(\S*)", text)
    if topology:
        prefix = _TOPOLOGY_ALIASES.get(topology.group(1), topology.group(1))
        if prefix not in GENERATIONS:
            return None
        return _from_topology(name, GENERATIONS[prefix], topology.group(2))
    typed = re.fullmatch(r"([a-z0-9]+)-(\d+)", text)
    if not typed:
        return None
    generation = _by_accelerator_prefix().get(typed.group(1))
    if generation is None:
        return None
    return _from_type(name, generation, int(typed.group(2)))


def accelerator_types(generation: TpuGeneration) -> tuple[str, ...]:
    """Every accelerator type of `generation` this module maps, smallest first."""
    per_chip = generation.cores_per_chip if generation.type_counts_cores else 1
    chips = range(generation.min_chips, generation.max_chips + 1)
    return tuple(
        f"{generation.accelerator_prefix}-{c * per_chip}"
        for c in chips
        if _default_shape(generation, c) is not None
    )


def close_tpu_names(name: str) -> list[str]:
    """Accelerator types and topology prefixes that look like `name`."""
    names = [t for g in GENERATIONS.values() for t in accelerator_types(g)]
    names += [f"{g}:" for g in GENERATIONS]
    return difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.7)


def _by_accelerator_prefix() -> dict[str, TpuGeneration]:
    return {
        prefix: g for g in GENERATIONS.values() for prefix in (g.accelerator_prefix, *g.aliases)
    }


def _from_type(name: str, generation: TpuGeneration, count: int) -> TpuSlice:
    per_chip = generation.cores_per_chip if generation.type_counts_cores else 1
    unit = "TensorCores" if generation.type_counts_cores else "chips"
    chips, rest = divmod(count, per_chip)
    shape = None if rest else _default_shape(generation, chips)
    if shape is None:
        sizes = accelerator_types(generation)
        raise TargetError(
            f"`target` (={name!r}) is not a {generation.name} slice: the number counts "
            f"{unit}, and {generation.name} slices come as {_ranges(sizes)}; did you "
            f"mean {_nearest(sizes, count)!r}?"
        )
    return TpuSlice(name, generation, shape)


def _from_topology(name: str, generation: TpuGeneration, sides: str) -> TpuSlice:
    parts = sides.split("x")
    shape = tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else ()
    if generation.dims == 2:
        rule = f"{generation.name} topologies are " + ", ".join(
            "x".join(map(str, s)) for s in SHAPES_2D
        )
        ok = shape in SHAPES_2D
    else:
        rule = (
            f"{generation.name} topologies are AxBxC, every side at most 4 or a "
            f"multiple of 4, at most {generation.max_chips} chips"
        )
        ok = (
            len(shape) == 3
            and all(0 < s <= _CUBE or s % _CUBE == 0 for s in shape)
            and math.prod(shape) <= generation.max_chips
        )
    if not ok:
        raise TargetError(f"`target` (={name!r}) is not a TPU topology: {rule}")
    return TpuSlice(name, generation, shape)


def _default_shape(generation: TpuGeneration, chips: int) -> tuple[int, ...] | None:
    """The most cube-like slice shape of `chips` chips (module docstring)."""
    if not generation.min_chips <= chips <= generation.max_chips:
        return None
    if generation.dims == 2:
        return next((s for s in SHAPES_2D if math.prod(s) == chips), None)
    if chips == 1:
        return (1, 1, 1)
    if chips in _SMALL_3D:
        return _SMALL_3D[chips]
    cubes, rest = divmod(chips, _CUBE**3)
    if rest:
        return None
    best = None
    for a in range(1, cubes + 1):
        for b in range(a, cubes // a + 1):
            c, left = divmod(cubes, a * b)
            if left or c < b or _CUBE * c > _LONGEST_SIDE:
                continue
            key = (c, a + b + c)
            if best is None or key < best[0]:
                best = (key, (_CUBE * a, _CUBE * b, _CUBE * c))
    return best[1] if best else None


def _ranges(sizes: tuple[str, ...]) -> str:
    if len(sizes) <= 8:
        return ", ".join(sizes)
    return f"{', '.join(sizes[:5])}, ..., {sizes[-1]}"


def _nearest(sizes: tuple[str, ...], count: int) -> str:
    return min(sizes, key=lambda t: abs(int(t.rsplit("-", 1)[1]) - count))
