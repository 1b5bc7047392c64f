"""The dense digits sets (segmentation, localization) and the small dense models (U-Net, regressor)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from advspatial.data import (
    STROKE_THRESHOLD,
    load_digits_28,
    load_digits_localization,
    load_digits_segmentation,
)
from advspatial.data.digits import sklearn_digits, split_indices
from advspatial.errors import AdvSpatialError
from advspatial.models import HeatmapRegressor, UNet, soft_argmax


@pytest.fixture(scope="module")
def segmentation() -> tuple[torch.utils.data.TensorDataset, torch.utils.data.TensorDataset]:
    return load_digits_segmentation(seed=3)


@pytest.fixture(scope="module")
def localization() -> tuple[torch.utils.data.TensorDataset, torch.utils.data.TensorDataset]:
    return load_digits_localization(seed=3)


def _rows(images: torch.Tensor) -> torch.Tensor:
    return torch.unique(images.flatten(1), dim=0, return_counts=True)[1]


# --------------------------------------------------------------------------------------------- segmentation


def test_segmentation_shapes_and_dtypes(segmentation) -> None:
    train, test = segmentation
    for dataset, n in ((train, 719), (test, 179)):
        images, masks = dataset.tensors
        assert images.shape == (n, 1, 32, 32) and images.dtype == torch.float32
        assert masks.shape == (n, 32, 32) and masks.dtype == torch.int64
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        assert int(masks.min()) == 0 and int(masks.max()) <= 10


def test_segmentation_is_deterministic_for_a_seed(segmentation) -> None:
    again = load_digits_segmentation(seed=3)
    for first, second in zip(segmentation, again, strict=True):
        for a, b in zip(first.tensors, second.tensors, strict=True):
            assert torch.equal(a, b)
    other = load_digits_segmentation(seed=4)
    assert not torch.equal(other[0].tensors[0], segmentation[0].tensors[0])


def test_segmentation_mask_is_the_stroke_with_the_digit_class_plus_one(segmentation) -> None:
    _, test28 = load_digits_28(seed=3)
    digit_labels = test28.tensors[1]
    images, masks = segmentation[1].tensors
    assert torch.equal(masks > 0, images[:, 0] > STROKE_THRESHOLD)
    for strip, columns in enumerate((slice(0, 16), slice(16, 32))):
        classes = masks[:, :, columns].flatten(1)
        # each strip holds one digit: one class > 0, the label of the matching load_digits_28 test digit
        top = classes.max(dim=1).values
        assert torch.equal(top, digit_labels[strip : 2 * len(top) : 2] + 1)
        assert bool(((classes == 0) | (classes == top[:, None])).all())
        assert bool((top > 0).all())


def test_segmentation_split_is_disjoint_and_covers_the_digits() -> None:
    # 8 x 8 digits on 8 x 8 canvases: every canvas is one original digit, unchanged.
    train, test = load_digits_segmentation(canvas_size=8, digits_per_image=1, digit_size=8, seed=5)
    small, _ = sklearn_digits()
    together = torch.cat([train.tensors[0], test.tensors[0]])
    assert len(train) + len(test) == len(small) == 1797 and len(test) == 359
    assert torch.equal(torch.unique(together.flatten(1), dim=0), torch.unique(small.flatten(1), dim=0))
    assert torch.equal(_rows(together).sort().values, _rows(small).sort().values)
    train_idx, test_idx, _ = split_indices(1797, 0.2, 5)
    assert set(train_idx.tolist()).isdisjoint(test_idx.tolist())
    assert sorted(train_idx.tolist() + test_idx.tolist()) == list(range(1797))


def test_segmentation_other_layouts() -> None:
    train, _ = load_digits_segmentation(canvas_size=48, digits_per_image=3, digit_size=16, test_fraction=0.5)
    images, masks = train.tensors
    assert images.shape == (299, 1, 48, 48)
    assert torch.equal(masks > 0, images[:, 0] > STROKE_THRESHOLD)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"digit_size": 17}, "digit_size"),
        ({"canvas_size": 0}, "canvas_size"),
        ({"digits_per_image": 0}, "digits_per_image"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_segmentation_bad_arguments(kwargs, match) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        load_digits_segmentation(**kwargs)


# --------------------------------------------------------------------------------------------- localization


def test_localization_shapes_dtypes_and_labels(localization) -> None:
    _, test28 = load_digits_28(seed=3)
    for dataset, n in zip(localization, (1438, 359), strict=True):
        images, boxes, points, labels = dataset.tensors
        assert images.shape == (n, 1, 40, 40) and images.dtype == torch.float32
        assert boxes.shape == (n, 4) and boxes.dtype == torch.float32
        assert points.shape == (n, 1, 2) and points.dtype == torch.float32
        assert labels.shape == (n,) and labels.dtype == torch.int64
    assert torch.equal(localization[1].tensors[3], test28.tensors[1])


def test_localization_is_deterministic_for_a_seed(localization) -> None:
    again = load_digits_localization(seed=3)
    for first, second in zip(localization, again, strict=True):
        for a, b in zip(first.tensors, second.tensors, strict=True):
            assert torch.equal(a, b)
    assert not torch.equal(load_digits_localization(seed=4)[0].tensors[1], localization[0].tensors[1])


def test_localization_box_is_the_tight_box_of_the_stroke(localization) -> None:
    images, boxes, _, _ = localization[0].tensors
    stroke = images[:, 0] > STROKE_THRESHOLD
    rows = torch.arange(40)[None, :, None] + 0.5  # pixel centres
    cols = torch.arange(40)[None, None, :] + 0.5
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    inside = (cols > x1) & (cols < x2) & (rows > y1) & (rows < y2)
    assert bool((inside | ~stroke).all()), "a stroke pixel lies outside its box"
    # tight: each side of the box touches a stroke pixel
    assert bool((stroke & (cols == x1 + 0.5)).flatten(1).any(1).all())
    assert bool((stroke & (cols == x2 - 0.5)).flatten(1).any(1).all())
    assert bool((stroke & (rows == y1 + 0.5)).flatten(1).any(1).all())
    assert bool((stroke & (rows == y2 - 0.5)).flatten(1).any(1).all())
    assert bool((boxes >= 0).all() and (boxes <= 40).all())


def test_localization_keypoint_is_the_centre_of_mass_of_the_stroke(localization) -> None:
    images, boxes, points, _ = localization[1].tensors
    weights = torch.where(images[:, 0] > STROKE_THRESHOLD, images[:, 0], 0.0).double()
    centres = torch.arange(40, dtype=torch.float64) + 0.5
    x = (weights.sum(1) * centres).sum(1) / weights.sum((1, 2))
    y = (weights.sum(2) * centres).sum(1) / weights.sum((1, 2))
    torch.testing.assert_close(points[:, 0], torch.stack([x, y], 1).float(), rtol=0, atol=1e-4)
    px, py = points[:, 0, 0], points[:, 0, 1]
    assert bool(((boxes[:, 0] <= px) & (px <= boxes[:, 2]) & (boxes[:, 1] <= py) & (py <= boxes[:, 3])).all())


def test_localization_split_is_disjoint_and_covers_the_digits() -> None:
    train, test = load_digits_localization(canvas_size=8, digit_size=8, seed=2)
    small, labels = sklearn_digits()
    together = torch.cat([train.tensors[0], test.tensors[0]])
    assert torch.equal(_rows(together).sort().values, _rows(small).sort().values)
    assert torch.equal(torch.unique(together.flatten(1), dim=0), torch.unique(small.flatten(1), dim=0))
    assert torch.equal(torch.cat([train.tensors[3], test.tensors[3]]).bincount(), labels.bincount())


def test_localization_bad_arguments() -> None:
    with pytest.raises(AdvSpatialError, match="digit_size"):
        load_digits_localization(canvas_size=10, digit_size=14)
    with pytest.raises(AdvSpatialError, match="test_fraction"):
        load_digits_localization(test_fraction=0.0)


# --------------------------------------------------------------------------------------------- models


def test_unet_output_shape_for_any_size() -> None:
    torch.manual_seed(0)
    net = UNet(num_classes=11).eval()
    assert net(torch.rand(3, 1, 32, 32)).shape == (3, 11, 32, 32)
    assert net(torch.rand(2, 1, 31, 17)).shape == (2, 11, 31, 17)
    assert UNet(in_channels=3, num_classes=4, width=4, depth=3).eval()(torch.rand(1, 3, 20, 24)).shape == (
        1,
        4,
        20,
        24,
    )
    assert 5_000 < sum(p.numel() for p in net.parameters()) < 150_000
    with pytest.raises(AdvSpatialError, match="num_classes"):
        UNet(num_classes=0)


def test_unet_overfits_a_tiny_batch(segmentation) -> None:
    images, masks = segmentation[0].tensors
    images, masks = images[:8], masks[:8]
    background = float((masks == 0).float().mean())
    torch.manual_seed(0)
    net = UNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(net(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        predicted = net(images).argmax(dim=1)
    accuracy = float((predicted == masks).float().mean())
    stroke = masks > 0
    stroke_accuracy = float((predicted[stroke] == masks[stroke]).float().mean())
    assert accuracy > background + 0.5 * (1 - background), (accuracy, background)
    assert stroke_accuracy > 0.5


def test_soft_argmax_reads_pixel_centres() -> None:
    maps = torch.full((2, 3, 5, 7), -1e4)
    maps[0, 0, 4, 6] = maps[0, 1, 0, 0] = maps[0, 2, 2, 3] = 0.0
    maps[1] = 0.0  # uniform: the centre of the image
    xy = soft_argmax(maps)[0]
    expected = torch.tensor([[[6.5, 4.5], [0.5, 0.5], [3.5, 2.5]], [[3.5, 2.5]] * 3])
    torch.testing.assert_close(xy, expected)


def test_heatmap_regressor_shapes_and_box_order() -> None:
    torch.manual_seed(0)
    images = torch.rand(4, 1, 40, 36)
    boxes = HeatmapRegressor(output="box").eval()(images)
    assert boxes.shape == (4, 4)
    assert bool((boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all())
    points = HeatmapRegressor(output="points", num_points=5).eval()(images)
    assert points.shape == (4, 5, 2)
    with pytest.raises(AdvSpatialError, match="output"):
        HeatmapRegressor(output="mask")  # type: ignore[arg-type]


@pytest.mark.parametrize("output", ["points", "box"])
def test_heatmap_regressor_learns_a_tiny_batch(localization, output) -> None:
    images, boxes, points, _ = localization[0].tensors
    images, target = images[:8], (points if output == "points" else boxes)[:8]
    torch.manual_seed(0)
    net = HeatmapRegressor(output=output)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float((net.eval()(images) - target).abs().mean())
    for _ in range(60):
        net.train()
        loss = F.smooth_l1_loss(net(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float((net.eval()(images) - target).abs().mean())
    assert after < 2.5 < 5.0 < before, (before, after)


# --------------------------------------------------------------------------------------------- the example


def test_segmentation_example_losses_and_evaluation_run(segmentation, monkeypatch) -> None:
    """examples/segmentation_digits.py: every training loss backpropagates, the evaluation is in range."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    monkeypatch.delitem(sys.modules, "segmentation_digits", raising=False)
    example = importlib.import_module("segmentation_digits")
    train, test = segmentation
    images, masks = train.tensors[0][:4], train.tensors[1][:4]
    for name, factory in example.RUNS.items():
        torch.manual_seed(0)
        model = UNet(width=4)
        loss = factory(model, 0)(images, masks)
        loss.backward()
        assert loss.ndim == 0 and bool(torch.isfinite(loss)), name
        assert all(p.grad is not None for p in model.parameters()), name
    small = torch.utils.data.TensorDataset(*(t[:8] for t in test.tensors))
    scores = example.evaluate(model.eval(), small, grid_images=4, grid_shape=(3, 1))
    assert set(scores) == {"natural", "random", "worst-of-10", "grid"}
    assert all(0.0 <= miou <= 1.0 and 0.0 <= robust <= 1.0 for miou, robust in scores.values())
