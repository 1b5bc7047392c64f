"""InvarianceRegularizedLoss takes its regularizer, weight and task_on defaults from the task."""

from __future__ import annotations

import pytest
import torch
from tests.test_tasks import TinySegmenter, _blobs
from torch import Tensor, nn

from advspatial import AdvSpatialError, InvarianceRegularizedLoss, WorstOfK
from advspatial.tasks import (
    BoxRegression,
    Classification,
    KeypointRegression,
    RegularizationDefaults,
    Segmentation,
    Task,
)

PARAMS = torch.tensor([[12.0, 1.0, -1.0], [-25.0, 0.0, 2.0], [0.0, 0.0, 0.0], [7.0, -2.0, 1.0]])


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(144, 10))


def _segmenter() -> nn.Module:
    torch.manual_seed(0)
    return TinySegmenter().eval()


def _box_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(144, 4))


def _point_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(144, 4), nn.Unflatten(1, (2, 2)))


def _settings(loss: InvarianceRegularizedLoss) -> tuple[str, float, str]:
    return loss.regularizer, loss.weight, loss.task_on


@pytest.mark.parametrize(
    ("model", "task", "expected"),
    [
        (_classifier, Classification(), ("kl", 8.0, "nat")),
        (_segmenter, Segmentation(), ("kl", 1.0, "both")),
        (_box_model, BoxRegression(), ("l2", 1.0, "both")),
        (_point_model, KeypointRegression(), ("l2", 1.0, "both")),
    ],
)
def test_defaults_per_task(model: type, task: Task, expected: tuple[str, float, str]) -> None:
    net = model()
    from_attack = InvarianceRegularizedLoss(net, WorstOfK(net, k=3, task=task))
    assert _settings(from_attack) == expected
    assert task.regularization_defaults() == RegularizationDefaults(*expected)
    assert f"weight={expected[1]}, task_on={expected[2]!r}" in repr(from_attack)


def test_default_weight_follows_the_regularizer_for_classification_only() -> None:
    net = _classifier()
    assert _settings(InvarianceRegularizedLoss(net, WorstOfK(net), regularizer="l2")) == ("l2", 1.0, "nat")
    segmenter = _segmenter()
    attack = WorstOfK(segmenter, task=Segmentation())
    assert _settings(InvarianceRegularizedLoss(segmenter, attack, regularizer="l2")) == ("l2", 1.0, "both")


@pytest.mark.parametrize("task", [Classification(), Segmentation()])
def test_explicit_arguments_win(task: Task) -> None:
    net = _classifier() if isinstance(task, Classification) else _segmenter()
    attack = WorstOfK(net, k=3, task=task)
    assert _settings(InvarianceRegularizedLoss(net, attack, weight=3.5))[1:] == (
        3.5,
        task.regularization_defaults().task_on,
    )
    loss = InvarianceRegularizedLoss(net, attack, regularizer="l2", weight=0.0, task_on="adv")
    assert _settings(loss) == ("l2", 0.0, "adv")
    assert InvarianceRegularizedLoss(net, attack, task_on="nat").task_on == "nat"


def test_box_defaults_make_a_box_loss_work_without_arguments() -> None:
    net = _box_model()
    images = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor(
        [[2.0, 2.0, 6.0, 7.0], [1.0, 1.0, 11.0, 11.0], [5.0, 5.0, 8.0, 9.0], [0.0, 3.0, 4.0, 9.0]]
    )
    attack = WorstOfK(net, k=3, task=BoxRegression())
    default = InvarianceRegularizedLoss(net, attack)(images, boxes, params=PARAMS)
    explicit = InvarianceRegularizedLoss(net, attack, regularizer="l2", weight=1.0, task_on="both")
    assert torch.equal(default, explicit(images, boxes, params=PARAMS))
    with pytest.raises(AdvSpatialError, match="regularizer must be 'l2' for box regression"):
        InvarianceRegularizedLoss(net, attack, regularizer="kl")(images, boxes, params=PARAMS)


def _classification_losses(**options: object) -> tuple[Tensor, list[Tensor]]:
    """Three training steps of the loss built with ``options``: the losses and the final weights."""
    net = _classifier()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    attack = WorstOfK(net, k=5, generator=torch.Generator().manual_seed(7))
    loss_fn = InvarianceRegularizedLoss(net, attack, **options)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(3)
    losses = []
    for _ in range(3):
        images, labels = (
            torch.rand(6, 1, 12, 12, generator=generator),
            torch.randint(0, 10, (6,), generator=generator),
        )
        loss = loss_fn(images, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses), [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize(
    ("defaults", "old"),
    [
        ({}, {"regularizer": "kl", "weight": 8.0, "task_on": "nat"}),
        ({"regularizer": "l2"}, {"regularizer": "l2", "weight": 1.0, "task_on": "nat"}),
        ({"task_on": "both"}, {"regularizer": "kl", "weight": 8.0, "task_on": "both"}),
    ],
)
def test_classification_is_bit_identical_to_the_old_defaults(defaults: dict, old: dict) -> None:  # type: ignore[type-arg]
    losses, weights = _classification_losses(**defaults)
    old_losses, old_weights = _classification_losses(**old)
    assert torch.equal(losses, old_losses)
    assert all(torch.equal(a, b) for a, b in zip(weights, old_weights, strict=True))


def test_segmentation_defaults_are_weight_one_on_both_views() -> None:
    net = _segmenter().train()
    images, masks = _blobs(4)
    attack = WorstOfK(net, k=3, task=Segmentation())
    torch.manual_seed(1)
    default = InvarianceRegularizedLoss(net, attack)(images, masks, params=PARAMS)
    torch.manual_seed(1)
    explicit = InvarianceRegularizedLoss(net, attack, regularizer="kl", weight=1.0, task_on="both")
    assert torch.equal(default, explicit(images, masks, params=PARAMS))
    torch.manual_seed(1)
    old = InvarianceRegularizedLoss(net, attack, weight=8.0, task_on="nat")
    assert not torch.equal(default, old(images, masks, params=PARAMS))
    assert old.last is not None and old.last.weight == 8.0


def test_a_custom_task_keeps_the_papers_defaults() -> None:
    class Counting(Task):
        def check_targets(self, targets: object, images: Tensor, name: str = "targets") -> Tensor:
            return torch.as_tensor(targets)

        def check_outputs(self, outputs: object, rows: int, size: tuple[int, int]) -> Tensor:
            return torch.as_tensor(outputs)

        def move_targets(self, targets: Tensor, params: Tensor, size: tuple[int, int]) -> Tensor:
            return targets

        def objective(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
            loss = (outputs[:, 0] - targets).abs()
            return loss, loss < 1

        def reference(self, outputs: Tensor) -> Tensor:
            return outputs[:, 0]

    assert Counting().regularization_defaults() == RegularizationDefaults("kl", 8.0, "nat")
    assert Counting().regularization_defaults("l2") == RegularizationDefaults("l2", 1.0, "nat")
