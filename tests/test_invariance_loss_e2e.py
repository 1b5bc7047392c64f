"""End to end on the bundled digits: standard vs worst-of-10 vs worst-of-10 + invariance regularizer.

A shortened version of ``examples/invariance_regularization_digits.py`` (fewer epochs, grid accuracy
on part of the test set) that asserts only what held with margin in the full runs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Subset, TensorDataset

from advspatial import GridSearchRotoTranslation, InvarianceRegularizedLoss, WorstOfK
from advspatial.data import load_digits_28
from advspatial.evaluation import natural_accuracy, search_accuracy
from advspatial.models import SmallCNN
from advspatial.training import fit

EPOCHS, SEED, GRID_IMAGES = 6, 0, 60


def train(model: nn.Module, dataset: TensorDataset, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> None:
    """``advspatial.training.fit`` (Adam 3e-3, cosine, batch 64) with a given loss."""
    fit(model, dataset, epochs=EPOCHS, batch_size=64, lr=3e-3, loss_fn=loss_fn, seed=SEED)


def attack(model: nn.Module) -> WorstOfK:
    return WorstOfK(model, k=10, generator=torch.Generator().manual_seed(SEED + 1000))


def loss_for(name: str, model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    if name == "standard":
        return lambda x, y: F.cross_entropy(model(x), y)
    if name == "worst-of-10":
        wo10 = attack(model)
        return lambda x, y: F.cross_entropy(model(wo10(x, y)), y)
    return InvarianceRegularizedLoss(model, attack(model), regularizer="kl", task_on="nat")


@pytest.mark.slow
def test_regularized_worst_of_10_on_digits() -> None:
    train_set, test_set = load_digits_28()
    grid_set = Subset(test_set, range(GRID_IMAGES))
    results: dict[str, tuple[float, float]] = {}
    for name in ("standard", "worst-of-10", "regularized"):
        torch.manual_seed(SEED)
        model = SmallCNN()
        loss_fn = loss_for(name, model)
        train(model, train_set, loss_fn)
        natural = natural_accuracy(model, test_set).accuracy
        grid = search_accuracy(model, grid_set, GridSearchRotoTranslation(model, early_exit=True)).accuracy
        results[name] = (natural, grid)
    assert isinstance(loss_fn, InvarianceRegularizedLoss)
    assert loss_fn.last is not None
    last_components = loss_fn.last.as_dict()
    print(results, last_components)

    (nat_a, grid_a), (nat_b, grid_b), (nat_c, grid_c) = results.values()
    assert nat_a > 0.8  # the standard model learned the task...
    assert grid_a < 0.1  # ...and is not spatially robust
    assert grid_b > grid_a + 0.15  # worst-of-10 training buys grid accuracy
    assert grid_c > grid_a + 0.15
    # Measured at this setting: natural 93.3 / 66.0 / 88.0 %, grid 0.0 / 30.0 / 36.7 % (60 images).
    # The regularized model keeps more natural accuracy than plain worst-of-10 training (22 points
    # here, 2-12 points in the 8-epoch runs); its grid advantage (4 of 60 images here) is too small
    # to assert on a 60-image subset, so it is reported in the guide rather than asserted.
    assert nat_c > nat_b
    assert 0.0 <= last_components["attack_success_rate"] <= 1.0
    assert last_components["regularizer"] >= 0.0
