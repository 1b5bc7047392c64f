"""Geometry kernel: the one convention, checked against torchvision and exact oracles."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from tests.conftest import DEVICES
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode

from advspatial import (
    AdvSpatialError,
    forward_matrices,
    roto_translate,
    roto_translate_boxes,
    roto_translate_masks,
    roto_translate_points,
)

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-6}


def random_params(n: int, seed: int, rotation: float = 45.0, shift: float = 5.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    unit = torch.rand(n, 3, generator=g) * 2 - 1
    return unit * torch.tensor([rotation, shift, shift])


def torchvision_affine(images: torch.Tensor, params: torch.Tensor, interpolation: str) -> torch.Tensor:
    return torch.stack(
        [
            TF.affine(
                image,
                angle=-float(p[0]),
                translate=[float(p[1]), float(p[2])],
                scale=1.0,
                shear=[0.0, 0.0],
                interpolation=InterpolationMode(interpolation),
                fill=None,
            )
            for image, p in zip(images, params, strict=True)
        ]
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(28, 28), (17, 23), (32, 20)])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_equals_torchvision_affine(
    device: str, dtype: torch.dtype, size: tuple[int, int], interpolation: str
) -> None:
    images = torch.rand(8, 3, *size, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    params = random_params(8, seed=1).to(device=device, dtype=dtype)
    ours = roto_translate(images, params, interpolation=interpolation)  # type: ignore[arg-type]
    reference = torchvision_affine(images, params, interpolation)
    assert ours.dtype == dtype and ours.device == images.device
    torch.testing.assert_close(ours, reference, atol=TOLERANCE[dtype], rtol=0)


def test_quarter_turn_is_rot90() -> None:
    images = torch.rand(3, 2, 9, 9)
    params = torch.tensor([[90.0, 0.0, 0.0]] * 3)
    torch.testing.assert_close(roto_translate(images, params), torch.rot90(images, 1, dims=(-2, -1)))
    torch.testing.assert_close(
        roto_translate(images, -params, interpolation="nearest"), torch.rot90(images, -1, dims=(-2, -1))
    )


def shifted_with_zeros(image: torch.Tensor, tx: int, ty: int) -> torch.Tensor:
    out = torch.roll(image, shifts=(ty, tx), dims=(-2, -1))
    if ty > 0:
        out[..., :ty, :] = 0
    elif ty < 0:
        out[..., ty:, :] = 0
    if tx > 0:
        out[..., :, :tx] = 0
    elif tx < 0:
        out[..., :, tx:] = 0
    return out


@pytest.mark.parametrize(("tx", "ty"), [(1, 0), (0, 2), (-3, 1), (2, -2), (-1, -3)])
def test_integer_shift_is_zero_padded_roll(tx: int, ty: int) -> None:
    image = torch.rand(1, 3, 10, 13)
    out = roto_translate(image, torch.tensor([[0.0, float(tx), float(ty)]]))
    torch.testing.assert_close(out, shifted_with_zeros(image, tx, ty), atol=1e-6, rtol=0)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_identity_returns_input(padding: str, interpolation: str) -> None:
    images = torch.rand(4, 3, 11, 7)
    out = roto_translate(images, torch.zeros(4, 3), interpolation=interpolation, padding=padding)  # type: ignore[arg-type]
    torch.testing.assert_close(out, images, atol=1e-6, rtol=0)


def test_border_and_reflection_padding_fill_the_gap() -> None:
    image = torch.arange(1.0, 6.0).reshape(1, 1, 1, 5).expand(1, 1, 3, 5).contiguous()
    params = torch.tensor([[0.0, 2.0, 0.0]])
    zeros = roto_translate(image, params)[0, 0, 0]
    border = roto_translate(image, params, padding="border")[0, 0, 0]
    reflection = roto_translate(image, params, padding="reflection")[0, 0, 0]
    torch.testing.assert_close(zeros, torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0]))
    torch.testing.assert_close(border, torch.tensor([1.0, 1.0, 1.0, 2.0, 3.0]))
    torch.testing.assert_close(reflection, torch.tensor([2.0, 1.0, 1.0, 2.0, 3.0]))


def test_each_image_gets_its_own_params() -> None:
    images = torch.rand(5, 1, 9, 9)
    params = random_params(5, seed=3)
    batched = roto_translate(images, params)
    looped = torch.cat([roto_translate(images[i : i + 1], params[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, looped)


def test_gradcheck_images_and_params() -> None:
    images = torch.rand(2, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    params = torch.tensor([[13.0, 0.3, -0.7], [-21.0, 1.2, 0.4]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, p: roto_translate(x, p), (images, params))


def test_half_precision_keeps_dtype() -> None:
    images = torch.rand(2, 3, 8, 8)
    params = random_params(2, seed=4)
    out = roto_translate(images.to(torch.bfloat16), params)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), roto_translate(images, params), atol=2e-2, rtol=0)


@pytest.mark.parametrize(
    ("images", "params", "match"),
    [
        (torch.rand(3, 8, 8), torch.zeros(3, 3), "4 dimensions"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, 3), "floating point"),
        (torch.rand(2, 1, 8, 8), torch.zeros(3, 3), r"shape \(2, 3\)"),
        (torch.rand(2, 1, 8, 8), torch.zeros(2, 2), r"shape \(2, 3\)"),
        (torch.rand(2, 1, 8, 8), torch.tensor([[0.0, float("nan"), 0.0]] * 2), "finite"),
        ("not a tensor", torch.zeros(2, 3), "torch.Tensor"),
    ],
)
def test_bad_input_names_the_argument(images: object, params: torch.Tensor, match: str) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        roto_translate(images, params)  # type: ignore[arg-type]


def test_bad_options_name_the_argument() -> None:
    with pytest.raises(AdvSpatialError, match="interpolation"):
        roto_translate(torch.rand(1, 1, 4, 4), torch.zeros(1, 3), interpolation="bicubic")  # type: ignore[arg-type]
    with pytest.raises(AdvSpatialError, match="padding"):
        roto_translate(torch.rand(1, 1, 4, 4), torch.zeros(1, 3), padding="wrap")  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_masks_equal_torchvision_nearest(dtype: torch.dtype) -> None:
    masks = torch.randint(
        0, 2 if dtype == torch.bool else 7, (4, 15, 19), generator=torch.Generator().manual_seed(5)
    )
    masks = masks.to(dtype)
    params = random_params(4, seed=6)
    ours = roto_translate_masks(masks, params)
    reference = torch.stack(
        [
            TF.affine(
                tv_tensors.Mask(m),
                angle=-float(p[0]),
                translate=[float(p[1]), float(p[2])],
                scale=1.0,
                shear=[0.0, 0.0],
            ).as_subclass(torch.Tensor)
            for m, p in zip(masks, params, strict=True)
        ]
    )
    assert ours.dtype == dtype
    assert torch.equal(ours, reference)


def test_masks_keep_large_labels_and_fill() -> None:
    masks = torch.full((1, 1, 6, 6), 70000, dtype=torch.int32)
    out = roto_translate_masks(masks, torch.tensor([[0.0, 2.0, 0.0]]), fill=255)
    assert out.dtype == torch.int32
    assert set(out.unique().tolist()) == {255, 70000}
    assert bool((out[..., :2] == 255).all())


def test_points_equal_torchvision_keypoints() -> None:
    canvas = (20, 30)
    points = torch.rand(3, 7, 2, generator=torch.Generator().manual_seed(7)) * torch.tensor([30.0, 20.0])
    params = random_params(3, seed=8)
    ours = roto_translate_points(points, params, canvas)
    for i in range(3):
        reference = TF.affine(
            tv_tensors.KeyPoints(points[i], canvas_size=canvas),
            angle=-float(params[i, 0]),
            translate=[float(params[i, 1]), float(params[i, 2])],
            scale=1.0,
            shear=[0.0, 0.0],
        )
        torch.testing.assert_close(ours[i], reference.as_subclass(torch.Tensor), atol=1e-4, rtol=0)


def test_points_follow_the_image() -> None:
    """A bright pixel lands where its centre point is mapped."""
    image = torch.zeros(1, 1, 21, 21)
    image[0, 0, 5, 14] = 1.0
    params = torch.tensor([[90.0, 2.0, 1.0]])
    moved = roto_translate(image, params, interpolation="nearest")
    row, col = divmod(int(moved.flatten().argmax()), 21)
    point = roto_translate_points(torch.tensor([[[14.5, 5.5]]]), params, (21, 21))[0, 0]
    assert (col + 0.5, row + 0.5) == pytest.approx(point.tolist(), abs=1e-4)


def test_boxes_equal_torchvision_bounding_boxes() -> None:
    canvas = (24, 32)
    corners = torch.rand(2, 5, 2, 2, generator=torch.Generator().manual_seed(9)) * torch.tensor([32.0, 24.0])
    boxes = torch.cat([corners.amin(dim=2), corners.amax(dim=2)], dim=-1)
    params = random_params(2, seed=10)
    ours = roto_translate_boxes(boxes, params, canvas)
    for i in range(2):
        reference = TF.affine(
            tv_tensors.BoundingBoxes(boxes[i], format="XYXY", canvas_size=canvas),
            angle=-float(params[i, 0]),
            translate=[float(params[i, 1]), float(params[i, 2])],
            scale=1.0,
            shear=[0.0, 0.0],
        )
        torch.testing.assert_close(ours[i], reference.as_subclass(torch.Tensor), atol=1e-4, rtol=0)


def test_forward_matrix_inverts_the_sampling() -> None:
    params = random_params(4, seed=11)
    m = forward_matrices(params, (10, 14))
    inverse = forward_matrices(torch.zeros(4, 3), (10, 14))
    assert torch.allclose(inverse[:, :, :2], torch.eye(2).expand(4, 2, 2))
    # Rotation part is orthonormal with determinant one.
    assert torch.allclose(torch.linalg.det(m[:, :, :2]), torch.ones(4), atol=1e-6)


def test_companions_reject_bad_shapes() -> None:
    with pytest.raises(AdvSpatialError, match="points"):
        roto_translate_points(torch.zeros(2, 3), torch.zeros(2, 3), (4, 4))
    with pytest.raises(AdvSpatialError, match="boxes"):
        roto_translate_boxes(torch.zeros(2, 3, 5), torch.zeros(2, 3), (4, 4))
    with pytest.raises(AdvSpatialError, match="canvas_size"):
        roto_translate_points(torch.zeros(2, 1, 2), torch.zeros(2, 3), (4, 0))
    with pytest.raises(AdvSpatialError, match="masks"):
        roto_translate_masks(torch.zeros(4, 4), torch.zeros(4, 3))
