"""The loss landscape over (angle, translation) of a few images, the papers' heat map (layer 7).

Engstrom et al. 2019 (Figure 4) plot the loss of single examples over rotations and left-right
translations: the landscape is highly non-concave, which is why grid search and random restarts beat
first-order attacks. Every grid point of every image is scored in one call of the batched engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from advspatial.engine.model_state import check_model, check_same_device
from advspatial.engine.search import ScoringConfig, score_candidates
from advspatial.errors import (
    AdvSpatialError,
    check_images,
    check_labels,
    choice,
    positive_int,
    symmetric_range,
)
from advspatial.evaluation.plots import plot_landscape
from advspatial.geometry.warp import roto_translate

__all__ = ["LossLandscape", "loss_landscape"]


@dataclass(frozen=True)
class LossLandscape:
    """Cross-entropy of each image over a slice of an (angle, tx, ty) grid, and the worst of the grid.

    The slice is rotations x translations along ``axis`` with the other offset zero; the grid adds
    ``cross_offsets`` along the other axis.

    Attributes:
        images: ``(B, C, H, W)`` the untransformed images (on CPU).
        labels: ``(B,)`` labels.
        angles: ``(R,)`` degrees, counter-clockwise positive.
        offsets: ``(T,)`` pixels along ``axis``.
        axis: ``"x"`` (translation right) or ``"y"`` (down); on the slice the other offset is zero.
        losses: ``(B, R, T)`` cross-entropy at each point of the slice.
        correct: ``(B, R, T)`` bool, right at each point of the slice.
        worst_params: ``(B, 3)`` point of the slice of highest loss, rows ``(angle, tx, ty)``.
        worst_images: ``(B, C, H, W)`` the images under ``worst_params``.
        cross_offsets: ``(C,)`` pixels along the other axis of the whole grid.
        grid_worst_params: ``(B, 3)`` point of the whole grid (slice included) of highest loss.
        grid_worst_loss: ``(B,)`` its cross-entropy.
        grid_fooled: ``(B,)`` bool: some point of the whole grid fools the model.
    """

    images: Tensor
    labels: Tensor
    angles: Tensor
    offsets: Tensor
    axis: str
    losses: Tensor
    correct: Tensor
    worst_params: Tensor
    worst_images: Tensor
    cross_offsets: Tensor
    grid_worst_params: Tensor
    grid_worst_loss: Tensor
    grid_fooled: Tensor

    def save_plot(
        self, path: str | Path, *, model: str | None = None, class_names: Sequence[str] | None = None
    ) -> Path:
        """Original, worst of the slice and heat map per image; a PNG 900 px wide, 300 px per image.

        Args:
            path: where the PNG goes (folders are created).
            model: the model's (or training recipe's) name, for the title.
            class_names: names of the classes by index.
        """
        return plot_landscape(self, path, title=model or "", class_names=class_names)


def loss_landscape(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    max_rotation: float = 30.0,
    max_translation: float = 3.0,
    rotations: int = 31,
    translations: int = 13,
    axis: str = "x",
    cross_translations: int = 5,
) -> LossLandscape:
    """Score every point of a slice of an (angle, tx, ty) grid, and of the whole grid, for every image.

    Args:
        model: classifier (left exactly as it was).
        images: ``(B, C, H, W)`` float on the model's device.
        labels: ``(B,)`` class indices.
        max_rotation: degrees; angles are ``linspace(-max_rotation, max_rotation, rotations)``.
        max_translation: pixels; offsets are ``linspace(-t, t, translations)``.
        rotations: number of angles.
        translations: number of offsets.
        axis: translate along ``"x"`` (right) or ``"y"`` (down) on the slice.
        cross_translations: offsets along the other axis in the whole grid,
            ``linspace(-max_translation, max_translation, cross_translations)``; ``1``: the grid is
            the slice. The whole grid costs ``cross_translations`` times the slice (its zero offset
            is the slice, scored once).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> land = loss_landscape(model, torch.rand(2, 1, 8, 8), torch.tensor([1, 2]),
        ...                       rotations=5, translations=3)
        >>> land.losses.shape, land.worst_params.shape, land.grid_worst_params.shape
        (torch.Size([2, 5, 3]), torch.Size([2, 3]), torch.Size([2, 3]))
    """
    check_model(model)
    images = check_images(images)
    check_same_device(model, images)
    labels = check_labels(labels, images.shape[0], images.device)
    (rotation,) = symmetric_range(max_rotation, "max_rotation", 1)
    (shift,) = symmetric_range(max_translation, "max_translation", 1)
    n_rot, n_off = positive_int(rotations, "rotations"), positive_int(translations, "translations")
    n_cross = positive_int(cross_translations, "cross_translations")
    axis = choice(axis, "axis", ("x", "y"))
    if images.shape[0] == 0:
        raise AdvSpatialError("images must hold at least one image for a loss landscape, got an empty batch")
    angles = torch.linspace(-rotation, rotation, n_rot) if n_rot > 1 else torch.zeros(1)
    offsets = torch.linspace(-shift, shift, n_off) if n_off > 1 else torch.zeros(1)
    cross = torch.linspace(-shift, shift, n_cross) if n_cross > 1 else torch.zeros(1)
    slice_points = _points(angles, offsets, torch.zeros(1), axis)
    off_slice = _points(angles, offsets, cross[cross != 0], axis)
    candidates = torch.cat([slice_points, off_slice])
    scores = score_candidates(model, images, labels, candidates, ScoringConfig())
    losses, correct = scores.losses.cpu(), scores.correct.cpu()
    count = slice_points.shape[0]
    worst = candidates[losses[:, :count].argmax(dim=1)]
    best = losses.max(dim=1)
    with torch.no_grad():
        worst_images = roto_translate(images.detach(), worst.to(images.device)).cpu()
    batch = images.shape[0]
    return LossLandscape(
        images=images.detach().cpu(),
        labels=labels.cpu(),
        angles=angles,
        offsets=offsets,
        axis=axis,
        losses=losses[:, :count].reshape(batch, n_rot, n_off),
        correct=correct[:, :count].reshape(batch, n_rot, n_off),
        worst_params=worst,
        worst_images=worst_images,
        cross_offsets=cross,
        grid_worst_params=candidates[best.indices],
        grid_worst_loss=best.values,
        grid_fooled=~correct.all(dim=1),
    )


def _points(angles: Tensor, offsets: Tensor, cross: Tensor, axis: str) -> Tensor:
    """``(R * T * C, 3)`` rows ``(angle, tx, ty)``, angle-major; ``offsets`` along ``axis``."""
    mesh_angle, mesh_offset, mesh_cross = torch.meshgrid(angles, offsets, cross, indexing="ij")
    columns = (mesh_angle, mesh_offset, mesh_cross) if axis == "x" else (mesh_angle, mesh_cross, mesh_offset)
    return torch.stack([c.reshape(-1) for c in columns], dim=1)
