"""Moving points and boxes with the same parameters as the images (layer 1: pure functions)."""

from __future__ import annotations

import torch
from torch import Tensor

from advspatial.errors import AdvSpatialError, check_canvas_size, check_params
from advspatial.geometry.matrices import forward_matrices

__all__ = ["roto_translate_boxes", "roto_translate_points"]


def roto_translate_points(points: Tensor, params: Tensor, canvas_size: tuple[int, int]) -> Tensor:
    """Map ``(x, y)`` pixel coordinates to where :func:`roto_translate` moves them.

    Convention:
        Continuous pixel coordinates: the image's top-left corner is ``(0, 0)``, the centre of pixel
        ``(row i, column j)`` is ``(j + 0.5, i + 0.5)``, the rotation centre is ``(W / 2, H / 2)``
        (torchvision's ``KeyPoints`` convention). Points that leave the canvas are not removed.

    Args:
        points: ``(B, N, 2)`` float tensor of ``(x, y)``; row ``b`` moves with ``params[b]``.
        params: ``(B, 3)`` or ``(B, 6)`` rows, as for :func:`roto_translate`.
        canvas_size: ``(H, W)`` of the images.

    Returns:
        ``(B, N, 2)`` tensor of the same dtype.

    Example:
        >>> p = torch.tensor([[[3.0, 2.0]]])
        >>> roto_translate_points(p, torch.tensor([[90.0, 0.0, 0.0]]), (4, 4))
        tensor([[[2.0000, 1.0000]]])
    """
    if not isinstance(points, Tensor) or points.ndim != 3 or points.shape[-1] != 2:
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise AdvSpatialError(f"points must be a tensor of shape (B, N, 2) of (x, y), got {shape}")
    check_params(params, points.shape[0])
    size = check_canvas_size(canvas_size)
    work = points.to(torch.float64) if not points.is_floating_point() else points
    matrices = forward_matrices(params.to(device=work.device, dtype=work.dtype), size)
    moved = work @ matrices[:, :, :2].transpose(1, 2) + matrices[:, None, :, 2]
    return moved.to(points.dtype) if points.is_floating_point() else moved


def roto_translate_boxes(
    boxes: Tensor, params: Tensor, canvas_size: tuple[int, int], *, clamp: bool = True
) -> Tensor:
    """Axis-aligned boxes that enclose the moved corners of ``(x1, y1, x2, y2)`` boxes.

    Same result as ``torchvision.transforms.v2.functional.affine`` on ``BoundingBoxes`` in ``XYXY``
    format: the four corners are moved, their enclosing box is taken and, with ``clamp=True``, clamped
    to the canvas ``[0, W] x [0, H]``.

    Args:
        boxes: ``(B, N, 4)`` tensor of ``(x1, y1, x2, y2)`` in pixel coordinates.
        params: ``(B, 3)`` or ``(B, 6)`` rows, as for :func:`roto_translate`.
        canvas_size: ``(H, W)`` of the images.
        clamp: clamp the result to the canvas.

    Returns:
        ``(B, N, 4)`` tensor of the same dtype (integer boxes are rounded down as torchvision does).

    Example:
        >>> b = torch.tensor([[[0.0, 0.0, 2.0, 1.0]]])
        >>> roto_translate_boxes(b, torch.tensor([[0.0, 1.0, 1.0]]), (4, 4))
        tensor([[[1., 1., 3., 2.]]])
    """
    if not isinstance(boxes, Tensor) or boxes.ndim != 3 or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise AdvSpatialError(f"boxes must be a tensor of shape (B, N, 4) of (x1, y1, x2, y2), got {shape}")
    height, width = check_canvas_size(canvas_size)
    work = boxes if boxes.is_floating_point() else boxes.float()
    corners = work[:, :, [[0, 1], [2, 1], [2, 3], [0, 3]]]  # (B, N, 4 corners, 2)
    batch, count = boxes.shape[:2]
    moved = roto_translate_points(corners.reshape(batch, count * 4, 2), params, (height, width))
    moved = moved.reshape(batch, count, 4, 2)
    out = torch.cat([moved.amin(dim=2), moved.amax(dim=2)], dim=-1)
    if clamp:
        limits = torch.tensor([width, height, width, height], dtype=out.dtype, device=out.device)
        out = torch.minimum(out.clamp(min=0), limits)
    return out.to(boxes.dtype)
