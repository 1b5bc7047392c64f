"""Affine rows ``(angle, tx, ty, scale, shear_x, shear_y)``: the same kernel, checked against torchvision
and kornia on random rows, and the 3-column rows as the special case."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from kornia.geometry.transform import get_affine_matrix2d, warp_affine
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
from advspatial.adapters.kornia import kornia_matrices
from advspatial.geometry.matrices import sampling_matrices

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-6}
SIZES = [(28, 28), (17, 23), (32, 20), (15, 15)]


def random_affine(n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rows over a wide box: +-45 degrees, +-5 px, scale in [0.6, 1.5], shears +-40 degrees."""
    g = torch.Generator().manual_seed(seed)
    unit = torch.rand(n, 6, generator=g, dtype=torch.float64) * 2 - 1
    rows = unit * torch.tensor([45.0, 5.0, 5.0, 0.0, 40.0, 40.0], dtype=torch.float64)
    rows[:, 3] = 0.6 + 0.9 * (unit[:, 3] + 1) / 2
    return rows.to(dtype)


def tv_kwargs(p: torch.Tensor) -> dict[str, object]:
    """torchvision's ``affine`` arguments for one affine row (the documented conversion)."""
    return {
        "angle": -float(p[0]),
        "translate": [float(p[1]), float(p[2])],
        "scale": float(p[3]),
        "shear": [-float(p[4]), -float(p[5])],
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_equals_torchvision_affine_with_scale_and_shear(
    device: str, dtype: torch.dtype, size: tuple[int, int], interpolation: str
) -> None:
    images = torch.rand(6, 3, *size, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    params = random_affine(6, seed=hash(size) % 1000, dtype=dtype).to(device)
    ours = roto_translate(images, params, interpolation=interpolation)  # type: ignore[arg-type]
    reference = torch.stack(
        [
            TF.affine(image, **tv_kwargs(p), interpolation=InterpolationMode(interpolation), fill=None)  # type: ignore[arg-type]
            for image, p in zip(images, params, strict=True)
        ]
    )
    assert ours.dtype == dtype and ours.device == images.device
    if interpolation == "nearest":
        # A sampling point exactly between two pixels may round either way under float round-off.
        mismatched = (ours - reference).abs() > TOLERANCE[dtype]
        assert mismatched.float().mean() < 2e-3
    else:
        torch.testing.assert_close(ours, reference, atol=TOLERANCE[dtype], rtol=0)


@pytest.mark.parametrize("size", SIZES)
def test_sampling_matrices_equal_torchvision_inverse_matrix(size: tuple[int, int]) -> None:
    """The normalised inverse map is torchvision's ``_get_inverse_affine_matrix`` rescaled (float64)."""
    from torchvision.transforms.functional import _get_inverse_affine_matrix

    height, width = size
    params = random_affine(16, seed=3, dtype=torch.float64)
    ours = sampling_matrices(params, size)
    scale = torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64)
    for row, theta in zip(params, ours, strict=True):
        inverse = torch.tensor(
            _get_inverse_affine_matrix([0.0, 0.0], **tv_kwargs(row)),  # type: ignore[arg-type]
            dtype=torch.float64,
        ).reshape(2, 3)
        # torchvision works in centred pixels; ours in [-1, 1]: theta = S^-1 inverse S.
        expected = torch.cat(
            [inverse[:, :2] * scale[None, :] / scale[:, None], inverse[:, 2:] / scale[:, None]], 1
        )
        torch.testing.assert_close(theta, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("size", SIZES)
def test_kornia_adapter_matrices_equal_get_affine_matrix2d(size: tuple[int, int]) -> None:
    """The adapter's half-pixel conversion of an affine row is kornia's own affine matrix, and
    ``warp_affine`` with it gives the library's pixels."""
    height, width = size
    params = random_affine(8, seed=4, dtype=torch.float64)
    reference = get_affine_matrix2d(
        translations=params[:, 1:3],
        center=torch.tensor([[(width - 1) / 2.0, (height - 1) / 2.0]], dtype=torch.float64).expand(8, 2),
        scale=params[:, 3:4].expand(8, 2),
        angle=-params[:, 0],
        sx=torch.deg2rad(-params[:, 4]),
        sy=torch.deg2rad(-params[:, 5]),
    )
    torch.testing.assert_close(kornia_matrices(params, size), reference, atol=1e-9, rtol=0)
    images = torch.rand(8, 2, *size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    warped = warp_affine(images, reference[:, :2], size, mode="bilinear", align_corners=True)
    torch.testing.assert_close(roto_translate(images, params), warped, atol=1e-9, rtol=0)


def test_three_columns_are_the_affine_row_with_unit_scale_to_the_bit() -> None:
    rows3 = random_affine(32, seed=6)[:, :3]
    rows6 = torch.cat([rows3, torch.ones(32, 1), torch.zeros(32, 2)], dim=1)
    for size in [(17, 23), (8, 8)]:
        assert torch.equal(forward_matrices(rows3, size), forward_matrices(rows6, size))
        assert torch.equal(sampling_matrices(rows3, size), sampling_matrices(rows6, size))
    images = torch.rand(32, 1, 17, 23, generator=torch.Generator().manual_seed(7))
    assert torch.equal(roto_translate(images, rows3), roto_translate(images, rows6))


def test_identity_row_returns_input() -> None:
    x = torch.rand(2, 3, 9, 12, generator=torch.Generator().manual_seed(8))
    identity = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]]).expand(2, 6)
    torch.testing.assert_close(roto_translate(x, identity), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("row", "inverse"),
    [
        # Zoom 2x about the centre: the output at p samples c + (p - c) / 2.
        ((0.0, 0.0, 0.0, 2.0, 0.0, 0.0), lambda x, y: (8 + (x - 8) / 2, 6 + (y - 6) / 2)),
        # shear_x 45 degrees: x_out = x + (y - cy), so the output at (x, y) samples (x - (y - cy), y).
        ((0.0, 0.0, 0.0, 1.0, 45.0, 0.0), lambda x, y: (x - (y - 6), y)),
        # shear_y 45 degrees then 1 px right: y_out = y + (x - cx).
        ((0.0, 1.0, 0.0, 1.0, 0.0, 45.0), lambda x, y: (x - 1, y - (x - 1 - 8))),
    ],
)
def test_scale_and_shear_on_a_linear_image_are_exact(row: tuple[float, ...], inverse) -> None:  # type: ignore[no-untyped-def]
    """Bilinear sampling of a linear image is exact: the output is the image's formula at the source."""
    height, width = 12, 16
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    ys, xs = ys.double(), xs.double()
    image = (xs + 10 * ys)[None, None]
    out = roto_translate(image, torch.tensor([row], dtype=torch.float64))[0, 0]
    source_x, source_y = inverse(xs, ys)
    inside = (source_x >= 0.5) & (source_x <= width - 0.5) & (source_y >= 0.5) & (source_y <= height - 0.5)
    assert int(inside.sum()) > 40
    torch.testing.assert_close(out[inside], (source_x + 10 * source_y)[inside], atol=1e-9, rtol=0)


def test_shear_moves_points_as_documented() -> None:
    """``shear_x`` moves points below the centre to the right by ``tan * dy``; ``shear_y`` moves points
    right of the centre down by ``tan * dx``."""
    canvas = (10, 10)  # centre (5, 5)
    points = torch.tensor([[[5.0, 7.0], [8.0, 5.0]]])
    sheared_x = roto_translate_points(
        points.double(), torch.tensor([[0.0, 0, 0, 1, 45.0, 0]]).double(), canvas
    )
    torch.testing.assert_close(sheared_x, torch.tensor([[[7.0, 7.0], [8.0, 5.0]]]).double())
    sheared_y = roto_translate_points(
        points.double(), torch.tensor([[0.0, 0, 0, 1, 0, 45.0]]).double(), canvas
    )
    torch.testing.assert_close(sheared_y, torch.tensor([[[5.0, 7.0], [8.0, 8.0]]]).double())
    scaled = roto_translate_points(points, torch.tensor([[0.0, 1.0, 0, 2.0, 0, 0]]), canvas)
    torch.testing.assert_close(scaled, torch.tensor([[[6.0, 9.0], [12.0, 5.0]]]))


def test_masks_points_and_boxes_equal_torchvision() -> None:
    canvas = (19, 26)
    params = random_affine(3, seed=9)
    masks = torch.randint(0, 7, (3, *canvas), generator=torch.Generator().manual_seed(10), dtype=torch.uint8)
    points = torch.rand(3, 7, 2, generator=torch.Generator().manual_seed(11)) * torch.tensor([26.0, 19.0])
    corners = torch.rand(3, 5, 2, 2, generator=torch.Generator().manual_seed(12)) * torch.tensor([26.0, 19.0])
    boxes = torch.cat([corners.amin(dim=2), corners.amax(dim=2)], dim=-1)
    moved_masks = roto_translate_masks(masks, params)
    moved_points = roto_translate_points(points, params, canvas)
    moved_boxes = roto_translate_boxes(boxes, params, canvas)
    for i in range(3):
        kwargs = tv_kwargs(params[i])
        mask = TF.affine(tv_tensors.Mask(masks[i]), **kwargs).as_subclass(torch.Tensor)  # type: ignore[arg-type]
        assert (moved_masks[i] != mask).float().mean() < 5e-3  # ties at exact half-pixels only
        keypoints = TF.affine(tv_tensors.KeyPoints(points[i], canvas_size=canvas), **kwargs)  # type: ignore[arg-type]
        torch.testing.assert_close(moved_points[i], keypoints.as_subclass(torch.Tensor), atol=1e-4, rtol=0)
        box = TF.affine(tv_tensors.BoundingBoxes(boxes[i], format="XYXY", canvas_size=canvas), **kwargs)  # type: ignore[arg-type]
        torch.testing.assert_close(moved_boxes[i], box.as_subclass(torch.Tensor), atol=1e-4, rtol=0)


def test_points_follow_the_image() -> None:
    """A bright pixel lands where its centre point is mapped, with scale and shear."""
    image = torch.zeros(1, 1, 31, 31)
    image[0, 0, 10, 19] = 1.0
    params = torch.tensor([[20.0, 1.0, -2.0, 1.0, 15.0, -10.0]], dtype=torch.float64)
    point = roto_translate_points(torch.tensor([[[19.5, 10.5]]], dtype=torch.float64), params, (31, 31))[0, 0]
    moved = roto_translate(image.double(), params)
    row, col = divmod(int(moved.flatten().argmax()), 31)
    assert abs(col + 0.5 - float(point[0])) <= 0.5 and abs(row + 0.5 - float(point[1])) <= 0.5


def test_forward_matrix_inverts_the_sampling() -> None:
    params = random_affine(5, seed=13, dtype=torch.float64)
    size = (10, 14)
    forward = forward_matrices(params, size)
    assert torch.allclose(torch.linalg.det(forward[:, :, :2]), params[:, 3] ** 2)
    # Map output pixel centres back through the sampling matrix, then forward again.
    theta = sampling_matrices(params, size)
    q = torch.tensor([0.3, -0.7], dtype=torch.float64)
    half = torch.tensor([7.0, 5.0], dtype=torch.float64)
    source = (theta[:, :, :2] @ q + theta[:, :, 2]) * half + half
    back = forward[:, :, :2] @ source.unsqueeze(-1)
    torch.testing.assert_close(back.squeeze(-1) + forward[:, :, 2], (q * half + half).expand(5, 2))


def test_gradcheck_affine_params() -> None:
    images = torch.rand(2, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    params = random_affine(2, seed=14, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, p: roto_translate(x, p), (images, params), eps=1e-6, atol=1e-4)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (torch.zeros(2, 4), r"\(2, 3\) with rows .* or \(2, 6\)"),
        (torch.zeros(2, 6), "scale"),
        (torch.tensor([[0.0, 0, 0, -1.0, 0, 0]] * 2), "scale"),
        (torch.tensor([[0.0, 0, 0, 1.0, 90.0, 0]] * 2), "shear"),
        (torch.tensor([[0.0, 0, 0, 1.0, 0, -95.0]] * 2), "shear"),
    ],
)
def test_bad_affine_rows_name_the_argument(params: torch.Tensor, match: str) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        roto_translate(torch.rand(2, 1, 4, 4), params)
    with pytest.raises(AdvSpatialError, match=match):
        roto_translate_masks(torch.zeros(2, 4, 4), params)
    with pytest.raises(AdvSpatialError, match=match):
        roto_translate_points(torch.zeros(2, 1, 2), params, (4, 4))
