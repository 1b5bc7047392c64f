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
