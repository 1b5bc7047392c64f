"""Accuracy and invariance of a model as the rotation range grows (layer 7).

All angles of all images are scored with the batched engine (:func:`advspatial.score_candidates`):
one forward evaluation per (image, angle) pair plus one clean pass per image. Both flags come from
the same forward passes: a pair is *correct* when its predicted class is the label (accuracy) and
*consistent* when it is the clean image's predicted class (invariance). The data is walked by
:func:`advspatial.evaluation.walk.walk` (sharded by itself under ``torchrun``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advspatial.engine.model_state import check_model
from advspatial.engine.search import ScoringConfig, model_outputs, score_candidates
from advspatial.errors import images_in_model_dtype, positive_int, symmetric_range
from advspatial.evaluation.plots import plot_rotation_profiles
from advspatial.evaluation.walk import BatchRows, Data, walk
from advspatial.tasks import Classification

__all__ = ["RotationProfile", "rotation_profile"]


@dataclass(frozen=True)
class RotationProfile:
    """Per-angle and per-range accuracy and invariance over a dataset.

    Attributes:
        angles: ``(K,)`` degrees scored (counter-clockwise positive), translation zero.
        correct: ``(N, K)`` bool: right at that angle.
        consistent: ``(N, K)`` bool: same prediction as on the untransformed image.
        ranges: ``(R,)`` half-widths ``r`` of the rotation ranges ``[-r, r]``.
        accuracy_at_angle: ``(K,)`` accuracy at each angle.
        worst_case_accuracy: ``(R,)`` fraction right at *every* scored angle within ``[-r, r]``.
        invariance: ``(R,)`` fraction whose prediction is unchanged at every angle within ``[-r, r]``.
        evaluations: forward evaluations spent: ``K + 1`` per image (every angle, and the clean pass).
        seconds: wall time.
    """

    angles: Tensor
    correct: Tensor
    consistent: Tensor
    ranges: Tensor
    accuracy_at_angle: Tensor
    worst_case_accuracy: Tensor
    invariance: Tensor
    evaluations: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready numbers (the summaries; per-sample flags stay in the tensors)."""
        return {
            "angles": self.angles.tolist(),
            "accuracy_at_angle": self.accuracy_at_angle.tolist(),
            "ranges": self.ranges.tolist(),
            "worst_case_accuracy": self.worst_case_accuracy.tolist(),
            "invariance": self.invariance.tolist(),
            "evaluations": self.evaluations,
            "seconds": self.seconds,
        }

    def save_plot(self, path: str | Path, *, label: str = "model") -> Path:
        """Accuracy at each angle and worst-case accuracy / invariance per range; a 960 x 400 PNG."""
        return plot_rotation_profiles({label: self}, path)


def rotation_profile(
    model: nn.Module,
    data: Data,
    *,
    max_rotation: float = 30.0,
    angles: int = 31,
    ranges: Sequence[float] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> RotationProfile:
    """Score ``angles`` rotations in ``[-max_rotation, max_rotation]`` for every image of ``data``.

    Args:
        model: classifier returning logits (left exactly as it was).
        data: a ``Dataset`` of ``(image, label)`` pairs, a ``DataLoader``, or an iterable of
            ``(images (B, C, H, W) float, labels (B,))`` batches.
        max_rotation: degrees.
        angles: number of angles (``linspace``; odd counts include 0).
        ranges: half-widths of the ranges to summarise; default every scored non-negative angle.
        batch_size: images per batch for a ``Dataset`` (default 256).
        progress: show a progress bar.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> batches = [(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))]
        >>> profile = rotation_profile(model, batches, max_rotation=30, angles=7)
        >>> profile.ranges.tolist(), float(profile.invariance[0])
        ([0.0, 10.0, 20.0, 30.0], 1.0)
    """
    check_model(model)
    (limit,) = symmetric_range(max_rotation, "max_rotation", 1)
    count = positive_int(angles, "angles")
    grid = torch.linspace(-limit, limit, count) if count > 1 else torch.zeros(1)
    if ranges is None:
        range_values = grid[grid >= -1e-9].abs().sort().values
    else:
        range_values = torch.tensor([symmetric_range(r, "ranges", 1)[0] for r in ranges])
    candidates = torch.stack([grid, torch.zeros_like(grid), torch.zeros_like(grid)], dim=1)

    task = Classification()

    def step(images: Tensor, labels: Tensor, index: Tensor) -> BatchRows:
        if images.shape[0] == 0:
            flags = torch.zeros(0, count, dtype=torch.bool)
            return BatchRows({"correct": flags, "consistent": flags})
        images = images_in_model_dtype(images, model)
        # The clean prediction, as the engine's label-free reference takes it (arg-max of the log-softmax).
        clean = task.reference(model_outputs(model, images, task)).argmax(dim=1)

        def kept(outputs: Tensor, rows: Tensor) -> Tensor:  # 1.0 where the prediction stays the clean one
            return (outputs.argmax(dim=1) == clean[rows]).float()

        # One forward pass per (image, angle): the labels give ``correct``, the objective ``consistent``.
        scores = score_candidates(model, images, labels, candidates, ScoringConfig(), objective=kept)
        rows = {"correct": scores.correct, "consistent": scores.losses > 0.5}
        return BatchRows(rows, {"evaluations": scores.evaluations + images.shape[0]})

    walked = walk(model, data, step, name="rotation profile", batch_size=batch_size, progress=progress)
    empty = torch.zeros(0, count, dtype=torch.bool)
    right, same = walked.row("correct", empty), walked.row("consistent", empty)
    inside = grid.abs()[None, :] <= range_values[:, None] + 1e-6  # (R, K)

    def fraction_all(flags: Tensor) -> Tensor:
        if flags.shape[0] == 0:
            return torch.full((len(range_values),), float("nan"))
        held = (flags[:, None, :] | ~inside[None]).all(dim=2)  # (N, R)
        return held.float().mean(dim=0)

    return RotationProfile(
        angles=grid,
        correct=right,
        consistent=same,
        ranges=range_values,
        accuracy_at_angle=right.float().mean(dim=0) if right.shape[0] else torch.full((count,), float("nan")),
        worst_case_accuracy=fraction_all(right),
        invariance=fraction_all(same),
        evaluations=walked.counts.get("evaluations", 0),
        seconds=walked.seconds,
    )
