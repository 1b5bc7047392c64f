"""Accuracy of a model over a DataLoader: natural, random, worst-of-k, grid and first-order (layer 7).

Every function walks the loader once, runs the search batch by batch on the model's device (the
model is left exactly as it was) and returns a :class:`SweepResult`: the accuracy plus per-sample
details in loader order (correctness, the transform chosen, its loss), ready for JSON or a plot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advspatial.engine.model_state import check_model, model_device
from advspatial.errors import AdvSpatialError, check_images, check_labels, positive_int
from advspatial.evaluation.outcomes import Outcome, OutcomeRows, natural_outcome, search_outcome
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.first_order import SpatialPGD
from advspatial.strategies.grid import GridSearchRotoTranslation
from advspatial.strategies.worst_of_k import WorstOfK

__all__ = [
    "SweepResult",
    "first_order_accuracy",
    "grid_accuracy",
    "natural_accuracy",
    "random_accuracy",
    "robustness_sweep",
    "search_accuracy",
    "worst_of_k_accuracy",
]

Batches = Iterable[Any]


@dataclass(frozen=True)
class SweepResult:
    """Accuracy of a model under one attack over a whole loader, with per-sample details.

    Attributes:
        name: the attack, e.g. ``"grid"``.
        accuracy: fraction of samples that withstood the attack (``nan`` for an empty loader).
        correct: ``(N,)`` bool per sample, in loader order.
        labels: ``(N,)`` long labels.
        params: ``(N, 3)`` transform chosen per sample, rows ``(angle_degrees, tx_px, ty_px)``
            (zeros for the natural accuracy).
        loss: ``(N,)`` cross-entropy of the chosen transform.
        evaluations: forward evaluations spent.
        exhaustive_evaluations: what the attack would spend without early exit.
        seconds: wall time of the sweep.
    """

    name: str
    accuracy: float
    correct: Tensor
    labels: Tensor
    params: Tensor
    loss: Tensor
    evaluations: int
    exhaustive_evaluations: int
    seconds: float

    def to_dict(self, *, per_sample: bool = True) -> dict[str, Any]:
        """Plain JSON-ready numbers (non-finite losses become ``None``)."""
        summary: dict[str, Any] = {
            "name": self.name,
            "accuracy": None if math.isnan(self.accuracy) else self.accuracy,
            "samples": int(self.correct.numel()),
            "evaluations": self.evaluations,
            "exhaustive_evaluations": self.exhaustive_evaluations,
            "seconds": self.seconds,
        }
        if per_sample:
            summary["correct"] = [bool(v) for v in self.correct.tolist()]
            summary["params"] = [[float(v) for v in row] for row in self.params.tolist()]
            summary["loss"] = [float(v) if math.isfinite(v) else None for v in self.loss.tolist()]
        return summary

    def save_plot(self, path: str | Path) -> Path:
        """Scatter of the chosen (angle, tx) per sample, fooled ones in red; a 640 x 480 PNG."""
        from advspatial.evaluation.plots import plot_chosen_transforms

        return plot_chosen_transforms(self, path)


def _batch_pair(batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    if not (isinstance(batch, Sequence) and len(batch) == 2):
        raise AdvSpatialError(
            f"loader must yield (images, labels) pairs, got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, Sequence) else "")
        )
    images = check_images(batch[0])
    labels = check_labels(batch[1], images.shape[0], device)
    return images.to(device), labels


def _iterate(loader: Batches, progress: bool, desc: str) -> Iterable[Any]:
    if not progress:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, unit="batch", leave=False)


def _collect(
    name: str, model: nn.Module, loader: Batches, step: Callable[[Tensor, Tensor], Outcome], progress: bool
) -> SweepResult:
    check_model(model)
    device = model_device(model) or torch.device("cpu")
    start = time.perf_counter()
    rows = OutcomeRows()
    for batch in _iterate(loader, progress, name):
        images, targets = _batch_pair(batch, device)
        rows.add(step(images, targets), targets)
    found = rows.tensors()
    return SweepResult(
        name=name,
        accuracy=float(found["correct"].float().mean()) if found["correct"].numel() else float("nan"),
        **found,
        evaluations=rows.evaluations,
        exhaustive_evaluations=rows.exhaustive_evaluations,
        seconds=time.perf_counter() - start,
    )


def natural_accuracy(model: nn.Module, loader: Batches, *, progress: bool = False) -> SweepResult:
    """Accuracy on the untransformed images.

    Args:
        model: classifier returning ``(N, num_classes)`` logits.
        loader: a ``DataLoader`` (or any iterable) of ``(images (B, C, H, W) float, labels (B,))``.
        progress: show a progress bar.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> batches = [(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))]
        >>> result = natural_accuracy(model, batches)
        >>> result.correct.shape, result.evaluations
        (torch.Size([4]), 4)
    """

    return _collect("natural", model, loader, partial(natural_outcome, model), progress)


def search_accuracy(
    model: nn.Module, loader: Batches, search: SpatialSearch, *, name: str = "search", progress: bool = False
) -> SweepResult:
    """Accuracy under any :class:`advspatial.SpatialSearch` (the search holds ``model``).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> batches = [(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))]
        >>> result = search_accuracy(model, batches, GridSearchRotoTranslation(model, rotations=3,
        ...                                                                    translations=1))
        >>> result.evaluations, result.params.shape
        (12, torch.Size([4, 3]))
    """
    if not isinstance(search, SpatialSearch):
        raise AdvSpatialError(f"search must be an advspatial.SpatialSearch, got {type(search).__name__}")
    if search.model is not model:
        raise AdvSpatialError("search must hold the same model object that is evaluated")

    return _collect(name, model, loader, partial(search_outcome, search), progress)


def random_accuracy(
    model: nn.Module,
    loader: Batches,
    *,
    max_rotation: float = 30.0,
    max_translation: float | Sequence[float] = 3.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SweepResult:
    """Accuracy under one uniformly random roto-translation per image (worst-of-1)."""
    search = WorstOfK(
        model, k=1, max_rotation=max_rotation, max_translation=max_translation, generator=generator
    )
    return search_accuracy(model, loader, search, name="random", progress=progress)


def worst_of_k_accuracy(
    model: nn.Module,
    loader: Batches,
    *,
    k: int = 10,
    max_rotation: float = 30.0,
    max_translation: float | Sequence[float] = 3.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SweepResult:
    """Accuracy under the worst of ``k`` random roto-translations per image (Engstrom et al. 2019)."""
    search = WorstOfK(
        model, k=k, max_rotation=max_rotation, max_translation=max_translation, generator=generator
    )
    return search_accuracy(model, loader, search, name=f"worst_of_{k}", progress=progress)


def grid_accuracy(
    model: nn.Module,
    loader: Batches,
    *,
    rotations: int = 31,
    translations: int | Sequence[int] = 5,
    max_rotation: float = 30.0,
    max_translation: float | Sequence[float] = 3.0,
    early_exit: bool = True,
    progress: bool = False,
) -> SweepResult:
    """Grid accuracy: right on every point of the rotation x translation grid (31 x 5 x 5 by default).

    With ``early_exit`` (default) an image stops being scored once fooled: the accuracy is exact and
    ``evaluations`` tells the work spent; the chosen params of a fooled image are *a* fooling one.
    """
    search = GridSearchRotoTranslation(
        model,
        rotations=rotations,
        translations=translations,
        max_rotation=max_rotation,
        max_translation=max_translation,
        early_exit=early_exit,
    )
    return search_accuracy(model, loader, search, name="grid", progress=progress)


def first_order_accuracy(
    model: nn.Module,
    loader: Batches,
    *,
    steps: int = 5,
    max_rotation: float = 30.0,
    max_translation: float | Sequence[float] = 3.0,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> SweepResult:
    """Accuracy under the first-order attack :class:`advspatial.SpatialPGD` (every iterate scored)."""
    search = SpatialPGD(
        model,
        steps=steps,
        max_rotation=max_rotation,
        max_translation=max_translation,
        random_start=random_start,
        generator=generator,
    )
    return search_accuracy(model, loader, search, name="first_order", progress=progress)


def robustness_sweep(
    model: nn.Module,
    loader: Batches,
    *,
    max_rotation: float = 30.0,
    max_translation: float | Sequence[float] = 3.0,
    k: int = 10,
    rotations: int = 31,
    translations: int | Sequence[int] = 5,
    pgd_steps: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, SweepResult]:
    """Natural, random, worst-of-k, grid (early exit) and first-order accuracy in one call.

    Returns:
        ``{"natural", "random", "worst_of_<k>", "grid", "first_order"}`` -> :class:`SweepResult`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> batches = [(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))]
        >>> sorted(robustness_sweep(model, batches, rotations=3, translations=3, pgd_steps=1))
        ['first_order', 'grid', 'natural', 'random', 'worst_of_10']
    """
    positive_int(seed, "seed", minimum=0)
    rot, shift = max_rotation, max_translation
    results = [
        natural_accuracy(model, loader, progress=progress),
        random_accuracy(
            model,
            loader,
            max_rotation=rot,
            max_translation=shift,
            generator=torch.Generator().manual_seed(seed),
            progress=progress,
        ),
        worst_of_k_accuracy(
            model,
            loader,
            k=k,
            max_rotation=rot,
            max_translation=shift,
            generator=torch.Generator().manual_seed(seed + 1),
            progress=progress,
        ),
        grid_accuracy(
            model,
            loader,
            rotations=rotations,
            translations=translations,
            max_rotation=rot,
            max_translation=shift,
            progress=progress,
        ),
        first_order_accuracy(
            model, loader, steps=pgd_steps, max_rotation=rot, max_translation=shift, progress=progress
        ),
    ]
    return {result.name: result for result in results}
