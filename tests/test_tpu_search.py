"""The TPU search (fits = compiles) against compilers whose need is not monotone.

No JAX here: a compiler is a function batch -> (compiled, bytes).
"""

import random
from types import SimpleNamespace

import pytest

from autotune._core.errors import TuneError
from autotune._search.compiles import FITS, PLACED, REFUSED, search_compiles, search_placed
from autotune._search.drivers import BY_COMPILES, Grid

CAPACITY = 100_000


class Compiler:
    """A fake compiler: `fits(batch)` decides, `size(batch)` is the bytes it reports."""

    def __init__(self, fits, size):
        self.fits, self.size = fits, size
        self.calls = []

    def __call__(self, batch):
        self.calls.append(batch)
        return self.fits(batch), self.size(batch)


def wiggly(seed):
    """need(batch) affine within +-20%, differently at every batch: not monotone."""
    rng = random.Random(seed)
    fixed, slope = rng.randint(1_000, 20_000), rng.uniform(5, 300)
    salt = rng.randrange(1 << 30)

    def need(b):
        noise = ((b * 2_654_435_761 + salt) % 1_000) / 1_000 - 0.5
        return int((fixed + slope * b) * (1 + 0.4 * noise))

    return need


def check_proof(compiler, bracket, multiple_of):
    """The answer compiled, the next candidate was refused, nothing compiled twice,
    and nothing at or above a refused batch was compiled."""
    assert len(compiler.calls) == len(set(compiler.calls)), "a batch compiled twice"
    if bracket.lo is not None:
        assert compiler.fits(bracket.lo) and bracket.lo in compiler.calls
    if bracket.hi is not None:
        assert not compiler.fits(bracket.hi) and bracket.hi in compiler.calls
        assert bracket.lo is None or bracket.hi == bracket.lo + multiple_of
    for i, b in enumerate(compiler.calls):
        refused_before = [r for r in compiler.calls[:i] if not compiler.fits(r)]
        assert all(b < r for r in refused_before), f"compiled {b} after {refused_before} refused"


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("multiple_of", [1, 8])
def test_non_monotone_need_answer_compiles_and_next_is_refused(seed, multiple_of):
    need = wiggly(seed)
    compiler = Compiler(lambda b: need(b) <= CAPACITY, need)
    rng = random.Random(seed)
    guess = rng.choice([None, 50, 500, 5_000])
    bracket = search_compiles(
        compiler,
        CAPACITY,
        multiple_of=multiple_of,
        max_batch=20_000,
        guess=guess,
        per_example=rng.uniform(5, 300) if guess else None,
    )
    check_proof(compiler, bracket, multiple_of)
    if bracket.hi is None:  # no refusal: capped at the largest candidate
        assert bracket.lo == 20_000 // multiple_of * multiple_of


def test_non_monotone_compiles_a_bracket_never_an_average():
    """Fits below 400 and again in [800, 900): the answer is a proven boundary."""
    compiler = Compiler(lambda b: b < 400 or 800 <= b < 900, lambda b: 100 * b)
    bracket = search_compiles(compiler, 40_000, multiple_of=8, max_batch=2_000)
    check_proof(compiler, bracket, 8)
    assert (bracket.lo, bracket.hi) == (392, 400)


def test_refusals_that_report_less_than_the_fits_still_converge():
    """A refused batch's reported bytes may be below a fitting one's (the
    compiler counts differently near its limit): the search bisects."""
    compiler = Compiler(lambda b: b <= 4_864, lambda b: 1_000 + 260 * b if b <= 4_864 else 2_000)
    bracket = search_compiles(compiler, 2_097_152, multiple_of=8, max_batch=65_536)
    check_proof(compiler, bracket, 8)
    assert (bracket.lo, bracket.hi) == (4_864, 4_872)
    assert len(compiler.calls) <= 16


@pytest.mark.parametrize("capacity", range(20_000, 2_000_000, 99_991))
def test_affine_compiler_takes_four_compiles(capacity):
    def need(b):
        return 5_000 + 97 * b

    compiler = Compiler(lambda b: need(b) <= capacity, need)
    bracket = search_compiles(compiler, capacity, multiple_of=8, max_batch=65_536)
    check_proof(compiler, bracket, 8)
    assert bracket.lo == (capacity - 5_000) // 97 // 8 * 8
    assert len(compiler.calls) == 4, compiler.calls


def test_smallest_candidate_refused():
    compiler = Compiler(lambda b: False, lambda b: 10**9)
    bracket = search_compiles(compiler, CAPACITY, multiple_of=8)
    assert (bracket.lo, bracket.hi) == (None, 8) and compiler.calls == [8]


def test_everything_compiles_up_to_max_batch():
    compiler = Compiler(lambda b: True, lambda b: b)
    bracket = search_compiles(compiler, CAPACITY, multiple_of=8, max_batch=1_000)
    assert (bracket.lo, bracket.hi) == (1_000, None)
    assert len(compiler.calls) <= 12


def test_interrupt_returns_what_was_proven():
    def fits(b):
        if b > 1_000:
            raise KeyboardInterrupt
        return True

    bracket = search_compiles(Compiler(fits, lambda b: 10 * b), CAPACITY, multiple_of=8)
    assert bracket.interrupted and bracket.lo is not None and bracket.hi is None


def test_bad_grid():
    with pytest.raises(TuneError, match=r"`multiple_of` \(=0\)"):
        search_compiles(Compiler(lambda b: True, lambda b: b), CAPACITY, multiple_of=0)


class FailingCompiler(Compiler):
    """A fake compiler whose compiles fail, for a reason other than memory, at `broken`."""

    def __init__(self, fits, size, broken):
        super().__init__(fits, size)
        self.broken = set(broken)

    def __call__(self, batch):
        self.calls.append(batch)
        return None if batch in self.broken else (self.fits(batch), self.size(batch))


@pytest.mark.parametrize("guess", [None, 400, 1_000])
@pytest.mark.parametrize("broken", [{392}, {392, 400}, {8}, {8, 16, 24}, {200, 392, 480}])
def test_a_compile_that_fails_is_one_candidate_left_out(guess, broken):
    fits = [b for b in range(8, 2_001, 8) if b < 400 and b not in broken]
    compiler = FailingCompiler(lambda b: b < 400, lambda b: 100 * b, broken)
    bracket = search_compiles(
        compiler, 40_000, multiple_of=8, max_batch=2_000, guess=guess,
        per_example=100 if guess else None,
    )  # fmt: skip
    assert bracket.lo == max(fits) and bracket.hi == 400 + 8 * (400 in broken)
    assert set(bracket.failed) <= broken and set(range(bracket.lo + 8, bracket.hi, 8)) <= broken
    assert len(compiler.calls) == len(set(compiler.calls)), "a batch compiled twice"
    for i, b in enumerate(compiler.calls):
        refused_before = [r for r in compiler.calls[:i] if r not in broken and r >= 400]
        assert all(b < r for r in refused_before), f"compiled {b} after {refused_before} refused"


def test_compiles_that_keep_failing_stop_the_search():
    compiler = FailingCompiler(lambda b: True, lambda b: b, range(8, 2_001, 8))
    bracket = search_compiles(compiler, CAPACITY, multiple_of=8, max_batch=2_000, max_failures=4)
    assert (bracket.lo, bracket.hi) == (None, None) and len(bracket.failed) == 4


class FakeProber:
    """A prober as the TPU driver uses one: `measure` records each batch's
    probe, or its failure, for a compiler that fits below 400."""

    places = False  # probes compile in full

    def __init__(self, broken):
        self.broken, self.probes, self.failures = set(broken), {}, {}

    def measure(self, batches, record):
        for b in batches:
            if b in self.broken:
                self.failures[b] = "INTERNAL: Couldn't find output tile sizes"
            else:
                self.probes[b] = SimpleNamespace(
                    refused=b >= 400, placed=False, need_bytes=100 * b, code_bytes=0
                )
            record(b, None if b in self.broken else 100 * b)


def test_a_tpu_compile_that_fails_is_recorded_and_the_search_goes_on():
    prober = FakeProber({392})
    bracket = BY_COMPILES.run(prober, 40_000, Grid(8, 2_000))
    assert (bracket.lo, bracket.hi, bracket.failed) == (384, 400, (392,))
    assert set(prober.failures) == {392}


def test_the_jump_after_a_refused_guess_stays_below_it():
    """The guess refused and its quarter compiled: the line from the quarter
    (a per-example estimate far too small) may not reach past the guess."""
    compiler = Compiler(lambda b: b <= 400, lambda b: 100 * b)
    bracket = search_compiles(compiler, CAPACITY, multiple_of=8, guess=1_000, per_example=10)
    check_proof(compiler, bracket, 8)
    assert compiler.calls[:3] == [1_000, 248, 992]


class Placer:
    """A fake TPU compiler with probes stopped at buffer assignment: a batch's
    buffers take `placed(b)` bytes, its code `code` more. Past the capacity
    the buffers alone are refused at once; within it, they are placed (a
    verdict), and a full compile refuses them if the code does not fit too."""

    def __init__(self, placed, code, capacity, digits=None):
        self.placed, self.code, self.capacity = placed, code, capacity
        self.digits = digits  # a refusal's excess, to so many significant digits
        self.calls = []

    def fits(self, b):
        return self.placed(b) + self.code <= self.capacity

    def place(self, b):
        self.calls.append(("place", b))
        size = self.placed(b)
        return (REFUSED, size + self.code) if size > self.capacity else (PLACED, size)

    def prove(self, b):
        self.calls.append(("prove", b))
        size = self.placed(b) + self.code
        if size <= self.capacity:
            return FITS, size
        excess = size - self.capacity
        if self.digits is not None:
            excess = float(f"{excess:.{self.digits}g}")
        return REFUSED, self.capacity + int(excess)

    def search(self, **grid):
        return search_placed(self.place, self.prove, self.capacity, **grid)


def check_placed_proof(placer, bracket, m):
    """Both ends rest on the compiler's word: the answer compiled in full, the
    next refused (at once, or in full); a batch is placed once and compiled in
    full at most once; nothing at or above a proven refusal is tried."""
    places = [b for kind, b in placer.calls if kind == "place"]
    proves = [b for kind, b in placer.calls if kind == "prove"]
    assert len(places) == len(set(places)) and len(proves) == len(set(proves))
    assert bracket.lo is None or (bracket.lo in proves and placer.fits(bracket.lo))
    if bracket.hi is not None:
        assert not placer.fits(bracket.hi)
        proven_refused = placer.placed(bracket.hi) > placer.capacity or bracket.hi in proves
        assert proven_refused and (bracket.lo is None or bracket.hi == bracket.lo + m)
    refused = []
    for kind, b in placer.calls:
        assert all(b < r for r in refused), f"{kind} {b} after {refused} were refused"
        if not placer.fits(b) and (kind == "prove" or placer.placed(b) > placer.capacity):
            refused.append(b)


@pytest.mark.parametrize("code", [0, 50, 700, 5_000, 30_000])
@pytest.mark.parametrize("guess", [None, 300, 900])
def test_placements_find_the_answer_a_full_compile_proves(code, guess):
    """Affine buffers, code known only in full: the largest batch whose
    buffers and code fit, in one or two full compiles."""
    placer = Placer(lambda b: 1_000 + 100 * b, code, CAPACITY)
    bracket = placer.search(multiple_of=8, max_batch=20_000, guess=guess,
                            per_example=100 if guess else None)  # fmt: skip
    check_placed_proof(placer, bracket, 8)
    assert bracket.lo == (CAPACITY - 1_000 - code) // 100 // 8 * 8
    assert sum(kind == "prove" for kind, _ in placer.calls) <= 3, placer.calls


@pytest.mark.parametrize("seed", range(30))
def test_placements_of_a_non_monotone_compiler_still_end_proven(seed):
    rng = random.Random(seed)
    placer = Placer(wiggly(seed), rng.choice([0, 100, 3_000, 20_000]), CAPACITY)
    guess = rng.choice([None, 50, 500, 5_000])
    bracket = placer.search(multiple_of=8, max_batch=20_000, guess=guess,
                            per_example=rng.uniform(5, 300) if guess else None)  # fmt: skip
    check_placed_proof(placer, bracket, 8)


def test_an_interrupt_in_a_full_compile_returns_the_bracket_interrupted():
    placer = Placer(lambda b: 100 * b, 0, CAPACITY)

    def prove(b):
        raise KeyboardInterrupt

    bracket = search_placed(placer.place, prove, CAPACITY, multiple_of=8, max_batch=20_000)
    assert bracket.interrupted and bracket.lo is not None
    assert all(kind == "place" for kind, _ in placer.calls)


def test_a_full_compile_that_fails_is_one_candidate_left_out():
    placer = Placer(lambda b: 100 * b, 0, CAPACITY)

    def prove(b):
        placer.calls.append(("prove", b))
        return None if b == 1_000 else placer.prove(b)

    bracket = search_placed(placer.place, prove, CAPACITY, multiple_of=8, max_batch=20_000)
    assert (bracket.lo, bracket.hi, bracket.failed) == (992, 1_008, (1_000,))


@pytest.mark.parametrize("digits", [None, 3, 2])
@pytest.mark.parametrize("code", [1_500, 15_000])
def test_code_larger_than_a_step_takes_few_full_compiles(digits, code):
    """Slope 10 B per example and code of 150 or 1,500 examples' bytes, each
    refusal's excess printed to a few digits: the answer in a few full
    compiles, not one a candidate."""
    placer = Placer(lambda b: 1_000 + 10 * b, code, CAPACITY, digits)
    bracket = placer.search(multiple_of=8, max_batch=20_000)
    check_placed_proof(placer, bracket, 8)
    assert bracket.lo == (CAPACITY - 1_000 - code) // 10 // 8 * 8
    assert sum(kind == "prove" for kind, _ in placer.calls) <= 4, placer.calls
