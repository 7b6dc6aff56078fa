"""The search against brute force on need curves of every shape."""

import pytest

from autotune._core.errors import TuneError
from autotune._search.need import calibration_batch, search, sequential


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
    """A measure that records every batch compiled, and each round."""

    def __init__(self, need):
        self.need = need
        self.calls = []
        self.rounds = []

    def __call__(self, batches, record):
        self.rounds.append(list(batches))
        for b in batches:
            self.calls.append(b)
            record(b, self.need(b))


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
def test_affine_need_takes_at_most_four_compiles(budget):
    measure = Recorder(affine)
    bracket = search(measure, budget, multiple_of=8, max_batch=65536)
    assert len(measure.calls) <= 4
    assert set(measure.calls[-2:]) == {bracket.lo, bracket.hi}


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
    bracket = search(sequential(affine), 100, multiple_of=8, max_batch=64)
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
    bracket = search(sequential(need), 50_000, multiple_of=8, max_batch=4096)
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
        search(sequential(affine), 10_000, **kwargs)
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
def test_an_exact_estimate_takes_its_guess_and_the_next(budget):
    measure = Recorder(affine)
    bracket = search(
        measure,
        budget,
        multiple_of=8,
        max_batch=65536,
        guess=(budget - 1_000) // 137,
        per_example=137,
        fixed=1_000,
    )
    assert measure.calls == [bracket.lo, bracket.hi]


@pytest.mark.parametrize("error", [0.5, 0.9, 1.1, 2.0])
@pytest.mark.parametrize("fixed_error", [0, 300])
def test_the_first_compile_calibrates_the_estimate(error, fixed_error):
    """The estimate's slope off by up to 2x, its fixed bytes by 30%: the line
    through its fixed bytes and the first compile finds the boundary."""
    measure = Recorder(affine)
    per_example = 137 * error
    fixed = 1_000 + fixed_error
    search(
        measure,
        123_456,
        multiple_of=8,
        max_batch=65536,
        guess=int((123_456 - fixed) / per_example),
        per_example=per_example,
        fixed=fixed,
    )
    assert len(measure.calls) == 3, measure.calls


@pytest.mark.parametrize("error", [0.9, 1.1])
def test_a_close_estimate_without_fixed_bytes_takes_four_compiles(error):
    measure = Recorder(affine)
    search(
        measure,
        123_456,
        multiple_of=8,
        max_batch=65536,
        guess=int(122_456 / (137 * error)),
        per_example=137 * error,
    )
    assert len(measure.calls) <= 4


@pytest.mark.parametrize("need", CURVES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("budget", [5_000, 50_000, 123_456])
@pytest.mark.parametrize("width", [2, 3])
@pytest.mark.parametrize("guess", [None, 100, 900])
def test_rounds_of_several_compiles_are_exact(need, budget, width, guess):
    measure = Recorder(need)
    bracket = search(measure, budget, multiple_of=8, max_batch=4096, guess=guess, width=width)
    assert bracket.lo == brute_force(need, budget, 8, 4096)
    assert all(len(r) <= width for r in measure.rounds)
    assert len(measure.calls) == len(set(measure.calls)), "a batch compiled twice"
    if bracket.hi is not None:
        assert bracket.hi == bracket.lo + 8 and need(bracket.hi) > budget


@pytest.mark.parametrize("budget", [50_000, 123_456])
def test_affine_need_takes_two_rounds_of_two(budget):
    measure = Recorder(affine)
    bracket = search(measure, budget, multiple_of=8, max_batch=65536, width=2)
    assert len(measure.rounds) == 2 and all(len(r) == 2 for r in measure.rounds)
    assert measure.rounds[-1] == [bracket.lo, bracket.hi]


@pytest.mark.parametrize("need", CURVES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("guess", [None, 100, 900])
def test_what_is_prepared_decides_nothing(need, guess):
    plain, told = Recorder(need), Recorder(need)
    prepared = []
    keywords = dict(multiple_of=8, max_batch=4096, guess=guess, width=2)
    bracket = search(plain, 50_000, **keywords)
    assert search(told, 50_000, **keywords, prepare=prepared.append) == bracket
    assert told.rounds == plain.rounds and prepared


def test_the_next_round_is_prepared_while_its_forerunner_compiles():
    budget = affine(360) + 10  # 360 fits, 368 does not
    prepared = []
    measure = Recorder(affine)
    search(
        measure, budget, multiple_of=8, max_batch=4096, guess=200, per_example=137, fixed=1_000,
        width=2, prepare=prepared.append,
    )  # fmt: skip
    assert measure.rounds == [[200, 208], [360, 368]]
    # After 200, with 208 in flight, the estimate's line through 200 puts the
    # boundary at 360; after 360, with 368 in flight and predicted not to fit,
    # the answer would be proven: nothing to prepare.
    assert prepared == [[360, 368], []]


def test_a_round_never_compiles_above_a_batch_known_not_to_fit():
    for need in CURVES:
        measure = Recorder(need)
        search(measure, 80_000, multiple_of=1, max_batch=4096, width=2)
        over = []
        for batches in measure.rounds:
            assert all(b < o for b in batches for o in over), (need.__name__, measure.rounds)
            over += [b for b in batches if need(b) > 80_000]


def failing_at(batches):
    """A need that does not compile at the given batches."""
    return lambda b: None if b in batches else affine(b)


@pytest.mark.parametrize("width", [1, 2])
@pytest.mark.parametrize("broken", [{360}, {368}, {360, 368}, {8, 16}])
def test_batches_that_do_not_compile_are_searched_around(width, broken):
    budget = affine(360) + 10  # 360 fits, 368 does not
    bracket = search(
        sequential(failing_at(broken)), budget, multiple_of=8, max_batch=4096, width=width
    )
    usable = [b for b in range(8, 4097, 8) if b not in broken and affine(b) <= budget]
    assert bracket.lo == max(usable)
    assert set(bracket.failed) <= broken
    assert all(b in bracket.failed for b in range(bracket.lo + 8, bracket.hi, 8))
    assert affine(bracket.hi) > budget and bracket.hi not in broken


def test_a_step_that_never_compiles_stops_after_max_failures():
    measure = Recorder(lambda b: None)
    bracket = search(measure, 10**6, multiple_of=8, max_batch=4096, max_failures=4, width=2)
    assert (bracket.lo, bracket.hi) == (None, None)
    assert len(bracket.failed) == len(measure.calls) == 4


def non_monotone(b):
    """Need that falls above 300, as when a compiler rematerializes by itself."""
    return affine(b) if b < 300 else affine(b) - 60_000


def test_need_that_falls_is_reported():
    measure = Recorder(non_monotone)
    bracket = search(measure, 30_000, multiple_of=8, max_batch=4096, guess=296, width=2)
    assert measure.rounds[0] == [296, 304]
    assert (296, 304) in bracket.contradictions
    for a, b in bracket.contradictions:
        assert a < b and non_monotone(a) > non_monotone(b)
    assert not search(Recorder(affine), 50_000, width=2).contradictions


def test_interrupt_mid_round_keeps_the_compiles_that_ended():
    def measure(batches, record):
        record(batches[0], affine(batches[0]))
        raise KeyboardInterrupt

    bracket = search(measure, 50_000, multiple_of=8, max_batch=4096, width=2)
    assert bracket.interrupted and bracket.lo == 8


def test_bad_width():
    with pytest.raises(TuneError, match=r"`width` \(=0\) must be a positive integer"):
        search(sequential(affine), 10_000, width=0)


def test_an_exact_split_takes_one_compile_and_the_proven_pair():
    measure = Recorder(affine)
    bracket = search(measure, 50_000, multiple_of=8, max_batch=65536, split=lambda b: 1_000)
    assert measure.rounds == [[88], [bracket.lo], [bracket.hi]]
    assert bracket.lo == brute_force(affine, 50_000, 8, 65536)


@pytest.mark.parametrize("need", CURVES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("budget", [5_000, 50_000, 123_456])
@pytest.mark.parametrize("fixed", [None, 0, 900, 1_000, 1_100, 10**9])
@pytest.mark.parametrize("width", [1, 2])
def test_exact_whatever_the_split(need, budget, fixed, width):
    """A split of any quality places compiles; it never changes the answer."""
    measure = Recorder(need)
    bracket = search(
        measure, budget, multiple_of=8, max_batch=4096, split=lambda b: fixed, width=width
    )
    assert bracket.lo == brute_force(need, budget, 8, 4096)
    assert len(measure.calls) == len(set(measure.calls)), "a batch compiled twice"
    if bracket.hi is not None:
        assert bracket.hi == bracket.lo + 8 and need(bracket.hi) > budget


@pytest.mark.parametrize("need", CURVES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("budget", [5_000, 50_000, 123_456])
@pytest.mark.parametrize("room", [None, 50, 400, 3_000, 10**9])
@pytest.mark.parametrize("width", [1, 2])
def test_exact_wherever_the_first_compile(need, budget, room, width):
    """The room places the first compile, above the answer or below it; it
    never changes the answer."""
    measure = Recorder(need)
    bracket = search(
        measure, budget, multiple_of=8, max_batch=4096, split=lambda b: 1_000, room=room,
        width=width,
    )  # fmt: skip
    assert measure.calls[0] == calibration_batch(8, 4096, room)
    assert bracket.lo == brute_force(need, budget, 8, 4096)
    assert len(measure.calls) == len(set(measure.calls)), "a batch compiled twice"


def test_the_width_is_asked_before_each_round():
    widths = iter([1, 2, 2, 2, 2, 2])
    measure = Recorder(affine)
    bracket = search(
        measure, 50_000, multiple_of=8, max_batch=65536, split=lambda b: 1_000,
        width=lambda: next(widths),
    )  # fmt: skip
    assert measure.rounds == [[88], [bracket.lo, bracket.hi]]


def test_a_bad_width_from_a_callable():
    with pytest.raises(TuneError, match=r"`width` \(=0\) must be a positive integer"):
        search(sequential(affine), 10_000, width=lambda: 0)


def staircase(b):
    """Need padded to the next power of two, as a step that pads its batch."""
    return 1_000 + 137 * (1 << (b - 1).bit_length())


@pytest.mark.parametrize("budget", [50_000, 123_456, 300_000, 600_000])
@pytest.mark.parametrize("split", [None, lambda b: 1_000])
def test_a_staircase_is_halved_not_crawled(budget, split):
    measure = Recorder(staircase)
    bracket = search(measure, budget, multiple_of=8, max_batch=4096, split=split)
    assert bracket.lo == brute_force(staircase, budget, 8, 4096)
    assert len(measure.calls) <= 16, measure.calls  # 512 candidates: 9 halvings


def test_an_affine_need_takes_three_compiles_at_any_budget():
    for budget in range(20_000, 300_000, 7_919):
        measure = Recorder(affine)
        search(measure, budget, multiple_of=8, max_batch=4096, split=lambda b: 1_000)
        assert len(measure.calls) == 3, (budget, measure.calls)


@pytest.mark.parametrize("budget", [50_000, 123_456, 300_000])
def test_fits_on_one_stair_double_the_batch_not_jump_to_the_top(budget):
    """Two fits that need the same give no line: the next compile is at
    twice the larger, not at the largest candidate (a compile there may
    take minutes on a real step)."""
    measure = Recorder(staircase)
    bracket = search(measure, budget, multiple_of=8, max_batch=65536)
    assert bracket.lo == brute_force(staircase, budget, 8, 65536)
    assert max(measure.calls) <= 2 * bracket.hi, measure.calls


def u_shaped(b):
    """Need that falls, then rises: the smallest candidate alone does not fit."""
    return 100_000 if b == 8 else 1_000 + 100 * b


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_a_refusal_at_the_smallest_candidate_is_checked_against_a_larger_one(width):
    measure = Recorder(u_shaped)
    bracket = search(measure, 50_000, multiple_of=8, max_batch=4096, width=width)
    assert (bracket.lo, bracket.hi) == (488, 496)  # every batch from 16 to 488 fits
    assert bracket.contradictions[0][0] == 8  # need fell above it
    assert len(measure.calls) == len(set(measure.calls))


def dips(b):
    """Multiples of 256 tile better: their need lies on a lower line."""
    return 1_000 + (60 if b % 256 == 0 else 100) * b


def test_where_need_falls_the_search_looks_above_its_proven_pair():
    measure = Recorder(dips)
    bracket = search(measure, 2_000_000, multiple_of=8, max_batch=65536, guess=19712)
    assert bracket.lo == brute_force(dips, 2_000_000, 8, 65536) == 33280
    assert bracket.hi == 33288 and dips(33288) > 2_000_000
    assert bracket.contradictions  # not exact: reported as such
    assert len(measure.calls) == len(set(measure.calls))


def dips_and_wiggles(b):
    """Dips on the multiples of 512, and odd multiples of 8 a little below the
    multiple of 16 before them: falls on the candidates' own grid too."""
    return 1_000 + (60 if b % 512 == 0 else 100) * b - (1_000 if b % 16 == 8 else 0)


@pytest.mark.parametrize("guess", [18936, 19448, 26104])
def test_dips_on_a_coarse_grid_are_found_beside_falls_on_the_candidates(guess):
    measure = Recorder(dips_and_wiggles)
    bracket = search(measure, 2_000_000, multiple_of=8, max_batch=65536, guess=guess, width=2)
    assert bracket.lo == brute_force(dips_and_wiggles, 2_000_000, 8, 65536) == 33280
    assert dips_and_wiggles(bracket.hi) > 2_000_000 and bracket.hi == bracket.lo + 8
    assert bracket.contradictions
    assert len(measure.calls) == len(set(measure.calls))
