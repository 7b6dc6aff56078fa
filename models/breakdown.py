"""Training memory of a VGG layer table by the seed's three sources.

With ``A`` the activation values per image excluding the INPUT row, ``I`` the
INPUT row's values, ``P`` the parameters (biases included), ``b`` the batch,
``d`` the bytes of ``dtype``, ``p`` the bytes of ``param_dtype`` and ``s`` the
optimizer's slots per parameter:

- activations = 2 * b * A * d   (forward values and their gradients, of equal size)
- params      = P * p
- gradients   = P * p
- optimizer   = s * P * p       (sgd with momentum: 1, adam/adamw: 2)
- data        = b * (I * d + 4) (the input batch and int32 labels)

A back-of-the-envelope model: it ignores the convolution workspace, the
separate ReLU outputs and anything the compiler adds or fuses.
"""

from __future__ import annotations

import dataclasses

from autotune import format_bytes

from .layers import LayerTable

OPTIMIZER_SLOTS: dict[str, int] = {
    "sgd-plain": 0,
    "sgd": 1,
    "rmsprop": 1,
    "adagrad": 1,
    "adam": 2,
    "adamw": 2,
}
DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}
LABEL_BYTES = 4


@dataclasses.dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes of one training step by source, for one model, batch and optimizer."""

    batch: int
    optimizer: str
    dtype: str
    activations_bytes: int
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    data_bytes: int
    model: str = ""
    param_dtype: str = ""
    activation_values: int = 0
    input_values: int = 0
    param_count: int = 0

    @property
    def total_bytes(self) -> int:
        return self.fixed_bytes + self.activations_bytes + self.data_bytes

    @property
    def fixed_bytes(self) -> int:
        """Bytes that do not depend on the batch: parameters, gradients, optimizer."""
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def per_example_bytes(self) -> int:
        """Bytes added by each example: its activations, gradients and data."""
        return (self.activations_bytes + self.data_bytes) // self.batch

    def render(self) -> str:
        """A table of each source, its formula and its size."""
        d = DTYPE_BYTES[self.dtype]
        p = DTYPE_BYTES[self.param_dtype or self.dtype]
        slots = OPTIMIZER_SLOTS[self.optimizer]
        rows = [
            (
                "activations",
                f"2 x {self.batch} x {self.activation_values:,} x {d} B",
                self.activations_bytes,
            ),
            ("params", f"{self.param_count:,} x {p} B", self.params_bytes),
            ("gradients", f"{self.param_count:,} x {p} B", self.grads_bytes),
            ("optimizer", f"{slots} x {self.param_count:,} x {p} B", self.optimizer_bytes),
            (
                "data",
                f"{self.batch} x ({self.input_values:,} x {d} B + {LABEL_BYTES} B)",
                self.data_bytes,
            ),
            ("total", "", self.total_bytes),
        ]
        header = f"{self.model or 'model'}, batch {self.batch}, {self.optimizer}, {self.dtype}"
        if self.param_dtype and self.param_dtype != self.dtype:
            header += f" (params {self.param_dtype})"
        width = max(len(formula) for _, formula, _ in rows)
        lines = [header, f"{'source':<12} {'formula':<{width}}  {'size':>9}"]
        for source, formula, size in rows:
            lines.append(f"{source:<12} {formula:<{width}}  {format_bytes(size):>9}")
        return "\n".join(lines)


def _check_choice(argument: str, value: str, allowed: dict[str, int]) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown `{argument}`: {value!r}; allowed: {', '.join(allowed)}")


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise ValueError(f"`batch` (={batch!r}) must be a positive integer")


def training_memory(
    table: LayerTable,
    batch: int,
    *,
    optimizer: str = "sgd",
    dtype: str = "float32",
    param_dtype: str | None = None,
) -> MemoryBreakdown:
    """Training memory of ``table`` at ``batch`` by the formulas of this module.

    ``param_dtype`` defaults to ``dtype``.

    Raises:
      ValueError: ``batch`` not a positive integer, or an unknown ``optimizer``,
        ``dtype`` or ``param_dtype``.
    """
    _check_batch(batch)
    _check_choice("optimizer", optimizer, OPTIMIZER_SLOTS)
    _check_choice("dtype", dtype, DTYPE_BYTES)
    param_dtype = dtype if param_dtype is None else param_dtype
    _check_choice("param_dtype", param_dtype, DTYPE_BYTES)
    d, p = DTYPE_BYTES[dtype], DTYPE_BYTES[param_dtype]
    values = table.total_activations - table.input_activations
    params_bytes = table.total_params * p
    return MemoryBreakdown(
        batch=batch,
        optimizer=optimizer,
        dtype=dtype,
        activations_bytes=2 * batch * values * d,
        params_bytes=params_bytes,
        grads_bytes=params_bytes,
        optimizer_bytes=OPTIMIZER_SLOTS[optimizer] * params_bytes,
        data_bytes=batch * (table.input_activations * d + LABEL_BYTES),
        model=table.name,
        param_dtype=param_dtype,
        activation_values=values,
        input_values=table.input_activations,
        param_count=table.total_params,
    )
