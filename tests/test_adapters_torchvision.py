"""torchvision v2 adapter: exact images, targets moved as torchvision's own affine moves them."""

from __future__ import annotations

import pickle

import pytest
import torch
from torchvision import tv_tensors
from torchvision.datasets import FakeData, VisionDataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from adapter_helpers import grid_search, tiny_model
from advspatial import AdvSpatialError, WorstOfK, roto_translate, roto_translate_masks
from advspatial.adapters import SpatialSearchV2
from advspatial.adapters.torchvision_v2 import find_labels

SIZE = 12


def _sample(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, SIZE, SIZE, generator=g)
    mask = torch.randint(0, 4, (SIZE, SIZE), generator=g, dtype=torch.uint8)
    boxes = torch.tensor([[2.0, 3.0, 7.0, 9.0], [5.0, 1.0, 10.0, 4.0]])
    points = torch.rand(3, 2, generator=g) * SIZE
    return image, mask, boxes, points


def _affine(target: object, row: torch.Tensor, nearest: bool = False) -> object:
    angle, tx, ty = (float(v) for v in row)
    mode = v2.InterpolationMode.NEAREST if nearest else v2.InterpolationMode.BILINEAR
    return F.affine(target, angle=-angle, translate=[tx, ty], scale=1.0, shear=[0.0, 0.0], interpolation=mode)


def test_single_sample_moves_every_target_with_the_chosen_params() -> None:
    model = tiny_model()
    search = grid_search(model)
    image, mask, boxes, points = _sample()
    sample = (
        tv_tensors.Image(image),
        {
            "label": 3,
            "mask": tv_tensors.Mask(mask),
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(SIZE, SIZE)),
            "points": tv_tensors.KeyPoints(points, canvas_size=(SIZE, SIZE)),
        },
    )
    out_image, target = SpatialSearchV2(search)(sample)
    row = search.search(image[None], torch.tensor([3])).params
    assert not torch.equal(row, torch.zeros_like(row))
    assert isinstance(out_image, tv_tensors.Image)
    assert torch.equal(out_image.as_subclass(torch.Tensor), roto_translate(image[None], row)[0])
    torch.testing.assert_close(out_image.as_subclass(torch.Tensor), _affine(image, row[0]), atol=1e-5, rtol=0)
    assert torch.equal(target["mask"].as_subclass(torch.Tensor), roto_translate_masks(mask[None], row)[0])
    assert torch.equal(target["mask"], _affine(tv_tensors.Mask(mask), row[0], nearest=True))
    ref_boxes = _affine(sample[1]["boxes"], row[0])
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), ref_boxes.as_subclass(torch.Tensor))
    ref_points = _affine(sample[1]["points"], row[0])
    torch.testing.assert_close(
        target["points"].as_subclass(torch.Tensor), ref_points.as_subclass(torch.Tensor)
    )
    assert target["label"] == 3


@pytest.mark.parametrize("fmt", ["XYWH", "CXCYWH"])
def test_box_formats_round_trip(fmt: str) -> None:
    search = grid_search(tiny_model())
    image, _, boxes, _ = _sample(1)
    xyxy = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(SIZE, SIZE))
    other = F.convert_bounding_box_format(xyxy, new_format=fmt)
    _, moved_xyxy = SpatialSearchV2(search)(image, {"label": 1, "b": xyxy})
    _, moved_other = SpatialSearchV2(search)(image, {"label": 1, "b": other})
    assert moved_other["b"].format.name == fmt
    back = F.convert_bounding_box_format(moved_other["b"], new_format="XYXY")
    torch.testing.assert_close(back.as_subclass(torch.Tensor), moved_xyxy["b"].as_subclass(torch.Tensor))


def test_batch_equals_core_and_per_sample_search() -> None:
    search = grid_search(tiny_model())
    images = torch.rand(6, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    masks = tv_tensors.Mask(torch.randint(0, 3, (6, SIZE, SIZE), generator=torch.Generator().manual_seed(3)))
    out, out_labels, out_masks = SpatialSearchV2(search)(images, labels, masks)
    rows = search.search(images, labels).params
    assert torch.equal(out, roto_translate(images, rows))
    assert torch.equal(out_labels, labels)
    assert torch.equal(
        out_masks.as_subclass(torch.Tensor), roto_translate_masks(masks.as_subclass(torch.Tensor), rows)
    )
    singles = torch.stack([SpatialSearchV2(search)(images[i], int(labels[i]))[0] for i in range(6)])
    assert torch.equal(singles, out)


def test_uint8_and_pil_images_keep_their_type() -> None:
    search = grid_search(tiny_model())
    image = torch.randint(
        0, 256, (1, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(4)
    )
    out, _ = SpatialSearchV2(search)(image, 2)
    floats = image.float()[None] / 255
    row = search.search(floats, torch.tensor([2])).params
    assert out.dtype == torch.uint8
    assert torch.equal(out, F.to_dtype(roto_translate(floats, row), torch.uint8, scale=True)[0])
    pil_out, _ = SpatialSearchV2(search)(F.to_pil_image(image), 2)
    assert pil_out.mode == "L"
    assert torch.equal(F.pil_to_tensor(pil_out), out)


class _JointFakeData(VisionDataset):
    """FakeData images through a joint ``transforms(image, target)``, as detection datasets do."""

    def __init__(self, transforms: v2.Transform) -> None:
        super().__init__(root=None, transforms=transforms)
        self.fake = FakeData(size=4, image_size=(3, SIZE, SIZE), num_classes=5)

    def __getitem__(self, index: int) -> tuple[object, object]:
        image, target = self.fake[index]
        return self.transforms(image, target)

    def __len__(self) -> int:
        return len(self.fake)


def test_compose_dataset_and_pickle_with_fakedata() -> None:
    model = tiny_model(channels=3)
    pipeline = v2.Compose(
        [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), SpatialSearchV2(grid_search(model))]
    )
    data = _JointFakeData(pipeline)
    image, label = data[0]
    assert isinstance(image, tv_tensors.Image)
    assert image.shape == (3, SIZE, SIZE)
    assert isinstance(label, int)
    restored = pickle.loads(pickle.dumps(pipeline))
    pil, target = FakeData(size=1, image_size=(3, SIZE, SIZE), num_classes=5)[0]
    assert torch.equal(restored(pil, target)[0], pipeline(pil, target)[0])
    assert pipeline.state_dict() == {}
    assert all(not list(m.parameters(recurse=False)) for m in pipeline.modules())


def test_state_dict_holds_no_model_and_repr_names_the_search() -> None:
    transform = SpatialSearchV2(WorstOfK(tiny_model(), k=3))
    assert transform.state_dict() == {}
    assert "WorstOfK" in repr(transform)


def test_labels_getter_none_scores_without_labels() -> None:
    search = grid_search(tiny_model())
    image = torch.rand(1, SIZE, SIZE)
    out = SpatialSearchV2(search, labels_getter=None)(image)
    assert torch.equal(out, roto_translate(image[None], search.search(image[None]).params)[0])


def test_bad_inputs_raise_clear_errors() -> None:
    transform = SpatialSearchV2(grid_search(tiny_model()))
    image = torch.rand(1, SIZE, SIZE)
    with pytest.raises(AdvSpatialError, match="needs the sample's label"):
        transform(image)
    with pytest.raises(AdvSpatialError, match="channels first"):
        transform(torch.rand(SIZE, SIZE, 3), 1)
    with pytest.raises(AdvSpatialError, match="does not support Video"):
        transform(image, {"label": 1, "video": tv_tensors.Video(torch.rand(2, 1, SIZE, SIZE))})
    rotated = tv_tensors.BoundingBoxes(
        torch.tensor([[5.0, 5.0, 2.0, 2.0, 10.0]]), format="CXCYWHR", canvas_size=(SIZE, SIZE)
    )
    with pytest.raises(AdvSpatialError, match="rotated boxes"):
        transform(image, {"label": 1, "boxes": rotated})
    with pytest.raises(AdvSpatialError, match="labels must have shape"):
        transform(torch.rand(2, 1, SIZE, SIZE), torch.tensor([1, 2, 3]))
    with pytest.raises(AdvSpatialError, match="search must be"):
        SpatialSearchV2(tiny_model())  # type: ignore[arg-type]


# Issue 14: v2's own contracts (each of these failed before the adapter followed them).


def test_every_image_v2_transforms_moves_with_the_same_rows() -> None:
    """``{"image": PIL, "mask": PIL, "label": 3}``: v2 transforms both PIL images; so does the adapter."""
    search = grid_search(tiny_model())
    g = torch.Generator().manual_seed(5)
    image = torch.randint(0, 256, (1, SIZE, SIZE), dtype=torch.uint8, generator=g)
    mask = torch.randint(0, 4, (1, SIZE, SIZE), dtype=torch.uint8, generator=g)
    transform = SpatialSearchV2(search)
    out = transform({"image": F.to_pil_image(image), "mask": F.to_pil_image(mask), "label": 3})
    row = transform.last_result.params  # type: ignore[union-attr]
    assert torch.equal(row, search.search(image[None].float() / 255, torch.tensor([3])).params)
    expected = F.to_dtype(roto_translate(mask[None].float() / 255, row), torch.uint8, scale=True)[0]
    assert torch.equal(F.pil_to_tensor(out["mask"]), expected)
    assert out["label"] == 3


def test_a_pure_tensor_before_a_pil_image_passes_through_as_v2_says() -> None:
    search = grid_search(tiny_model())
    extra = torch.rand(1, SIZE, SIZE)
    image = torch.randint(
        0, 256, (1, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(6)
    )
    out = SpatialSearchV2(search)({"extra": extra, "image": F.to_pil_image(image), "label": 2})
    out_extra, out_pil, label = out["extra"], out["image"], out["label"]
    assert out_extra is extra and label == 2
    row = search.search(image[None].float() / 255, torch.tensor([2])).params
    assert torch.equal(
        F.pil_to_tensor(out_pil),
        F.to_dtype(roto_translate(image[None].float() / 255, row), torch.uint8, scale=True)[0],
    )


def test_make_params_and_transform_are_the_extension_points() -> None:
    """Containers and replays use ``make_params`` + ``transform``; ``RandomApply`` runs the search."""
    search = grid_search(tiny_model())
    image, mask, _, _ = _sample(7)
    transform = SpatialSearchV2(search)
    params = transform.make_params([image], labels=torch.tensor([4]))
    row = search.search(image[None], torch.tensor([4])).params
    assert torch.equal(params["params"], row)
    assert torch.equal(transform.transform(image, params), roto_translate(image[None], row)[0])
    moved = transform.transform(tv_tensors.Mask(mask), params)
    assert torch.equal(moved.as_subclass(torch.Tensor), roto_translate_masks(mask[None], row)[0])
    assert transform.transform(5, params) == 5
    applied, label = v2.RandomApply([transform], p=1.0)(image, 4)
    assert torch.equal(applied, roto_translate(image[None], row)[0]) and label == 4
    with pytest.raises(AdvSpatialError, match="make_params needs the labels"):
        transform.make_params([image])
    calls: list[str] = []
    make_params, move = transform.make_params, transform.transform
    transform.make_params = lambda flat: calls.append("make_params") or make_params(flat)  # type: ignore[method-assign]
    transform.transform = lambda x, p: calls.append("transform") or move(x, p)  # type: ignore[method-assign]
    transform(image, {"label": 4, "mask": tv_tensors.Mask(mask)})
    assert calls == ["make_params", "transform", "transform"]  # v2's forward drives both (label untouched)


def test_integer_keypoints_and_boxes_keep_their_dtype() -> None:
    search = grid_search(tiny_model())
    image = torch.rand(1, SIZE, SIZE)
    points = tv_tensors.KeyPoints(torch.tensor([[3, 4], [8, 2]]), canvas_size=(SIZE, SIZE))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[2, 3, 7, 9]]), format="XYXY", canvas_size=(SIZE, SIZE))
    _, target = SpatialSearchV2(search)(image, {"label": 1, "points": points, "boxes": boxes})
    row = search.search(image[None], torch.tensor([1])).params[0]
    assert target["points"].dtype == torch.int64 and target["boxes"].dtype == torch.int64
    for name, given in (("points", points), ("boxes", boxes)):
        reference = _affine(given, row)
        assert (target[name].as_subclass(torch.Tensor) - reference.as_subclass(torch.Tensor)).abs().max() <= 1


@pytest.mark.parametrize(
    ("image_dtype", "model_dtype"),
    [(torch.float64, torch.float32), (torch.float16, torch.float32), (torch.uint8, torch.float64)],
)
def test_image_and_model_dtypes_may_differ(image_dtype: torch.dtype, model_dtype: torch.dtype) -> None:
    """Issue 15: scored in the model's dtype, returned in the image's."""
    model = tiny_model().to(model_dtype)
    search = grid_search(model)
    floats = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(8))
    images = (
        F.to_dtype(floats, image_dtype, scale=True) if image_dtype == torch.uint8 else floats.to(image_dtype)
    )
    labels = torch.tensor([1, 3])
    out, _ = SpatialSearchV2(search)(images, labels)
    scored = F.to_dtype(images, model_dtype, scale=True)
    row = search.search(scored, labels).params
    assert out.dtype == image_dtype
    if image_dtype.is_floating_point:
        assert torch.equal(out, roto_translate(images, row.to(image_dtype)))
    else:
        assert torch.equal(
            out, F.to_dtype(roto_translate(images.float() / 255, row), torch.uint8, scale=True)
        )


def test_labels_are_found_with_torchvisions_heuristic() -> None:
    from torchvision.transforms.v2._utils import _find_labels_default_heuristic

    search = grid_search(tiny_model())
    image = torch.rand(1, SIZE, SIZE)
    for target in (
        {"class_label": torch.tensor([2])},
        {"label": torch.tensor([1]), "labels": torch.tensor([4])},
    ):
        transform = SpatialSearchV2(search)
        transform(image, target)
        expected = _find_labels_default_heuristic((image, target))
        assert torch.equal(transform.last_result.params, search.search(image[None], expected).params)  # type: ignore[union-attr]
        assert find_labels((image, target)) is expected


def test_last_result_is_the_search_the_output_came_from() -> None:
    search = WorstOfK(tiny_model(), k=5, generator=torch.Generator().manual_seed(0))
    transform = SpatialSearchV2(search)
    assert transform.last_result is None
    images = torch.rand(3, 1, SIZE, SIZE)
    out, _ = transform(images, torch.tensor([0, 1, 2]))
    assert torch.equal(out, roto_translate(images, transform.last_result.params))  # type: ignore[union-attr]


def test_boxes_in_a_batch_are_refused() -> None:
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[1.0, 2.0, 5.0, 6.0]]), format="XYXY", canvas_size=(SIZE, SIZE)
    )
    with pytest.raises(AdvSpatialError, match="apply SpatialSearchV2 per sample"):
        SpatialSearchV2(grid_search(tiny_model()))(
            torch.rand(2, 1, SIZE, SIZE), {"labels": torch.tensor([0, 1]), "boxes": boxes}
        )


def test_affine_rows_move_every_target_as_torchvisions_affine() -> None:
    """An affine search: image, mask, boxes and keypoints equal v2's ``affine`` with scale and shear."""
    from advspatial import AffineBox, GridSearch

    space = AffineBox(max_rotation=20, max_translation=2, scale=(0.8, 1.25), shear=10)
    search = GridSearch(tiny_model(), space=space, steps=(3, 1, 3, 3, 3, 1))
    image, mask, boxes, points = _sample(1)
    sample = (
        tv_tensors.Image(image),
        {
            "label": 2,
            "mask": tv_tensors.Mask(mask),
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(SIZE, SIZE)),
            "points": tv_tensors.KeyPoints(points, canvas_size=(SIZE, SIZE)),
        },
    )
    transform = SpatialSearchV2(search)
    out_image, target = transform(sample)
    row = transform.last_result.params[0]  # type: ignore[union-attr]
    assert row.shape == (6,) and not torch.equal(row, space.identity(()))

    def affine(item: object, nearest: bool = False) -> torch.Tensor:
        mode = v2.InterpolationMode.NEAREST if nearest else v2.InterpolationMode.BILINEAR
        angle, tx, ty, scale, shear_x, shear_y = (float(v) for v in row)
        moved = F.affine(
            item,
            angle=-angle,
            translate=[tx, ty],
            scale=scale,
            shear=[-shear_x, -shear_y],
            interpolation=mode,
        )
        return moved.as_subclass(torch.Tensor)

    torch.testing.assert_close(out_image.as_subclass(torch.Tensor), affine(image), atol=1e-5, rtol=0)
    assert (
        target["mask"].as_subclass(torch.Tensor) != affine(tv_tensors.Mask(mask), nearest=True)
    ).sum() <= 2
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), affine(sample[1]["boxes"]))
    torch.testing.assert_close(target["points"].as_subclass(torch.Tensor), affine(sample[1]["points"]))
