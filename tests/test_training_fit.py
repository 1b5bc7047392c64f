"""The plain training loop: argument checks and that it trains with a transform or a loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from advspatial import AdvSpatialError, WorstOfK
from advspatial.models import SmallCNN
from advspatial.training import fit


def _data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(32) % 2
    images = torch.rand(32, 1, 28, 28, generator=generator) * 0.2
    images[labels == 1, :, 8:20, 8:20] += 0.8  # class 1: a bright square
    return TensorDataset(images, labels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": -1}, "epochs must be an integer >= 0"),
        ({"epochs": 1.5}, "epochs must be an integer >= 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_fit_rejects_bad_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(AdvSpatialError, match=message):
        fit(SmallCNN(num_classes=2), _data(), **kwargs)  # type: ignore[arg-type]


def test_fit_rejects_a_non_module() -> None:
    with pytest.raises(AdvSpatialError, match="model"):
        fit(lambda x: x, _data())  # type: ignore[arg-type]


def test_fit_learns_with_a_search_transform_and_with_a_custom_loss() -> None:
    data = _data()
    torch.manual_seed(0)
    model = SmallCNN(num_classes=2)
    search = WorstOfK(model, k=2, generator=torch.Generator().manual_seed(0))
    history = fit(model, data, epochs=4, batch_size=8, transform=search)
    assert history[-1] < history[0]
    assert not model.training
    torch.manual_seed(0)
    other = SmallCNN(num_classes=2)
    calls = []

    def loss_fn(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(images.shape[0])
        return F.cross_entropy(other(images), labels)

    history = fit(other, data, epochs=2, batch_size=8, loss_fn=loss_fn)
    assert calls == [8] * 8 and history[-1] < history[0]
