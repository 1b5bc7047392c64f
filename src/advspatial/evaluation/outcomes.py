"""Per-batch outcomes of an accuracy sweep, shared by the one-process and sharded sweeps (layer 7).

A sweep's step turns one batch into an :data:`Outcome`; :class:`OutcomeRows` gathers them on the
CPU in loader order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advspatial.engine.model_state import scoring_mode
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.result import SearchResult

__all__ = ["Outcome", "OutcomeRows", "natural_outcome", "result_outcome", "search_outcome"]

Outcome = tuple[Tensor, Tensor, Tensor, int, int]
"""``(correct (B,) bool, params (B, 3), loss (B,), evaluations, exhaustive evaluations)``."""


def natural_outcome(model: nn.Module, images: Tensor, labels: Tensor) -> Outcome:
    """The untransformed images scored in eval mode (the model is left as it was); params are zeros."""
    with scoring_mode(model) as net, torch.inference_mode():
        logits = net(images).float()
        loss = F.cross_entropy(logits, labels, reduction="none").clone()
        correct = (logits.argmax(dim=1) == labels).clone()
    count = int(labels.shape[0])
    return correct, torch.zeros(count, 3), loss, count, count


def result_outcome(result: SearchResult) -> Outcome:
    """A search's result as an outcome: whether each image withstood it, the chosen transform, its loss."""
    return result.correct, result.params, result.loss, result.evaluations, result.exhaustive_evaluations


def search_outcome(search: SpatialSearch, images: Tensor, labels: Tensor) -> Outcome:
    """One batch under ``search``."""
    return result_outcome(search.search(images, labels))


class OutcomeRows:
    """Outcomes of successive batches, moved to the CPU and concatenated in order."""

    def __init__(self) -> None:
        self._correct: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._params: list[Tensor] = []
        self._loss: list[Tensor] = []
        self.evaluations = 0
        self.exhaustive_evaluations = 0

    def add(self, outcome: Outcome, labels: Tensor) -> None:
        correct, params, loss, evaluations, exhaustive = outcome
        self._correct.append(correct.cpu())
        self._labels.append(labels.cpu())
        self._params.append(params.detach().float().cpu())
        self._loss.append(loss.detach().float().cpu())
        self.evaluations += evaluations
        self.exhaustive_evaluations += exhaustive

    def tensors(self) -> dict[str, Tensor]:
        """``{"correct", "labels", "params", "loss"}`` over every batch added (empty if none)."""
        return {
            "correct": torch.cat(self._correct) if self._correct else torch.zeros(0, dtype=torch.bool),
            "labels": torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long),
            "params": torch.cat(self._params) if self._params else torch.zeros(0, 3),
            "loss": torch.cat(self._loss) if self._loss else torch.zeros(0),
        }
