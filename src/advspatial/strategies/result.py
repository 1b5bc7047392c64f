"""The small frozen result every search returns (layer 4)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["SearchResult"]


@dataclass(frozen=True)
class SearchResult:
    """The transforms a search chose, and how the model fared.

    Attributes:
        params: ``(B, 3)`` chosen rows ``(angle_degrees, tx_pixels, ty_pixels)``, or ``(B, 6)`` rows
            ``(angle, tx, ty, scale, shear_x, shear_y)`` for an affine space; replay them with
            :func:`advspatial.roto_translate` (or on masks, boxes and points with its companions).
        loss: ``(B,)`` objective of the chosen transform, as the task defines it (for classification
            cross-entropy with labels, otherwise ``KL(p_clean || p_transformed)``).
        correct: ``(B,)`` bool: the model was right (as the task judges a pair: the class, the pixel
            accuracy, the IoU, the point distance) on *every* candidate it was shown, i.e. the
            image withstood the search (grid accuracy for the grid, worst-of-k accuracy for
            worst-of-k). With the default ``"engstrom"`` selection this equals the correctness of
            the chosen transform.
        chosen_correct: ``(B,)`` bool: the model was right on the chosen transform.
        candidate_losses: ``(B, K)`` loss of every candidate (``-inf`` where early exit skipped it),
            or ``None`` for searches without a candidate set.
        candidate_correct: ``(B, K)`` bool, or ``None``.
        evaluations: forward evaluations (images passed through the model) spent by the search.
        exhaustive_evaluations: evaluations an exhaustive search would have spent.
        targets: the targets moved by the chosen transforms, as the task moves them (labels
            unchanged, masks ``(B, H, W)``, boxes ``(B, 4)``, points ``(B, P, 2)``), so a training
            step can use them directly; ``None`` when the search ran without targets.
        chunk_size: (image, candidate) pairs per forward pass when the search ended (the chunk
            tuner's choice unless ``chunk_size`` was given); ``None`` for searches that do not chunk.
    """

    params: Tensor
    loss: Tensor
    correct: Tensor
    chosen_correct: Tensor
    candidate_losses: Tensor | None
    candidate_correct: Tensor | None
    evaluations: int
    exhaustive_evaluations: int
    targets: Tensor | None = None
    chunk_size: int | None = None

    @property
    def saved_evaluations(self) -> int:
        """Forward evaluations that early exit did not need."""
        return self.exhaustive_evaluations - self.evaluations

    @property
    def accuracy(self) -> float:
        """Fraction of images that withstood the search (``nan`` for an empty batch)."""
        return float(self.correct.float().mean()) if self.correct.numel() else float("nan")
