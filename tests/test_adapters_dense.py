"""Adapters with dense tasks: each one scores against the target it moves, and hands back exactly the
targets the search moved (``result.targets``) for the chosen rows."""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import kornia.augmentation as K
import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from adapter_helpers import assert_same_state, dense_model, model_state
from advspatial import (
    AdvSpatialError,
    GridSearchRotoTranslation,
    SpatialPGD,
    SpatialSearch,
    WorstOfK,
    roto_translate_masks,
)
from advspatial.adapters import (
    SpatialSearchAlbumentations,
    SpatialSearchBatch,
    SpatialSearchCollate,
    SpatialSearchDataset,
    SpatialSearchKornia,
    SpatialSearchV2,
)
from advspatial.tasks import BoxRegression, KeypointRegression, Segmentation, Task

SIZE = 12
TASKS: dict[str, Callable[[], Task]] = {
    "masks": Segmentation,
    "boxes": BoxRegression,
    "points": KeypointRegression,
}
# A grid that turns far enough for masks to take ignore_index in the corners, worst-of-k with its own
# generator, and first-order (continuous rows).
SEARCHES: dict[str, Callable[[nn.Module, Task], SpatialSearch]] = {
    "grid": lambda model, task: GridSearchRotoTranslation(
        model, rotations=4, translations=2, max_rotation=40.0, max_translation=3.0, task=task
    ),
    "worst_of_k": lambda model, task: WorstOfK(
        model, k=4, max_translation=4.0, generator=torch.Generator().manual_seed(0), task=task
    ),
    "spatial_pgd": lambda model, task: SpatialPGD(model, steps=2, task=task),
}


def _search(kind: str, name: str = "grid", seed: int = 0) -> SpatialSearch:
    return SEARCHES[name](dense_model(kind, seed, SIZE), TASKS[kind]())


def _images(batch: int, seed: int = 0) -> Tensor:
    return torch.rand(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _masks(batch: int, seed: int = 0, dtype: torch.dtype = torch.uint8) -> Tensor:
    return torch.randint(
        0, 3, (batch, SIZE, SIZE), generator=torch.Generator().manual_seed(seed), dtype=dtype
    )


def _boxes(batch: int) -> Tensor:
    """XYXY boxes inside the image, one per image."""
    return torch.tensor([[2.0, 3.0, 7.0, 9.0], [4.0, 1.0, 10.0, 6.0], [1.0, 5.0, 6.0, 11.0]])[:batch]


def _points(batch: int) -> Tensor:
    return torch.tensor([[[2.5, 3.5], [9.0, 8.0]], [[6.0, 6.0], [11.0, 1.0]], [[1.0, 1.0], [5.0, 10.0]]])[
        :batch
    ]


def _moved(search: SpatialSearch, targets: Tensor, images: Tensor, params: Tensor) -> Tensor:
    """``search.task.move_targets`` of the checked targets with ``params`` (what the search returned)."""
    checked = search.task.check_targets(targets, images)
    return search.task.move_targets(checked, params, (SIZE, SIZE))


def _plain(x: Tensor) -> Tensor:
    return x.as_subclass(Tensor)


# --- torchvision v2 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SEARCHES))
def test_v2_segmentation_scores_and_returns_the_samples_mask(name: str) -> None:
    search = _search("masks", name)
    before = model_state(search.model)
    transform = SpatialSearchV2(search)
    image, mask = _images(1)[0], _masks(1)[0]
    out_image, out = transform(tv_tensors.Image(image), {"mask": tv_tensors.Mask(mask), "id": 7})
    result = transform.last_result
    assert result is not None and result.targets is not None
    assert isinstance(out["mask"], tv_tensors.Mask) and out["mask"].dtype == torch.uint8
    assert out["id"] == 7
    assert torch.equal(_plain(out["mask"]).long(), result.targets[0])
    assert torch.equal(result.targets, _moved(search, mask[None], image[None], result.params))
    assert torch.equal(_plain(out["mask"]), roto_translate_masks(mask[None], result.params, fill=255)[0])
    assert torch.equal(_plain(out_image), search.apply(image[None], result.params)[0])
    assert_same_state(search.model, before)
    if name == "grid":  # scored against this mask: the same search on (image, mask) agrees
        again = search.search(image[None], mask[None])
        assert torch.equal(again.params, result.params) and torch.equal(again.loss, result.loss)
        assert bool((out["mask"] == 255).any())  # turned far enough: out-of-frame pixels are ignored


@pytest.mark.parametrize("shape", [(4, SIZE, SIZE), (4, 1, SIZE, SIZE)])
def test_v2_segmentation_batch_of_masks(shape: tuple[int, ...]) -> None:
    search = _search("masks", "worst_of_k")
    transform = SpatialSearchV2(search)
    images, masks = _images(4), _masks(4).reshape(shape)
    out_images, out_masks = transform(tv_tensors.Image(images), tv_tensors.Mask(masks))
    result = transform.last_result
    assert result is not None and result.targets is not None and result.params.shape == (4, 3)
    assert out_masks.shape == shape
    assert torch.equal(_plain(out_masks).reshape(4, SIZE, SIZE).long(), result.targets)
    assert torch.equal(result.targets, _moved(search, masks.reshape(4, SIZE, SIZE), images, result.params))
    assert torch.equal(_plain(out_images), search.apply(images, result.params))


def test_v2_segmentation_label_free_still_fills_masks_with_ignore_index() -> None:
    search = _search("masks")
    transform = SpatialSearchV2(search, labels_getter=None)
    image, mask = _images(1)[0], _masks(1)[0]
    _, out = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    result = transform.last_result
    assert result is not None and result.targets is None
    assert torch.equal(_plain(out), roto_translate_masks(mask[None], result.params, fill=255)[0])


def test_v2_labels_getter_picks_the_scored_mask() -> None:
    search = _search("masks")
    transform = SpatialSearchV2(search, labels_getter=lambda sample: sample[1]["classes"])
    image, classes, other = _images(1)[0], _masks(1, 1)[0], _masks(1, 2)[0]
    sample = (tv_tensors.Image(image), {"classes": tv_tensors.Mask(classes), "other": tv_tensors.Mask(other)})
    _, out = transform(sample)
    result = transform.last_result
    assert result is not None and result.targets is not None
    assert torch.equal(_plain(out["classes"]).long(), result.targets[0])
    assert torch.equal(result.params, search.search(image[None], classes[None]).params)


def test_v2_make_params_outside_forward_finds_the_mask() -> None:
    search = _search("masks")
    transform = SpatialSearchV2(search)
    image, mask = tv_tensors.Image(_images(1)[0]), tv_tensors.Mask(_masks(1)[0])
    params = transform.make_params([image, mask])
    moved = transform.transform(mask, params)
    assert transform.last_result is not None and transform.last_result.targets is not None
    assert torch.equal(_plain(moved).long(), transform.last_result.targets[0])


@pytest.mark.parametrize("fmt", ["XYXY", "XYWH", "CXCYWH"])
def test_v2_box_regression_scores_and_returns_the_samples_box(fmt: str) -> None:
    search = _search("boxes")
    before = model_state(search.model)
    transform = SpatialSearchV2(search)
    image, box = _images(1)[0], _boxes(1)
    xyxy = tv_tensors.BoundingBoxes(box, format="XYXY", canvas_size=(SIZE, SIZE))
    boxes = F.convert_bounding_box_format(xyxy, new_format=fmt)
    _, out = transform(tv_tensors.Image(image), {"boxes": boxes})
    result = transform.last_result
    assert result is not None and result.targets is not None
    assert out["boxes"].format.name == fmt
    back = F.convert_bounding_box_format(out["boxes"], new_format="XYXY")
    torch.testing.assert_close(_plain(back), result.targets, rtol=0, atol=1e-5)
    assert torch.equal(result.targets, _moved(search, box, image[None], result.params))
    assert torch.equal(result.params, search.search(image[None], box).params)
    assert_same_state(search.model, before)


def test_v2_box_regression_batch_is_one_box_per_image() -> None:
    search = _search("boxes", "worst_of_k")
    transform = SpatialSearchV2(search)
    images, boxes = _images(3), _boxes(3)
    _, out = transform(
        tv_tensors.Image(images), tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(SIZE, SIZE))
    )
    result = transform.last_result
    assert result is not None and result.targets is not None and out.shape == (3, 4)
    assert torch.equal(_plain(out), result.targets)
    assert torch.equal(result.targets, _moved(search, boxes, images, result.params))


def test_v2_box_regression_box_that_leaves_the_frame_is_nan() -> None:
    transform = SpatialSearchV2(_search("boxes"))
    box = tv_tensors.BoundingBoxes(_boxes(1), format="XYXY", canvas_size=(SIZE, SIZE))
    moved = transform.transform(box, {"params": torch.tensor([[0.0, 20.0, 0.0]]), "batched": False})
    assert bool(torch.isnan(_plain(moved)).all())
    task = BoxRegression()
    assert bool(
        torch.isnan(task.move_targets(_boxes(1), torch.tensor([[0.0, 20.0, 0.0]]), (SIZE, SIZE))).all()
    )


@pytest.mark.parametrize("batched", [False, True])
def test_v2_keypoint_regression_scores_and_returns_the_samples_points(batched: bool) -> None:
    search = _search("points", "worst_of_k")
    before = model_state(search.model)
    transform = SpatialSearchV2(search)
    batch = 3 if batched else 1
    images, points = _images(batch), _points(batch)
    keypoints = tv_tensors.KeyPoints(points if batched else points[0], canvas_size=(SIZE, SIZE))
    _, out = transform(tv_tensors.Image(images if batched else images[0]), keypoints)
    result = transform.last_result
    assert result is not None and result.targets is not None
    assert out.shape == keypoints.shape
    torch.testing.assert_close(
        _plain(out).reshape(batch, 2, 2), result.targets, equal_nan=True, rtol=0, atol=0
    )
    torch.testing.assert_close(result.targets, _moved(search, points, images, result.params), equal_nan=True)
    assert_same_state(search.model, before)
    off = transform.transform(
        keypoints, {"params": torch.tensor([[0.0, 20.0, 0.0]] * batch), "batched": batched}
    )
    assert bool(torch.isnan(_plain(off)).all())  # out of frame: nan, as the task marks it


def _v2_error(search: SpatialSearch, *sample: object, **kwargs: object) -> str:
    with pytest.raises(AdvSpatialError) as error:
        SpatialSearchV2(search, **kwargs)(*sample)  # type: ignore[arg-type]
    return str(error.value)


def test_v2_dense_bad_inputs_are_refused_clearly() -> None:
    image = tv_tensors.Image(_images(1)[0])
    masks = _search("masks")
    assert "exactly one in the sample, found 0" in _v2_error(masks, image, 3)
    two = {"a": tv_tensors.Mask(_masks(1)[0]), "b": tv_tensors.Mask(_masks(1)[0])}
    assert "found 2" in _v2_error(masks, image, two)
    assert "one mask per image" in _v2_error(masks, image, tv_tensors.Mask(_masks(3)[:, None, 0]))
    assert "one mask per image" in _v2_error(masks, image, tv_tensors.Mask(_masks(1)[0, :8]))
    assert "integer class indices" in _v2_error(masks, image, tv_tensors.Mask(_masks(1)[0].float()))
    minus = GridSearchRotoTranslation(dense_model("masks"), rotations=2, task=Segmentation(ignore_index=-1))
    assert "cannot hold" in _v2_error(minus, image, tv_tensors.Mask(_masks(1)[0]))
    with pytest.raises(AdvSpatialError, match="ignore_index=255"):
        SpatialSearchV2(masks, mask_fill=0)
    boxes = _search("boxes")
    two_boxes = tv_tensors.BoundingBoxes(_boxes(2), format="XYXY", canvas_size=(SIZE, SIZE))
    assert "exactly one box per image" in _v2_error(boxes, image, two_boxes)
    integer = tv_tensors.BoundingBoxes(_boxes(1).long(), format="XYXY", canvas_size=(SIZE, SIZE))
    assert "floating point" in _v2_error(boxes, image, integer)
    elsewhere = tv_tensors.BoundingBoxes(_boxes(1), format="XYXY", canvas_size=(24, 24))
    assert "canvas" in _v2_error(boxes, image, elsewhere)
    assert "BoundingBoxes: expected exactly one" in _v2_error(boxes, image, tv_tensors.Mask(_masks(1)[0]))
    points = _search("points")
    assert "KeyPoints: expected exactly one" in _v2_error(points, image, {"labels": 2})
    getter = _v2_error(masks, image, _masks(1)[0], labels_getter=lambda sample: sample[1])
    assert "tv_tensors.Mask" in getter


# --- albumentations -------------------------------------------------------------------------------


def _hwc(image: Tensor) -> np.ndarray:
    """A ``(1, H, W)`` float image as albumentations' ``uint8`` HWC array."""
    return (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


@pytest.mark.parametrize("name", list(SEARCHES))
@pytest.mark.parametrize("trailing", [False, True])
def test_albumentations_segmentation_scores_and_returns_the_mask(name: str, trailing: bool) -> None:
    search = _search("masks", name)
    before = model_state(search.model)
    transform = SpatialSearchAlbumentations(search)
    pipeline = A.Compose([transform], strict=True, seed=0)
    image, mask = _hwc(_images(1)[0]), _masks(1)[0].numpy()
    given = mask[..., None] if trailing else mask
    out = pipeline(image=image, mask=given, masks=[mask, mask])
    result = transform.last_result
    assert result is not None and result.targets is not None
    assert out["mask"].shape == given.shape and out["mask"].dtype == np.uint8
    assert torch.equal(torch.from_numpy(out["mask"]).reshape(1, SIZE, SIZE).long(), result.targets)
    scored = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    assert torch.equal(result.targets, _moved(search, torch.from_numpy(mask)[None], scored, result.params))
    assert all(np.array_equal(moved, out["mask"].reshape(SIZE, SIZE)) for moved in out["masks"])
    assert_same_state(search.model, before)
    if name == "grid":
        again = search.search(scored, torch.from_numpy(mask)[None])
        assert torch.equal(again.params, result.params) and torch.equal(again.loss, result.loss)
        assert bool((out["mask"] == 255).any())


def test_albumentations_box_regression_scores_and_returns_the_box() -> None:
    search = _search("boxes")
    transform = SpatialSearchAlbumentations(search)
    pipeline = A.Compose(
        [transform], bbox_params=A.BboxParams(format="coco", label_fields=["kind"]), strict=True, seed=0
    )
    image = _images(1)[0]
    out = pipeline(image=_hwc(image), bboxes=[[2.0, 3.0, 5.0, 6.0]], kind=["digit"])
    result = transform.last_result
    assert result is not None and result.targets is not None and out["kind"] == ["digit"]
    x, y, w, h = out["bboxes"][0]
    torch.testing.assert_close(
        torch.tensor([[x, y, x + w, y + h]]).float(), result.targets, rtol=0, atol=1e-4
    )
    scored = torch.from_numpy(_hwc(image)).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(
        result.targets,
        _moved(search, torch.tensor([[2.0, 3.0, 7.0, 9.0]]), scored, result.params),
        atol=1e-5,
        rtol=0,
    )


def _albu_error(transform: SpatialSearchAlbumentations, **data: object) -> str:
    pipeline = A.Compose([transform], bbox_params=A.BboxParams(format="pascal_voc", label_fields=[]), seed=0)
    with pytest.raises(AdvSpatialError) as error:
        pipeline(**data)
    return str(error.value)


def test_albumentations_dense_bad_inputs_are_refused_clearly() -> None:
    image = _hwc(_images(1)[0])
    masks = SpatialSearchAlbumentations(_search("masks"))
    assert "call the pipeline with mask=" in _albu_error(masks, image=image, label=2)
    assert "one numpy mask" in _albu_error(masks, image=image, mask=np.zeros((SIZE, SIZE, 3), np.uint8))
    assert "integer class indices" in _albu_error(masks, image=image, mask=np.zeros((SIZE, SIZE), np.float32))
    minus = GridSearchRotoTranslation(dense_model("masks"), rotations=2, task=Segmentation(ignore_index=-1))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    assert "cannot hold" in _albu_error(SpatialSearchAlbumentations(minus), image=image, mask=mask)
    with pytest.raises(AdvSpatialError, match="ignore_index=255"):
        SpatialSearchAlbumentations(_search("masks"), mask_fill=0)
    boxes = SpatialSearchAlbumentations(_search("boxes"))
    two = [[1.0, 1.0, 4.0, 4.0], [2.0, 2.0, 6.0, 6.0]]
    assert "exactly one box per image" in _albu_error(boxes, image=image, bboxes=two)
    assert "got 0 boxes" in _albu_error(boxes, image=image, bboxes=[])
    with pytest.raises(AdvSpatialError, match="keypoints use another pixel convention"):
        SpatialSearchAlbumentations(_search("points"))


# --- kornia ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SEARCHES))
@pytest.mark.parametrize("layout", ["B1HW", "BHW"])
def test_kornia_segmentation_mask_key_equals_the_searched_targets(name: str, layout: str) -> None:
    search = _search("masks", name)
    before = model_state(search.model)
    aug = SpatialSearchKornia(search)
    sequence = K.AugmentationSequential(aug, data_keys=["input", "mask"])
    images, masks = _images(3), _masks(3, dtype=torch.int64)
    given = masks[:, None] if layout == "B1HW" else masks
    with aug.labels(given):
        out_images, out_masks = sequence(images, given)
    result = aug.last_result
    assert result is not None and result.targets is not None and aug.last_params is not None
    assert out_masks.dtype == torch.int64
    assert torch.equal(out_masks.reshape(3, SIZE, SIZE), result.targets)
    assert torch.equal(result.targets, _moved(search, masks, images, aug.last_params))
    assert torch.equal(out_images, search.apply(images, aug.last_params))
    assert_same_state(search.model, before)
    if name == "grid":
        assert torch.equal(search.search(images, masks).params, aug.last_params)
        assert bool((out_masks == 255).any())


def test_kornia_segmentation_with_p_searches_and_moves_the_gated_masks_only() -> None:
    search = _search("masks")  # the grid has no identity row: a zero row means "not gated"
    aug = SpatialSearchKornia(search, p=0.5)
    sequence = K.AugmentationSequential(aug, data_keys=["input", "mask"])
    images, masks = _images(6), _masks(6, dtype=torch.int64)[:, None]
    torch.manual_seed(0)
    with aug.labels(masks):
        _, out_masks = sequence(images, masks)
    result, rows = aug.last_result, aug.last_params
    assert result is not None and result.targets is not None and rows is not None
    gated = rows.abs().sum(dim=1) > 0
    assert 0 < int(gated.sum()) < 6
    assert torch.equal(out_masks[gated, 0], result.targets)
    assert torch.equal(out_masks[~gated], masks[~gated])


def test_kornia_segmentation_same_on_batch_scores_the_first_image() -> None:
    search = _search("masks")
    aug = SpatialSearchKornia(search, same_on_batch=True)
    images, masks = _images(3), _masks(3, dtype=torch.int64)[:, None]
    with aug.labels(masks):
        _, out_masks = K.AugmentationSequential(aug, data_keys=["input", "mask"])(images, masks)
    result, rows = aug.last_result, aug.last_params
    assert result is not None and result.targets is not None and rows is not None
    assert result.targets.shape == (1, SIZE, SIZE) and torch.equal(rows, rows[:1].expand(3, -1))
    assert torch.equal(out_masks[0], result.targets)
    assert torch.equal(result.params, search.search(images[:1], masks[:1, 0]).params)
    assert torch.equal(out_masks[:, 0], roto_translate_masks(masks[:, 0], rows, fill=255))


def test_kornia_regression_targets_are_scored_and_kornias_keys_follow_its_own_geometry() -> None:
    """What holds for boxes and points: the search scores the targets given to ``labels`` and
    ``last_result.targets`` moves them; kornia's keypoints key (pixel-index coordinates) equals them
    shifted by half a pixel, its boxes, clamped to the frame, are within a pixel of them (kornia's own
    box geometry)."""
    images = _images(3)
    points_search = _search("points", "worst_of_k")
    aug = SpatialSearchKornia(points_search)
    sequence = K.AugmentationSequential(aug, data_keys=["input", "keypoints"])
    with aug.labels(_points(3)):
        _, out_points = sequence(images, _points(3) - 0.5)
    result = aug.last_result
    assert result is not None and result.targets is not None and aug.last_params is not None
    assert bool(torch.isfinite(result.targets).all())  # every point stayed in frame here
    torch.testing.assert_close(out_points + 0.5, result.targets, rtol=0, atol=1e-5)
    assert torch.equal(result.targets, _moved(points_search, _points(3), images, aug.last_params))
    boxes_search = _search("boxes", "worst_of_k")
    aug = SpatialSearchKornia(boxes_search)
    sequence = K.AugmentationSequential(aug, data_keys=["input", "bbox_xyxy"])
    with aug.labels(_boxes(3)):
        _, out_boxes = sequence(images, _boxes(3)[:, None])
    result = aug.last_result
    assert result is not None and result.targets is not None and aug.last_params is not None
    assert torch.equal(result.targets, _moved(boxes_search, _boxes(3), images, aug.last_params))
    clamped = out_boxes[:, 0].clamp(0, SIZE)  # kornia does not clamp boxes to the frame
    assert float((clamped - result.targets).abs().max()) < 1.0


def test_kornia_dense_bad_inputs_are_refused_clearly() -> None:
    aug = SpatialSearchKornia(_search("masks"))
    sequence = K.AugmentationSequential(aug, data_keys=["input", "mask"])
    images, masks = _images(2), _masks(2, dtype=torch.int64)[:, None]
    with pytest.raises(AdvSpatialError, match=r"targets for Segmentation\(.*aug.labels"):
        sequence(images, masks)
    three = _masks(3, dtype=torch.int64)[:, None]
    with (
        pytest.raises(AdvSpatialError, match=r"one row per image \(2\), got \(3, 1, 12, 12\)"),
        aug.labels(three),
    ):
        sequence(images, masks)
    with (
        pytest.raises(AdvSpatialError, match=r"masks must have shape \(B, H, W\)"),
        aug.labels(masks[..., :8]),
    ):
        sequence(images, masks)
    with pytest.raises(AdvSpatialError, match="integer class indices"), aug.labels(masks.float()):
        sequence(images, masks)
    with pytest.raises(AdvSpatialError, match="ignore_index=255"):
        SpatialSearchKornia(_search("masks"), mask_fill=0.0)


# --- the batch forms --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TASKS))
def test_batch_form_returns_the_moved_targets(kind: str) -> None:
    search = _search(kind, "worst_of_k")
    before = model_state(search.model)
    images = _images(3)
    targets = {"masks": _masks(3), "boxes": _boxes(3), "points": _points(3)}[kind]
    attack = SpatialSearchBatch(search)
    out_images, out_targets, extra = attack((images, targets, "rest"))
    result = attack.last_result
    assert result is not None and result.targets is not None and extra == "rest"
    assert out_targets is result.targets
    torch.testing.assert_close(out_targets, _moved(search, targets, images, result.params), equal_nan=True)
    assert torch.equal(out_images, search.apply(images, result.params))
    assert_same_state(search.model, before)


def test_collate_and_dataset_forms_return_the_moved_masks() -> None:
    images, masks = _images(4), _masks(4)
    grid = _search("masks")
    loader = DataLoader(TensorDataset(images, masks), batch_size=4, collate_fn=SpatialSearchCollate(grid))
    ((out_images, out_masks),) = list(loader)
    reference = grid.search(images, masks)
    assert reference.targets is not None
    assert torch.equal(out_masks, reference.targets)
    assert torch.equal(out_images, grid.apply(images, reference.params))
    data = SpatialSearchDataset(TensorDataset(images, masks), grid)
    image, mask = data[2]
    single = grid.search(images[2:3], masks[2:3])
    assert single.targets is not None and torch.equal(mask, single.targets[0])
    assert torch.equal(image, grid.apply(images[2:3], single.params)[0])


def test_batch_forms_refuse_bad_masks_clearly() -> None:
    attack = SpatialSearchBatch(_search("masks"))
    with pytest.raises(AdvSpatialError, match=r"masks must have shape \(B, H, W\)"):
        attack((_images(2), _masks(2)[:, None]))
    with pytest.raises(AdvSpatialError, match="integer class indices"):
        attack((_images(2), _masks(2).float()))
    data = SpatialSearchDataset(TensorDataset(_images(2), _masks(2)[:, :8]), _search("masks"))
    with pytest.raises(AdvSpatialError, match=r"dataset\[1\]\[1\] must have shape"):
        data[1]


@pytest.mark.cuda
def test_dense_targets_with_a_cuda_model_and_cpu_samples() -> None:
    """A CUDA segmenter with CPU samples: v2 and kornia score on the GPU and move the CPU masks on the
    CPU; the moved masks equal ``result.targets`` (moved on the GPU) pixel for pixel, the batch form
    returns them on the model's device."""
    search = _search("masks")
    search.model.cuda()
    images, masks = _images(2), _masks(2, dtype=torch.int64)
    transform = SpatialSearchV2(search)
    _, out = transform(tv_tensors.Image(images), tv_tensors.Mask(masks))
    assert transform.last_result is not None and transform.last_result.targets is not None
    assert out.device.type == "cpu"
    assert torch.equal(_plain(out), transform.last_result.targets.cpu())
    aug = SpatialSearchKornia(search)
    with aug.labels(masks):
        _, out_masks = K.AugmentationSequential(aug, data_keys=["input", "mask"])(images, masks[:, None])
    assert aug.last_result is not None and aug.last_result.targets is not None
    assert torch.equal(out_masks[:, 0], aug.last_result.targets.cpu())
    attack = SpatialSearchBatch(search)
    _, moved = attack((images, masks))
    assert moved.device.type == "cuda" and attack.last_result is not None
    assert torch.equal(moved, attack.last_result.targets)
