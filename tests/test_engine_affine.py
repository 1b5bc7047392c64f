"""The engine and the early-exit order with 6-column affine candidates."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.checks import assert_model_unchanged, model_snapshot
from tests.test_engine import brute_force
from tests.test_ordering import TableScorer

from advspatial import AffineBox, ScoringConfig, score_candidates
from advspatial.engine.ordering import prior_order


def affine_grid() -> torch.Tensor:
    return AffineBox(30, 3, scale=(0.8, 1.25), shear=10).grid((5, 3, 1, 3, 3, 1))


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 60),
    rate=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    classes=st.integers(1, 4),
)
def test_robust_set_is_exactly_the_exhaustive_one_on_an_affine_grid(
    batch: int, rate: float, seed: int, classes: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    candidates = affine_grid()
    table = torch.rand(batch, candidates.shape[0], generator=generator) >= rate * torch.rand(
        batch, 1, generator=generator
    )
    labels = torch.randint(0, classes, (batch,), generator=generator)
    correct, scored = TableScorer(table).run(candidates, labels)
    robust = table.all(dim=1)
    assert torch.equal(correct.all(dim=1), robust)
    assert scored[robust].all()
    assert (~correct[~robust]).any(dim=1).all()
    assert correct[~scored].all()


def test_prior_order_measures_scale_from_the_identity() -> None:
    candidates = affine_grid()
    order = prior_order(candidates)
    assert sorted(order.tolist()) == list(range(candidates.shape[0]))
    identity = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert torch.equal(candidates[order[-1]], identity)
    first = candidates[order[0]]
    assert first[[0, 1, 4]].abs().tolist() == [30.0, 3.0, 10.0] and float(first[3]) in (
        0.800000011920929,
        1.25,
    )


def test_batched_equals_brute_force_with_affine_rows(model, batch) -> None:
    images, labels = batch
    box = AffineBox(30, 3, scale=(0.7, 1.3), shear=20)
    for candidates in (box.sample((9,), generator=torch.Generator().manual_seed(2)), box.sample((6, 5))):
        scores = score_candidates(model, images, labels, candidates, ScoringConfig(chunk_size=7))
        losses, correct = brute_force(model, images, labels, candidates)
        torch.testing.assert_close(scores.losses, losses, atol=1e-5, rtol=1e-5)
        assert torch.equal(scores.correct, correct)


def test_early_exit_is_exact_on_an_affine_grid(model, batch) -> None:
    images, labels = batch
    snapshot = model_snapshot(model)
    grid = affine_grid()
    full = score_candidates(model, images, labels, grid)
    fast = score_candidates(model, images, labels, grid, early_exit=True)
    assert torch.equal(full.correct.all(dim=1), fast.correct.all(dim=1))
    assert fast.evaluations == int(fast.scored.sum()) <= full.evaluations
    torch.testing.assert_close(fast.losses[fast.scored], full.losses[fast.scored])
    assert_model_unchanged(model, snapshot)
