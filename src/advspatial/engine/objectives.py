"""Per-sample objectives that rank candidate transforms (part of layer 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Targets", "per_sample_objective"]


@dataclass(frozen=True)
class Targets:
    """What a candidate is scored against, per image.

    With labels, ``classes`` are the labels and the objective is cross-entropy. Without labels,
    ``classes`` are the model's clean predictions and ``reference_log_probs`` its clean
    log-probabilities; the objective is ``KL(p_clean || p_candidate)``.
    """

    classes: Tensor
    reference_log_probs: Tensor | None = None


def per_sample_objective(logits: Tensor, targets: Targets, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Objective (higher is worse for the model) and correctness for each row of ``logits``.

    Args:
        logits: ``(N, num_classes)`` logits of N (image, candidate) pairs.
        targets: per-image targets.
        rows: ``(N,)`` index of the image each pair belongs to.

    Returns:
        ``(loss (N,) float32, correct (N,) bool)``.
    """
    logits = logits.float()
    classes = targets.classes[rows]
    correct = logits.argmax(dim=1) == classes
    if targets.reference_log_probs is None:
        loss = F.cross_entropy(logits, classes, reduction="none")
    else:
        reference = targets.reference_log_probs[rows]
        loss = F.kl_div(F.log_softmax(logits, dim=1), reference, log_target=True, reduction="none").sum(dim=1)
    return loss, correct


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
