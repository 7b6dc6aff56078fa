"""The framing of the messages between the tuner and its compile workers:
pickles, each after its length in 4 bytes."""

from __future__ import annotations

import pickle
import struct
from typing import Any, BinaryIO

_LENGTH = struct.Struct("<I")


def write_message(out: BinaryIO, message: Any) -> None:
    body = pickle.dumps(message)
    data = memoryview(_LENGTH.pack(len(body)) + body)
    while data:  # an unbuffered stream may take part of it
        written = out.write(data)
        data = data[written if written is not None else len(data) :]
    out.flush()


def read_message(inp: BinaryIO) -> Any:
    """The next message; None at the end of the stream.

    The tuner reads unbuffered pipes, so that `select` on them sees every
    message not yet read: a buffered reader may hold the next one unseen."""
    head = _read_exactly(inp, _LENGTH.size)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    data = _read_exactly(inp, length)
    return None if data is None else pickle.loads(data)


def _read_exactly(inp: BinaryIO, size: int) -> bytes | None:
    parts, left = [], size
    while left:
        part = inp.read(left)
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
