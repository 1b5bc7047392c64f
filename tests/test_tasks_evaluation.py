"""The evaluation sweeps with dense tasks: robust fraction and dataset-level mIoU of the chosen transforms."""

from __future__ import annotations

import math

import pytest
import torch
from tests.checks import assert_model_unchanged, model_snapshot
from tests.test_tasks import IGNORE, _blobs, _trained_segmenter
from torch import Tensor
from torch.utils.data import TensorDataset

from advspatial import AdvSpatialError, roto_translate, roto_translate_masks
from advspatial.evaluation import grid_accuracy, natural_accuracy, robustness_sweep, worst_of_k_accuracy
from advspatial.tasks import BoxRegression, Segmentation


def _miou(predictions: Tensor, masks: Tensor, classes: int) -> float:
    """Dataset-level mean IoU over classes present, by a plain loop."""
    ious = []
    valid = masks != IGNORE
    for c in range(classes):
        inter = ((predictions == c) & (masks == c) & valid).sum()
        union = (((predictions == c) | (masks == c)) & valid).sum()
        if union > 0:
            ious.append(float(inter) / float(union))
    return sum(ious) / len(ious)


def test_natural_and_grid_miou_match_a_plain_loop() -> None:
    net = _trained_segmenter()
    images, masks = _blobs(10, seed=7)
    data = TensorDataset(images, masks)
    natural = natural_accuracy(net, data, batch_size=4, task=Segmentation())
    net.eval()
    with torch.no_grad():
        predictions = net(images).argmax(dim=1)
    assert math.isclose(natural.metrics["miou"], _miou(predictions, masks, 3), rel_tol=1e-9)
    accuracy = ((predictions == masks).float().flatten(1).mean(dim=1) >= 0.9).float().mean()
    assert math.isclose(natural.accuracy, float(accuracy))

    grid = grid_accuracy(
        net, data, rotations=5, translations=3, early_exit=False, batch_size=4, task=Segmentation()
    )
    moved = roto_translate_masks(masks, grid.params, fill=IGNORE)
    with torch.no_grad():
        chosen = net(roto_translate(images, grid.params)).argmax(dim=1)
    assert math.isclose(grid.metrics["miou"], _miou(chosen, moved, 3), rel_tol=1e-9)
    assert grid.metrics["miou"] < natural.metrics["miou"]
    assert grid.accuracy <= natural.accuracy
    assert grid.evaluations == 10 * 45 and grid.targets.shape == masks.shape
    assert set(grid.to_dict(per_sample=False)["metrics"]) == {"miou", "pixel_accuracy"}


def test_robustness_sweep_with_segmentation_and_batch_independence() -> None:
    net = _trained_segmenter().train()
    images, masks = _blobs(9, seed=3)
    net(images).sum().backward()
    before = model_snapshot(net)
    data = TensorDataset(images, masks)
    options = {"rotations": 3, "translations": 3, "pgd_steps": 2, "task": Segmentation()}
    results = robustness_sweep(net, data, batch_size=4, **options)
    assert_model_unchanged(net, before)
    again = robustness_sweep(net, data, batch_size=9, **options)
    assert sorted(results) == ["first_order", "grid", "natural", "random", "worst_of_10"]
    for name, result in results.items():
        assert 0.0 <= result.metrics["miou"] <= 1.0, name
        assert math.isclose(result.metrics["miou"], again[name].metrics["miou"], rel_tol=1e-6), name
        assert torch.equal(result.correct, again[name].correct), name
    assert results["worst_of_10"].metrics["miou"] <= results["natural"].metrics["miou"] + 1e-9


def test_box_sweep_reports_mean_iou() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 4))
    images = torch.rand(6, 1, 12, 12)
    boxes = torch.tensor([[2.0, 2.0, 8.0, 9.0]]).repeat(6, 1)
    result = worst_of_k_accuracy(
        model,
        TensorDataset(images, boxes),
        k=3,
        generator=torch.Generator().manual_seed(0),
        task=BoxRegression(),
    )
    assert set(result.metrics) == {"mean_iou", "iou_rate"} and 0.0 <= result.metrics["mean_iou"] <= 1.0


def test_sweeps_check_dense_targets() -> None:
    net = _trained_segmenter()
    images, masks = _blobs(4)
    with pytest.raises(AdvSpatialError, match="masks must have shape"):
        natural_accuracy(net, [(images, masks[:, :-1])], task=Segmentation())
    with pytest.raises(AdvSpatialError, match="masks must hold integer class indices"):
        grid_accuracy(net, [(images, masks.float())], rotations=3, translations=1, task=Segmentation())
    with pytest.raises(AdvSpatialError, match="per-pixel logits"):
        natural_accuracy(
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 3)),
            [(images, masks)],
            task=Segmentation(),
        )
