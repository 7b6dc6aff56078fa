"""Ctrl-C and SIGTERM for the command.

Both become a KeyboardInterrupt in the main thread, which the search turns
into what it proved so far. Compiles run in worker threads and are never
interrupted: raising inside XLA and then exiting can crash the process.
When the command ends with compiles still in flight, it leaves with
`os._exit` after flushing its output, without unwinding them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


@dataclasses.dataclass
class Received:
    """The signal that interrupted the command, if one did."""

    signum: int | None = None

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process it ended."""
        return 128 + (self.signum or signal.SIGINT)


@contextlib.contextmanager
def as_interrupts() -> Iterator[Received]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread inside;
    later ones are ignored while the interrupted command reports."""
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        if received.signum is None:
            received.signum = signum
            raise KeyboardInterrupt

    before = {s: signal.signal(s, handler) for s in HANDLED}
    try:
        yield received
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def leave(status: int, compiles_in_flight: bool) -> None:
    """Exit with `status`; without unwinding if compiles are still running."""
    sys.stdout.flush()
    sys.stderr.flush()
    if compiles_in_flight:
        os._exit(status)
    sys.exit(status)
