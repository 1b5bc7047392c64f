"""Strategies over an affine space: WorstOfK, SpatialPGD and GridSearch with ``space=AffineBox(...)``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.checks import check_transform
from tests.test_engine import brute_force
from torch import nn

from advspatial import (
    AdvSpatialError,
    AffineBox,
    GridSearch,
    GridSearchRotoTranslation,
    RotoTranslationBox,
    SpatialPGD,
    WorstOfK,
    roto_translate,
)

BOX = AffineBox(max_rotation=20, max_translation=2, scale=(0.8, 1.25), shear=(10, 5))

FACTORIES = {
    "worst_of_k": lambda m: WorstOfK(m, k=5, space=BOX, generator=torch.Generator().manual_seed(0)),
    "worst_of_k_identity": lambda m: WorstOfK(m, k=3, space=BOX, include_identity=True, selection="max_loss"),
    "grid": lambda m: GridSearch(m, space=BOX, steps=(3, 1, 3, 3, 3, 1)),
    "grid_early_exit": lambda m: GridSearch(m, space=BOX, steps=(3, 3, 1, 3, 1, 3), early_exit=True),
    "spatial_pgd": lambda m: SpatialPGD(
        m, steps=3, space=BOX, random_start=True, generator=torch.Generator().manual_seed(0)
    ),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_shared_checker_with_affine_rows(name: str, model, batch) -> None:
    check_transform(FACTORIES[name], model, *batch)


def losses_of(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor
) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(roto_translate(images, params)), labels, reduction="none")


def test_worst_of_k_draws_from_the_box_and_keeps_the_worst(model, batch) -> None:
    images, labels = batch
    attack = WorstOfK(model, k=8, space=BOX, selection="max_loss", include_identity=True)
    candidates = attack.sample(images.shape[0], images.device, torch.Generator().manual_seed(3))
    assert candidates.shape == (6, 9, 6)
    assert torch.equal(candidates[:, 0], BOX.identity((6,)))
    assert bool(BOX.contains(candidates).all())
    result = attack.search(images, labels, generator=torch.Generator().manual_seed(3))
    assert result.params.shape == (6, 6)
    every = torch.stack([losses_of(model, images, labels, candidates[:, k]) for k in range(9)], dim=1)
    torch.testing.assert_close(result.candidate_losses, every, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.loss, every.amax(dim=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        losses_of(model, images, labels, result.params), result.loss, atol=1e-5, rtol=1e-5
    )


def test_spatial_pgd_takes_a_sign_step_on_all_six_axes(model, batch) -> None:
    images, labels = batch
    attack = SpatialPGD(model, steps=1, space=BOX, selection="max_loss")
    step = torch.tensor(attack.step_size)
    assert attack.step_size == pytest.approx((50.0, 5.0, 5.0, 0.5625, 25.0, 12.5))
    result = attack.search(images, labels)
    assert result.params.shape == (6, 6) and bool(BOX.contains(result.params).all())
    # The one step: identity + step * sign(gradient), projected into the box.
    model.eval()
    identity = BOX.identity((6,)).requires_grad_(True)
    loss = F.cross_entropy(model(roto_translate(images, identity)), labels, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, identity)
    stepped = BOX.project(BOX.identity((6,)) + step * gradient.sign())
    assert bool((gradient != 0).all()), "every axis has a gradient"
    start = losses_of(model, images, labels, BOX.identity((6,)))
    after = losses_of(model, images, labels, stepped)
    expected = torch.where((after > start)[:, None], stepped, BOX.identity((6,)))
    torch.testing.assert_close(result.params, expected)
    assert bool((result.params != BOX.identity((6,))).any(dim=0).all()), "every axis moved for some image"


def test_grid_search_candidates_and_brute_force(model, batch) -> None:
    images, labels = batch
    assert GridSearch(model, space=BOX, steps=(31, 5, 5, 3, 3, 3)).candidates.shape == (20925, 6)
    grid = GridSearch(model, space=BOX, steps=(3, 1, 1, 3, 3, 1))
    assert torch.equal(grid.candidates, BOX.grid((3, 1, 1, 3, 3, 1)))
    result = grid.search(images, labels)
    losses, correct = brute_force(model, images, labels, grid.candidates)
    torch.testing.assert_close(result.candidate_losses, losses, atol=1e-5, rtol=1e-5)
    assert torch.equal(result.correct, correct.all(dim=1))
    assert result.params.shape == (6, 6)
    early = GridSearch(model, space=BOX, steps=(3, 1, 1, 3, 3, 1), early_exit=True).search(images, labels)
    assert torch.equal(early.correct, result.correct)
    assert early.evaluations <= result.evaluations == 6 * 27


def test_grid_defaults_and_the_roto_translation_case(model) -> None:
    assert GridSearch(model).steps == (31, 5, 5)
    assert GridSearch(model, space=BOX).steps == (31, 5, 5, 3, 3, 3)
    assert GridSearch(model, space=AffineBox(scale=(0.9, 1.1))).steps == (31, 5, 5, 3, 1, 1)
    special = GridSearchRotoTranslation(model, rotations=7, translations=(3, 5), max_rotation=20)
    general = GridSearch(model, space=RotoTranslationBox(20, 3), steps=(7, 3, 5))
    assert isinstance(special, GridSearch)
    assert torch.equal(special.candidates, general.candidates) and special.steps == (7, 3, 5)
    assert torch.equal(GridSearchRotoTranslation(model).candidates, RotoTranslationBox().grid(31, 5))
    assert "space=AffineBox(" in repr(GridSearch(model, space=BOX))


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda m: WorstOfK(m, space=(30, 3)), "space must be an advspatial.RotoTranslationBox"),
        (lambda m: WorstOfK(m, space=BOX, max_rotation=10), "either space= or max_rotation"),
        (lambda m: SpatialPGD(m, space=BOX, max_translation=1), "either space= or max_rotation"),
        (lambda m: SpatialPGD(m, space=BOX, step_size=(1, 2, 3)), "step_size"),
        (lambda m: GridSearch(m, space="affine"), "space must be"),
        (lambda m: GridSearch(m, space=BOX, steps=(31, 5, 5)), r"steps must be 6 positive integers"),
        (lambda m: GridSearch(m, steps=(31, 5, 5, 3, 3, 3)), r"steps must be 3 positive integers"),
        (lambda m: GridSearch(m, space=BOX, steps=(31, 5, 5, 0, 3, 3)), r"steps\[3\]"),
        (lambda m: GridSearch(m, space=BOX, steps=(31, 5, 5, 3, 3.0, 3)), r"steps\[4\]"),
        (lambda m: WorstOfK(m, space=AffineBox(scale=(0.0, 1.0))), "scale"),
        (lambda m: WorstOfK(m, space=AffineBox(shear=61)), "shear"),
    ],
)
def test_bad_configuration_names_the_argument(model, factory, match: str) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        factory(model)


def test_apply_rejects_rows_with_bad_scale(model, batch) -> None:
    images, _ = batch
    search = WorstOfK(model, space=BOX)
    rows = BOX.identity((6,))
    assert torch.equal(search.apply(images, rows), roto_translate(images, rows))
    with pytest.raises(AdvSpatialError, match="scale"):
        roto_translate(images, rows * 0)


def test_worst_of_k_takes_affine_candidates_per_image(model, batch) -> None:
    images, labels = batch
    attack = WorstOfK(model, k=3, space=BOX)
    table = attack.sample(6, images.device, torch.Generator().manual_seed(5))
    whole = attack.search(images, labels, candidates=table)
    part = attack.search(images[2:], labels[2:], candidates=table[2:])
    assert whole.params.shape == (6, 6) and torch.equal(whole.params[2:], part.params)
    with pytest.raises(AdvSpatialError, match=r"candidates must have shape \(6, K, 6\)"):
        attack.search(images, labels, candidates=table[..., :3])
    with pytest.raises(AdvSpatialError, match="scale"):
        attack.search(images, labels, candidates=table * 0)


def test_dense_tasks_move_their_targets_with_affine_rows() -> None:
    """Segmentation over the affine box: the moved masks are the masks under the chosen 6-column rows."""
    from tests.test_tasks import IGNORE, TinySegmenter, _blobs

    from advspatial import roto_translate_masks
    from advspatial.tasks import Segmentation

    torch.manual_seed(0)
    images, masks = _blobs(4)
    for search in (
        WorstOfK(
            TinySegmenter(), k=4, space=BOX, task=Segmentation(), generator=torch.Generator().manual_seed(0)
        ),
        GridSearch(
            TinySegmenter(), space=BOX, steps=(3, 1, 1, 3, 1, 1), task=Segmentation(), early_exit=True
        ),
    ):
        result = search.search(images, masks)
        assert result.params.shape == (4, 6) and result.targets is not None
        assert torch.equal(result.targets, roto_translate_masks(masks, result.params, fill=IGNORE))


def test_invariance_loss_takes_an_affine_attack_and_replays_affine_rows(model, batch) -> None:
    from advspatial import InvarianceRegularizedLoss

    images, labels = batch
    attack = WorstOfK(model, k=3, space=BOX, generator=torch.Generator().manual_seed(1))
    loss_fn = InvarianceRegularizedLoss(model, attack, regularizer="l2", weight=1.0)
    loss = loss_fn(images, labels)
    loss.backward()
    assert loss.ndim == 0 and bool(torch.isfinite(loss))
    rows = BOX.sample((6,), generator=torch.Generator().manual_seed(2))
    replayed = loss_fn(images, labels, params=rows)
    assert bool(torch.isfinite(replayed))


def test_sweeps_search_the_affine_box(model) -> None:
    from torch.utils.data import TensorDataset

    from advspatial.evaluation import robustness_sweep, worst_of_k_accuracy

    data = TensorDataset(
        torch.rand(5, 1, 12, 12, generator=torch.Generator().manual_seed(9)), torch.arange(5)
    )
    results = robustness_sweep(
        model, data, scale=(0.8, 1.25), shear=(10, 5), rotations=3, translations=1, pgd_steps=1, k=2
    )
    for name in ("random", "worst_of_2", "grid", "first_order"):
        assert results[name].params.shape == (5, 6), name
    assert results["grid"].exhaustive_evaluations == 5 * 3 * 27
    assert results["natural"].params.shape == (5, 3)
    plain = robustness_sweep(model, data, rotations=3, translations=1, pgd_steps=1, k=2)
    assert plain["grid"].params.shape == (5, 3)
    # Keyed draws: the affine worst-of-k picks the same rows whatever the batch size.
    space = AffineBox(scale=(0.8, 1.25), shear=10)
    small = worst_of_k_accuracy(
        model, data, k=3, space=space, generator=torch.Generator().manual_seed(1), batch_size=2
    )
    large = worst_of_k_accuracy(
        model, data, k=3, space=space, generator=torch.Generator().manual_seed(1), batch_size=5
    )
    assert torch.equal(small.params, large.params)
    with pytest.raises(AdvSpatialError, match="scale"):
        robustness_sweep(model, data, scale=(1.2, 0.8))


def test_invariance_loss_ranks_an_affine_grid_by_the_regularizer(model, batch) -> None:
    from advspatial import InvarianceRegularizedLoss

    images, labels = batch
    grid = GridSearch(model, space=BOX, steps=(3, 1, 1, 3, 1, 1))
    loss_fn = InvarianceRegularizedLoss(model, grid, regularizer="l2", attack_objective="regularizer")
    loss = loss_fn(images, labels)
    assert bool(torch.isfinite(loss))
    assert loss_fn.last is not None
