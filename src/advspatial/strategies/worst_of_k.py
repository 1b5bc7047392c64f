"""Worst-of-k: draw k random transforms per image, keep the worst (Engstrom et al. 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advspatial.engine.search import score_candidates
from advspatial.errors import (
    AdvSpatialError,
    candidate_count,
    check_candidates,
    flag,
    images_fit_model,
    optional_generator,
)
from advspatial.space.affine import Space
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.result import SearchResult
from advspatial.tasks import Task

__all__ = ["WorstOfK"]


class WorstOfK(SpatialSearch):
    """Keep, per image, the worst of ``k`` transforms drawn from the box (roto-translations or affine).

    Engstrom et al. 2019, "Exploring the Landscape of Spatial Robustness" (worst-of-10 with
    +-30 degrees and +-3 px on MNIST/CIFAR-10). Candidates are drawn independently per image and all
    ``B * k`` of them are scored in a few batched forward passes on the model's device.

    Convention:
        Rows ``(angle, tx, ty)``: degrees counter-clockwise, then pixels right and down; bilinear,
        zero fill (see :func:`advspatial.roto_translate`). With ``space=AffineBox(...)`` the rows are
        ``(angle, tx, ty, scale, shear_x, shear_y)``, drawn as :meth:`advspatial.AffineBox.sample`
        draws them (scale log-uniform).

    Args:
        model: the classifier to attack (held by reference, never modified).
        k: number of random candidates per image.
        max_rotation: rotations are drawn from ``[-max_rotation, max_rotation]`` degrees (default 30).
        max_translation: pixels, a scalar for both axes or an ``(x, y)`` pair (default 3).
        space: the parameter space instead of the two ranges, e.g.
            ``advspatial.AffineBox(30, 3, scale=(0.8, 1.2), shear=10)``; then ``result.params`` is
            ``(B, 6)``. Passing it together with ``max_rotation`` or ``max_translation`` is an error.
        include_identity: also score the untransformed image (``k + 1`` candidates), as the
            ImageNet code of the paper does.
        selection: ``"engstrom"`` (a misclassified candidate beats a correct one, then higher loss)
            or ``"max_loss"``.
        generator: the ``torch.Generator`` candidates are drawn from (advanced by every call);
            ``None`` uses torch's global generator.
        interpolation: ``"bilinear"`` or ``"nearest"`` (see :class:`advspatial.engine.ScoringConfig`).
        padding: ``"zeros"``, ``"border"`` or ``"reflection"``.
        chunk_size: (image, candidate) pairs per forward pass; ``None`` measures the fastest size on
            the first chunks and keeps it (see :mod:`advspatial.engine.tuning`).
        autocast: dtype for ``torch.autocast`` during scoring (e.g. ``torch.bfloat16``), or ``None``.
        task: what candidates are scored against (:mod:`advspatial.tasks`); default
            :class:`~advspatial.tasks.Classification` (labels). With ``Segmentation()``, ``search``
            takes ``(B, H, W)`` masks and ``result.targets`` holds the masks moved by the chosen rows.

    Shape:
        images ``(B, C, H, W)`` float, labels ``(B,)`` integer or ``None``; output ``(B, C, H, W)``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> attack = WorstOfK(model, k=10, generator=torch.Generator().manual_seed(0))
        >>> images, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> result = attack.search(images, labels)
        >>> result.params.shape, result.correct.dtype, result.evaluations
        (torch.Size([4, 3]), torch.bool, 40)
        >>> attack(images, labels).shape
        torch.Size([4, 1, 8, 8])
        >>> from advspatial import AffineBox
        >>> affine = WorstOfK(model, k=10, space=AffineBox(30, 3, scale=(0.8, 1.2), shear=10))
        >>> affine.search(images, labels).params.shape
        torch.Size([4, 6])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        k: int = 10,
        max_rotation: float | None = None,
        max_translation: float | Sequence[float] | None = None,
        space: Space | None = None,
        include_identity: bool = False,
        selection: str = "engstrom",
        generator: torch.Generator | None = None,
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
            space=space,
            selection=selection,
            interpolation=interpolation,
            padding=padding,
            chunk_size=chunk_size,
            autocast=autocast,
            task=task,
        )
        self.k = candidate_count(k, "k")
        flag(include_identity, "include_identity")
        optional_generator(generator)
        self.include_identity = include_identity
        self.generator = generator

    def sample(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """Draw the ``(batch, k [+ 1], columns)`` candidate set (identity first when included)."""
        generator = optional_generator(generator) or self.generator
        draws = self.box.sample((batch, self.k), generator=generator, device=device)
        if self.include_identity:
            draws = torch.cat([self.box.identity((batch, 1), device=device), draws], dim=1)
        return draws

    def search(
        self,
        images: Tensor,
        targets: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        candidates: Tensor | None = None,
    ) -> SearchResult:
        """Score ``k`` random candidates per image and return the worst of each.

        Args:
            images: ``(B, C, H, W)`` float on the model's device.
            targets: the task's targets (``(B,)`` class indices for classification, ``(B, H, W)``
                masks for segmentation, ...), or ``None`` to use the model's clean predictions.
            generator: overrides the transform's generator for this call.
            candidates: ``(B, K, 3)`` rows ``(angle, tx, ty)`` (``(B, K, 6)`` for an affine space) to
                score instead of drawing them
                (e.g. rows of :meth:`sample` kept per dataset index, so that each sample meets the
                same candidates whatever batch or process scores it); nothing is drawn and the
                generator is not advanced. Mutually exclusive with ``generator``.

        Example:
            >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
            >>> attack = WorstOfK(model, k=3)
            >>> table = attack.sample(5, torch.device("cpu"), torch.Generator().manual_seed(0))
            >>> images, labels = torch.rand(5, 1, 8, 8), torch.arange(5)
            >>> whole = attack.search(images, labels, candidates=table)
            >>> part = attack.search(images[3:], labels[3:], candidates=table[3:])
            >>> torch.equal(whole.params[3:], part.params)
            True
        """
        images, targets = self._check_inputs(images, targets)
        if candidates is None:
            candidates = self.sample(images.shape[0], images.device, generator)
        else:
            if generator is not None:
                raise AdvSpatialError("pass either candidates or generator to search, not both")
            candidates = check_candidates(candidates, images.shape[0], columns=self.box.columns)
            candidates = candidates.to(images.device)
        with images_fit_model(images):
            scores = score_candidates(self.model, images, targets, candidates, self.config, task=self.task)
        return self._result(scores, candidates, images, targets)

    def _extra_repr(self) -> dict[str, Any]:
        return {"k": self.k, "include_identity": self.include_identity}
