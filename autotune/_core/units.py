"""Human-readable sizes in the style of cs231n's VGGNet memory table.

Bytes use binary steps labelled as the seed labels them: ``KB = 1024 B``,
``MB = 1024**2 B``, ``GB = 1024**3 B``, ``TB = 1024**4 B``.
"""

from __future__ import annotations

_BYTE_UNITS = ("B", "KB", "MB", "GB", "TB")


def format_bytes(n: int) -> str:
    """Formats a byte count with 1024 steps.

    Below 1 KB the count is printed as an integer ("512 B"); above, with one
    decimal in the largest unit whose rounded value stays below 1024
    ("3.2 KB", "93.0 MB", "1.2 GB"). Negative counts keep their sign.
    """
    if n < 0:
        return "-" + format_bytes(-n)
    if n < 1024:
        return f"{int(n)} B"
    power = 1
    while power < len(_BYTE_UNITS) - 1 and round(n / 1024**power, 1) >= 1024:
        power += 1
    return f"{n / 1024**power:.1f} {_BYTE_UNITS[power]}"


_PARSE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1024,
    "MB": 1024**2,
    "GB": 1024**3,
    "TB": 1024**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}


def parse_bytes(name: str, text: str) -> int:
    """Bytes from "32212254720", "30GB" or "1.5 GiB" (KB = 1024 B, as printed)."""
    value = str(text).strip().upper().replace(",", "").replace("_", "")
    number = value.rstrip("KMGTIB ")
    unit = value[len(number) :].strip()
    try:
        result = float(number) * _PARSE_UNITS[unit]
    except (ValueError, KeyError):
        raise ValueError(
            f"`{name}` (={text!r}) must be a byte count such as 32212254720, 30GB or 1.5GiB"
        ) from None
    if result < 0 or result != result or result == float("inf"):
        raise ValueError(f"`{name}` (={text!r}) must be a non-negative byte count")
    if 0 < result < 1:
        raise ValueError(
            f"`{name}` (={text!r}) is {result:g} B, less than one byte: give a byte "
            "count such as 32212254720, 30GB or 1.5GiB"
        )
    return int(result)
