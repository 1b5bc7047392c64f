"""Accuracy of a model over a dataset: natural, random, worst-of-k, grid and first-order (layer 7).

Every function walks the data once with :func:`advspatial.evaluation.walk.walk` (sharded by itself
under ``torchrun``), runs the search batch by batch on the model's device (the model is left
exactly as it was) and returns a :class:`SweepResult`: the accuracy plus per-sample details in
dataset order (correctness, the transform chosen, its loss), ready for JSON or a plot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advspatial.engine.search import model_outputs
from advspatial.errors import AdvSpatialError, positive_int
from advspatial.evaluation.plots import plot_chosen_transforms
from advspatial.evaluation.walk import BatchRows, Data, KeyedDraws, Step, Walk, walk
from advspatial.space.affine import AffineBox, Space
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.first_order import SpatialPGD
from advspatial.strategies.grid import GridSearch, GridSearchRotoTranslation, default_steps
from advspatial.strategies.worst_of_k import WorstOfK
from advspatial.tasks import Classification, Task, check_task

__all__ = [
    "SweepResult",
    "affine_space",
    "first_order_accuracy",
    "grid_accuracy",
    "natural_accuracy",
    "random_accuracy",
    "robustness_sweep",
    "search_accuracy",
    "worst_of_k_accuracy",
]


@dataclass(frozen=True)
class SweepResult:
    """Accuracy of a model under one attack over a whole dataset, with per-sample details.

    Attributes:
        name: the attack, e.g. ``"grid"``.
        accuracy: fraction of samples that withstood the attack (``nan`` for empty data).
        correct: ``(N,)`` bool per sample, in dataset order: right under the attack as the task
            judges it (the class; for segmentation a pixel accuracy of at least
            ``min_pixel_accuracy`` under every candidate: the robust fraction).
        targets: the targets as walked, in the data's dtype (``uint8`` masks stay ``uint8``):
            ``(N,)`` labels, ``(N, H, W)`` masks, ...
        params: ``(N, 3)`` transform chosen per sample, rows ``(angle_degrees, tx_px, ty_px)``
            (zeros for the natural accuracy), or ``(N, 6)`` affine rows for an affine space.
        loss: ``(N,)`` objective of the chosen transform (cross-entropy for classification).
        evaluations: forward evaluations spent (under ``torchrun``: by all ranks, the sampler's
            padding included).
        exhaustive_evaluations: what the attack would spend without early exit.
        seconds: wall time of the sweep.
        metrics: the task's dataset-level metrics of the chosen transforms, e.g. ``{"miou": ...,
            "pixel_accuracy": ...}`` for segmentation (the worst candidate of each image, its
            confusion counts summed over the dataset); empty for classification.
    """

    name: str
    accuracy: float
    correct: Tensor
    targets: Tensor
    params: Tensor
    loss: Tensor
    evaluations: int
    exhaustive_evaluations: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def labels(self) -> Tensor:
        """The targets (the labels, for classification)."""
        return self.targets

    @property
    def saved_evaluations(self) -> int:
        """Forward evaluations that early exit did not need."""
        return self.exhaustive_evaluations - self.evaluations

    def to_dict(self, *, per_sample: bool = True) -> dict[str, Any]:
        """Plain JSON-ready numbers (non-finite losses become ``None``)."""
        summary: dict[str, Any] = {
            "name": self.name,
            "accuracy": None if math.isnan(self.accuracy) else self.accuracy,
            "samples": int(self.correct.numel()),
            "evaluations": self.evaluations,
            "exhaustive_evaluations": self.exhaustive_evaluations,
            "seconds": self.seconds,
            "metrics": {key: None if math.isnan(value) else value for key, value in self.metrics.items()},
        }
        if per_sample:
            summary["correct"] = [bool(v) for v in self.correct.tolist()]
            summary["params"] = [[float(v) for v in row] for row in self.params.tolist()]
            summary["loss"] = [float(v) if math.isfinite(v) else None for v in self.loss.tolist()]
        return summary

    def save_plot(self, path: str | Path, *, model: str | None = None) -> Path:
        """The chosen (angle, tx) and (angle, ty) per sample, fooled in red, sized by count; 640 x 480 PNG.

        Args:
            path: where the PNG goes (folders are created).
            model: the model's (or recipe's) name for the title.
        """
        prefix = "" if model is None else f"{model}, "
        title = f"{prefix}{self.name}: accuracy {100 * self.accuracy:.1f}% of {self.correct.numel()} images"
        return plot_chosen_transforms(self.params, self.correct, path, title=title)


def _sweep_result(name: str, walked: Walk, task: Task) -> SweepResult:
    correct = walked.row("correct", torch.zeros(0, dtype=torch.bool))
    statistics = walked.rows.get("statistics")
    return SweepResult(
        name=name,
        accuracy=float(correct.float().mean()) if correct.numel() else float("nan"),
        correct=correct,
        targets=walked.rows["targets"],
        metrics={} if statistics is None else task.summarize(statistics),
        params=walked.row("params", torch.zeros(0, 3)),
        loss=walked.row("loss", torch.zeros(0)),
        evaluations=walked.counts.get("evaluations", 0),
        exhaustive_evaluations=walked.counts.get("exhaustive_evaluations", 0),
        seconds=walked.seconds,
    )


def _natural_step(model: nn.Module, task: Task) -> Step:
    def step(images: Tensor, targets: Tensor, index: Tensor) -> BatchRows:
        outputs = model_outputs(model, images, task)
        scored = task.scoring_targets(targets)
        loss, correct = task.objective(outputs, scored)
        count = int(targets.shape[0])
        rows = {"correct": correct, "params": torch.zeros(count, 3), "loss": loss.float()}
        statistics = task.statistics(outputs, scored)
        if statistics is not None:
            rows["statistics"] = statistics
        return BatchRows(rows, {"evaluations": count, "exhaustive_evaluations": count})

    return step


def _search_step(search: SpatialSearch, draws: KeyedDraws | None) -> Step:
    def step(images: Tensor, targets: Tensor, index: Tensor) -> BatchRows:
        if draws is None:
            result = search.search(images, targets)
        else:  # each sample meets the candidates of its dataset index, whatever its batch or rank
            assert isinstance(search, WorstOfK)
            result = search.search(images, targets, candidates=draws(index, images.device))
        rows = {"correct": result.correct, "params": result.params.float(), "loss": result.loss.float()}
        counts = {"evaluations": result.evaluations, "exhaustive_evaluations": result.exhaustive_evaluations}
        if result.targets is not None and _has_statistics(search.task):
            # One more forward pass per image (not counted as a search evaluation): the outputs
            # under the chosen transform, scored against the targets moved with it (in the form the
            # search scored them: result.targets keep the data's dtype).
            task, size = search.task, (images.shape[-2], images.shape[-1])
            outputs = model_outputs(search.model, search.apply(images, result.params), task)
            moved = task.move_targets(task.scoring_targets(targets), result.params.to(images.device), size)
            statistics = task.statistics(outputs, moved)
            if statistics is not None:
                rows["statistics"] = statistics
        return BatchRows(rows, counts)

    return step


def _has_statistics(task: Task) -> bool:
    return type(task).statistics is not Task.statistics


def _keyed_candidates(search: SpatialSearch) -> KeyedDraws | None:
    """A worst-of-k's candidates keyed by dataset index (row ``i``: the ``i``-th draw of its generator)."""
    if not isinstance(search, WorstOfK):
        return None
    return KeyedDraws(lambda count, device: search.sample(count, device), search.generator)


def natural_accuracy(
    model: nn.Module,
    data: Data,
    *,
    batch_size: int | None = None,
    progress: bool = False,
    task: Task | None = None,
) -> SweepResult:
    """Accuracy on the untransformed images.

    Args:
        model: the model (a classifier returning ``(N, num_classes)`` logits by default).
        data: a map-style ``Dataset`` of ``(image, target)`` pairs, a ``DataLoader``, or any
            iterable of ``(images (B, C, H, W) float, targets)`` batches.
        batch_size: images per batch for a ``Dataset`` (default 256).
        progress: show a progress bar.
        task: what the targets are (:mod:`advspatial.tasks`; default classification labels).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> batches = [(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))]
        >>> result = natural_accuracy(model, batches)
        >>> result.correct.shape, result.evaluations
        (torch.Size([4]), 4)
    """
    task = Classification() if task is None else check_task(task)
    walked = walk(
        model,
        data,
        _natural_step(model, task),
        name="natural",
        batch_size=batch_size,
        progress=progress,
        task=task,
    )
    return _sweep_result("natural", walked, task)


def search_accuracy(
    model: nn.Module,
    data: Data,
    search: SpatialSearch,
    *,
    name: str = "search",
    batch_size: int | None = None,
    progress: bool = False,
) -> SweepResult:
    """Accuracy under any :class:`advspatial.SpatialSearch` (the search holds ``model``).

    The data's targets are those of the search's task; for a dense task the result's ``metrics``
    hold the task's dataset-level metrics of the chosen transforms (e.g. mean IoU).

    A :class:`advspatial.WorstOfK` scores, for sample ``i``, row ``i`` of its generator's
    sequential draws (through ``search(..., candidates=...)``): the numbers do not depend on the
    batch size, nor on the number of ``torchrun`` processes.

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
    draws = _keyed_candidates(search)
    walked = walk(
        model,
        data,
        _search_step(search, draws),
        name=name,
        batch_size=batch_size,
        progress=progress,
        draws=() if draws is None else (draws,),
        task=search.task,
    )
    return _sweep_result(name, walked, search.task)


def random_accuracy(
    model: nn.Module,
    data: Data,
    *,
    max_rotation: float | None = None,
    max_translation: float | Sequence[float] | None = None,
    space: Space | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    task: Task | None = None,
) -> SweepResult:
    """Accuracy under one uniformly random transform per image (worst-of-1); ranges as for WorstOfK."""
    search = WorstOfK(
        model,
        k=1,
        max_rotation=max_rotation,
        max_translation=max_translation,
        space=space,
        generator=generator,
        task=task,
    )
    return search_accuracy(model, data, search, name="random", batch_size=batch_size, progress=progress)


def worst_of_k_accuracy(
    model: nn.Module,
    data: Data,
    *,
    k: int = 10,
    max_rotation: float | None = None,
    max_translation: float | Sequence[float] | None = None,
    space: Space | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    task: Task | None = None,
) -> SweepResult:
    """Accuracy under the worst of ``k`` random transforms per image (Engstrom et al. 2019).

    ``max_rotation`` / ``max_translation`` (30, 3 by default) or ``space`` (e.g. an
    :class:`advspatial.AffineBox`), as for :class:`advspatial.WorstOfK`.
    """
    search = WorstOfK(
        model,
        k=k,
        max_rotation=max_rotation,
        max_translation=max_translation,
        space=space,
        generator=generator,
        task=task,
    )
    return search_accuracy(
        model, data, search, name=f"worst_of_{k}", batch_size=batch_size, progress=progress
    )


def _grid_search(
    model: nn.Module,
    rotations: int,
    translations: int | Sequence[int],
    max_rotation: float | None,
    max_translation: float | Sequence[float] | None,
    space: Space | None,
    early_exit: bool,
    task: Task | None = None,
) -> GridSearch:
    """The grid of :func:`grid_accuracy`."""
    if space is None:
        return GridSearchRotoTranslation(
            model,
            rotations=rotations,
            translations=translations,
            max_rotation=30.0 if max_rotation is None else max_rotation,
            max_translation=3.0 if max_translation is None else max_translation,
            early_exit=early_exit,
            task=task,
        )
    if max_rotation is not None or max_translation is not None:
        raise AdvSpatialError("pass either space= or max_rotation= / max_translation=, not both")
    shifts = (translations, translations) if not isinstance(translations, Sequence) else tuple(translations)
    steps = (rotations, *shifts, *default_steps(space)[3:])  # GridSearch checks the counts
    return GridSearch(model, space=space, steps=steps, early_exit=early_exit, task=task)


def grid_accuracy(
    model: nn.Module,
    data: Data,
    *,
    rotations: int = 31,
    translations: int | Sequence[int] = 5,
    max_rotation: float | None = None,
    max_translation: float | Sequence[float] | None = None,
    space: Space | None = None,
    early_exit: bool = True,
    batch_size: int | None = None,
    progress: bool = False,
    task: Task | None = None,
) -> SweepResult:
    """Grid accuracy: right on every point of the rotation x translation grid (31 x 5 x 5 by default).

    With ``early_exit`` (default) an image stops being scored once fooled: the accuracy is exact and
    ``evaluations`` tells the work spent; the chosen params of a fooled image are *a* fooling one
    (and may depend on which images share its batch). With ``space`` (an
    :class:`advspatial.AffineBox`, instead of the two ranges) the grid is :class:`advspatial.GridSearch`'s:
    ``rotations x translations``, then 3 points per scale or shear axis that has a range
    (:func:`advspatial.strategies.grid.default_steps`).
    """
    search = _grid_search(
        model, rotations, translations, max_rotation, max_translation, space, early_exit, task
    )
    return search_accuracy(model, data, search, name="grid", batch_size=batch_size, progress=progress)


def first_order_accuracy(
    model: nn.Module,
    data: Data,
    *,
    steps: int = 5,
    max_rotation: float | None = None,
    max_translation: float | Sequence[float] | None = None,
    space: Space | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    task: Task | None = None,
) -> SweepResult:
    """Accuracy under the first-order attack :class:`advspatial.SpatialPGD` (every iterate scored).

    With ``random_start`` the starts are drawn batch by batch: under ``torchrun`` the numbers are
    then those of another draw than one process's.
    """
    search = SpatialPGD(
        model,
        steps=steps,
        max_rotation=max_rotation,
        max_translation=max_translation,
        space=space,
        random_start=random_start,
        generator=generator,
        task=task,
    )
    return search_accuracy(model, data, search, name="first_order", batch_size=batch_size, progress=progress)


def affine_space(
    max_rotation: float | None,
    max_translation: float | Sequence[float] | None,
    scale: Sequence[float] = (1.0, 1.0),
    shear: float | Sequence[float] = 0.0,
) -> AffineBox | None:
    """``AffineBox(max_rotation, max_translation, scale, shear)``, or ``None`` when it has no scale or
    shear range (the sweeps then search the roto-translation box, with ``(N, 3)`` params as before).

    Example:
        >>> affine_space(30, 3) is None, affine_space(30, 3, scale=(0.8, 1.2)).bounds[1]
        (True, (30.0, 3.0, 3.0, 1.2, 0.0, 0.0))
    """
    box = AffineBox(
        30.0 if max_rotation is None else max_rotation,
        3.0 if max_translation is None else max_translation,
        scale,
        shear,
    )
    return None if box.scale == (1.0, 1.0) and box.shear == (0.0, 0.0) else box


def robustness_sweep(
    model: nn.Module,
    data: Data,
    *,
    max_rotation: float = 30.0,
    max_translation: float | Sequence[float] = 3.0,
    k: int = 10,
    rotations: int = 31,
    translations: int | Sequence[int] = 5,
    pgd_steps: int = 5,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
    scale: Sequence[float] = (1.0, 1.0),
    shear: float | Sequence[float] = 0.0,
    task: Task | None = None,
) -> dict[str, SweepResult]:
    """Natural, random, worst-of-k, grid (early exit) and first-order accuracy in one call.

    Random (worst-of-1) draws from ``torch.Generator().manual_seed(seed)``, worst-of-k from
    ``seed + 1``. With a ``scale`` range other than ``(1, 1)`` or a ``shear`` other than 0 every
    attack searches ``AffineBox(max_rotation, max_translation, scale, shear)`` (see
    :func:`affine_space`; params are then ``(N, 6)``) and the grid gets 3 points per scale or shear
    axis with a range. With ``task=Segmentation()`` (masks as targets) each result's ``accuracy`` is
    the robust fraction and ``metrics["miou"]`` the mean IoU of the chosen transforms.

    Returns:
        ``{"natural", "random", "worst_of_<k>", "grid", "first_order"}`` -> :class:`SweepResult`.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> batches = [(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))]
        >>> sorted(robustness_sweep(model, batches, rotations=3, translations=3, pgd_steps=1))
        ['first_order', 'grid', 'natural', 'random', 'worst_of_10']
    """
    positive_int(seed, "seed", minimum=0)
    box = affine_space(max_rotation, max_translation, scale, shear)
    space: dict[str, Any] = (
        {"max_rotation": max_rotation, "max_translation": max_translation} if box is None else {"space": box}
    )
    common: dict[str, Any] = {"batch_size": batch_size, "progress": progress, "task": task}
    results = [
        natural_accuracy(model, data, **common),
        random_accuracy(model, data, generator=torch.Generator().manual_seed(seed), **space, **common),
        worst_of_k_accuracy(
            model, data, k=k, generator=torch.Generator().manual_seed(seed + 1), **space, **common
        ),
        grid_accuracy(model, data, rotations=rotations, translations=translations, **space, **common),
        first_order_accuracy(model, data, steps=pgd_steps, **space, **common),
    ]
    return {result.name: result for result in results}
