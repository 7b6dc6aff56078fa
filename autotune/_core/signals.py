"""Ctrl-C and SIGTERM for the command.

The command takes both signals over before it imports JAX (a signal raised
inside jaxlib's import can abort the process) and keeps them until it exits.
Where an interrupt is safe and worth its cost, inside `raising()` (a search,
a run for real in a child), a signal becomes a KeyboardInterrupt in the main
thread, which the search turns into what it proved so far. Elsewhere (the
JAX import, finishing and reporting a proven answer, writing files) it is
recorded and the command ends as soon as that step is done. Either way the
command exits with 128 + the signal's number.

Once a search has proven its answer (`answer_proven`), a signal waits until
the next search starts (`search_started`), so that the answer is completed
(its proof hashed, stored, explained) and reported as finished.

Compiles run in worker threads and are never interrupted: raising inside XLA
and then exiting can crash the process. When the command ends with compiles
still in flight, it leaves with `os._exit` after flushing its output,
without unwinding them.

Python swallows an exception raised where it cannot propagate (a garbage
collector callback, a finalizer), printing "Exception ignored": a signal
that lands there would be lost. So the handler also records the signal,
the prober's loop raises it (`raise_if_interrupted`) if it never arrived,
and the swallowed one is not printed.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)
# Set by the handler when it raises; cleared once a KeyboardInterrupt is on its way.
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


@dataclasses.dataclass
class _State:
    """The handlers' state while `as_interrupts` holds them."""

    received: Received
    raising: bool  # a signal raises now
    held: bool = False  # an answer is proven: a signal waits for the next search


_STATE: list[_State] = []  # the innermost `as_interrupts`, if any


def received() -> Received | None:
    """The command's signal record while its handlers are installed, else None."""
    return _STATE[-1].received if _STATE else None


@contextlib.contextmanager
def raising(on: bool = True) -> Iterator[None]:
    """Inside, a signal raises KeyboardInterrupt at once (with `on`), or is
    only recorded (without). A signal recorded before raises on entry."""
    if not _STATE:
        yield
        return
    state = _STATE[-1]
    before = state.raising, state.held
    state.raising, state.held = on, False
    try:
        if on and state.received.signum is not None:
            raise KeyboardInterrupt
        yield
    finally:
        state.raising, state.held = before


def search_started() -> None:
    """A search begins: a signal raises from here on, and one that came while
    the last answer was being completed raises now."""
    if _STATE:
        _STATE[-1].held = False
        if _STATE[-1].raising and _STATE[-1].received.signum is not None:
            raise KeyboardInterrupt


def answer_proven() -> None:
    """The search has proven its answer: a signal waits until the next
    search starts (or the command reports), so the answer is completed."""
    if _STATE:
        _STATE[-1].held = True


@contextlib.contextmanager
def as_interrupts(raise_at_once: bool = True) -> Iterator[Received]:
    """Takes SIGINT and SIGTERM over inside: the first is recorded and, while
    raising (`raise_at_once`, or inside `raising()`), raises KeyboardInterrupt
    in the main thread; later ones are ignored while the command reports."""
    received = Received()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    state = _State(received, raising=raise_at_once)

    def handler(signum: int, frame: Any) -> None:
        if received.signum is None:
            received.signum = signum
            if state.raising and not state.held:
                _UNDELIVERED.set()
                raise KeyboardInterrupt

    previous_hook = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not (_UNDELIVERED.is_set() and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            previous_hook(unraisable)

    before = {s: signal.signal(s, handler) for s in HANDLED}
    sys.unraisablehook = hook
    _STATE.append(state)
    try:
        yield received
    finally:
        _STATE.remove(state)
        _UNDELIVERED.clear()
        sys.unraisablehook = previous_hook
        for s, h in before.items():
            signal.signal(s, h)


_CLEANUPS: list[Callable[[], None]] = []


def at_exit(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` at exit, also when `leave` exits without unwinding
    (which runs no `atexit` handler): temporary folders, worker processes."""
    _CLEANUPS.append(cleanup)
    atexit.register(cleanup)


def leave(status: int, compiles_in_flight: bool) -> None:
    """Exit with `status`; without unwinding if compiles are still running.
    The command's work is done: a signal from here on changes nothing."""
    for s in HANDLED:
        signal.signal(s, signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.flush()
    if compiles_in_flight:
        for cleanup in _CLEANUPS:
            with contextlib.suppress(Exception):
                cleanup()
        os._exit(status)
    sys.exit(status)
