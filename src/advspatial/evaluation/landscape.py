"""The loss landscape over (angle, translation) of a few images, the papers' heat map (layer 7).

Engstrom et al. 2019 (Figure 4) plot the loss of single examples over rotations and left-right
translations: the landscape is highly non-concave, which is why grid search and random restarts beat
first-order attacks. Every grid point of every image is scored in one call of the batched engine.
"""

from __future__ import annotations

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
from advspatial.geometry.warp import roto_translate

__all__ = ["LossLandscape", "loss_landscape"]


@dataclass(frozen=True)
class LossLandscape:
    """Cross-entropy of each image over a grid of rotations x translations along one axis.

    Attributes:
        images: ``(B, C, H, W)`` the untransformed images (on CPU).
        labels: ``(B,)`` labels.
        angles: ``(R,)`` degrees, counter-clockwise positive.
        offsets: ``(T,)`` pixels along ``axis``.
        axis: ``"x"`` (translation right) or ``"y"`` (down); the other offset is zero.
        losses: ``(B, R, T)`` cross-entropy at each grid point.
        correct: ``(B, R, T)`` bool, right at each grid point.
        worst_params: ``(B, 3)`` grid point of highest loss, rows ``(angle, tx, ty)``.
        worst_images: ``(B, C, H, W)`` the images under ``worst_params``.
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

    def save_plot(self, path: str | Path) -> Path:
        """Original, worst transform and heat map per image; a PNG 900 px wide, 300 px per image."""
        from advspatial.evaluation.plots import plot_landscape

        return plot_landscape(self, path)


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
) -> LossLandscape:
    """Score every (angle, offset) grid point of every image with the batched engine.

    Args:
        model: classifier (left exactly as it was).
        images: ``(B, C, H, W)`` float on the model's device.
        labels: ``(B,)`` class indices.
        max_rotation: degrees; angles are ``linspace(-max_rotation, max_rotation, rotations)``.
        max_translation: pixels; offsets are ``linspace(-t, t, translations)``.
        rotations: number of angles.
        translations: number of offsets.
        axis: translate along ``"x"`` (right) or ``"y"`` (down).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> land = loss_landscape(model, torch.rand(2, 1, 8, 8), torch.tensor([1, 2]),
        ...                       rotations=5, translations=3)
        >>> land.losses.shape, land.worst_params.shape
        (torch.Size([2, 5, 3]), torch.Size([2, 3]))
    """
    check_model(model)
    images = check_images(images)
    check_same_device(model, images)
    labels = check_labels(labels, images.shape[0], images.device)
    (rotation,) = symmetric_range(max_rotation, "max_rotation", 1)
    (shift,) = symmetric_range(max_translation, "max_translation", 1)
    n_rot, n_off = positive_int(rotations, "rotations"), positive_int(translations, "translations")
    axis = choice(axis, "axis", ("x", "y"))
    if images.shape[0] == 0:
        raise AdvSpatialError("images must hold at least one image for a loss landscape, got an empty batch")
    angles = torch.linspace(-rotation, rotation, n_rot) if n_rot > 1 else torch.zeros(1)
    offsets = torch.linspace(-shift, shift, n_off) if n_off > 1 else torch.zeros(1)
    mesh_angle, mesh_offset = torch.meshgrid(angles, offsets, indexing="ij")
    zeros = torch.zeros_like(mesh_angle)
    columns = (mesh_angle, mesh_offset, zeros) if axis == "x" else (mesh_angle, zeros, mesh_offset)
    candidates = torch.stack([c.reshape(-1) for c in columns], dim=1)
    scores = score_candidates(model, images, labels, candidates, ScoringConfig())
    losses = scores.losses.cpu()
    worst = candidates[losses.argmax(dim=1)]
    with torch.no_grad():
        worst_images = roto_translate(images.detach(), worst.to(images.device)).cpu()
    batch = images.shape[0]
    return LossLandscape(
        images=images.detach().cpu(),
        labels=labels.cpu(),
        angles=angles,
        offsets=offsets,
        axis=axis,
        losses=losses.view(batch, n_rot, n_off),
        correct=scores.correct.cpu().view(batch, n_rot, n_off),
        worst_params=worst,
        worst_images=worst_images,
    )
