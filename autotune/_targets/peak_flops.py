"""Dense peak FLOP/s of one device, by the dtype of a dot's operands.

A figure is the vendor's published dense peak (no sparsity) of the device's
matrix units, for dots and convolutions whose operands have that dtype.
`float32` is the rate of a float32 dot at XLA's default precision
(`jax.lax.Precision.DEFAULT`, https://docs.jax.dev/en/latest/_autosummary/jax.lax.Precision.html):
TF32 tensor cores on an A100, H100, H200 or L4, one bfloat16 pass on a TPU.
A step that asks for more precision runs slower, so the figure bounds it too.
"""

from __future__ import annotations

import dataclasses

TERA = 1e12
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class PeakFlops:
    """One device's dense peak FLOP/s per dtype (None: no published figure),
    and the public document the figures come from."""

    float32: float | None
    bfloat16: float | None
    float16: float | None
    source: str

    def of(self, dtype: str) -> float | None:
        """The figure for `dtype` (a name from `DTYPES`), None where there is none."""
        return getattr(self, dtype) if dtype in DTYPES else None

    def divided(self, parts: int) -> PeakFlops:
        """The figures of one of `parts` devices sharing a chip's matrix units."""
        if parts == 1:
            return self
        share = {d: None if self.of(d) is None else self.of(d) / parts for d in DTYPES}
        return PeakFlops(**share, source=f"{self.source}, divided by {parts} devices per chip")


def dense(sparse_tflops: float) -> float:
    """FLOP/s of a datasheet figure given "with sparsity": half of it is dense."""
    return sparse_tflops * TERA / 2
