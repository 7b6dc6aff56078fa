"""The command's live line: on a terminal, a compile that runs for more than
a few seconds shows its batch and the time it has taken so far, redrawn in
place, until its verdict's line takes the place of it.

Where stderr is not a terminal nothing is drawn, and the progress lines are
printed as they come, as before.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO

# Seconds a compile runs before the line shows it, and between redraws.
SHOW_AFTER_S = 3.0
REDRAW_S = 1.0
_CLEAR = "\r\033[K"

Running = Callable[[], "list[tuple[int, float]]"]


def compiles_now() -> list[tuple[int, float]]:
    """The prober's compiles running now; none before it is imported (the
    command imports JAX only once it searches)."""
    prober = sys.modules.get("autotune._compile.prober")
    return [] if prober is None else prober.compiles_now()


class LiveLine:
    """Progress lines to `stream()` (asked at each write: a test may swap
    stderr), and the live line between them.

    `running` gives (batch, seconds so far) of the compiles running now,
    the longest first (`autotune._compile.prober.compiles_now`).
    """

    def __init__(self, stream: Callable[[], TextIO], running: Running = compiles_now):
        self._streams, self._running = stream, running
        self._lock = threading.Lock()
        self._shown = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _stream(self) -> TextIO:
        return self._streams()

    @property
    def on_terminal(self) -> bool:
        try:
            return self._stream.isatty()
        except (AttributeError, ValueError):  # a closed or odd stream
            return False

    def print(self, text: str) -> None:
        """A progress line, in place of the live line if one is shown."""
        with self._lock:
            self._stream.write((_CLEAR if self._shown else "") + text + "\n")
            self._stream.flush()
            self._shown = False

    def tick(self) -> None:
        """Draw the live line once, for the compile running longest."""
        if not self.on_terminal:
            return
        running = [(b, s) for b, s in self._running() if s >= SHOW_AFTER_S]
        with self._lock:
            if not running:
                self._clear()
                return
            batch, seconds = running[0]
            more = f" (and {len(running) - 1} more)" if len(running) > 1 else ""
            self._stream.write(f"{_CLEAR}  compiling batch {batch:>6}: {seconds:.0f} s{more}")
            self._stream.flush()
            self._shown = True

    def __enter__(self) -> LiveLine:
        if self.on_terminal:
            self._thread = threading.Thread(target=self._run, daemon=True, name="autotune-live")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        """Erase the live line, if shown; the lock held."""
        if self._shown:
            self._stream.write(_CLEAR)
            self._stream.flush()
            self._shown = False

    def _run(self) -> None:
        while not self._stop.wait(REDRAW_S):
            self.tick()


# The command's: its progress lines go to stderr through it.
LINE = LiveLine(lambda: sys.stderr)
