"""Per-sample objectives that rank candidate transforms (part of layer 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from advspatial.tasks.base import Task

__all__ = ["Targets", "select_worst"]


@dataclass(frozen=True)
class Targets:
    """What the candidates of one search are scored against, per image.

    With targets (labels, masks, boxes, points), ``values`` holds them and each pair is scored by the
    task's objective against the targets moved with the pair's row. Without (label-free),
    ``values`` holds the task's reference built from the clean outputs, moved and scored the same way
    with the task's reference objective.
    """

    task: Task
    values: Tensor
    labelled: bool

    def groups(self) -> Tensor:
        """``(B,)`` early-exit groups (the class for classification, one group otherwise)."""
        return self.task.groups(self.values)

    def score(
        self, outputs: Tensor, rows: Tensor, params: Tensor, size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """``(loss (N,) float32, correct (N,) bool)`` of N pairs: image ``rows[i]`` under ``params[i]``."""
        values = self.values[rows]
        if self.labelled:
            return self.task.objective(outputs, self.task.move_targets(values, params, size))
        return self.task.reference_objective(outputs, self.task.move_reference(values, params, size))


def select_worst(losses: Tensor, correct: Tensor, selection: str) -> Tensor:
    """Index of the worst candidate per image.

    ``"engstrom"``: a misclassified candidate beats every correct one, then the higher loss wins
    (Engstrom et al. 2019). ``"max_loss"``: the higher loss wins. Unscored candidates carry
    ``-inf`` loss and never win over a scored one.

    Args:
        losses: ``(B, K)`` objective values.
        correct: ``(B, K)`` bool.
        selection: ``"engstrom"`` or ``"max_loss"``.

    Returns:
        ``(B,)`` long indices into ``K``.
    """
    if selection == "engstrom":
        fooled = ~correct & torch.isfinite(losses)
        any_fooled = fooled.any(dim=1, keepdim=True)
        losses = torch.where(any_fooled & ~fooled, torch.full_like(losses, -torch.inf), losses)
    return losses.argmax(dim=1)
