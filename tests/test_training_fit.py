"""The plain training loop: argument checks and that it trains with a transform or a loss."""

from __future__ import annotations

from functools import partial

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


def _history(**kwargs: object) -> tuple[list[float], SmallCNN]:
    torch.manual_seed(0)
    model = SmallCNN(num_classes=2)
    return fit(model, _data(), epochs=2, batch_size=8, **kwargs), model  # type: ignore[arg-type]


def test_fit_steps_the_optimizer_it_is_given() -> None:
    default, _ = _history()
    assert _history(lr=3e-3)[0] == default  # the default is Adam(lr=3e-3)
    assert _history(optimizer=partial(torch.optim.Adam, lr=3e-3))[0] == default
    torch.manual_seed(0)
    model = SmallCNN(num_classes=2)
    before = {
        k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k
    }
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    fit(model, _data(), epochs=1, batch_size=8, optimizer=frozen)
    for name, value in before.items():  # lr 0: the given SGD was stepped, not a hidden Adam
        assert torch.equal(model.state_dict()[name], value), name
    history, _ = _history(optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9))
    assert history != default and len(history) == 2


def test_fit_calls_the_epoch_callback_and_stops_when_it_returns_true() -> None:
    calls: list[tuple[int, float, bool]] = []
    torch.manual_seed(0)
    model = SmallCNN(num_classes=2)

    def record(epoch: int, loss: float) -> None:
        calls.append((epoch, loss, model.training))

    history = fit(model, _data(), epochs=3, batch_size=8, on_epoch_end=record)
    assert calls == [(i, loss, True) for i, loss in enumerate(history)] and len(history) == 3
    assert not model.training
    stopped, _ = _history(on_epoch_end=lambda epoch, loss: epoch == 0)
    assert len(stopped) == 1
    kept, _ = _history(on_epoch_end=lambda epoch, loss: 1)  # only True stops
    assert len(kept) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "sgd"}, "optimizer must be a torch.optim.Optimizer or a factory"),
        ({"optimizer": lambda params: None}, "the factory returned a NoneType"),
        (
            {"optimizer": torch.optim.SGD(SmallCNN(num_classes=2).parameters(), lr=0.1)},
            "optimizer must be built over this model's parameters",
        ),
        ({"optimizer": partial(torch.optim.SGD, lr=0.1), "lr": 0.1}, "lr applies to the default Adam only"),
        ({"lr": 0.0}, "lr must be a number > 0"),
        ({"on_epoch_end": 3}, "on_epoch_end must be a callable"),
    ],
)
def test_fit_rejects_bad_optimizers_and_callbacks(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(AdvSpatialError, match=message):
        fit(SmallCNN(num_classes=2), _data(), epochs=1, **kwargs)  # type: ignore[arg-type]
