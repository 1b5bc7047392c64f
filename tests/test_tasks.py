"""Dense tasks through the engine: segmentation, boxes and keypoints scored against moving targets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from tests.checks import assert_model_unchanged, model_snapshot
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode

from advspatial import (
    AdvSpatialError,
    GridSearchRotoTranslation,
    SpatialPGD,
    WorstOfK,
    roto_translate,
    roto_translate_boxes,
    roto_translate_masks,
    roto_translate_points,
)
from advspatial.tasks import BoxRegression, Classification, KeypointRegression, Segmentation, Task

IGNORE = 255


class TinySegmenter(nn.Module):
    """Conv + BatchNorm + dropout, per-pixel logits at the input size."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout2d(0.2)
        self.head = nn.Conv2d(8, classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.drop(torch.relu(self.bn(self.conv(x)))))


def _blobs(count: int, size: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Images with one bright square (class 1) or dim square (class 2) on a dark background."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(count, 1, size, size)
    masks = torch.zeros(count, size, size, dtype=torch.long)
    for i in range(count):
        top, left = (int(v) for v in torch.randint(1, size - 6, (2,), generator=generator))
        cls = 1 + i % 2
        images[i, 0, top : top + 5, left : left + 5] = 1.0 if cls == 1 else 0.5
        masks[i, top : top + 5, left : left + 5] = cls
    return images, masks


@pytest.fixture
def segmenter() -> TinySegmenter:
    torch.manual_seed(0)
    net = TinySegmenter()
    net.bn.running_mean.uniform_(-0.2, 0.2)
    net.train()
    return net


def _trained_segmenter() -> TinySegmenter:
    torch.manual_seed(0)
    net = TinySegmenter()
    images, masks = _blobs(64, seed=1)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(net(images), masks).backward()
        optimizer.step()
    return net


def _tv_mask(mask: Tensor, row: Tensor) -> Tensor:
    angle, tx, ty = (float(v) for v in row)
    return TF.affine(
        mask[None],
        angle=-angle,
        translate=[tx, ty],
        scale=1.0,
        shear=[0.0, 0.0],
        interpolation=InterpolationMode.NEAREST,
        fill=IGNORE,
    )[0]


def test_segmentation_objective_by_hand_two_images_three_candidates(segmenter: TinySegmenter) -> None:
    images, masks = _blobs(2)
    masks[0, 0, :] = IGNORE  # an ignored row stays ignored wherever it moves
    grid = GridSearchRotoTranslation(
        segmenter, rotations=3, translations=1, max_rotation=90, max_translation=0, task=Segmentation()
    )
    assert grid.candidates.shape == (3, 3)
    result = grid.search(images, masks)
    assert result.candidate_losses is not None and result.candidate_losses.shape == (2, 3)
    segmenter.eval()
    for b in range(2):
        for k, row in enumerate(grid.candidates):
            moved = _tv_mask(masks[b], row)
            logits = segmenter(roto_translate(images[b : b + 1], row[None]))[0].detach()
            valid = moved != IGNORE
            log_probs = F.log_softmax(logits, dim=0)
            expected = -log_probs.gather(0, moved.clamp(max=2)[None])[0][valid].mean()
            accuracy = (logits.argmax(0) == moved)[valid].float().mean()
            assert math.isclose(float(result.candidate_losses[b, k]), float(expected), rel_tol=1e-4)
            assert bool(result.candidate_correct[b, k]) == bool(accuracy >= 0.9)  # type: ignore[index]


def test_grid_candidate_losses_match_torchvision_moved_masks(segmenter: TinySegmenter) -> None:
    images, masks = _blobs(3, size=13)
    grid = GridSearchRotoTranslation(segmenter, rotations=5, translations=3, task=Segmentation())
    result = grid.search(images, masks)
    assert result.candidate_losses is not None
    segmenter.eval()
    with torch.no_grad():
        for b in range(3):
            for k in range(0, grid.candidates.shape[0], 4):
                row = grid.candidates[k]
                moved = _tv_mask(masks[b], row)
                logits = segmenter(roto_translate(images[b : b + 1], row[None]))
                valid = moved != IGNORE
                ce = F.cross_entropy(logits, moved.masked_fill(~valid, 0)[None], reduction="none")[0]
                expected = ce[valid].mean()
                assert math.isclose(float(result.candidate_losses[b, k]), float(expected), rel_tol=1e-4)


@pytest.mark.parametrize("size", [(13, 13), (12, 16), (9, 7)])
def test_moved_masks_equal_torchvision_nearest_ties_included(size: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(size[0] * size[1])
    masks = torch.randint(0, 5, (1, *size), generator=generator)
    grid = GridSearchRotoTranslation(
        nn.Identity(), rotations=13, translations=3
    ).candidates  # 30 / 15 / 5 ...
    drawn = torch.cat([torch.rand(40, 1) * 360 - 180, torch.rand(40, 2) * 8 - 4], dim=1)
    rows = torch.cat([grid, drawn])
    moved = roto_translate_masks(masks.expand(rows.shape[0], -1, -1), rows, fill=IGNORE)
    for row, ours in zip(rows, moved, strict=True):
        assert torch.equal(ours, _tv_mask(masks[0], row)), row.tolist()


def test_result_targets_are_the_chosen_moved_targets(segmenter: TinySegmenter) -> None:
    images, masks = _blobs(4)
    attack = WorstOfK(segmenter, k=6, task=Segmentation(), generator=torch.Generator().manual_seed(0))
    result = attack.search(images, masks)
    assert result.targets is not None
    assert torch.equal(result.targets, roto_translate_masks(masks, result.params, fill=IGNORE))
    assert result.params.shape == (4, 3) and result.targets.dtype == torch.long


def test_boxes_and_points_move_like_the_geometry_functions() -> None:
    boxes_model = nn.Sequential(nn.Flatten(), nn.Linear(144, 4))
    images = torch.rand(3, 1, 12, 12)
    boxes = torch.tensor([[2.0, 2.0, 6.0, 7.0], [0.0, 0.0, 12.0, 12.0], [5.0, 5.0, 6.0, 6.0]])
    result = WorstOfK(
        boxes_model, k=5, task=BoxRegression(), generator=torch.Generator().manual_seed(0)
    ).search(images, boxes)
    expected = roto_translate_boxes(boxes[:, None], result.params, (12, 12))[:, 0]
    assert result.targets is not None and torch.allclose(result.targets, expected)

    points_model = nn.Sequential(nn.Flatten(), nn.Linear(144, 6), nn.Unflatten(1, (3, 2)))
    points = torch.tensor([[[3.0, 4.0], [6.0, 6.0], [8.5, 2.0]]]).repeat(3, 1, 1)
    task = KeypointRegression(max_distance=1.0)
    result = WorstOfK(points_model, k=5, task=task, generator=torch.Generator().manual_seed(1)).search(
        images, points
    )
    expected = roto_translate_points(points, result.params, (12, 12))
    assert result.targets is not None and torch.allclose(result.targets, expected)


def test_dropped_boxes_and_invisible_points_never_count_as_fooled() -> None:
    task = BoxRegression(min_iou=0.5)
    far = torch.tensor([[0.0, 100.0, 0.0]])  # moves everything out of a 10 x 10 frame
    moved = task.move_targets(torch.tensor([[1.0, 1.0, 4.0, 4.0]]), far, (10, 10))
    assert bool(torch.isnan(moved).all())
    loss, correct = task.objective(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), moved)
    assert float(loss) == 0.0 and bool(correct)

    points = KeypointRegression(max_distance=1.0)
    moved = points.move_targets(
        torch.tensor([[[1.0, 1.0], [5.0, 5.0]]]), torch.tensor([[0.0, 7.0, 0.0]]), (10, 10)
    )
    assert bool(torch.isnan(moved[0, 1]).all()) and torch.allclose(moved[0, 0], torch.tensor([8.0, 1.0]))
    loss, correct = points.objective(torch.tensor([[[8.0, 1.5], [0.0, 0.0]]]), moved)
    assert math.isclose(float(loss), 0.5) and bool(correct)

    segmentation = Segmentation()
    loss, correct = segmentation.objective(torch.zeros(1, 2, 3, 3), torch.full((1, 3, 3), IGNORE))
    assert float(loss) == 0.0 and bool(correct)


def test_box_objective_iou_and_giou() -> None:
    outputs, targets = torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([[2.0, 0.0, 6.0, 4.0]])
    loss, correct = BoxRegression(min_iou=0.5).objective(outputs, targets)
    assert math.isclose(float(loss), 0.75) and not bool(correct)  # IoU 1/3; smooth-L1 (1.5 + 0 + 1.5 + 0) / 4
    assert bool(BoxRegression(min_iou=0.3).objective(outputs, targets)[1])
    giou, _ = BoxRegression(loss="giou").objective(outputs, targets)
    assert math.isclose(float(giou), 1 - 1 / 3, rel_tol=1e-6)  # the hull equals the union here


def test_early_exit_robust_set_equals_exhaustive_on_trained_segmenter() -> None:
    net = _trained_segmenter()
    images, masks = _blobs(24, seed=5)
    task = Segmentation(min_pixel_accuracy=0.9)
    exhaustive = GridSearchRotoTranslation(net, rotations=7, translations=3, task=task).search(images, masks)
    early = GridSearchRotoTranslation(net, rotations=7, translations=3, task=task, early_exit=True).search(
        images, masks
    )
    assert 0 < int(exhaustive.correct.sum()) < 24, "the check needs robust and fooled images"
    assert torch.equal(early.correct, exhaustive.correct)
    assert early.evaluations < exhaustive.evaluations


def test_label_free_segmentation_is_equivariance(segmenter: TinySegmenter) -> None:
    images, _ = _blobs(3)
    grid = GridSearchRotoTranslation(
        segmenter, rotations=1, translations=1, max_rotation=0, max_translation=0, task=Segmentation()
    )
    result = grid.search(images)  # identity only: the moved clean prediction is the prediction
    assert result.candidate_losses is not None
    assert torch.allclose(result.candidate_losses, torch.zeros(3, 1), atol=1e-6)
    assert bool(result.correct.all()) and result.targets is None
    assert result.evaluations == 3 + 3  # the clean pass and the candidates

    # A 90-degree turn of a rotation-equivariant model (a per-pixel 1x1 conv) costs nothing.
    torch.manual_seed(0)
    pointwise = nn.Conv2d(1, 3, 1)
    turned = GridSearchRotoTranslation(
        pointwise, rotations=3, translations=1, max_rotation=90, max_translation=0, task=Segmentation()
    ).search(torch.rand(2, 1, 8, 8))
    assert turned.candidate_losses is not None
    assert float(turned.candidate_losses.abs().max()) < 1e-5


@pytest.mark.parametrize("strategy", ["worst_of_k", "grid", "pgd"])
def test_model_state_untouched_on_dense_paths(strategy: str, segmenter: TinySegmenter) -> None:
    images, masks = _blobs(4)
    segmenter(images).sum().backward()
    before = model_snapshot(segmenter)
    task = Segmentation()
    search = {
        "worst_of_k": lambda: WorstOfK(segmenter, k=4, task=task, generator=torch.Generator().manual_seed(0)),
        "grid": lambda: GridSearchRotoTranslation(
            segmenter, rotations=3, translations=3, task=task, early_exit=True
        ),
        "pgd": lambda: SpatialPGD(segmenter, steps=3, task=task),
    }[strategy]()
    result = search.search(images, masks)
    search.search(images)
    assert result.targets is not None and result.targets.shape == masks.shape
    assert torch.equal(result.targets, roto_translate_masks(masks, result.params, fill=IGNORE))
    with pytest.raises(AdvSpatialError):
        search.search(images, masks + 7)  # class indices beyond the 3 outputs
    assert_model_unchanged(segmenter, before)


def test_spatial_pgd_segmentation_climbs_the_loss(segmenter: TinySegmenter) -> None:
    images, masks = _blobs(4)
    start = SpatialPGD(segmenter, steps=0, task=Segmentation()).search(images, masks)
    attacked = SpatialPGD(segmenter, steps=5, task=Segmentation()).search(images, masks)
    assert bool((attacked.loss >= start.loss - 1e-6).all()) and bool((attacked.loss > start.loss).any())


class CountPixels(Task):
    """A custom task: the model regresses how many foreground pixels stay in frame."""

    name = "count"

    def check_targets(self, targets: object, images: Tensor, name: str = "targets") -> Tensor:
        if not isinstance(targets, Tensor) or targets.shape != images.shape[:1] + images.shape[2:]:
            raise AdvSpatialError(f"{name} must be (B, H, W) foreground masks")
        return targets.float()

    def check_outputs(self, outputs: object, rows: int, size: tuple[int, int]) -> Tensor:
        assert isinstance(outputs, Tensor)
        return outputs.float().reshape(rows)

    def move_targets(self, targets: Tensor, params: Tensor, size: tuple[int, int]) -> Tensor:
        return roto_translate_masks(targets, params, fill=0)

    def objective(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        error = (outputs - targets.sum(dim=(1, 2))).abs()
        return error, error < 2.0

    def reference(self, outputs: Tensor) -> Tensor:
        raise AdvSpatialError("the count task needs targets")


def test_custom_task_is_an_extension_point() -> None:
    class Counter(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return (x > 0.5).float().sum(dim=(1, 2, 3))

    images, masks = _blobs(3)
    foreground = (masks > 0).long()
    grid = GridSearchRotoTranslation(
        Counter(), rotations=3, translations=3, max_translation=6, task=CountPixels()
    )
    result = grid.search(images, foreground)
    assert result.targets is not None and result.candidate_losses is not None
    # A perfect counter of the bright class only: the dim squares (class 2) are always off.
    assert result.correct.tolist() == [True, False, True]
    assert float(result.candidate_losses[0].max()) < 2.0


def test_bad_dense_inputs_name_the_argument(segmenter: TinySegmenter) -> None:
    images, masks = _blobs(2)
    search = WorstOfK(segmenter, k=2, task=Segmentation())
    cases: list[tuple[object, str]] = [
        (masks[:, :-1], "masks must have shape"),
        (masks.float(), "integer class indices"),
        (masks[:1], "masks must have shape"),
        (masks - 1, "class indices >= 0"),
        (masks + 5, "< the model's number of classes"),
        ([[0]], "masks must be a torch.Tensor"),
    ]
    for bad, message in cases:
        with pytest.raises(AdvSpatialError, match=message):
            search.search(images, bad)  # type: ignore[arg-type]
    with pytest.raises(AdvSpatialError, match="per-pixel logits"):
        WorstOfK(nn.Sequential(nn.Flatten(), nn.Linear(144, 3)), k=2, task=Segmentation()).search(
            images, masks
        )
    with pytest.raises(AdvSpatialError, match="Task instance"):
        WorstOfK(segmenter, task=Segmentation)  # type: ignore[arg-type]
    with pytest.raises(AdvSpatialError, match="task must be"):
        WorstOfK(segmenter, task="segmentation")  # type: ignore[arg-type]
    with pytest.raises(AdvSpatialError, match="min_pixel_accuracy"):
        Segmentation(min_pixel_accuracy=1.5)

    box_search = WorstOfK(nn.Sequential(nn.Flatten(), nn.Linear(144, 4)), k=2, task=BoxRegression())
    for bad, message in [
        (torch.tensor([[5.0, 5.0, 2.0, 8.0], [0.0, 0.0, 1.0, 1.0]]), "XYXY"),
        (torch.tensor([[0.0, 0.0, 13.0, 8.0], [0.0, 0.0, 1.0, 1.0]]), "inside the image"),
        (torch.zeros(2, 2), "boxes must have shape"),
    ]:
        with pytest.raises(AdvSpatialError, match=message):
            box_search.search(images, bad)
    with pytest.raises(AdvSpatialError, match=r"model output must have shape \(4, 4\)"):
        WorstOfK(segmenter, k=2, task=BoxRegression()).search(images, torch.zeros(2, 4))

    point_search = WorstOfK(
        nn.Sequential(nn.Flatten(), nn.Linear(144, 4), nn.Unflatten(1, (2, 2))),
        k=2,
        task=KeypointRegression(),
    )
    for bad in (torch.zeros(2, 2), torch.zeros(2, 2, 3), torch.zeros(3, 2, 2)):
        with pytest.raises(AdvSpatialError, match="points must be a tensor of shape"):
            point_search.search(images, bad)
    with pytest.raises(AdvSpatialError, match="one point per target point"):
        point_search.search(images, torch.zeros(2, 3, 2))


def test_classification_is_the_default_and_unchanged(model: nn.Module, batch: tuple[Tensor, Tensor]) -> None:
    images, labels = batch
    plain = WorstOfK(model, k=4, generator=torch.Generator().manual_seed(0)).search(images, labels)
    explicit = WorstOfK(model, k=4, generator=torch.Generator().manual_seed(0), task=Classification()).search(
        images, labels
    )
    assert torch.equal(plain.params, explicit.params) and torch.equal(plain.loss, explicit.loss)
    assert plain.targets is not None and torch.equal(plain.targets, labels)
    assert "task" not in repr(WorstOfK(model)) and "Segmentation" in repr(
        WorstOfK(model, task=Segmentation())
    )


def test_non_finite_dense_outputs_are_refused() -> None:
    class Broken(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            out = torch.zeros(x.shape[0], 3, *x.shape[-2:])
            out[:, 1, 0, 0] = math.nan  # one pixel, even where the mask is ignored
            return out

    images, masks = _blobs(2)
    masks[:, 0, 0] = IGNORE
    with pytest.raises(AdvSpatialError, match="NaN or infinite"):
        WorstOfK(Broken(), k=2, task=Segmentation()).search(images, masks)
    with pytest.raises(AdvSpatialError, match="NaN or infinite"):
        WorstOfK(
            nn.Sequential(nn.Flatten(), nn.Linear(144, 4), nn.Softplus(threshold=-1e9)),
            k=2,
            task=BoxRegression(),
        ).search(images * math.inf, torch.zeros(2, 4))
