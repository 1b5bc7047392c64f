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
from torch import Tensor, nn

from advspatial.engine.chunking import ChunkRunner
from advspatial.engine.model_state import check_same_device, scoring_mode
from advspatial.engine.objectives import Targets
from advspatial.engine.ordering import score_until_fooled
from advspatial.engine.tuning import RoundBudget, chunk_tuner
from advspatial.errors import AdvSpatialError, images_in_model_dtype
from advspatial.geometry.warp import _warp
from advspatial.tasks import Classification, Task

__all__ = [
    "CandidateObjective",
    "Scores",
    "ScoringConfig",
    "model_outputs",
    "prepare_targets",
    "score_candidates",
]

CandidateObjective = Callable[[Tensor, Tensor], Tensor]
"""A custom per-pair objective ``(outputs (N, ...) float32, rows (N,) long) -> (N,)``."""


@dataclass(frozen=True)
class ScoringConfig:
    """How candidates are warped and scored.

    Attributes:
        interpolation: ``"bilinear"`` or ``"nearest"``.
        padding: ``"zeros"``, ``"border"`` or ``"reflection"``.
        chunk_size: (image, candidate) pairs per forward pass; ``None`` measures the fastest size on
            the first chunks and keeps it (see :mod:`advspatial.engine.tuning`).
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
        chunk_size: pairs per forward pass in effect when the search ended (the tuner's choice once
            it has settled; ``None`` when nothing was scored).
    """

    losses: Tensor
    correct: Tensor
    scored: Tensor
    evaluations: int
    exhaustive_evaluations: int
    chunk_size: int | None = None


class _Scorer:
    """Warps and scores batches of pairs; holds the per-call state of one search."""

    def __init__(
        self,
        net: nn.Module,
        images: Tensor,
        candidates: Tensor,
        config: ScoringConfig,
        task: Task,
        objective: CandidateObjective | None = None,
    ):
        self.net, self.images, self.candidates, self.config, self.task = net, images, candidates, config, task
        self.size: tuple[int, int] = (images.shape[-2], images.shape[-1])
        tuner = None if config.chunk_size else chunk_tuner(net, images, config.autocast)
        self.chunks = ChunkRunner(images.device, config.chunk_size, tuner)
        self.evaluations = 0
        self.objective = objective
        self.targets: Targets | None = None

    def _chunks(self, total: int, step: Callable[[int, int], None], *, timed: bool = True) -> None:
        """Call ``step(start, stop)`` over ``[0, total)`` in chunks (tuned unless the size is given;
        ``timed=False`` for work other than pairs); halves the chunk on out-of-memory."""
        self.chunks.run(total, step, timed=timed)

    def prepare(self, targets: Tensor | None) -> Targets:
        """The search's targets; without them, the task's reference from a chunked clean pass."""
        if targets is not None:
            self.targets = Targets(self.task, self.task.scoring_targets(targets), labelled=True)
            return self.targets
        references = self.outputs(self.task.reference)
        self.evaluations += self.images.shape[0]
        self.targets = Targets(self.task, references, labelled=False)
        return self.targets

    def outputs(self, then: Callable[[Tensor], Tensor] = lambda outputs: outputs) -> Tensor:
        """``then`` of the checked outputs on the untransformed images, in chunks, as a normal tensor."""
        parts: list[Tensor] = []

        def clean(start: int, stop: int) -> None:
            with torch.inference_mode(), self.config.autocast_context(self.images.device):
                outputs = self.task.check_outputs(self.net(self.images[start:stop]), stop - start, self.size)
                parts.append(then(outputs))

        self._chunks(self.images.shape[0], clean, timed=False)
        return torch.cat(parts)  # outside inference_mode: a normal tensor, usable by autograd

    def _forward(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        assert self.targets is not None
        params = self.candidates[cols] if self.candidates.ndim == 2 else self.candidates[rows, cols]
        with torch.inference_mode(), self.config.autocast_context(self.images.device):
            warped = _warp(self.images[rows], params, self.config.interpolation, self.config.padding)
            outputs = self.task.check_outputs(self.net(warped), rows.shape[0], self.size)
            loss, correct = self.targets.score(outputs, rows, params, self.size)
            if self.objective is not None:
                loss = _custom_objective(self.objective, outputs, rows)
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

        def step(start: int, stop: int) -> None:
            losses[start:stop], corrects[start:stop] = self._forward(rows[start:stop], cols[start:stop])

        self._chunks(rows.shape[0], step)
        return losses, corrects


def _custom_objective(objective: CandidateObjective, outputs: Tensor, rows: Tensor) -> Tensor:
    loss = objective(outputs.float(), rows)
    if not isinstance(loss, Tensor) or loss.shape != rows.shape:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise AdvSpatialError(f"objective must return a tensor of shape ({rows.shape[0]},), got {shape}")
    return loss.float()


def model_outputs(
    model: nn.Module, images: Tensor, task: Task, config: ScoringConfig = ScoringConfig()
) -> Tensor:
    """The model's outputs on ``images``, checked by ``task``, in chunks with out-of-memory back-off.

    In eval mode under ``torch.inference_mode``; the model is left exactly as it was. Every forward
    pass of the library that needs no gradient goes through here or through :func:`score_candidates`.

    Example:
        >>> from advspatial.tasks import Classification
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> model_outputs(model, torch.rand(5, 1, 2, 2), Classification()).shape
        torch.Size([5, 3])
    """
    if images.shape[0] == 0:
        raise AdvSpatialError("images must hold at least one image to run the model on, got 0")
    images = images_in_model_dtype(images, model)  # the library's one dtype rule
    with scoring_mode(model) as net:
        return _Scorer(net, images, images.new_zeros(0, 3), config, task).outputs()


def prepare_targets(
    net: nn.Module, images: Tensor, targets: Tensor | None, config: ScoringConfig, task: Task
) -> Targets:
    """Targets of a search whose model is already in scoring mode (the clean pass is chunked)."""
    return _Scorer(net, images, images.new_zeros(0, 3), config, task).prepare(targets)


def score_candidates(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | None,
    candidates: Tensor,
    config: ScoringConfig = ScoringConfig(),
    *,
    early_exit: bool = False,
    objective: CandidateObjective | None = None,
    task: Task | None = None,
) -> Scores:
    """Score every candidate transform of every image with batched forward passes.

    Args:
        model: the model; its output is what ``task`` expects (``(N, num_classes)`` logits for
            classification); DDP wrappers are scored through ``.module``. Its training flags,
            weights, buffers and gradients are left as they were.
        images: ``(B, C, H, W)`` float images on the model's device (validated by the caller).
        targets: the task's targets, checked by the caller with ``task.check_targets`` (``(B,)``
            labels for classification, ``(B, H, W)`` masks for segmentation, ...), or ``None`` to
            score the divergence from the clean prediction moved with each candidate.
        candidates: shared ``(K, 3)`` or per-image ``(B, K, 3)`` rows ``(angle, tx, ty)``, or
            ``(K, 6)`` / ``(B, K, 6)`` affine rows ``(angle, tx, ty, scale, shear_x, shear_y)``.
        config: warping and chunking options.
        early_exit: accuracy only: stop scoring an image once a candidate fools the model. Pairs are
            tried in an adaptive order (see :mod:`advspatial.engine.ordering`) and packed into
            full chunks; the robust set is exactly the exhaustive one. Once the rounds cost more
            than they save, the rest is scored exhaustively (:class:`~advspatial.engine.tuning.RoundBudget`).
        objective: optional ``(outputs, rows) -> (N,)`` ranking that replaces the task's loss
            (correctness still comes from the task).
        task: how pairs are scored (:class:`advspatial.tasks.Classification` when ``None``).

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
        scorer = _Scorer(net, images, candidates, config, task or Classification(), objective)
        prepared = scorer.prepare(targets)
        if not early_exit:
            rows = torch.arange(batch, device=device).repeat_interleave(count)
            cols = torch.arange(count, device=device).repeat(batch)
            loss, ok = scorer.score(rows, cols)
            losses.copy_(loss.view(batch, count))
            correct.copy_(ok.view(batch, count))
            scored.fill_(True)
        else:
            shared = candidates if candidates.ndim == 2 else candidates[0]
            budget = RoundBudget(batch * count, scorer.chunks.pair_seconds, scorer.chunks.clock)
            score_until_fooled(scorer, shared, prepared.groups(), losses, correct, scored, budget)
    exhaustive = batch * count + (batch if targets is None else 0)
    return Scores(losses, correct, scored, scorer.evaluations, exhaustive, scorer.chunks.chunk_size)
