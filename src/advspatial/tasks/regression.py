"""Localisation: one box or a few keypoints per image, moved with every candidate."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from advspatial.errors import AdvSpatialError, choice
from advspatial.geometry.points import roto_translate_boxes, roto_translate_points
from advspatial.tasks.base import RegularizationDefaults, Task
from advspatial.tasks.penalties import _wide

__all__ = ["BoxRegression", "KeypointRegression"]

BOX_LOSSES: tuple[str, ...] = ("smooth_l1", "giou")


def _threshold(value: object, name: str, *, upper: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AdvSpatialError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= value <= upper:
        raise AdvSpatialError(f"{name} must be in [0, {upper}], got {value!r}")
    return float(value)


def _float_targets(targets: object, shape: tuple[int, ...], name: str, what: str, images: Tensor) -> Tensor:
    if not isinstance(targets, Tensor):
        raise AdvSpatialError(
            f"{name} must be a torch.Tensor of shape {shape} ({what}), got {type(targets).__name__}"
        )
    if tuple(targets.shape) != shape:
        raise AdvSpatialError(
            f"{name} must have shape {shape} ({what}) to match the images, got {tuple(targets.shape)}"
        )
    if targets.dtype.is_complex or targets.dtype == torch.bool:
        raise AdvSpatialError(f"{name} must hold pixel coordinates, got dtype {targets.dtype}")
    # Floating targets keep their dtype (as torchvision's affine keeps a box's); integer ones become
    # float32, which can hold the nan of a dropped box or an invisible point.
    dtype = targets.dtype if targets.dtype.is_floating_point else torch.float32
    return targets.to(device=images.device, dtype=dtype)


class _CoordinateTask(Task):
    """Boxes and points: scored as float32 coordinates, whatever floating dtype the caller's have."""

    def scoring_targets(self, targets: Tensor) -> Tensor:
        """The coordinates as ``float32``."""
        return targets.to(torch.float32)

    def regularization_defaults(self, regularizer: str | None = None) -> RegularizationDefaults:
        """Equivariance defaults: ``"l2"`` (the only penalty coordinates have), weight 1, the task
        loss on both views (``"both"``)."""
        return RegularizationDefaults("l2" if regularizer is None else regularizer, 1.0, "both")


def _check_regression_outputs(outputs: object, shape: tuple[int | str, ...], what: str) -> Tensor:
    if not isinstance(outputs, Tensor):
        raise AdvSpatialError(f"model output must be a tensor of {what}, got {type(outputs).__name__}")
    if tuple(outputs.shape) != shape:
        raise AdvSpatialError(f"model output must have shape {shape} ({what}), got {tuple(outputs.shape)}")
    if not bool(torch.isfinite(outputs).all()):
        raise AdvSpatialError(
            "model output contains NaN or infinite values; the search cannot rank candidates"
        )
    return _wide(outputs)


def _overlap(first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of matching rows of two ``(N, 4)`` XYXY box tensors."""
    lower = torch.maximum(first[:, :2], second[:, :2])
    upper = torch.minimum(first[:, 2:], second[:, 2:])
    intersection = (upper - lower).clamp(min=0).prod(dim=1)
    areas = (first[:, 2:] - first[:, :2]).clamp(min=0).prod(dim=1) + (second[:, 2:] - second[:, :2]).clamp(
        min=0
    ).prod(dim=1)
    return intersection, areas - intersection


def box_iou(first: Tensor, second: Tensor) -> Tensor:
    """Intersection over union of matching rows of two ``(N, 4)`` XYXY box tensors (0 for empty)."""
    intersection, union = _overlap(first, second)
    return torch.where(union > 0, intersection / union.clamp(min=1e-12), torch.zeros_like(union))


def _generalized_iou(first: Tensor, second: Tensor) -> Tensor:
    intersection, union = _overlap(first, second)
    hull = (torch.maximum(first[:, 2:], second[:, 2:]) - torch.minimum(first[:, :2], second[:, :2])).prod(
        dim=1
    )
    return intersection / union.clamp(min=1e-12) - (hull - union) / hull.clamp(min=1e-12)


class BoxRegression(_CoordinateTask):
    """One box per image: model output ``(N, 4)`` XYXY pixels, targets ``(B, 4)`` XYXY pixels.

    Each candidate moves the target box to the box enclosing its moved corners, clipped to the image
    (as :func:`advspatial.roto_translate_boxes`); a box that leaves the frame entirely is dropped:
    its moved row is ``nan`` and the pair counts as correct with loss 0. The objective is the
    smooth-L1 distance (mean over the four coordinates, ``beta = 1`` px) or ``1 - GIoU``; a pair is
    correct when the IoU with the moved box is at least ``min_iou``. Label-free: the clean predicted
    box, moved the same way, is the target. Floating boxes keep their dtype in ``result.targets``
    (``float64`` in, moved in ``float64``, ``float64`` out, as torchvision's ``affine`` does; integer
    boxes come back ``float32``); candidates are scored against ``float32`` boxes.

    Args:
        min_iou: IoU in ``[0, 1]`` at or above which a pair counts as correct.
        loss: ``"smooth_l1"`` or ``"giou"``.

    Example:
        >>> task = BoxRegression(min_iou=0.5)
        >>> predicted, target = torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([[0.0, 0.0, 4.0, 2.0]])
        >>> loss, correct = task.objective(predicted, target)
        >>> round(float(loss), 3), correct.tolist()
        (0.375, [True])
    """

    name = "boxes"

    def __init__(self, min_iou: float = 0.5, loss: str = "smooth_l1") -> None:
        self.min_iou = _threshold(min_iou, "min_iou", upper=1.0)
        self.box_loss = choice(loss, "loss", BOX_LOSSES)

    def check_targets(self, targets: object, images: Tensor, name: str = "boxes") -> Tensor:
        """Boxes ``(B, 4)`` as ``(x1, y1, x2, y2)`` pixels, ``x1 <= x2``, ``y1 <= y2``, inside the image."""
        height, width = images.shape[-2:]
        boxes = _float_targets(targets, (images.shape[0], 4), name, "one XYXY box per image", images)
        if not bool(torch.isfinite(boxes).all()):
            raise AdvSpatialError(f"{name} must be finite XYXY boxes, got a non-finite value")
        if bool((boxes[:, 2:] < boxes[:, :2]).any()):
            raise AdvSpatialError(
                f"{name} must be XYXY boxes (x1 <= x2 and y1 <= y2), got a box with x2 < x1 or y2 < y1"
            )
        limits = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
        if bool((boxes < 0).any() or (boxes > limits).any()):
            raise AdvSpatialError(
                f"{name} must lie inside the image [0, {width}] x [0, {height}] (pixels), "
                f"got {boxes.tolist()[:4]}"
            )
        return boxes

    def check_outputs(self, outputs: object, rows: int, size: tuple[int, int]) -> Tensor:
        return _check_regression_outputs(outputs, (rows, 4), "one XYXY box per image")

    def move_targets(self, targets: Tensor, params: Tensor, size: tuple[int, int]) -> Tensor:
        if targets.shape[0] == 0:
            return targets.clone()
        moved = roto_translate_boxes(targets[:, None], params.to(targets.device), size)[:, 0]
        empty = (
            (moved[:, 2] <= moved[:, 0]) | (moved[:, 3] <= moved[:, 1]) | ~torch.isfinite(moved).all(dim=1)
        )
        return moved.masked_fill(empty[:, None], math.nan)

    def objective(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        valid = torch.isfinite(targets).all(dim=1)
        safe = torch.where(valid[:, None], targets, outputs.detach())
        if self.box_loss == "giou":
            loss = 1.0 - _generalized_iou(outputs, safe)
        else:
            loss = F.smooth_l1_loss(outputs, safe, reduction="none", beta=1.0).mean(dim=1)
        correct = (box_iou(outputs, safe) >= self.min_iou) | ~valid
        return torch.where(valid, loss, torch.zeros_like(loss)).float(), correct

    def statistics(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """``(N, 1)`` IoU with the (moved) target box, ``nan`` where the box was dropped."""
        valid = torch.isfinite(targets).all(dim=1)
        iou = box_iou(outputs, torch.where(valid[:, None], targets, outputs))
        return torch.where(valid, iou, torch.full_like(iou, math.nan))[:, None]

    def summarize(self, statistics: Tensor) -> dict[str, float]:
        """``mean_iou`` over boxes in frame and ``iou_rate``: the share with IoU >= ``min_iou``."""
        iou = statistics[:, 0]
        iou = iou[torch.isfinite(iou)]
        if not iou.numel():
            return {"mean_iou": float("nan"), "iou_rate": float("nan")}
        return {"mean_iou": float(iou.mean()), "iou_rate": float((iou >= self.min_iou).float().mean())}

    def reference(self, outputs: Tensor) -> Tensor:
        boxes = outputs.float()
        return torch.cat(
            [torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])], dim=1
        )

    def penalty(
        self, clean: Tensor, transformed: Tensor, params: Tensor, size: tuple[int, int], regularizer: str
    ) -> Tensor:
        """``"l2"``: ``||T b(x) - b(T x)||^2 / 4`` with the clean box's corners moved (differentiable)."""
        if regularizer != "l2":
            raise AdvSpatialError(
                "regularizer must be 'l2' for box regression (boxes have no distribution), "
                f"got {regularizer!r}"
            )
        corners = clean[:, [[0, 1], [2, 1], [2, 3], [0, 3]]]
        moved = roto_translate_points(corners, params.to(clean.dtype), size)
        enclosing = torch.cat([moved.amin(dim=1), moved.amax(dim=1)], dim=1)
        return (enclosing - transformed).square().sum(dim=1) / 4.0

    def __repr__(self) -> str:
        return f"BoxRegression(min_iou={self.min_iou}, loss={self.box_loss!r})"


class KeypointRegression(_CoordinateTask):
    """``P`` keypoints per image: model output ``(N, P, 2)`` and targets ``(B, P, 2)`` as ``(x, y)`` pixels.

    Points move exactly with each candidate (:func:`advspatial.roto_translate_points`); a point that
    leaves the frame ``[0, W] x [0, H]`` becomes invisible (``nan``), as do ``nan`` target points.
    The objective is the mean Euclidean distance over visible points; a pair is correct when every
    visible point is within ``max_distance`` pixels. A pair with no visible point has loss 0 and
    counts as correct. Label-free: the clean predicted points, moved the same way, are the target.
    Floating points keep their dtype in ``result.targets`` (integer ones come back ``float32``);
    candidates are scored against ``float32`` points.

    Args:
        max_distance: pixels.

    Example:
        >>> task = KeypointRegression(max_distance=2.0)
        >>> loss, correct = task.objective(torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[4.0, 5.0]]]))
        >>> float(loss), correct.tolist()
        (5.0, [False])
    """

    name = "keypoints"

    def __init__(self, max_distance: float = 2.0) -> None:
        self.max_distance = _threshold(max_distance, "max_distance")

    def check_targets(self, targets: object, images: Tensor, name: str = "points") -> Tensor:
        """Points ``(B, P, 2)`` of ``(x, y)`` pixels; ``nan`` marks an invisible point."""
        batch = images.shape[0]
        if (
            not isinstance(targets, Tensor)
            or targets.ndim != 3
            or targets.shape[0] != batch
            or targets.shape[2] != 2
        ):
            got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise AdvSpatialError(
                f"{name} must be a tensor of shape (B, P, 2) = ({batch}, P, 2) of (x, y) pixels, got {got}"
            )
        points = _float_targets(targets, tuple(targets.shape), name, "P points (x, y) per image", images)
        if bool(torch.isinf(points).any()):
            raise AdvSpatialError(
                f"{name} must be finite (nan marks an invisible point), got an infinite value"
            )
        return points

    def check_outputs(self, outputs: object, rows: int, size: tuple[int, int]) -> Tensor:
        points = outputs.shape[1] if isinstance(outputs, Tensor) and outputs.ndim == 3 else "P"
        return _check_regression_outputs(outputs, (rows, points, 2), "P points (x, y) per image")

    def move_targets(self, targets: Tensor, params: Tensor, size: tuple[int, int]) -> Tensor:
        if targets.shape[0] == 0:
            return targets.clone()
        moved = roto_translate_points(targets, params.to(targets.device), size)
        height, width = size
        outside = (
            (moved[..., 0] < 0) | (moved[..., 0] > width) | (moved[..., 1] < 0) | (moved[..., 1] > height)
        )
        return moved.masked_fill(outside[..., None], math.nan)

    def objective(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if outputs.shape[1] != targets.shape[1]:
            raise AdvSpatialError(
                f"model output must have one point per target point ({targets.shape[1]}), "
                f"got {outputs.shape[1]}"
            )
        visible = torch.isfinite(targets).all(dim=-1)
        safe = torch.where(visible[..., None], targets, outputs.detach())
        distance = (outputs - safe).norm(dim=-1)
        count = visible.sum(dim=1)
        loss = (distance * visible).sum(dim=1) / count.clamp(min=1)
        correct = ((distance <= self.max_distance) | ~visible).all(dim=1)
        return loss.float(), correct

    def reference(self, outputs: Tensor) -> Tensor:
        return outputs.float()

    def statistics(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """``(N, 2)``: summed distance over visible points and their number."""
        visible = torch.isfinite(targets).all(dim=-1)
        safe = torch.where(visible[..., None], targets, outputs)
        distance = (outputs - safe).norm(dim=-1) * visible
        return torch.stack([distance.sum(dim=1), visible.sum(dim=1).to(distance.dtype)], dim=1)

    def summarize(self, statistics: Tensor) -> dict[str, float]:
        """``mean_distance`` in pixels over every visible point of the dataset."""
        total, count = statistics.double().sum(dim=0)
        return {"mean_distance": float(total / count) if count > 0 else float("nan")}

    def penalty(
        self, clean: Tensor, transformed: Tensor, params: Tensor, size: tuple[int, int], regularizer: str
    ) -> Tensor:
        """``"l2"``: ``||T p(x) - p(T x)||^2 / 4`` summed over the points (differentiable)."""
        if regularizer != "l2":
            raise AdvSpatialError(
                f"regularizer must be 'l2' for keypoints (points have no distribution), got {regularizer!r}"
            )
        moved = roto_translate_points(clean, params.to(clean.dtype), size)
        return (moved - transformed).square().sum(dim=(1, 2)) / 4.0

    def __repr__(self) -> str:
        return f"KeypointRegression(max_distance={self.max_distance})"
