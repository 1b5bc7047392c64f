"""WorstOfK, GridSearchRotoTranslation and SpatialPGD: selection, randomness, validation."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from tests.checks import check_transform
from torch import nn

from advspatial import AdvSpatialError, GridSearchRotoTranslation, SpatialPGD, WorstOfK, roto_translate

FACTORIES = {
    "worst_of_k": lambda m: WorstOfK(m, k=5, generator=torch.Generator().manual_seed(0)),
    "worst_of_k_identity": lambda m: WorstOfK(m, k=3, include_identity=True, selection="max_loss"),
    "grid": lambda m: GridSearchRotoTranslation(m, rotations=5, translations=3),
    "grid_early_exit": lambda m: GridSearchRotoTranslation(
        m, rotations=5, translations=(3, 1), early_exit=True
    ),
    "spatial_pgd": lambda m: SpatialPGD(
        m, steps=3, random_start=True, generator=torch.Generator().manual_seed(0)
    ),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_shared_checker(name: str, model, batch) -> None:
    check_transform(FACTORIES[name], model, *batch)


def losses_of(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor
) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(roto_translate(images, params)), labels, reduction="none")


def test_worst_of_k_is_at_least_every_candidate(model, batch) -> None:
    images, labels = batch
    result = WorstOfK(model, k=12, selection="max_loss", generator=torch.Generator().manual_seed(3)).search(
        images, labels
    )
    assert result.candidate_losses is not None
    assert bool((result.loss[:, None] >= result.candidate_losses - 1e-6).all())
    # The reported loss is the loss of the returned transform.
    torch.testing.assert_close(
        result.loss, losses_of(model, images, labels, result.params), atol=1e-5, rtol=0
    )


def test_engstrom_selection_prefers_misclassification(model, batch) -> None:
    images, labels = batch
    result = WorstOfK(model, k=12, generator=torch.Generator().manual_seed(3)).search(images, labels)
    assert result.candidate_correct is not None and result.candidate_losses is not None
    fooled_somewhere = (~result.candidate_correct).any(dim=1)
    assert torch.equal(~result.chosen_correct, fooled_somewhere)
    assert torch.equal(result.correct, result.chosen_correct)
    for b in range(images.shape[0]):
        pool = (
            result.candidate_losses[b][~result.candidate_correct[b]]
            if fooled_somewhere[b]
            else (result.candidate_losses[b])
        )
        assert float(result.loss[b]) == pytest.approx(float(pool.max()))


def test_same_generator_same_result(model, batch) -> None:
    images, labels = batch
    make = lambda seed: WorstOfK(model, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    a, b, c = make(4).search(images, labels), make(4).search(images, labels), make(5).search(images, labels)
    assert torch.equal(a.params, b.params) and not torch.equal(a.params, c.params)
    # Candidates are drawn per sample, not shared across the batch.
    assert a.params.unique(dim=0).shape[0] == images.shape[0]
    # A per-call generator overrides the stored one.
    attack = make(9)
    d = attack.search(images, labels, generator=torch.Generator().manual_seed(4))
    assert torch.equal(d.params, a.params)


def test_include_identity_adds_the_clean_image(model, batch) -> None:
    images, labels = batch
    result = WorstOfK(model, k=4, include_identity=True).search(images, labels)
    assert result.evaluations == 5 * images.shape[0]
    assert result.candidate_losses is not None
    torch.testing.assert_close(
        result.candidate_losses[:, 0], losses_of(model, images, labels, torch.zeros(6, 3)), atol=1e-5, rtol=0
    )


def test_grid_correct_means_every_candidate_right(model, batch) -> None:
    images, labels = batch
    grid = GridSearchRotoTranslation(model, rotations=7, translations=3, max_rotation=20, max_translation=2)
    result = grid.search(images, labels)
    assert grid.candidates.shape == (63, 3)
    assert result.candidate_correct is not None
    assert torch.equal(result.correct, result.candidate_correct.all(dim=1))
    # Brute-force check of a few candidates' correctness.
    model.eval()
    with torch.no_grad():
        for k in (0, 31, 62):
            params = grid.candidates[k].expand(images.shape[0], 3)
            ok = model(roto_translate(images, params)).argmax(1) == labels
            assert torch.equal(ok, result.candidate_correct[:, k])


def test_grid_early_exit_reports_saved_evaluations(model, batch) -> None:
    images, labels = batch
    full = GridSearchRotoTranslation(model, rotations=9, translations=3).search(images, labels)
    fast = GridSearchRotoTranslation(model, rotations=9, translations=3, early_exit=True).search(
        images, labels
    )
    assert torch.equal(full.correct, fast.correct)
    assert fast.exhaustive_evaluations == full.evaluations == 81 * images.shape[0]
    assert fast.saved_evaluations == full.evaluations - fast.evaluations > 0
    # The params of a fooled image fool the model.
    fooled = ~fast.correct
    model.eval()
    with torch.no_grad():
        predictions = model(roto_translate(images, fast.params)).argmax(1)
    assert bool((predictions[fooled] != labels[fooled]).all())


def test_spatial_pgd_stays_in_the_box_and_beats_identity(model, batch) -> None:
    images, labels = batch
    attack = SpatialPGD(model, steps=5, max_rotation=10, max_translation=(2, 1))
    result = attack.search(images, labels)
    assert bool(attack.box.contains(result.params).all())
    assert (result.params.abs() <= torch.tensor([10.0, 2.0, 1.0]) + 1e-6).all()
    identity = losses_of(model, images, labels, torch.zeros(6, 3))
    chosen = losses_of(model, images, labels, result.params)
    assert bool((chosen >= identity - 1e-5).all())
    assert bool((chosen > identity + 1e-4).any())
    assert result.evaluations == 6 * 6


def test_spatial_pgd_follows_the_gradient() -> None:
    """On a model whose loss grows with the image's mass on the right, the attack shifts right."""

    class RightMass(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.linspace(-1, 1, 16).repeat(16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            score = x.flatten(1) @ self.weight
            return torch.stack([-score, score], dim=1)

    images = torch.zeros(2, 1, 16, 16)
    images[:, :, 6:10, 6:10] = 1.0
    labels = torch.zeros(2, dtype=torch.long)
    result = SpatialPGD(RightMass(), steps=4, max_rotation=0, max_translation=3).search(images, labels)
    assert torch.allclose(result.params[:, 1], torch.full((2,), 3.0))


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda m: WorstOfK(m, k=0), "k must be an integer >= 1"),
        (lambda m: WorstOfK(m, k=2.5), "k must be an integer"),
        (lambda m: WorstOfK(m, max_rotation=-5), "max_rotation"),
        (lambda m: WorstOfK(m, max_translation=(1, -1)), "max_translation"),
        (lambda m: WorstOfK(m, selection="first"), "selection"),
        (lambda m: WorstOfK(m, generator=0), "generator"),
        (lambda m: WorstOfK(m, chunk_size=0), "chunk_size"),
        (lambda m: WorstOfK(m, autocast="fp16"), "autocast"),
        (lambda m: WorstOfK("model"), "model must be a torch.nn.Module"),
        (lambda m: GridSearchRotoTranslation(m, rotations=0), "rotations"),
        (lambda m: GridSearchRotoTranslation(m, early_exit=1), "early_exit"),
        (lambda m: SpatialPGD(m, steps=-1), "steps"),
        (lambda m: SpatialPGD(m, step_size=(1, 2)), "step_size"),
    ],
)
def test_bad_configuration(model, factory, match: str) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        factory(model)


def test_unknown_keyword_is_rejected(model) -> None:
    with pytest.raises(TypeError, match="unexpected keyword"):
        WorstOfK(model, kk=3)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (torch.rand(6, 12, 12), None, "4 dimensions"),
        (torch.randint(0, 255, (6, 1, 12, 12), dtype=torch.uint8), None, "floating point"),
        (torch.rand(6, 1, 12, 12), torch.zeros(5, dtype=torch.long), r"labels must have shape \(6,\)"),
        (torch.rand(6, 1, 12, 12), torch.zeros(6), "integer class indices"),
        (torch.rand(6, 1, 12, 12), torch.full((6,), -1), ">= 0"),
        (torch.rand(6, 1, 12, 12), torch.full((6,), 10), "number of classes"),
    ],
)
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_bad_input(model, name: str, images, labels, match: str) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        FACTORIES[name](model).search(images, labels)


def test_transform_is_differentiable_with_respect_to_images(model, batch) -> None:
    images = batch[0].clone().requires_grad_(True)
    out = WorstOfK(model, k=3)(images, batch[1])
    out.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_pickle_keeps_the_generator_state(model, batch) -> None:
    attack = WorstOfK(model, generator=torch.Generator().manual_seed(11))
    clone = pickle.loads(pickle.dumps(attack))
    assert torch.equal(attack.search(*batch).params, clone.search(*batch).params)
    # The model is held by reference, not registered as a submodule.
    assert not isinstance(attack, nn.Module) and attack.model is model
