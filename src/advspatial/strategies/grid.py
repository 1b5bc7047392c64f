"""Grid search over rotations and translations (Engstrom et al. 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advspatial.engine.search import score_candidates
from advspatial.errors import check_grid_size, flag, images_fit_model
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.result import SearchResult
from advspatial.tasks import Task

__all__ = ["GridSearchRotoTranslation"]


class GridSearchRotoTranslation(SpatialSearch):
    """Score every point of a rotation x translation grid and keep the worst per image.

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
        super().__init__(
            model,
            max_rotation=max_rotation,
            max_translation=max_translation,
            selection=selection,
            interpolation=interpolation,
            padding=padding,
            chunk_size=chunk_size,
            autocast=autocast,
            task=task,
        )
        flag(early_exit, "early_exit")
        self.rotations = rotations
        self.translations = translations
        self.early_exit = early_exit
        check_grid_size(rotations, translations)
        self.candidates = self.box.grid(rotations, translations)

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
        return {"rotations": self.rotations, "translations": self.translations, "early_exit": self.early_exit}
