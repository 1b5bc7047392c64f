"""Matrices of roto-translations from ``(angle, tx, ty)`` parameter rows.

Convention (the only one in the library): rotation by ``angle`` degrees about the image centre,
counter-clockwise positive as seen on screen, then a translation by ``tx`` pixels right and ``ty``
pixels down. Pixel coordinates are continuous: the top-left corner of the image is ``(0, 0)`` and the
centre of pixel ``(row i, column j)`` is ``(j + 0.5, i + 0.5)``; the image centre is ``(W / 2, H / 2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from advspatial.errors import check_canvas_size, check_params

__all__ = ["forward_matrices", "sampling_matrices"]


def _rotation_terms(params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    radians = torch.deg2rad(params[:, 0])
    return torch.cos(radians), torch.sin(radians), params[:, 1], params[:, 2]


def forward_matrices(params: Tensor, canvas_size: tuple[int, int]) -> Tensor:
    """Matrices that move a point of the input to its place in the output, in pixel coordinates.

    Args:
        params: ``(N, 3)`` rows ``(angle_degrees, tx_pixels, ty_pixels)``.
        canvas_size: ``(H, W)`` of the image the points live on.

    Returns:
        ``(N, 2, 3)`` matrices ``M`` with ``p_out = M[:, :, :2] @ p_in + M[:, :, 2]``.

    Example:
        >>> m = forward_matrices(torch.tensor([[90.0, 0.0, 0.0]]), (4, 4))
        >>> (m[0, :, :2] @ torch.tensor([3.0, 2.0]) + m[0, :, 2]).round().tolist()  # right of centre goes up
        [2.0, 1.0]
    """
    height, width = check_canvas_size(canvas_size)
    cos, sin, tx, ty = _rotation_terms(check_params(params, None))
    cx, cy = width / 2.0, height / 2.0
    # y points down, so a counter-clockwise turn on screen is [[cos, sin], [-sin, cos]].
    row_x = torch.stack([cos, sin, cx - cos * cx - sin * cy + tx], dim=-1)
    row_y = torch.stack([-sin, cos, cy + sin * cx - cos * cy + ty], dim=-1)
    return torch.stack([row_x, row_y], dim=1)


def sampling_matrices(params: Tensor, canvas_size: tuple[int, int]) -> Tensor:
    """Inverse maps in the normalised coordinates of ``F.affine_grid(..., align_corners=False)``.

    For every output location the matrix gives the input location to sample, both normalised so that
    the image spans ``[-1, 1]`` edge to edge. Differentiable with respect to ``params``.

    Args:
        params: ``(N, 3)`` rows ``(angle_degrees, tx_pixels, ty_pixels)``.
        canvas_size: ``(H, W)``.

    Returns:
        ``(N, 2, 3)`` matrices for :func:`torch.nn.functional.affine_grid`.
    """
    cos, sin, tx, ty = _rotation_terms(params)
    height, width = canvas_size
    half_w, half_h = width / 2.0, height / 2.0
    # q_in = R^T (q_out - t) in centred pixels, then rescaled by S = diag(W/2, H/2) on both sides.
    row_x = torch.stack([cos, -sin * (half_h / half_w), (-cos * tx + sin * ty) / half_w], dim=-1)
    row_y = torch.stack([sin * (half_w / half_h), cos, (-sin * tx - cos * ty) / half_h], dim=-1)
    return torch.stack([row_x, row_y], dim=1)
