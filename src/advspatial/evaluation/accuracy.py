"""Accuracy of a model, natural or under a spatial search, over a dataset (layer 7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from advspatial.engine.model_state import model_device, scoring_mode
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
    """Natural accuracy (``search=None``) or accuracy under a search (worst-of-k, grid, S-PGD)."""
    device = model_device(model) or torch.device("cpu")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    batches = loader
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(loader, desc=desc, unit="batch", leave=False)
    flags, evaluations, exhaustive = [], 0, 0
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        if search is None:
            with scoring_mode(model) as net, torch.inference_mode():
                ok = net(images).argmax(dim=1) == labels
            evaluations += len(labels)
            exhaustive += len(labels)
        else:
            result = search.search(images, labels)
            ok = result.correct
            evaluations += result.evaluations
            exhaustive += result.exhaustive_evaluations
        flags.append(ok.cpu())
    correct = torch.cat(flags) if flags else torch.zeros(0, dtype=torch.bool)
    accuracy = float(correct.float().mean()) if correct.numel() else float("nan")
    return AccuracyReport(accuracy, correct, evaluations, exhaustive)
