"""The invariance loss with dense tasks: an equivariance regularizer, moved targets for the task term."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.checks import assert_model_unchanged, model_snapshot
from tests.test_tasks import IGNORE, TinySegmenter, _blobs
from torch import Tensor, nn

from advspatial import (
    AdvSpatialError,
    InvarianceRegularizedLoss,
    WorstOfK,
    roto_translate,
    roto_translate_masks,
)
from advspatial.tasks import BoxRegression, KeypointRegression, Segmentation


def test_identity_transform_has_zero_equivariance_penalty() -> None:
    torch.manual_seed(0)
    net = TinySegmenter().eval()
    images, masks = _blobs(3)
    for regularizer in ("kl", "l2"):
        loss_fn = InvarianceRegularizedLoss(net, WorstOfK(net, task=Segmentation()), regularizer=regularizer)
        loss = loss_fn(images, masks, params=torch.zeros(3, 3))
        assert loss_fn.last is not None
        assert float(loss_fn.last.regularizer) < 1e-6
        expected = F.cross_entropy(net(images), masks)
        assert math.isclose(float(loss.detach()), float(expected.detach()), rel_tol=1e-5)


def test_pointwise_model_is_equivariant_to_quarter_turns() -> None:
    torch.manual_seed(0)
    net = nn.Conv2d(1, 3, 1)
    images, masks = _blobs(2)
    loss_fn = InvarianceRegularizedLoss(net, WorstOfK(net, task=Segmentation()), regularizer="l2")
    loss_fn(images, masks, params=torch.tensor([[90.0, 0.0, 0.0], [-90.0, 0.0, 0.0]]))
    assert loss_fn.last is not None and float(loss_fn.last.regularizer) < 1e-8
    # A shift moves pixels out of frame: they are excluded, the rest still agrees.
    loss_fn(images, masks, params=torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, -2.0]]))
    assert float(loss_fn.last.regularizer) < 1e-8
    # A model that is not equivariant (it sees the column index) pays a penalty.
    coords = torch.linspace(0, 1, 12).expand(1, 1, 12, 12)

    class Positional(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return net(x + coords)

    positional = Positional()
    loss_fn = InvarianceRegularizedLoss(
        positional, WorstOfK(positional, task=Segmentation()), regularizer="l2"
    )
    loss_fn(images, masks, params=torch.tensor([[90.0, 0.0, 0.0], [-90.0, 0.0, 0.0]]))
    assert float(loss_fn.last.regularizer) > 1e-4


def test_adversarial_task_term_uses_moved_masks_and_gradients_flow() -> None:
    torch.manual_seed(0)
    net = TinySegmenter().train()
    images, masks = _blobs(4)
    attack = WorstOfK(net, k=4, task=Segmentation(), generator=torch.Generator().manual_seed(0))
    loss_fn = InvarianceRegularizedLoss(net, attack, regularizer="kl", task_on="adv")
    params = torch.tensor([[20.0, 1.0, -2.0], [0.0, 0.0, 0.0], [-30.0, 3.0, 3.0], [10.0, -1.0, 0.0]])
    loss = loss_fn(images, masks, params=params)
    net.eval()
    with torch.no_grad():
        transformed = net(torch.cat([images, roto_translate(images, params)]))[4:]
    net.train()
    moved = roto_translate_masks(masks, params, fill=IGNORE)
    valid = moved != IGNORE
    ce = F.cross_entropy(transformed, moved.masked_fill(~valid, 0), reduction="none")
    assert loss_fn.last is not None
    # (train-mode BatchNorm uses batch statistics, so compare in eval mode through a replay)
    net.eval()
    loss_eval = loss_fn(images, masks, params=params)
    assert math.isclose(float(loss_fn.last.task), float((ce * valid).sum() / valid.sum()), rel_tol=1e-5), (
        "the adversarial term scores the moved masks"
    )
    net.train()
    loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.head.parameters())
    assert float(loss_eval.detach()) > 0


def test_search_inside_the_loss_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    net = TinySegmenter().train()
    images, masks = _blobs(4)
    before = model_snapshot(net)
    attack = WorstOfK(net, k=4, task=Segmentation(), generator=torch.Generator().manual_seed(0))
    loss_fn = InvarianceRegularizedLoss(net, attack, regularizer="kl", attack_objective="regularizer")
    loss_fn._search(images, masks)
    assert_model_unchanged(net, before)
    loss_fn(images, masks)
    assert loss_fn.last is not None and loss_fn.last.search is not None
    assert loss_fn.last.search.targets is None  # ranked label-free, by the equivariance objective


def test_box_and_point_regularizers() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 1, 12, 12)
    boxes_net = nn.Sequential(nn.Flatten(), nn.Linear(144, 4))
    boxes = torch.tensor([[2.0, 2.0, 6.0, 7.0], [1.0, 3.0, 9.0, 8.0]])
    loss_fn = InvarianceRegularizedLoss(
        boxes_net, WorstOfK(boxes_net, task=BoxRegression()), regularizer="l2"
    )
    loss = loss_fn(images, boxes)
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    with pytest.raises(AdvSpatialError, match="regularizer must be 'l2'"):
        InvarianceRegularizedLoss(boxes_net, WorstOfK(boxes_net, task=BoxRegression()), regularizer="kl")(
            images, boxes
        )

    points_net = nn.Sequential(nn.Flatten(), nn.Linear(144, 4), nn.Unflatten(1, (2, 2)))
    points = torch.tensor([[[3.0, 4.0], [6.0, 6.0]], [[5.0, 5.0], [8.0, 2.0]]])
    attack = WorstOfK(points_net, task=KeypointRegression())
    loss_fn = InvarianceRegularizedLoss(points_net, attack, regularizer="l2", weight=0.0)
    assert math.isfinite(float(loss_fn(images, points).detach()))


def test_the_task_must_match_the_attack() -> None:
    net = TinySegmenter()
    with pytest.raises(AdvSpatialError, match="task must be the attack's task"):
        InvarianceRegularizedLoss(net, WorstOfK(net), task=Segmentation())
    assert isinstance(InvarianceRegularizedLoss(net, WorstOfK(net, task=Segmentation())).task, Segmentation)
    with pytest.raises(AdvSpatialError, match="masks must have shape"):
        InvarianceRegularizedLoss(net, WorstOfK(net, task=Segmentation()))(
            torch.rand(2, 1, 12, 12), torch.zeros(2)
        )
