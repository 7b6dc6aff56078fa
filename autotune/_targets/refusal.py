"""A compile refused because the program does not fit the device's HBM.

The TPU compiler fits a program into HBM itself and refuses one that cannot
fit, with RESOURCE_EXHAUSTED and one of two messages (libtpu 0.0.42.1):

- before placing buffers: "Ran out of memory on HBM, the total memory
  required for HLO temporaries (16.62G) exceeds available HBM (15.75G)."
- after: "Ran out of memory in memory space hbm. Used 15.75G of 15.75G hbm.
  Exceeded hbm capacity by 512B." and a breakdown.

Sizes there are binary (G = GiB) and rounded as printed; the compiler counts
the program's own code with its buffers. A refusal for another memory space
(VMEM) is not a verdict on the batch and is not parsed.
"""

from __future__ import annotations

import dataclasses
import re

_UNITS = {"B": 0, "K": 10, "M": 20, "G": 30, "T": 40}
_SIZE = r"([\d.]+)([BKMGT])"
_BEFORE = re.compile(
    rf"Ran out of memory on HBM, the total memory required for HLO temporaries "
    rf"\({_SIZE}\) exceeds available HBM \({_SIZE}\)"
)
_AFTER = re.compile(
    rf"Ran out of memory in memory space hbm\. Used {_SIZE} of {_SIZE} hbm\. "
    rf"Exceeded hbm capacity by {_SIZE}\."
)


@dataclasses.dataclass(frozen=True)
class HbmRefusal:
    """What the compiler said a refused program needed and had, in bytes."""

    required_bytes: int
    available_bytes: int


def hbm_refusal(error: BaseException) -> HbmRefusal | None:
    """The refusal `error` reports; None if it is not an HBM refusal."""
    text = str(error)
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    before = _BEFORE.search(text)
    if before:
        required, available = _size(*before.group(1, 2)), _size(*before.group(3, 4))
        return HbmRefusal(required, available)
    after = _AFTER.search(text)
    if after:
        available, exceeded = _size(*after.group(3, 4)), _size(*after.group(5, 6))
        return HbmRefusal(available + exceeded, available)
    return None


def _size(number: str, unit: str) -> int:
    return round(float(number) * (1 << _UNITS[unit]))
