"""Chunk autotuning and the early-exit round budget (engine/tuning.py, engine/chunking.py).

Every timing here comes from a fake clock, so the choices are deterministic.
"""

from __future__ import annotations

import gc

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.test_ordering import TableScorer, grid

from advspatial.engine.chunking import ChunkRunner
from advspatial.engine.ordering import score_until_fooled
from advspatial.engine.tuning import (
    REPEATS,
    ChunkTuner,
    RoundBudget,
    chunk_tuner,
    forget_chunk_tunings,
    memory_bound,
)

# Pairs per second by chunk size on the ladder of half-octaves: rises to a peak at 256, then falls
# (activations leave the cache).
RATES = {
    8: 50.0,
    12: 75.0,
    16: 100.0,
    24: 150.0,
    32: 200.0,
    48: 300.0,
    64: 400.0,
    96: 600.0,
    128: 800.0,
    192: 950.0,
    256: 1000.0,
    384: 960.0,
    512: 900.0,
    768: 800.0,
    1024: 700.0,
    1536: 600.0,
    2048: 500.0,
    3072: 400.0,
    4096: 300.0,
}


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drive(tuner: ChunkTuner, seconds, chunks: int = 60) -> list[int]:  # type: ignore[no-untyped-def]
    """Feed ``chunks`` full chunks to ``tuner``, each taking ``seconds(size, i)``; the sizes asked."""
    sizes = []
    for i in range(chunks):
        size = tuner.size()
        sizes.append(size)
        tuner.observe(size, seconds(size, i))
    return sizes


def rate_seconds(size: int, _: int) -> float:
    return size / RATES[size]


def test_climbs_to_the_fastest_size(caplog) -> None:  # type: ignore[no-untyped-def]
    tuner = ChunkTuner(start=64, budget_bytes=2**40, pair_bytes=1.0)
    with caplog.at_level("DEBUG", logger="advspatial.engine.tuning"):
        sizes = drive(tuner, rate_seconds)
    assert [record.getMessage() for record in caplog.records] == [
        "chunk size 256 chosen (pairs/s by size: 64: 400, 128: 800, 192: 950, 256: 1000, 384: 960, 512: 900)"
    ]
    assert tuner.settled and tuner.size() == 256
    assert max(sizes) == 512  # one octave past the peak, then the half-octaves between
    assert sizes[0] == 64 and sizes[-1] == 256
    # one warm-up chunk, REPEATS per size: 64, 128, 256, 512, 384, 192; then 256 is confirmed
    assert sizes.index(256, sizes.index(192)) == 1 + 6 * REPEATS


def test_half_octave_rungs_find_a_peak_between_octaves() -> None:
    """From 21 (the input-size rule on ResNet-50 at 64 x 64), 42 ties with 21 while 32 is 6 % faster:
    the octaves alone (21, 42, 10) never time 32; the half-octave between 21 and 42 does."""
    rates = {
        10: 300.0,
        16: 360.0,
        21: 374.0,
        24: 380.0,
        32: 397.0,
        42: 375.0,
        48: 370.0,
        64: 365.0,
        84: 340.0,
    }
    tuner = ChunkTuner(start=21, budget_bytes=2**40, pair_bytes=1.0)
    sizes = drive(tuner, lambda size, _: size / rates[size])
    assert tuner.size() == 32
    assert sizes.index(32) < sizes.index(16)  # 32 is the half-octave between 21 and 42


def test_octaves_cross_a_plateau_to_a_peak_far_below_the_start() -> None:
    """The U-Net at 64 x 64: the input-size rule starts at 64 on a flat, noisy plateau (a local
    maximum at 96) while 16 is twice as fast; octave steps get there."""
    rates = {
        8: 600.0,
        12: 690.0,
        16: 708.0,
        24: 714.0,
        32: 705.0,
        48: 610.0,
        64: 293.0,
        96: 317.0,
        128: 288.0,
    }
    tuner = ChunkTuner(start=64, budget_bytes=2**40, pair_bytes=1.0)
    drive(tuner, lambda size, _: size / rates[size])
    assert tuner.size() == 16  # 24 is within GAIN of it: the smaller wins


def test_climbs_down_when_smaller_is_faster() -> None:
    tuner = ChunkTuner(start=1024, budget_bytes=2**40, pair_bytes=1.0)
    drive(tuner, rate_seconds)
    assert tuner.size() == 256


def test_fastest_of_repeats_ignores_slow_outliers() -> None:
    """Load on the machine slows some chunks 3x: the fastest of the repeats still ranks sizes right."""

    def noisy(size: int, i: int) -> float:
        return rate_seconds(size, i) * (3.0 if i % REPEATS == 1 else 1.0)

    tuner = ChunkTuner(start=64, budget_bytes=2**40, pair_bytes=1.0)
    drive(tuner, noisy)
    assert tuner.size() == 256


def test_sizes_timed_while_the_process_was_cold_are_timed_again() -> None:
    """The first size (the peak, 256) runs 3x slower for its first four chunks (allocator and caches
    still growing): the climb leaves it for 384, and the confirmation pass brings it back."""

    def cold_start(size: int, i: int) -> float:
        return rate_seconds(size, i) * (3.0 if i < 4 else 1.0)

    tuner = ChunkTuner(start=256, budget_bytes=2**40, pair_bytes=1.0)
    sizes = drive(tuner, cold_start)
    assert tuner.settled and tuner.size() == 256
    assert sizes[:4] == [256] * 4 and 384 in sizes and 192 in sizes


def test_warm_up_chunk_is_not_counted() -> None:
    tuner = ChunkTuner(start=256, budget_bytes=2**40, pair_bytes=1.0)
    drive(tuner, lambda size, i: 100.0 if i == 0 else rate_seconds(size, i))
    assert tuner.size() == 256


def test_within_noise_the_smaller_size_wins() -> None:
    """384 is 2 % faster than 256: not enough (GAIN is 3 %)."""
    rates = {**RATES, 384: 1020.0}
    tuner = ChunkTuner(start=256, budget_bytes=2**40, pair_bytes=1.0)
    drive(tuner, lambda size, _: size / rates[size])
    assert tuner.size() == 256


def test_memory_bound_caps_the_ladder() -> None:
    """1 MiB of budget at 8 KiB a pair: at most 128 pairs, even though 256 would be faster."""
    tuner = ChunkTuner(start=64, budget_bytes=2**20, pair_bytes=2**13)
    sizes = drive(tuner, rate_seconds)
    assert tuner.limit == 128 == memory_bound(2**20, 2**13)
    assert max(sizes) == 128 and tuner.size() == 128


def test_measured_peaks_replace_the_estimate() -> None:
    """A measured peak of 64 KiB a pair (above the 8 KiB estimate) lowers the bound to 16."""
    tuner = ChunkTuner(start=64, budget_bytes=2**20, pair_bytes=2**13)
    tuner.observe(64, 1.0, peak_bytes=64 * 2**16)
    assert tuner.limit == 16 and tuner.size() == 16


def test_out_of_memory_lowers_the_limit_for_good() -> None:
    tuner = ChunkTuner(start=64, budget_bytes=2**40, pair_bytes=1.0)
    drive(tuner, rate_seconds)
    assert tuner.size() == 256
    tuner.out_of_memory(256)
    assert tuner.limit == 128 and tuner.size() == 128
    tuner.observe(64, 0.0, peak_bytes=1)  # a tiny measured peak does not lift the limit again
    assert tuner.limit == 128


def test_the_cache_is_keyed_by_model_shape_dtype_autocast_and_threads() -> None:
    model, other = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    images = torch.zeros(4, 3, 16, 16)
    tuner = chunk_tuner(model, images)
    assert chunk_tuner(model, torch.zeros(9, 3, 16, 16)) is tuner  # the batch size does not matter
    assert chunk_tuner(other, images) is not tuner
    assert chunk_tuner(model, torch.zeros(4, 3, 16, 17)) is not tuner
    assert chunk_tuner(model, images.double()) is not tuner
    assert chunk_tuner(model, images, torch.bfloat16) is not tuner
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert chunk_tuner(model, images) is not tuner
    finally:
        torch.set_num_threads(threads)
    assert chunk_tuner(model, images) is tuner
    forget_chunk_tunings(model)
    assert chunk_tuner(model, images) is not tuner


def test_the_cache_does_not_keep_models_alive() -> None:
    import weakref

    from advspatial.engine import tuning

    model = torch.nn.Linear(3, 3)
    chunk_tuner(model, torch.zeros(1, 3, 4, 4))
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
    assert all(key() is not None for key in tuning._TUNERS.keyrefs())


def test_runner_times_only_full_chunks_until_settled() -> None:
    clock = FakeClock()
    tuner = ChunkTuner(start=64, budget_bytes=2**40, pair_bytes=1.0, clock=clock)
    runner = ChunkRunner(torch.device("cpu"), tuner=tuner)
    sizes: list[int] = []

    def chunk(start: int, stop: int) -> None:
        sizes.append(stop - start)
        clock.now += rate_seconds(stop - start, 0) if stop - start in RATES else 1.0

    runner.run(100, chunk)  # 64 + 36: the short chunk is not timed
    assert sizes == [64, 36] and not tuner.rates()
    runner.run(20_000, chunk)
    assert tuner.settled and runner.chunk_size == 256
    assert sum(sizes) == 20_100  # every pair run exactly once: tuning is the work itself


def test_calls_smaller_than_the_first_size_are_tuned_whole() -> None:
    """Calls of 200 pairs with a first size of 334: the whole call stands in for it, no size
    above 200 is tried, and the tuner settles."""
    clock = FakeClock()
    tuner = ChunkTuner(start=334, budget_bytes=2**40, pair_bytes=1.0, clock=clock)
    runner = ChunkRunner(torch.device("cpu"), tuner=tuner)
    sizes: list[int] = []

    def chunk(start: int, stop: int) -> None:
        sizes.append(stop - start)
        clock.now += (stop - start) / (1000.0 if stop - start == 200 else 500.0)

    for _ in range(16):
        runner.run(200, chunk)
    assert tuner.settled and tuner.size() == 200 and max(sizes) == 200
    assert set(sizes) == {200, 100, 128, 72}  # an octave below 200, the half-octave between (+ the rest)


def test_runner_halves_a_fixed_size_on_out_of_memory() -> None:
    sizes: list[int] = []

    def chunk(start: int, stop: int) -> None:
        if stop - start > 10:
            raise torch.OutOfMemoryError("CUDA out of memory.")
        sizes.append(stop - start)

    runner = ChunkRunner(torch.device("cpu"), size=64)
    runner.run(50, chunk)
    assert sum(sizes) == 50 and max(sizes) == 8 and runner.chunk_size == 8


def test_runner_tells_the_tuner_about_out_of_memory() -> None:
    tuner = ChunkTuner(start=64, budget_bytes=2**40, pair_bytes=1.0, clock=FakeClock())
    sizes: list[int] = []

    def chunk(start: int, stop: int) -> None:
        if stop - start > 20:
            raise RuntimeError("CUDA error: out of memory")
        sizes.append(stop - start)

    ChunkRunner(torch.device("cpu"), tuner=tuner).run(100, chunk)
    assert sum(sizes) == 100 and tuner.limit == 16


def test_runner_reraises_other_errors() -> None:
    def chunk(start: int, stop: int) -> None:
        raise RuntimeError("shapes do not match")

    with pytest.raises(RuntimeError, match="shapes"):
        ChunkRunner(torch.device("cpu"), size=4).run(8, chunk)


class TimedTableScorer(TableScorer):
    """A TableScorer whose calls cost ``overhead + per_pair * pairs`` seconds on a fake clock."""

    def __init__(self, table: torch.Tensor, clock: FakeClock, overhead: float, per_pair: float) -> None:
        super().__init__(table)
        self.clock, self.overhead, self.per_pair = clock, overhead, per_pair

    def score(self, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.clock.now += self.overhead + self.per_pair * rows.numel()
        return super().score(rows, cols)

    def run_with_budget(
        self, candidates: torch.Tensor, classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, count = self.table.shape
        self.seen = torch.zeros(batch, count, dtype=torch.bool)
        losses = torch.full((batch, count), -torch.inf)
        correct = torch.ones(batch, count, dtype=torch.bool)
        scored = torch.zeros(batch, count, dtype=torch.bool)
        budget = RoundBudget(batch * count, lambda: self.per_pair, clock=self.clock)
        score_until_fooled(self, candidates, classes, losses, correct, scored, budget)
        assert torch.equal(scored, self.seen)
        return correct, scored


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 40),
    rate=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    overhead=st.sampled_from([0.0, 1e-3, 1.0]),
)
def test_budgeted_early_exit_is_exact(batch: int, rate: float, seed: int, overhead: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    candidates = grid()
    table = torch.rand(batch, candidates.shape[0], generator=generator) >= rate * torch.rand(
        batch, 1, generator=generator
    )
    scorer = TimedTableScorer(table, FakeClock(), overhead, per_pair=1e-3)
    correct, scored = scorer.run_with_budget(candidates, torch.zeros(batch, dtype=torch.long))
    robust = table.all(dim=1)
    assert torch.equal(correct.all(dim=1), robust)
    assert scored[robust].all() and (~correct[~robust]).any(dim=1).all()


@pytest.mark.parametrize("batch", [1, 2, 4, 8])
def test_rounds_that_do_not_pay_end_in_one_exhaustive_call(batch: int) -> None:
    """Every image robust, each call costs as much as 20 pairs: rounds cannot pay, so after the
    stake is spent the rest is scored at once, and the whole costs at most the stake more than
    one exhaustive call."""
    candidates = grid()
    count = candidates.shape[0]
    clock = FakeClock()
    scorer = TimedTableScorer(torch.ones(batch, count, dtype=torch.bool), clock, overhead=0.02, per_pair=1e-3)
    scorer.run_with_budget(candidates, torch.zeros(batch, dtype=torch.long))
    exhaustive = 0.02 + 1e-3 * batch * count
    assert scorer.evaluations == batch * count
    assert scorer.calls <= 4
    assert clock.now <= exhaustive * 1.05 + 0.02 + 1e-9


def test_rounds_that_pay_go_on() -> None:
    """Half the images fooled by one candidate: the rounds save far more than they cost."""
    candidates = grid()
    count = candidates.shape[0]
    table = torch.ones(64, count, dtype=torch.bool)
    table[::2, 5] = False
    clock = FakeClock()
    scorer = TimedTableScorer(table, clock, overhead=0.002, per_pair=1e-3)
    scorer.run_with_budget(candidates, torch.zeros(64, dtype=torch.long))
    unbudgeted = TableScorer(table)
    unbudgeted.run(candidates, torch.zeros(64, dtype=torch.long))
    assert scorer.evaluations == unbudgeted.evaluations < 0.65 * table.numel()
    assert clock.now < 0.7 * (0.002 + 1e-3 * table.numel())


def test_round_budget_without_a_measured_pair_cost_uses_the_fastest_round() -> None:
    ticks = iter([0.0, 1.0, 1.5])
    budget = RoundBudget(1000, lambda: None, clock=lambda: next(ticks))
    budget.start()
    assert not budget.exhausted()  # nothing measured: no reason to stop
    budget.round_done(pairs=10, saved_pairs=0)  # 0.1 s a pair
    budget.round_done(pairs=50, saved_pairs=0)  # 0.01 s a pair: 1.5 - 0.6 = 0.9 s overhead
    assert budget.exhausted()  # stake: 0.05 * 1000 * 0.01 = 0.5 s


# ---- through the engine: score_candidates with a tuner whose clock the model drives ----


class Clocked(torch.nn.Module):
    """Wraps a model; each forward pass of n pairs costs ``0.01 + 1e-5 n + 1e-8 n^2`` seconds on a
    fake clock (most pairs per second at n = 1000) and is recorded."""

    def __init__(self, inner: torch.nn.Module, clock: FakeClock) -> None:
        super().__init__()
        self.inner, self.clock = inner, clock
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        self.sizes.append(n)
        self.clock.now += 0.01 + 1e-5 * n + 1e-8 * n * n
        return self.inner(x)


class AlwaysRight(torch.nn.Module):
    """Predicts class 0 whatever the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (
            torch.nn.functional.one_hot(torch.zeros(x.shape[0], dtype=torch.long), 10).float() + 0 * x.sum()
        )


def grid_775() -> torch.Tensor:
    from advspatial import GridSearchRotoTranslation

    return GridSearchRotoTranslation(torch.nn.Identity()).candidates


@pytest.fixture
def clocked(model) -> Clocked:  # type: ignore[no-untyped-def]
    return Clocked(model, FakeClock())


def test_tuned_search_equals_untuned_and_keeps_its_choice(clocked, batch) -> None:  # type: ignore[no-untyped-def]
    from advspatial import ScoringConfig, score_candidates

    images, labels = batch
    candidates = grid_775()
    tuner = chunk_tuner(clocked, images, clock=clocked.clock)
    assert tuner.size() == 1820  # the input-size rule for 1 x 12 x 12
    untuned = score_candidates(clocked, images, labels, candidates, ScoringConfig(chunk_size=500))
    for _ in range(10):
        clocked.sizes.clear()
        scores = score_candidates(clocked, images, labels, candidates)
        assert sum(clocked.sizes) == scores.evaluations == 6 * 775  # no extra forward pass
        assert torch.equal(scores.losses, untuned.losses) and torch.equal(scores.correct, untuned.correct)
        if tuner.settled:
            break
    # 1820 -> 2048 (slower) -> 1536 -> 1024 (fastest) -> 768: 2.3 % slower than 1024, within GAIN
    assert tuner.size() == 768 and scores.chunk_size == 768
    clocked.sizes.clear()
    again = score_candidates(clocked, images[:4], labels[:4], candidates)  # another batch size: cache hit
    assert set(clocked.sizes[:-1]) == {768} and again.chunk_size == 768


def test_explicit_chunk_size_wins(clocked, batch) -> None:  # type: ignore[no-untyped-def]
    from advspatial import ScoringConfig, score_candidates
    from advspatial.engine import tuning

    images, labels = batch
    scores = score_candidates(clocked, images, labels, torch.zeros(40, 3), ScoringConfig(chunk_size=64))
    assert clocked.sizes == [64, 64, 64, 48] and scores.chunk_size == 64
    assert clocked not in tuning._TUNERS  # no tuner was even created
    from advspatial import WorstOfK

    result = WorstOfK(clocked, k=4, chunk_size=8).search(images, labels)
    assert result.chunk_size == 8 and clocked not in tuning._TUNERS


def test_out_of_memory_back_off_with_the_tuner(model, batch) -> None:  # type: ignore[no-untyped-def]
    from advspatial import score_candidates

    class FailsAbove100(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] > 100:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.inner(x)

    images, labels = batch
    flaky = FailsAbove100()
    scores = score_candidates(flaky, images, labels, grid_775())
    reference = score_candidates(model, images, labels, grid_775())
    assert torch.equal(scores.losses, reference.losses)
    assert (
        chunk_tuner(flaky, images).limit <= 100 and scores.chunk_size is not None and scores.chunk_size <= 100
    )


def test_early_exit_on_a_robust_image_costs_about_one_exhaustive_call() -> None:
    """B = 1, the model never fooled: after the stake is spent the rest goes in full chunks."""
    from advspatial import score_candidates

    clocked = Clocked(AlwaysRight(), FakeClock())
    images, labels = torch.rand(1, 1, 12, 12), torch.zeros(1, dtype=torch.long)
    tuner = chunk_tuner(clocked, images, clock=clocked.clock)
    while not tuner.settled:  # exhaustive searches measure the per-pair cost
        score_candidates(clocked, images.expand(8, -1, -1, -1), labels.expand(8), grid_775())
    clocked.sizes.clear()
    start = clocked.clock.now
    scores = score_candidates(clocked, images, labels, grid_775(), early_exit=True)
    spent = clocked.clock.now - start
    assert scores.evaluations == 775 and bool(scores.scored.all())
    exhaustive = 0.01 + 1e-5 * 775 + 1e-8 * 775**2
    assert len(clocked.sizes) <= 5 and spent <= 1.05 * exhaustive + 0.03


@pytest.mark.cuda
def test_cuda_chunks_are_synchronised_and_their_memory_measured(model, batch) -> None:  # type: ignore[no-untyped-def]
    """On CUDA the timed chunks report their peak memory: the estimate gives way to the measurement."""
    from advspatial import score_candidates

    device = torch.device("cuda")
    images, labels = batch[0].to(device), batch[1].to(device)
    net = model.to(device)
    forget_chunk_tunings(net)
    tuner = chunk_tuner(net, images)
    estimate = tuner.pair_bytes
    scores = score_candidates(net, images, labels, grid_775())
    assert tuner._measured and tuner.pair_bytes != estimate and 1 <= tuner.limit <= 4096
    reference = score_candidates(model.cpu(), batch[0], batch[1], grid_775())
    torch.testing.assert_close(scores.losses.cpu(), reference.losses, atol=1e-4, rtol=1e-4)
