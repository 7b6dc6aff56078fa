"""The command's live line: a long compile's batch and seconds on a terminal,
replaced by its verdict; nothing drawn where stderr is not a terminal."""

import io
import threading

from autotune._command import live
from autotune._compile.prober import compiles_now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_long_compile_is_shown_and_its_verdict_takes_its_place():
    stream, running = Terminal(), []
    line = live.LiveLine(lambda: stream, lambda: running)
    running[:] = [(256, 1.0)]
    line.tick()
    assert stream.getvalue() == "", "a compile under a few seconds is not shown"
    running[:] = [(256, 12.4), (264, 3.5)]
    line.tick()
    assert stream.getvalue().endswith("compiling batch    256: 12 s (and 1 more)")
    line.print("  compiled batch    256: needs   14.5 GB  (108.8 s)")
    assert stream.getvalue().endswith(
        "\r\033[K  compiled batch    256: needs   14.5 GB  (108.8 s)\n"
    )
    running[:] = []
    line.tick()
    line.print("next")
    assert stream.getvalue().endswith("(108.8 s)\nnext\n"), "no live line left to clear"


def test_off_a_terminal_only_the_progress_lines_are_printed():
    stream = io.StringIO()
    line = live.LiveLine(lambda: stream, lambda: [(256, 99.0)])
    with line:
        line.tick()
        line.print("  refused  batch    264")
    assert stream.getvalue() == "  refused  batch    264\n"


def test_the_line_is_cleared_when_the_search_ends(monkeypatch):
    monkeypatch.setattr(live, "REDRAW_S", 0.01)
    stream = Terminal()
    with live.LiveLine(lambda: stream, lambda: [(512, 30.0)]):
        threading.Event().wait(0.1)
    assert "compiling batch    512: 30 s" in stream.getvalue()
    assert stream.getvalue().endswith("\r\033[K")


def test_the_prober_says_which_batches_compile_now():
    from autotune._compile.prober import _IN_FLIGHT

    assert compiles_now() == []
    with _IN_FLIGHT(128):
        with _IN_FLIGHT(136):
            (first, _), (second, seconds) = compiles_now()
            assert {first, second} == {128, 136} and seconds >= 0
    assert compiles_now() == []


def test_a_compile_in_flight_is_known_by_its_batch(monkeypatch):
    from steps import mlp_args, mlp_step

    from autotune._compile.prober import Prober

    seen = []
    real = Prober._compile_lowered

    def spy(self, lowered, batch, dump):
        seen.append([b for b, _ in compiles_now()])
        return real(self, lowered, batch, dump)

    monkeypatch.setattr(Prober, "_compile_lowered", spy)
    Prober(mlp_step, mlp_args)(24)
    assert seen == [[24]] and compiles_now() == []
