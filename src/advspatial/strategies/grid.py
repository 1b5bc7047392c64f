"""Grid search over a parameter space: every point of a regular grid (Engstrom et al. 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advspatial.engine.search import score_candidates
from advspatial.errors import (
    MAX_CANDIDATES,
    AdvSpatialError,
    check_grid_size,
    flag,
    images_fit_model,
    positive_int,
)
from advspatial.space.affine import AffineBox, Space
from advspatial.space.box import RotoTranslationBox
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.result import SearchResult
from advspatial.tasks import Task

__all__ = ["GridSearch", "GridSearchRotoTranslation", "default_steps"]


def default_steps(space: Space, rotations: int = 31, translations: int = 5) -> tuple[int, ...]:
    """Grid counts for ``space``: ``(31, 5, 5)``, then 3 per scale or shear axis with a range (1 without).

    Example:
        >>> default_steps(AffineBox(scale=(0.8, 1.2), shear=(10, 0)))
        (31, 5, 5, 3, 3, 1)
    """
    steps: tuple[int, ...] = (rotations, translations, translations)
    if isinstance(space, AffineBox):
        lows, highs = space.bounds
        steps += tuple(3 if highs[axis] > lows[axis] else 1 for axis in (3, 4, 5))
    return steps


def _check_steps(steps: object, columns: int) -> tuple[int, ...]:
    if isinstance(steps, str) or not isinstance(steps, Sequence) or len(steps) != columns:
        axes = "(rotations, tx, ty)" if columns == 3 else "(rotations, tx, ty, scale, shear_x, shear_y)"
        raise AdvSpatialError(
            f"steps must be {columns} positive integers {axes} for this space, got {steps!r}"
        )
    counts = tuple(positive_int(n, f"steps[{i}]") for i, n in enumerate(steps))
    if math.prod(counts) > MAX_CANDIDATES:
        raise AdvSpatialError(
            f"steps must give <= {MAX_CANDIDATES} grid points per image, got "
            f"{' x '.join(map(str, counts))} = {math.prod(counts)}"
        )
    return counts


def _grid(space: Space, steps: tuple[int, ...]) -> Tensor:
    if isinstance(space, RotoTranslationBox):
        return space.grid(steps[0], steps[1:])
    return space.grid(steps)


class GridSearch(SpatialSearch):
    """Score every point of a regular grid over a parameter space and keep the worst per image.

    The general form of :class:`GridSearchRotoTranslation`: the space is a
    :class:`advspatial.RotoTranslationBox` (3 axes) or an :class:`advspatial.AffineBox` (6 axes), the
    grid has ``steps[i]`` points on axis ``i`` (``linspace``, scale evenly spaced in log, identity
    included for odd counts). An image counts as robust (``result.correct``) only if every candidate
    is classified right. Grids grow fast with axes (31 x 5 x 5 x 3 x 3 x 3 = 20925 points):
    ``early_exit=True`` is what makes the accuracy of a 6-axis grid affordable.

    Convention:
        Rows ``(angle, tx, ty)`` or ``(angle, tx, ty, scale, shear_x, shear_y)``, see
        :func:`advspatial.roto_translate`.

    Args:
        model: the classifier to attack (held by reference, never modified).
        space: the parameter space (default ``RotoTranslationBox(30, 3)``).
        steps: one count per axis of the space; default :func:`default_steps` (``(31, 5, 5)``, plus
            3 per affine axis with a range).
        selection: ``"engstrom"`` or ``"max_loss"`` (see :class:`WorstOfK`).
        early_exit: accuracy only: stop scoring an image once some candidate fools the model
            (``result.correct`` stays exact).
        interpolation: ``"bilinear"`` or ``"nearest"``.
        padding: ``"zeros"``, ``"border"`` or ``"reflection"``.
        chunk_size: (image, candidate) pairs per forward pass; ``None`` chooses from the image size.
        autocast: dtype for ``torch.autocast`` during scoring, or ``None``.
        task: what candidates are scored against (:mod:`advspatial.tasks`); default classification.

    Example:
        >>> from advspatial import AffineBox
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> grid = GridSearch(model, space=AffineBox(scale=(0.8, 1.2), shear=10), steps=(31, 5, 5, 3, 3, 3))
        >>> grid.candidates.shape
        torch.Size([20925, 6])
        >>> small = GridSearch(model, space=AffineBox(scale=(0.8, 1.2)), steps=(3, 1, 1, 3, 1, 1))
        >>> result = small.search(torch.rand(2, 1, 8, 8), torch.tensor([3, 4]))
        >>> result.params.shape, result.evaluations
        (torch.Size([2, 6]), 18)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        space: Space | None = None,
        steps: Sequence[int] | None = None,
        selection: str = "engstrom",
        early_exit: bool = False,
        interpolation: str = "bilinear",
        padding: str = "zeros",
        chunk_size: int | None = None,
        autocast: torch.dtype | None = None,
        task: Task | None = None,
    ) -> None:
        super().__init__(
            model,
            space=space,
            selection=selection,
            interpolation=interpolation,
            padding=padding,
            chunk_size=chunk_size,
            autocast=autocast,
            task=task,
        )
        flag(early_exit, "early_exit")
        self.early_exit = early_exit
        self.steps = default_steps(self.box) if steps is None else _check_steps(steps, self.box.columns)
        self.candidates = _grid(self.box, self.steps)

    def search(self, images: Tensor, targets: Tensor | None = None) -> SearchResult:
        """Score the whole grid for every image (or until fooled, with ``early_exit``).

        ``targets`` as the task expects them (labels, masks, boxes, points) or ``None``.
        """
        images, targets = self._check_inputs(images, targets)
        candidates = self.candidates.to(images.device)
        with images_fit_model(images):
            scores = score_candidates(
                self.model,
                images,
                targets,
                candidates,
                self.config,
                early_exit=self.early_exit,
                task=self.task,
            )
        return self._result(scores, candidates, images, targets)

    def _extra_repr(self) -> dict[str, Any]:
        return {"steps": self.steps, "early_exit": self.early_exit}


class GridSearchRotoTranslation(GridSearch):
    """Score every point of a rotation x translation grid and keep the worst per image.

    The roto-translation case of :class:`GridSearch`:
    ``GridSearch(model, space=RotoTranslationBox(r, t), steps=(rotations, nx, ny))``.

    Engstrom et al. 2019: 31 rotations in ``[-30, 30]`` degrees x 5 x 5 translations in
    ``[-3, 3]`` px = 775 candidates (``linspace`` per axis, identity included). An image counts as
    robust (``result.correct``) only if every candidate is classified right: the grid accuracy.

    Convention:
        Rows ``(angle, tx, ty)``: degrees counter-clockwise, then pixels right and down; bilinear,
        zero fill (see :func:`advspatial.roto_translate`).

    Args:
        model: the classifier to attack (held by reference, never modified).
        rotations: number of angles in ``[-max_rotation, max_rotation]``.
        translations: number of offsets per axis, an int or an ``(x, y)`` pair.
        max_rotation: degrees.
        max_translation: pixels, a scalar for both axes or an ``(x, y)`` pair.
        selection: ``"engstrom"`` or ``"max_loss"`` (see :class:`WorstOfK`).
        early_exit: accuracy only: stop scoring an image once some candidate fools the model.
            **Off by default here** (``params`` is each image's highest-loss grid point, what
            training needs), while :func:`advspatial.evaluation.grid_accuracy` turns it on.
            ``result.correct`` is exact; for fooled images ``result.params`` is *a* fooling
            transform rather than the one of highest loss. ``result.saved_evaluations`` tells how
            many forward evaluations were not needed.
        interpolation: ``"bilinear"`` or ``"nearest"`` (see :class:`advspatial.engine.ScoringConfig`).
        padding: ``"zeros"``, ``"border"`` or ``"reflection"``.
        chunk_size: (image, candidate) pairs per forward pass; ``None`` measures the fastest size on
            the first chunks and keeps it (see :mod:`advspatial.engine.tuning`).
        autocast: dtype for ``torch.autocast`` during scoring (e.g. ``torch.bfloat16``), or ``None``.
        task: what candidates are scored against (:mod:`advspatial.tasks`); default
            :class:`~advspatial.tasks.Classification` (labels). With ``Segmentation()``, ``search``
            takes ``(B, H, W)`` masks and ``result.targets`` holds the masks moved by the chosen rows.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> grid = GridSearchRotoTranslation(model)
        >>> grid.candidates.shape
        torch.Size([775, 3])
        >>> result = grid.search(torch.rand(2, 1, 8, 8), torch.tensor([3, 4]))
        >>> result.evaluations
        1550
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        rotations: int = 31,
        translations: int | Sequence[int] = 5,
        max_rotation: float = 30.0,
        max_translation: float | Sequence[float] = 3.0,
        selection: str = "engstrom",
        early_exit: bool = False,
        interpolation: str = "bilinear",
        padding: str = "zeros",
        chunk_size: int | None = None,
        autocast: torch.dtype | None = None,
        task: Task | None = None,
    ) -> None:
        box = RotoTranslationBox(max_rotation, max_translation)
        check_grid_size(rotations, translations)
        box.grid(rotations, translations)  # checks the counts with their own names
        n_x, n_y = (translations, translations) if isinstance(translations, int) else translations
        self.rotations = rotations
        self.translations = translations
        super().__init__(
            model,
            space=box,
            steps=(rotations, n_x, n_y),
            selection=selection,
            early_exit=early_exit,
            interpolation=interpolation,
            padding=padding,
            chunk_size=chunk_size,
            autocast=autocast,
            task=task,
        )

    def _extra_repr(self) -> dict[str, Any]:
        return {"rotations": self.rotations, "translations": self.translations, "early_exit": self.early_exit}
