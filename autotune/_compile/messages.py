"""The framing of the messages between the tuner and its compile workers:
pickles, each after its length in 4 bytes."""

from __future__ import annotations

import pickle
import struct
from typing import Any, BinaryIO

_LENGTH = struct.Struct("<I")


def write_message(out: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message)
    out.write(_LENGTH.pack(len(data)) + data)
    out.flush()


def read_message(inp: BinaryIO) -> Any:
    """The next message; None at the end of the stream."""
    head = inp.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    data = inp.read(length)
    if len(data) < length:
        return None
    return pickle.loads(data)
