"""Moved targets keep the caller's dtype (as torchvision's ``affine`` keeps a mask's or a box's), while
every score stays the one of the int64 / float32 path."""

from __future__ import annotations

import pytest
import torch
from tests.test_tasks import IGNORE, TinySegmenter, _blobs, _trained_segmenter
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from advspatial import (
    AdvSpatialError,
    GridSearchRotoTranslation,
    InvarianceRegularizedLoss,
    SpatialPGD,
    WorstOfK,
    roto_translate_boxes,
    roto_translate_masks,
    roto_translate_points,
)
from advspatial.adapters.dataloader import SpatialSearchBatch
from advspatial.evaluation import grid_accuracy, natural_accuracy, worst_of_k_accuracy
from advspatial.strategies.result import SearchResult
from advspatial.tasks import BoxRegression, KeypointRegression, Segmentation

MASK_DTYPES = [torch.uint8, torch.int16, torch.int32]


def _segmenter() -> TinySegmenter:
    torch.manual_seed(0)
    return TinySegmenter().eval()


def _assert_same_search(given: SearchResult, reference: SearchResult, dtype: torch.dtype) -> None:
    """``given`` (masks of ``dtype``) chose and scored exactly as ``reference`` (int64 masks)."""
    assert given.targets is not None and reference.targets is not None
    assert reference.targets.dtype == torch.int64
    assert given.targets.dtype == dtype
    assert torch.equal(given.targets.long(), reference.targets)
    assert torch.equal(given.params, reference.params)
    assert torch.equal(given.loss, reference.loss)
    assert torch.equal(given.correct, reference.correct)
    if reference.candidate_losses is not None:
        assert given.candidate_losses is not None
        assert torch.equal(given.candidate_losses, reference.candidate_losses)


@pytest.mark.parametrize("dtype", MASK_DTYPES)
def test_worst_of_k_keeps_the_mask_dtype(dtype: torch.dtype) -> None:
    net, (images, masks) = _segmenter(), _blobs(5)

    def search(targets: Tensor) -> SearchResult:
        generator = torch.Generator().manual_seed(3)
        return WorstOfK(net, k=7, task=Segmentation(), generator=generator).search(images, targets)

    given, reference = search(masks.to(dtype)), search(masks)
    _assert_same_search(given, reference, dtype)
    assert given.targets is not None
    assert torch.equal(given.targets, roto_translate_masks(masks.to(dtype), given.params, fill=IGNORE))


@pytest.mark.parametrize("dtype", MASK_DTYPES)
def test_grid_and_pgd_keep_the_mask_dtype(dtype: torch.dtype) -> None:
    net, (images, masks) = _segmenter(), _blobs(4, size=13)
    grid = GridSearchRotoTranslation(net, rotations=5, translations=3, task=Segmentation())
    _assert_same_search(grid.search(images, masks.to(dtype)), grid.search(images, masks), dtype)
    early = GridSearchRotoTranslation(net, rotations=5, translations=3, task=Segmentation(), early_exit=True)
    _assert_same_search(early.search(images, masks.to(dtype)), early.search(images, masks), dtype)
    pgd = SpatialPGD(net, steps=2, random_start=False, task=Segmentation())
    _assert_same_search(pgd.search(images, masks.to(dtype)), pgd.search(images, masks), dtype)


def test_a_mask_dtype_that_cannot_hold_the_ignore_index_is_refused() -> None:
    net, (images, masks) = _segmenter(), _blobs(2)
    attack = WorstOfK(net, k=3, task=Segmentation(ignore_index=-1))
    with pytest.raises(
        AdvSpatialError, match=r"masks of dtype torch.uint8 cannot hold the ignore_index .* \(-1\)"
    ):
        attack.search(images, masks.to(torch.uint8))
    assert attack.search(images, masks.to(torch.int8)).targets.dtype == torch.int8  # type: ignore[union-attr]
    with pytest.raises(AdvSpatialError, match="integer class indices"):
        attack.search(images, masks.bool())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32])
def test_segmentation_sweeps_keep_the_mask_dtype_and_every_number(dtype: torch.dtype) -> None:
    net, (images, masks) = _trained_segmenter(), _blobs(8, seed=5)
    task = Segmentation()

    def sweeps(targets: Tensor) -> list:  # type: ignore[type-arg]
        data = TensorDataset(images, targets)
        return [
            natural_accuracy(net, data, batch_size=3, task=task),
            worst_of_k_accuracy(
                net, data, k=5, generator=torch.Generator().manual_seed(2), batch_size=3, task=task
            ),
            grid_accuracy(net, data, rotations=5, translations=3, early_exit=False, batch_size=3, task=task),
        ]

    for given, reference in zip(sweeps(masks.to(dtype)), sweeps(masks), strict=True):
        assert reference.targets.dtype == torch.int64 and given.targets.dtype == dtype
        assert torch.equal(given.targets.long(), reference.targets)
        assert torch.equal(given.loss, reference.loss) and torch.equal(given.params, reference.params)
        assert torch.equal(given.correct, reference.correct)
        assert given.metrics == reference.metrics and given.metrics


def test_batch_adapter_returns_masks_in_their_dtype() -> None:
    net, (images, masks) = _segmenter(), _blobs(3)

    def adapter() -> SpatialSearchBatch:
        return SpatialSearchBatch(
            WorstOfK(net, k=4, task=Segmentation(), generator=torch.Generator().manual_seed(0))
        )

    given, reference = adapter(), adapter()
    _, moved = given((images, masks.to(torch.uint8)))
    _, expected = reference((images, masks))
    assert moved.dtype == torch.uint8 and expected.dtype == torch.int64
    assert torch.equal(moved.long(), expected)
    assert given.last_result is not None and torch.equal(moved, given.last_result.targets)


def test_segmentation_loss_is_bit_identical_for_any_mask_dtype() -> None:
    net, (images, masks) = _segmenter().train(), _blobs(4)
    params = torch.tensor([[10.0, 1.0, -1.0], [-20.0, 0.0, 2.0], [0.0, 0.0, 0.0], [5.0, -2.0, 1.0]])
    task = Segmentation()
    values = []
    for targets in (masks, masks.to(torch.uint8), masks.to(torch.int32)):
        torch.manual_seed(1)  # dropout
        attack = WorstOfK(net, k=3, task=task)
        values.append(InvarianceRegularizedLoss(net, attack, task_on="both")(images, targets, params=params))
        assert task.loss(net(images), task.move_targets(targets, params, (12, 12))).isfinite()
    assert torch.equal(values[0], values[1]) and torch.equal(values[0], values[2])


def _box_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(144, 4))


def _point_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(144, 6), nn.Unflatten(1, (3, 2)))


BOXES = torch.tensor([[2.1, 2.3, 6.7, 7.9], [0.0, 0.0, 12.0, 12.0], [5.0, 5.5, 6.25, 6.0]])
POINTS = torch.tensor([[[3.1, 4.3], [6.0, 6.7], [8.5, 2.2]]]).repeat(3, 1, 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_boxes_and_points_keep_their_float_dtype_and_scores(dtype: torch.dtype) -> None:
    images = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    cases = [
        (
            _box_model(),
            BoxRegression(),
            BOXES,
            lambda t, p: roto_translate_boxes(t[:, None], p, (12, 12))[:, 0],
        ),
        (_point_model(), KeypointRegression(), POINTS, lambda t, p: roto_translate_points(t, p, (12, 12))),
    ]
    for model, task, targets, move in cases:
        given = targets.to(dtype)

        def search(values: Tensor, model: nn.Module = model, task: object = task) -> SearchResult:
            generator = torch.Generator().manual_seed(4)
            return WorstOfK(model, k=6, task=task, generator=generator).search(images, values)  # type: ignore[arg-type]

        result, reference = search(given), search(given.float())  # scored as float32 either way
        assert result.targets is not None and result.targets.dtype == dtype
        assert torch.equal(result.candidate_losses, reference.candidate_losses)  # type: ignore[arg-type]
        assert torch.equal(result.params, reference.params) and torch.equal(result.loss, reference.loss)
        expected = task.move_targets(given, result.params, (12, 12))  # type: ignore[attr-defined]
        torch.testing.assert_close(result.targets, expected, rtol=0, atol=0, equal_nan=True)
        finite = torch.isfinite(expected)
        geometry = move(given, result.params)  # moved in the targets' own dtype, as torchvision does
        assert geometry.dtype == dtype and torch.equal(result.targets[finite], geometry[finite])
        assert bool(finite.any())


def test_integer_boxes_come_back_float32() -> None:
    images = torch.rand(3, 1, 12, 12)
    result = WorstOfK(_box_model(), k=3, task=BoxRegression()).search(images, BOXES.round().int())
    assert result.targets is not None and result.targets.dtype == torch.float32
