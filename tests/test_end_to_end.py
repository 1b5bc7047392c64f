"""End to end on real data: scikit-learn's digits, upsampled to 28 x 28."""

from __future__ import annotations

import pytest
import torch

from advspatial import GridSearchRotoTranslation, WorstOfK
from advspatial.data import load_digits_28
from advspatial.evaluation import natural_accuracy, search_accuracy
from advspatial.models import SmallCNN
from advspatial.training import fit


@pytest.fixture(scope="module")
def trained() -> tuple[SmallCNN, torch.utils.data.TensorDataset]:
    torch.manual_seed(0)
    train, test = load_digits_28()
    model = SmallCNN()
    fit(model, train, epochs=8, seed=0)
    return model, test


def test_digits_data_layout() -> None:
    train, test = load_digits_28()
    assert len(train) + len(test) == 1797 and len(test) == 359
    image, label = train[0]
    assert image.shape == (1, 28, 28) and float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    # The digit sits in the central 20 x 20, leaving room for the attack space.
    assert float(train.tensors[0][:, :, :4].abs().sum()) == 0.0
    assert 0 <= int(label) <= 9


@pytest.mark.slow
def test_standard_model_is_accurate_but_not_spatially_robust(trained) -> None:
    model, test = trained
    natural = natural_accuracy(model, test).accuracy
    worst = search_accuracy(model, test, WorstOfK(model, k=10, generator=torch.Generator().manual_seed(1)))
    early = search_accuracy(model, test, GridSearchRotoTranslation(model, early_exit=True))
    # The exhaustive 775-point grid on a third of the test set (about 15 s on 2 cores).
    subset = torch.utils.data.Subset(test, range(120))
    exhaustive = search_accuracy(model, subset, GridSearchRotoTranslation(model))
    early_subset = search_accuracy(model, subset, GridSearchRotoTranslation(model, early_exit=True))
    print(
        f"\nstandard digits CNN: natural {natural:.4f}, worst-of-10 {worst.accuracy:.4f}, "
        f"grid {early.accuracy:.4f}; on 120 images early exit used {early_subset.evaluations} "
        f"of {exhaustive.evaluations} evaluations"
    )
    assert natural > 0.95
    assert worst.accuracy < natural - 0.3
    assert early.accuracy <= worst.accuracy
    assert torch.equal(early_subset.correct, exhaustive.correct)
    assert torch.equal(early_subset.correct, early.correct[:120])
    assert early_subset.evaluations <= exhaustive.evaluations / 3
