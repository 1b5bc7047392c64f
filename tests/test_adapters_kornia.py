"""kornia adapter: kornia's matrix convention, every data key moved, replay and inverse."""

from __future__ import annotations

import pickle

import kornia.augmentation as K
import pytest
import torch
from kornia.geometry.boxes import Boxes
from kornia.geometry.transform import warp_affine

from adapter_helpers import grid_search, tiny_model
from advspatial import (
    AdvSpatialError,
    roto_translate,
    roto_translate_boxes,
    roto_translate_masks,
    roto_translate_points,
)
from advspatial.adapters import SpatialSearchKornia
from advspatial.adapters.kornia import kornia_matrices

SIZE = 12


def test_kornia_warp_with_our_matrix_equals_roto_translate() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 2, 9, 11, generator=g, dtype=torch.float64)
    params = torch.cat(
        [torch.rand(5, 1, generator=g) * 120 - 60, torch.rand(5, 2, generator=g) * 6 - 3], 1
    ).double()
    for align_corners in (True, False):
        warped = warp_affine(
            images, kornia_matrices(params, (9, 11))[:, :2], (9, 11), align_corners=align_corners
        )
        torch.testing.assert_close(warped, roto_translate(images, params), atol=1e-12, rtol=0)


def test_every_data_key_follows_the_chosen_params() -> None:
    search = grid_search(tiny_model())
    aug = SpatialSearchKornia(search)
    seq = K.AugmentationSequential(aug, data_keys=["input", "mask", "bbox_xyxy", "keypoints"])
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 1, SIZE, SIZE, generator=g)
    labels = torch.tensor([0, 3, 4])
    masks = torch.randint(0, 4, (3, 1, SIZE, SIZE), generator=g).float()
    boxes = torch.tensor([[[2.0, 3.0, 7.0, 9.0]]]).repeat(3, 1, 1)
    points = torch.rand(3, 4, 2, generator=g) * (SIZE - 1)
    with aug.labels(labels):
        out_images, out_masks, out_boxes, out_points = seq(images, masks, boxes, points)
    rows = search.search(images, labels).params
    assert torch.equal(seq._params[0].data["roto"], rows)
    assert torch.equal(out_images, roto_translate(images, rows))
    assert torch.equal(out_masks, roto_translate_masks(masks, rows))
    expected_points = roto_translate_points(points.double() + 0.5, rows.double(), (SIZE, SIZE)) - 0.5
    torch.testing.assert_close(out_points.double(), expected_points, atol=1e-4, rtol=0)
    # kornia moves boxes itself, in its own box geometry, with the matrix of the chosen rows.
    kornia_boxes = Boxes.from_tensor(boxes.clone(), mode="xyxy_plus").transform_boxes_(
        kornia_matrices(rows, (SIZE, SIZE))
    )
    torch.testing.assert_close(out_boxes, kornia_boxes.to_tensor("xyxy_plus"))
    # and stays within a pixel of torchvision's geometry (the core), which it equals under pure shifts
    core = roto_translate_boxes(boxes, rows, (SIZE, SIZE), clamp=False)
    assert float((out_boxes - core).abs().max()) < 1.0


def test_boxes_under_pure_translation_match_the_core() -> None:
    aug = SpatialSearchKornia(grid_search(tiny_model()))
    seq = K.AugmentationSequential(aug, data_keys=["input", "bbox_xyxy"])
    rows = torch.tensor([[0.0, 2.0, -1.0]])
    boxes = torch.tensor([[[2.0, 3.0, 7.0, 9.0]]])
    params = [
        type(p)(p.name, {**p.data, "roto": rows})
        for p in seq.forward_parameters(torch.Size((1, 1, SIZE, SIZE)))
    ]
    _, out_boxes = seq(torch.rand(1, 1, SIZE, SIZE), boxes, params=params)
    assert torch.equal(out_boxes, roto_translate_boxes(boxes, rows, (SIZE, SIZE)))


def test_replay_and_inverse() -> None:
    aug = SpatialSearchKornia(grid_search(tiny_model()))
    seq = K.AugmentationSequential(aug, data_keys=["input", "mask"])
    images = torch.zeros(2, 1, SIZE, SIZE)
    images[:, :, 4:8, 4:8] = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    masks = (images > 0).float()
    with aug.labels(torch.tensor([1, 2])):
        out, out_masks = seq(images, masks)
    replay, replay_masks = seq(images, masks, params=seq._params)  # no labels needed: the choice is in params
    assert torch.equal(replay, out)
    assert torch.equal(replay_masks, out_masks)
    back, back_masks = seq.inverse(out, out_masks)
    rows = seq._params[0].data["roto"]
    expected = warp_affine(out, torch.linalg.inv(kornia_matrices(rows, (SIZE, SIZE)))[:, :2], (SIZE, SIZE))
    torch.testing.assert_close(back, expected)
    # exact rows (a quarter turn, an integer shift) come back exactly
    exact = torch.tensor([[90.0, 0.0, 0.0], [0.0, 2.0, -1.0]])
    params = [type(p)(p.name, {**p.data, "roto": exact}) for p in seq.forward_parameters(images.shape)]
    out, out_masks = seq(images, masks, params=params)
    assert torch.equal(out, roto_translate(images, exact))
    back, back_masks = seq.inverse(out, out_masks)
    torch.testing.assert_close(back, images, atol=1e-5, rtol=0)
    assert torch.equal(back_masks, masks)


def test_pickle_and_no_weights_in_state_dict() -> None:
    aug = SpatialSearchKornia(grid_search(tiny_model()))
    seq = K.AugmentationSequential(aug, data_keys=["input"])
    assert seq.state_dict() == {}
    restored = pickle.loads(pickle.dumps(seq))
    images = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    restored_aug = restored[0]
    with aug.labels(torch.tensor([0, 1])), restored_aug.labels(torch.tensor([0, 1])):
        assert torch.equal(restored(images), seq(images))


def test_labels_must_be_given_explicitly() -> None:
    aug = SpatialSearchKornia(grid_search(tiny_model()))
    images = torch.rand(2, 1, SIZE, SIZE)
    with pytest.raises(AdvSpatialError, match=r"with aug\.labels"):
        aug(images)
    with aug.labels(None):
        assert aug(images).shape == images.shape
    with aug.labels(torch.tensor([1, 2, 3])), pytest.raises(AdvSpatialError, match="labels must have shape"):
        aug(images)
    with pytest.raises(AdvSpatialError, match="search must be"):
        SpatialSearchKornia(tiny_model())  # type: ignore[arg-type]


# Issue 14: kornia's common arguments and a public view of the choice (each failed before).


def test_p_gates_samples_and_only_gated_samples_are_searched() -> None:
    search = grid_search(tiny_model())
    aug = SpatialSearchKornia(search, p=0.5)
    images = torch.rand(8, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    labels = torch.arange(8) % 5
    torch.manual_seed(3)
    with aug.labels(labels):
        out = aug(images)
    gate = aug._params["batch_prob"] > 0.5
    assert 0 < int(gate.sum()) < 8
    rows = torch.zeros(8, 3)
    rows[gate] = search.search(images[gate], labels[gate]).params
    assert torch.equal(aug.last_params, rows)
    assert torch.equal(out[~gate], images[~gate])
    assert torch.equal(out[gate], roto_translate(images[gate], rows[gate]))
    never = SpatialSearchKornia(search, p_batch=0.0)
    with never.labels(labels):
        assert torch.equal(never(images), images)
    with pytest.raises(AdvSpatialError, match="p must be a probability"):
        SpatialSearchKornia(search, p=1.5)


@pytest.mark.parametrize("as_attribute", [False, True])
def test_same_on_batch_applies_the_first_images_row_to_all(as_attribute: bool) -> None:
    search = grid_search(tiny_model())
    aug = SpatialSearchKornia(search, same_on_batch=not as_attribute)
    if as_attribute:
        aug.same_on_batch = True
    images = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([1, 2, 3, 4])
    with aug.labels(labels):
        out = aug(images)
    row = search.search(images[:1], labels[:1]).params
    assert torch.equal(aug.last_params, row.expand(4, 3))
    assert torch.equal(out, roto_translate(images, row.expand(4, 3)))


def test_keepdim_keeps_an_unbatched_image_unbatched() -> None:
    search = grid_search(tiny_model())
    image = torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    aug = SpatialSearchKornia(search, keepdim=True)
    with aug.labels(torch.tensor(2)):
        out = aug(image)
    row = search.search(image[None], torch.tensor([2])).params
    assert out.shape == image.shape
    assert torch.equal(out, roto_translate(image[None], row)[0])
    with SpatialSearchKornia(search).labels(torch.tensor([2])) as batched:
        assert batched(image).shape == (1, 1, SIZE, SIZE)


def test_last_params_and_last_result_are_the_public_view_of_the_choice() -> None:
    aug = SpatialSearchKornia(grid_search(tiny_model()))
    seq = K.AugmentationSequential(aug, data_keys=["input"])
    assert aug.last_params is None and aug.last_result is None
    images = torch.rand(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    with aug.labels(torch.tensor([0, 1, 2])):
        out = seq(images)
    assert torch.equal(aug.last_params, seq._params[0].data["roto"])
    assert torch.equal(aug.last_result.params, aug.last_params)  # type: ignore[union-attr]
    assert torch.equal(out, roto_translate(images, aug.last_params))


@pytest.mark.parametrize(
    ("image_dtype", "model_dtype"), [(torch.float64, torch.float32), (torch.float16, torch.float32)]
)
def test_image_and_model_dtypes_may_differ(image_dtype: torch.dtype, model_dtype: torch.dtype) -> None:
    """Issue 15: scored in the model's dtype, warped and returned in the image's."""
    search = grid_search(tiny_model().to(model_dtype))
    images = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(8)).to(image_dtype)
    labels = torch.tensor([1, 3])
    aug = SpatialSearchKornia(search)
    with aug.labels(labels):
        out = aug(images)
    row = search.search(images.to(model_dtype), labels).params
    assert out.dtype == image_dtype
    assert torch.equal(out, roto_translate(images, row.to(image_dtype)))


def test_affine_search_gates_with_identity_rows_and_moves_every_key() -> None:
    """An affine search: ungated samples get the identity row (0, 0, 0, 1, 0, 0), masks follow."""
    from advspatial import AffineBox, GridSearch

    space = AffineBox(max_rotation=30, max_translation=2, scale=(0.8, 1.25), shear=10)
    search = GridSearch(tiny_model(), space=space, steps=(3, 1, 1, 3, 3, 1))
    aug = SpatialSearchKornia(search, p=0.5)
    seq = K.AugmentationSequential(aug, data_keys=["input", "mask"])
    images = torch.rand(8, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    masks = torch.randint(0, 4, (8, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(5)).float()
    labels = torch.arange(8) % 5
    torch.manual_seed(3)
    with aug.labels(labels):
        out, moved = seq(images, masks)
    gate = aug._params["batch_prob"] > 0.5
    assert 0 < int(gate.sum()) < 8
    rows = space.identity((8,))
    rows[gate] = search.search(images[gate], labels[gate]).params
    assert torch.equal(aug.last_params, rows)
    assert torch.equal(out[~gate], images[~gate])
    assert torch.equal(out[gate], roto_translate(images[gate], rows[gate]))
    torch.testing.assert_close(moved, roto_translate_masks(masks, rows.double()))
    matrices = kornia_matrices(rows[gate], (SIZE, SIZE))
    warped = warp_affine(images[gate], matrices[:, :2], (SIZE, SIZE), align_corners=True)
    torch.testing.assert_close(warped, out[gate], atol=1e-5, rtol=0)
