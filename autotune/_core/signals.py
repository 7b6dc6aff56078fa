"""Ctrl-C and SIGTERM for the command.

Both become a KeyboardInterrupt in the main thread, which the search turns
into what it proved so far. Compiles run in worker threads and are never
interrupted: raising inside XLA and then exiting can crash the process.
When the command ends with compiles still in flight, it leaves with
`os._exit` after flushing its output, without unwinding them.

Python swallows an exception raised where it cannot propagate (a garbage
collector callback, a finalizer), printing "Exception ignored": a signal
that lands there would be lost. So the handler also records the signal,
the prober's loop raises it (`raise_if_interrupted`) if it never arrived,
and the swallowed one is not printed.
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
# Set by the handler; cleared once a KeyboardInterrupt is on its way.
_UNDELIVERED = threading.Event()


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt of a signal whose own raise was swallowed."""
    if _UNDELIVERED.is_set():
        _UNDELIVERED.clear()
        raise KeyboardInterrupt


def delivered() -> None:
    """A KeyboardInterrupt is propagating: nothing is left to raise."""
    _UNDELIVERED.clear()


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
            _UNDELIVERED.set()
            raise KeyboardInterrupt

    previous_hook = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not (_UNDELIVERED.is_set() and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            previous_hook(unraisable)

    before = {s: signal.signal(s, handler) for s in HANDLED}
    sys.unraisablehook = hook
    try:
        yield received
    finally:
        _UNDELIVERED.clear()
        sys.unraisablehook = previous_hook
        for s, h in before.items():
            signal.signal(s, h)


def leave(status: int, compiles_in_flight: bool) -> None:
    """Exit with `status`; without unwinding if compiles are still running.
    The command's work is done: a signal from here on changes nothing."""
    for s in HANDLED:
        signal.signal(s, signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.flush()
    if compiles_in_flight:
        os._exit(status)
    sys.exit(status)
