"""Warping images and masks with per-sample roto-translations or affine rows (layer 1: pure functions)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from advspatial.errors import AdvSpatialError, check_images, check_params, choice
from advspatial.geometry.matrices import sampling_matrices

__all__ = ["INTERPOLATIONS", "PADDINGS", "roto_translate", "roto_translate_masks"]

Interpolation = Literal["bilinear", "nearest"]
Padding = Literal["zeros", "border", "reflection"]
INTERPOLATIONS: tuple[str, ...] = ("bilinear", "nearest")
PADDINGS: tuple[str, ...] = ("zeros", "border", "reflection")


def _sampling_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """``F.affine_grid(theta, (N, 1, H, W), align_corners=False)`` by broadcasting (no batched matmul)."""
    xs = torch.linspace(1.0 / width - 1.0, 1.0 - 1.0 / width, width, device=theta.device, dtype=theta.dtype)
    ys = torch.linspace(
        1.0 / height - 1.0, 1.0 - 1.0 / height, height, device=theta.device, dtype=theta.dtype
    )
    coefficients = theta[:, :, :, None, None]  # (N, 2, 3, 1, 1)
    grid = coefficients[:, :, 0] * xs + coefficients[:, :, 1] * ys[:, None] + coefficients[:, :, 2]
    return grid.permute(0, 2, 3, 1)  # (N, H, W, 2)


def _warp(images: Tensor, params: Tensor, interpolation: str, padding: str) -> Tensor:
    """Unchecked warp of float ``(N, C, H, W)`` images by ``(N, 3)`` or ``(N, 6)`` params (the hot path)."""
    height, width = images.shape[-2:]
    work_dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    theta = sampling_matrices(params.to(device=images.device, dtype=work_dtype), (height, width))
    grid = _sampling_grid(theta, height, width)
    out = F.grid_sample(
        images.to(work_dtype), grid, mode=interpolation, padding_mode=padding, align_corners=False
    )
    return out.to(images.dtype)


def roto_translate(
    images: Tensor,
    params: Tensor,
    *,
    interpolation: Interpolation = "bilinear",
    padding: Padding = "zeros",
) -> Tensor:
    """Rotate each image about its centre, then translate it, with its own parameter row.

    The library's one public warp: it takes roto-translation rows ``(B, 3)`` and affine rows
    ``(B, 6)`` alike.

    Convention:
        ``params[i] = (angle, tx, ty)``: ``angle`` in degrees, counter-clockwise positive on screen;
        ``tx`` pixels to the right, ``ty`` pixels down, applied after the rotation. Pixels that come
        from outside the image are zero (``padding="zeros"``), ``"border"`` repeats the edge and
        ``"reflection"`` mirrors it. The result equals
        ``torchvision.transforms.v2.functional.affine(img, angle=-angle, translate=[tx, ty], scale=1.0,
        shear=[0.0, 0.0], interpolation=..., fill=None)`` for ``padding="zeros"``.

        An affine row ``(angle, tx, ty, scale, shear_x, shear_y)`` also zooms by ``scale`` about the
        centre (``1`` = none, ``> 0``) and shears by ``shear_x``, ``shear_y`` degrees inside
        ``(-90, 90)`` (``shear_x > 0`` moves the rows below the centre right, ``shear_y > 0`` the
        columns right of the centre down; see :mod:`advspatial.geometry.matrices`); it equals
        ``affine(img, angle=-angle, translate=[tx, ty], scale=scale, shear=[-shear_x, -shear_y],
        interpolation=..., fill=None)``. ``(angle, tx, ty, 1, 0, 0)`` gives the same pixels as
        ``(angle, tx, ty)``.

    Differentiable with respect to ``images`` and ``params`` (bilinear).

    Args:
        images: float tensor ``(B, C, H, W)``.
        params: float tensor ``(B, 3)`` of rows ``(angle_degrees, tx_pixels, ty_pixels)`` or ``(B, 6)``
            of rows ``(angle_degrees, tx_pixels, ty_pixels, scale, shear_x_degrees, shear_y_degrees)``.
        interpolation: ``"bilinear"`` or ``"nearest"``.
        padding: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        Tensor of the same shape, dtype and device as ``images``.

    Example:
        >>> x = torch.arange(9.0).reshape(1, 1, 3, 3)
        >>> roto_translate(x, torch.tensor([[90.0, 0.0, 0.0]]))[0, 0].round()
        tensor([[2., 5., 8.],
                [1., 4., 7.],
                [0., 3., 6.]])
        >>> roto_translate(x, torch.tensor([[0.0, 1.0, 0.0]]))[0, 0]
        tensor([[0., 0., 1.],
                [0., 3., 4.],
                [0., 6., 7.]])
        >>> roto_translate(x, torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])).equal(x)  # affine identity
        True
    """
    check_images(images)
    check_params(params, images.shape[0])
    choice(interpolation, "interpolation", INTERPOLATIONS)
    choice(padding, "padding", PADDINGS)
    if images.shape[0] == 0:
        return images.clone()
    return _warp(images, params, interpolation, padding)


def roto_translate_masks(masks: Tensor, params: Tensor, *, fill: int | float = 0) -> Tensor:
    """Move segmentation masks with the same parameters as :func:`roto_translate`, by nearest neighbour.

    Labels are never blended; pixels that come from outside the mask get ``fill``. The result equals
    ``torchvision.transforms.v2.functional.affine(mask, angle=-angle, translate=[tx, ty], scale=1.0,
    shear=[0.0, 0.0], interpolation=NEAREST, fill=fill)`` pixel for pixel, ties included (the sampling
    grid is computed in torchvision's order).

    Args:
        masks: ``(B, H, W)`` or ``(B, C, H, W)`` tensor of any dtype (class indices or booleans;
            labels are exact below ``2**24``).
        params: ``(B, 3)`` or ``(B, 6)`` rows, as for :func:`roto_translate`.
        fill: value for pixels outside the source mask.

    Returns:
        Tensor of the same shape, dtype and device as ``masks``.

    Example:
        >>> m = torch.tensor([[[1, 2], [3, 4]]], dtype=torch.uint8)
        >>> roto_translate_masks(m, torch.tensor([[0.0, 1.0, 0.0]]), fill=9)
        tensor([[[9, 1],
                 [9, 3]]], dtype=torch.uint8)
    """
    if not isinstance(masks, Tensor) or masks.ndim not in (3, 4):
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise AdvSpatialError(f"masks must be a tensor of shape (B, H, W) or (B, C, H, W), got {shape}")
    check_params(params, masks.shape[0])
    if masks.shape[0] == 0:
        return masks.clone()
    return _warp_masks(masks, params, fill)


def _warp_masks(masks: Tensor, params: Tensor, fill: int | float) -> Tensor:
    """Unchecked nearest-neighbour warp of ``(N, H, W)`` or ``(N, C, H, W)`` masks (the hot path)."""
    as_images = masks.unsqueeze(1) if masks.ndim == 3 else masks
    height, width = as_images.shape[-2:]
    # float32 holds every label below 2**24 exactly; shift by fill so that zero padding means "fill".
    shifted = as_images.to(torch.float32) - float(fill)
    grid = _torchvision_grid(params.to(masks.device), height, width)
    warped = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False) + float(
        fill
    )
    if not masks.dtype.is_floating_point:
        warped = warped.round()
    out = warped.to(masks.dtype)
    return out.squeeze(1) if masks.ndim == 3 else out


def _torchvision_grid(params: Tensor, height: int, width: int) -> Tensor:
    """torchvision's float32 sampling grid of ``affine`` for each row, computed in torchvision's order.

    Nearest-neighbour sampling breaks ties (at 30 degrees a sample can fall exactly between two
    pixels) by float round-off, so moved masks equal torchvision's ``affine(mask, ...,
    interpolation=NEAREST)`` pixel for pixel only when the grid is computed the same way: the inverse
    matrix in float64 (``_get_inverse_affine_matrix``), then ``_affine_grid`` in float32.
    """
    rows = params.detach().to(torch.float64)
    zeros, ones = torch.zeros_like(rows[:, 0]), torch.ones_like(rows[:, 0])
    rot = torch.deg2rad(-rows[:, 0])
    tx, ty = rows[:, 1], rows[:, 2]
    scale = rows[:, 3] if rows.shape[1] == 6 else ones
    sx = torch.deg2rad(-rows[:, 4]) if rows.shape[1] == 6 else zeros
    sy = torch.deg2rad(-rows[:, 5]) if rows.shape[1] == 6 else zeros
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m0, m1, m3, m4 = d / scale, -b / scale, -c / scale, a / scale
    m2 = zeros / scale + (m0 * -tx + m1 * -ty)
    m5 = zeros / scale + (m3 * -tx + m4 * -ty)
    theta = torch.stack([m0, m1, m2, m3, m4, m5], dim=1).to(torch.float32).reshape(-1, 2, 3)
    base = torch.empty(1, height, width, 3, dtype=torch.float32, device=params.device)
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, device=params.device))
    base[..., 1].copy_(
        torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height, device=params.device).unsqueeze(-1)
    )
    base[..., 2].fill_(1)
    halves = torch.tensor([0.5 * width, 0.5 * height], dtype=torch.float32, device=params.device)
    rescaled = theta.transpose(1, 2) / halves
    grid = base.view(1, height * width, 3).expand(theta.shape[0], -1, -1).bmm(rescaled)
    return grid.view(-1, height, width, 2)
