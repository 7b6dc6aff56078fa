"""The search against brute force on need curves of every shape."""

import pytest

from autotune._errors import TuneError
from autotune._search import search


def affine(b):
    return 1_000 + 137 * b


def convex(b):
    return 1_000 + 10 * b + b * b


def flattening(b):
    """Like XLA's remat pass: the slope drops near a limit."""
    return affine(b) if b < 300 else affine(300) + 5 * (b - 300)


def jump(b):
    """A step in need, as when a different algorithm is picked."""
    return 1_000 + 100 * b + (50_000 if b >= 500 else 0)


CURVES = [affine, convex, flattening, jump]


def brute_force(need, budget, m, top):
    return max((b for b in range(m, top + 1, m) if need(b) <= budget), default=None)


class Recorder:
    def __init__(self, need):
        self.need = need
        self.calls = []

    def __call__(self, b):
        self.calls.append(b)
        return self.need(b)


@pytest.mark.parametrize("need", CURVES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("budget", [5_000, 50_000, 80_000, 123_456])
@pytest.mark.parametrize("multiple_of", [1, 8])
def test_exact_against_brute_force(need, budget, multiple_of):
    measure = Recorder(need)
    bracket = search(measure, budget, multiple_of=multiple_of, max_batch=4096, guess=budget // 140)
    assert bracket.lo == brute_force(need, budget, multiple_of, 4096)
    if bracket.hi is not None:
        assert bracket.hi == bracket.lo + multiple_of
        assert need(bracket.hi) > budget
    assert len(measure.calls) == len(set(measure.calls)), "a batch compiled twice"


@pytest.mark.parametrize("budget", [5_000, 50_000, 123_456])
def test_affine_need_takes_four_compiles(budget):
    measure = Recorder(affine)
    bracket = search(measure, budget, multiple_of=8, max_batch=65536)
    assert len(measure.calls) == 4
    assert measure.calls[-2:] == [bracket.lo, bracket.hi]


def test_never_compiles_above_a_batch_known_not_to_fit():
    for need in CURVES:
        measure = Recorder(need)
        search(measure, 80_000, multiple_of=1, max_batch=4096)
        failed = []
        for b in measure.calls:
            assert all(b < f for f in failed), (need.__name__, measure.calls)
            if need(b) > 80_000:
                failed.append(b)


def test_smallest_candidate_does_not_fit():
    bracket = search(affine, 100, multiple_of=8, max_batch=64)
    assert bracket.lo is None and bracket.hi == 8


def test_everything_fits_up_to_max_batch():
    measure = Recorder(affine)
    bracket = search(measure, 10**12, multiple_of=8, max_batch=100)
    assert (bracket.lo, bracket.hi) == (96, None)
    assert len(measure.calls) <= 3


def test_interrupt_returns_what_was_proven():
    def need(b):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(b)
        return convex(b)

    calls = []
    bracket = search(need, 50_000, multiple_of=8, max_batch=4096)
    assert bracket.interrupted
    assert bracket.lo == max(b for b in calls if convex(b) <= 50_000)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(multiple_of=0), "`multiple_of` (=0) must be a positive integer"),
        (dict(multiple_of=2.5), "`multiple_of` (=2.5) must be a positive integer"),
        (dict(max_batch=-1), "`max_batch` (=-1) must be a positive integer"),
        (
            dict(multiple_of=16, max_batch=8),
            "`max_batch` (=8) must be at least `multiple_of` (=16)",
        ),
    ],
)
def test_bad_grid(kwargs, message):
    with pytest.raises(TuneError) as e:
        search(affine, 10_000, **kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("need", CURVES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("error", [0.125, 0.9, 1.0, 1.1, 8.0])
@pytest.mark.parametrize("budget", [50_000, 123_456])
def test_exact_whatever_the_estimate(need, error, budget):
    """An estimate of any quality places compiles; it never changes the answer."""
    per_example = 137 * error
    guess = int((budget - 1_000) / per_example)
    measure = Recorder(need)
    bracket = search(
        measure, budget, multiple_of=8, max_batch=4096, guess=guess, per_example=per_example
    )
    assert bracket.lo == brute_force(need, budget, 8, 4096)
    assert len(measure.calls) == len(set(measure.calls))


@pytest.mark.parametrize("budget", [50_000, 123_456])
def test_an_exact_estimate_saves_the_smallest_compile(budget):
    measure = Recorder(affine)
    bracket = search(
        measure,
        budget,
        multiple_of=8,
        max_batch=65536,
        guess=(budget - 1_000) // 137,
        per_example=137,
    )
    assert len(measure.calls) == 3
    assert measure.calls[-2:] == [bracket.lo, bracket.hi]


@pytest.mark.parametrize("error", [0.9, 1.1])
def test_a_close_estimate_takes_four_compiles(error):
    measure = Recorder(affine)
    search(
        measure,
        123_456,
        multiple_of=8,
        max_batch=65536,
        guess=int(122_456 / (137 * error)),
        per_example=137 * error,
    )
    assert len(measure.calls) == 4
