"""The search engine: score every (image, candidate) pair with batched forward passes (layer 3).

One function, :func:`score_candidates`, sits at the centre of the library. It warps and scores
(image, candidate) pairs in chunks of bounded size on the model's device, in eval mode and under
``torch.inference_mode``, and leaves the model exactly as it found it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advspatial.engine.chunking import default_chunk_size, is_out_of_memory
from advspatial.engine.model_state import check_same_device, scoring_mode
from advspatial.engine.objectives import Targets, per_sample_objective
from advspatial.engine.ordering import score_until_fooled
from advspatial.errors import AdvSpatialError, check_label_range, check_logits
from advspatial.geometry.warp import _warp

__all__ = ["CandidateObjective", "Scores", "ScoringConfig", "score_candidates"]

CandidateObjective = Callable[[Tensor, Tensor], Tensor]
"""A custom per-pair objective ``(logits (N, num_classes) float32, rows (N,) long) -> (N,)``."""


@dataclass(frozen=True)
class ScoringConfig:
    """How candidates are warped and scored.

    Attributes:
        interpolation: ``"bilinear"`` or ``"nearest"``.
        padding: ``"zeros"``, ``"border"`` or ``"reflection"``.
        chunk_size: (image, candidate) pairs per forward pass; ``None`` chooses from the image size.
        autocast: dtype for ``torch.autocast`` during scoring (e.g. ``torch.bfloat16``), or ``None``.
    """

    interpolation: str = "bilinear"
    padding: str = "zeros"
    chunk_size: int | None = None
    autocast: torch.dtype | None = None

    def autocast_context(self, device: torch.device) -> contextlib.AbstractContextManager[object]:
        """``torch.autocast`` to :attr:`autocast` on ``device``; a no-op context when ``None``."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast)


@dataclass(frozen=True)
class Scores:
    """Scores of every (image, candidate) pair.

    Attributes:
        losses: ``(B, K)`` float32 objective, ``-inf`` where a pair was not scored (early exit).
        correct: ``(B, K)`` bool, ``True`` where the model is right (and where not scored).
        scored: ``(B, K)`` bool.
        evaluations: forward evaluations spent, one per (image, candidate) pair, plus the clean
            forward pass when no labels were given.
        exhaustive_evaluations: what scoring every pair would have spent.
    """

    losses: Tensor
    correct: Tensor
    scored: Tensor
    evaluations: int
    exhaustive_evaluations: int


class _Scorer:
    """Warps and scores batches of pairs; holds the per-call state of one search."""

    def __init__(
        self,
        net: nn.Module,
        images: Tensor,
        targets: Targets,
        candidates: Tensor,
        config: ScoringConfig,
        objective: CandidateObjective | None = None,
    ):
        self.net, self.images, self.targets, self.candidates, self.config = (
            net,
            images,
            targets,
            candidates,
            config,
        )
        self.chunk_size = config.chunk_size or default_chunk_size(images)
        self.evaluations = 0
        self.objective = objective

    def _forward(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        params = self.candidates[cols] if self.candidates.ndim == 2 else self.candidates[rows, cols]
        with torch.inference_mode(), self.config.autocast_context(self.images.device):
            warped = _warp(self.images[rows], params, self.config.interpolation, self.config.padding)
            logits = check_logits(self.net(warped), rows.shape[0])
            if self.targets.reference_log_probs is None:
                check_label_range(self.targets.classes, logits.shape[1])
            loss, correct = per_sample_objective(logits, self.targets, rows)
            if self.objective is not None:
                loss = _custom_objective(self.objective, logits, rows)
        self.evaluations += int(rows.shape[0])
        return loss, correct

    def score(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        """Score the pairs ``(rows[i], cols[i])`` in chunks; halves the chunk on out-of-memory.

        Results are written into two tensors allocated up front: a list of small per-chunk
        results kept alive between the large activation buffers fragments the CPU heap, and the
        process then grows with the number of chunks instead of staying at one chunk's peak.
        """
        losses = torch.empty(rows.shape[0], device=self.images.device)
        corrects = torch.empty(rows.shape[0], dtype=torch.bool, device=self.images.device)
        start = 0
        while start < rows.shape[0]:
            stop = min(start + self.chunk_size, rows.shape[0])
            try:
                loss, correct = self._forward(rows[start:stop], cols[start:stop])
            except (RuntimeError, torch.OutOfMemoryError) as error:
                if not is_out_of_memory(error) or self.chunk_size == 1:
                    raise
                self.chunk_size = max(1, self.chunk_size // 2)
                continue
            losses[start:stop] = loss
            corrects[start:stop] = correct
            start = stop
        return losses, corrects


def _custom_objective(objective: CandidateObjective, logits: Tensor, rows: Tensor) -> Tensor:
    loss = objective(logits.float(), rows)
    if not isinstance(loss, Tensor) or loss.shape != rows.shape:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise AdvSpatialError(f"objective must return a tensor of shape ({rows.shape[0]},), got {shape}")
    return loss.float()


def _targets(net: nn.Module, images: Tensor, labels: Tensor | None, config: ScoringConfig) -> Targets:
    if labels is not None:
        return Targets(classes=labels)
    with torch.inference_mode():
        with config.autocast_context(images.device):
            logits = check_logits(net(images), images.shape[0]).float()
        log_probs = F.log_softmax(logits, dim=1)
    return Targets(classes=log_probs.argmax(dim=1).clone(), reference_log_probs=log_probs.clone())


def score_candidates(
    model: nn.Module,
    images: Tensor,
    labels: Tensor | None,
    candidates: Tensor,
    config: ScoringConfig = ScoringConfig(),
    *,
    early_exit: bool = False,
    objective: CandidateObjective | None = None,
) -> Scores:
    """Score every candidate transform of every image with batched forward passes.

    Args:
        model: classifier returning ``(N, num_classes)`` logits; DDP wrappers are scored through
            ``.module``. Its training flags, weights, buffers and gradients are left as they were.
        images: ``(B, C, H, W)`` float images on the model's device (validated by the caller).
        labels: ``(B,)`` long labels, or ``None`` to score the divergence from the clean prediction.
        candidates: shared ``(K, 3)`` or per-image ``(B, K, 3)`` rows ``(angle, tx, ty)``, or
            ``(K, 6)`` / ``(B, K, 6)`` affine rows ``(angle, tx, ty, scale, shear_x, shear_y)``.
        config: warping and chunking options.
        early_exit: accuracy only: stop scoring an image once a candidate fools the model. Pairs are
            tried in an adaptive order (see :mod:`advspatial.engine.ordering`) and packed into
            full chunks; the robust set is exactly the exhaustive one.

    Returns:
        :class:`Scores` with ``(B, K)`` losses and correctness.
    """
    batch, count = images.shape[0], candidates.shape[-2]
    device = check_same_device(model, images)
    candidates = candidates.to(device=device, dtype=torch.float32)
    losses = torch.full((batch, count), -torch.inf, device=device)
    correct = torch.ones((batch, count), dtype=torch.bool, device=device)
    scored = torch.zeros((batch, count), dtype=torch.bool, device=device)
    if batch == 0 or count == 0:
        return Scores(losses, correct, scored, 0, 0)
    with scoring_mode(model) as net:
        targets = _targets(net, images, labels, config)
        scorer = _Scorer(net, images, targets, candidates, config, objective)
        if labels is None:
            scorer.evaluations += batch
        if not early_exit:
            rows = torch.arange(batch, device=device).repeat_interleave(count)
            cols = torch.arange(count, device=device).repeat(batch)
            loss, ok = scorer.score(rows, cols)
            losses.copy_(loss.view(batch, count))
            correct.copy_(ok.view(batch, count))
            scored.fill_(True)
        else:
            shared = candidates if candidates.ndim == 2 else candidates[0]
            score_until_fooled(scorer, shared, targets.classes, losses, correct, scored)
    exhaustive = batch * count + (batch if labels is None else 0)
    return Scores(losses, correct, scored, scorer.evaluations, exhaustive)
