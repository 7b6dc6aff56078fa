"""The peak of a compiled step, buffer by buffer: the records, apart from the
dump readers that make them (`autotune._explain.peak`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class PeakEntry:
    """One buffer live at the peak (or, kind "rest", everything not listed)."""

    bytes: int
    shape: tuple[int, ...]
    dtype: str
    kind: str
    op_name: str  # XLA's metadata op name; an argument's is its path
    source: str | None  # "file:line" of the user's code, where the metadata has one
    module: str = ""  # the model's module path the buffer belongs to, "" if none is named

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PeakEntry:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        return cls(**{**values, "shape": tuple(values.get("shape", ()))})


@dataclasses.dataclass(frozen=True)
class PeakBreakdown:
    """The buffers live at a compiled step's peak, largest first.

    `entries` sum to `peak_bytes` (the compiled need); the last one, kind
    "rest", holds the buffers too small to list. `unused_bytes` are the
    arena bytes free at the peak (an entry of kind "arena_free").
    `bytes_by_kind` and `bytes_by_module` count every buffer, listed or not.
    `unavailable` gives the reason when XLA's dump could not be read;
    `entries` is then empty.
    """

    batch: int
    peak_bytes: int
    entries: tuple[PeakEntry, ...]
    obtained: str  # which compile the dump came from
    seconds: float  # what the breakdown cost beyond the search
    peak_step: str = ""  # where in the schedule the peak is
    unused_bytes: int = 0
    bytes_by_kind: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # module -> kind -> bytes, for the values the step computes (not its arguments)
    bytes_by_module: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    unavailable: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["entries"] = [e.to_dict() for e in self.entries]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PeakBreakdown:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["entries"] = tuple(PeakEntry.from_dict(e) for e in data.get("entries", ()))
        return cls(**values)


def breakdown_to_row(breakdown: PeakBreakdown | None) -> dict[str, Any]:
    """A report row's fields for `breakdown`: none when it was not asked for.

    `peak_breakdown` is the list of entries (None when unavailable);
    `peak_breakdown_info` the rest of the breakdown.
    """
    if breakdown is None:
        return {}
    info = breakdown.to_dict()
    entries = info.pop("entries")
    for key in ("batch", "peak_bytes"):
        del info[key]
    return {
        "peak_breakdown": None if breakdown.unavailable else entries,
        "peak_breakdown_info": info,
    }


def unavailable(batch: int, peak_bytes: int, reason: str, obtained: str = "") -> PeakBreakdown:
    """A breakdown that lists nothing, and says why."""
    return PeakBreakdown(batch, peak_bytes, (), obtained, 0.0, unavailable=reason)
