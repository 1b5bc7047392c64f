"""Accuracy of a model, natural or under a spatial search, over a dataset (layer 7)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from advspatial.evaluation.outcomes import natural_outcome, search_outcome
from advspatial.evaluation.sweeps import _collect
from advspatial.strategies.base import SpatialSearch

__all__ = ["AccuracyReport", "evaluate_accuracy"]


@dataclass(frozen=True)
class AccuracyReport:
    """Accuracy over a dataset with per-sample details.

    Attributes:
        accuracy: fraction of samples classified right (under the search, if any).
        correct: ``(N,)`` bool per sample, in dataset order.
        evaluations: forward evaluations spent.
        exhaustive_evaluations: what an exhaustive search would have spent.
    """

    accuracy: float
    correct: Tensor
    evaluations: int
    exhaustive_evaluations: int


def evaluate_accuracy(
    model: nn.Module,
    dataset: Dataset[Any],
    search: SpatialSearch | None = None,
    *,
    batch_size: int = 256,
    progress: bool = False,
    desc: str = "evaluate",
) -> AccuracyReport:
    """Natural accuracy (``search=None``) or accuracy under a search (worst-of-k, grid, S-PGD).

    The loop of :mod:`advspatial.evaluation.sweeps` over ``DataLoader(dataset, batch_size)`` in
    dataset order, reduced to the accuracy and the per-sample correctness.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    step = partial(natural_outcome, model) if search is None else partial(search_outcome, search)
    result = _collect(desc, model, loader, step, progress)
    return AccuracyReport(result.accuracy, result.correct, result.evaluations, result.exhaustive_evaluations)
