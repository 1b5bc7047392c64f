"""Matrices of roto-translation rows ``(angle, tx, ty)`` and affine rows (six columns, below).

Convention (the only one in the library): rotation by ``angle`` degrees about the image centre,
counter-clockwise positive as seen on screen, then a translation by ``tx`` pixels right and ``ty``
pixels down. Pixel coordinates are continuous: the top-left corner of the image is ``(0, 0)`` and the
centre of pixel ``(row i, column j)`` is ``(j + 0.5, i + 0.5)``; the image centre is ``(W / 2, H / 2)``.

A 6-column affine row adds an isotropic ``scale`` about the centre (``1`` = none) and two shears in
degrees about the centre, applied first, x then y: ``shear_x > 0`` moves points below the centre to
the right (``x += tan(shear_x) * (y - cy)``, the same turning sense as a positive angle), then
``shear_y > 0`` moves points right of the centre down (``y += tan(shear_y) * (x - cx)``). The linear
part is ``scale * R(angle) @ [[1, 0], [tan(shear_y), 1]] @ [[1, tan(shear_x)], [0, 1]]`` (``y`` points
down, ``R`` turns counter-clockwise on screen), which is exactly torchvision's ``affine(angle=-angle,
translate=[tx, ty], scale=scale, shear=[-shear_x, -shear_y])`` and kornia's ``get_affine_matrix2d``.
A 3-column row is the 6-column row ``(angle, tx, ty, 1, 0, 0)``, to the bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from advspatial.errors import check_canvas_size, check_params

__all__ = ["forward_matrices", "sampling_matrices"]


def _linear_terms(params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(a, b, c, d, scale)``: the forward linear part is ``scale * [[a, b], [c, d]]``, determinant 1."""
    radians = torch.deg2rad(params[:, 0])
    cos, sin = torch.cos(radians), torch.sin(radians)
    if params.shape[-1] == 3:
        return cos, sin, -sin, cos, torch.ones_like(cos)
    shear = torch.tan(torch.deg2rad(params[:, 4:6]))
    shear_x, shear_y = shear[:, 0], shear[:, 1]
    # R @ SHy = [[p, sin], [q, cos]], then @ SHx.
    p = cos + sin * shear_y
    q = cos * shear_y - sin
    return p, p * shear_x + sin, q, q * shear_x + cos, params[:, 3]


def forward_matrices(params: Tensor, canvas_size: tuple[int, int]) -> Tensor:
    """Matrices that move a point of the input to its place in the output, in pixel coordinates.

    Args:
        params: ``(N, 3)`` rows ``(angle_degrees, tx_pixels, ty_pixels)`` or ``(N, 6)`` rows
            ``(angle_degrees, tx_pixels, ty_pixels, scale, shear_x_degrees, shear_y_degrees)``.
        canvas_size: ``(H, W)`` of the image the points live on.

    Returns:
        ``(N, 2, 3)`` matrices ``M`` with ``p_out = M[:, :, :2] @ p_in + M[:, :, 2]``.

    Example:
        >>> m = forward_matrices(torch.tensor([[90.0, 0.0, 0.0]]), (4, 4))
        >>> (m[0, :, :2] @ torch.tensor([3.0, 2.0]) + m[0, :, 2]).round().tolist()  # right of centre goes up
        [2.0, 1.0]
        >>> m = forward_matrices(torch.tensor([[0.0, 0.0, 0.0, 2.0, 0.0, 0.0]]), (4, 4))
        >>> (m[0, :, :2] @ torch.tensor([3.0, 2.0]) + m[0, :, 2]).tolist()  # zoom 2x about (2, 2)
        [4.0, 2.0]
    """
    height, width = check_canvas_size(canvas_size)
    a, b, c, d, scale = _linear_terms(check_params(params, None))
    a, b, c, d = a * scale, b * scale, c * scale, d * scale
    tx, ty = params[:, 1], params[:, 2]
    cx, cy = width / 2.0, height / 2.0
    row_x = torch.stack([a, b, cx - a * cx - b * cy + tx], dim=-1)
    row_y = torch.stack([c, d, cy - c * cx - d * cy + ty], dim=-1)
    return torch.stack([row_x, row_y], dim=1)


def sampling_matrices(params: Tensor, canvas_size: tuple[int, int]) -> Tensor:
    """Inverse maps in the normalised coordinates of ``F.affine_grid(..., align_corners=False)``.

    For every output location the matrix gives the input location to sample, both normalised so that
    the image spans ``[-1, 1]`` edge to edge. Differentiable with respect to ``params``.

    Args:
        params: ``(N, 3)`` or ``(N, 6)`` rows, as for :func:`forward_matrices`.
        canvas_size: ``(H, W)``.

    Returns:
        ``(N, 2, 3)`` matrices for :func:`torch.nn.functional.affine_grid`.
    """
    a, b, c, d, scale = _linear_terms(params)
    tx, ty = params[:, 1], params[:, 2]
    height, width = canvas_size
    half_w, half_h = width / 2.0, height / 2.0
    # q_in = L^-1 (q_out - t) in centred pixels, L^-1 = [[d, -b], [-c, a]] / scale (det 1 before
    # scaling), then rescaled by S = diag(W/2, H/2) on both sides.
    inv_a, inv_b, inv_c, inv_d = d / scale, -b / scale, -c / scale, a / scale
    row_x = torch.stack([inv_a, inv_b * (half_h / half_w), (-inv_a * tx - inv_b * ty) / half_w], dim=-1)
    row_y = torch.stack([inv_c * (half_w / half_h), inv_d, (-inv_c * tx - inv_d * ty) / half_h], dim=-1)
    return torch.stack([row_x, row_y], dim=1)
