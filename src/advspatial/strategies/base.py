"""Shared behaviour of the strategies: validation, the held model, choose-then-apply (layer 4)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advspatial.engine.model_state import check_model, check_same_device
from advspatial.engine.objectives import select_worst
from advspatial.engine.search import Scores, ScoringConfig
from advspatial.errors import AdvSpatialError, check_images, choice, images_in_model_dtype, positive_int
from advspatial.geometry.warp import INTERPOLATIONS, PADDINGS, _warp
from advspatial.space.affine import Space, check_space
from advspatial.space.box import RotoTranslationBox
from advspatial.strategies.result import SearchResult
from advspatial.tasks import Classification, Task, check_task

__all__ = ["SELECTIONS", "SpatialSearch"]

SELECTIONS: tuple[str, ...] = ("engstrom", "max_loss")


def resolve_space(
    space: object, max_rotation: float | None, max_translation: float | Sequence[float] | None
) -> Space:
    """The search's parameter space: ``space`` when given, else the box of the two ranges (30, 3)."""
    if space is None:
        return RotoTranslationBox(
            30.0 if max_rotation is None else max_rotation,
            3.0 if max_translation is None else max_translation,
        )
    if max_rotation is not None or max_translation is not None:
        raise AdvSpatialError(
            "pass either space= or max_rotation= / max_translation=, not both (the space holds the ranges)"
        )
    return check_space(space)


class SpatialSearch(ABC):
    """Base class: holds a model reference (never as a submodule) and a parameter space (``.box``).

    Subclasses implement :meth:`search`; calling the transform searches, then warps the images with
    the chosen parameters (differentiably with respect to the images). ``task`` (default
    :class:`advspatial.tasks.Classification`) says what the candidates are scored against.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        max_rotation: float | None = None,
        max_translation: float | Sequence[float] | None = None,
        space: Space | None = None,
        selection: str = "engstrom",
        interpolation: str = "bilinear",
        padding: str = "zeros",
        chunk_size: int | None = None,
        autocast: torch.dtype | None = None,
        task: Task | None = None,
    ) -> None:
        self.model = check_model(model)
        self.task = Classification() if task is None else check_task(task)
        self.box: Space = resolve_space(space, max_rotation, max_translation)
        self.selection = choice(selection, "selection", SELECTIONS)
        if chunk_size is not None:
            positive_int(chunk_size, "chunk_size")
        if autocast is not None and not (isinstance(autocast, torch.dtype) and autocast.is_floating_point):
            raise AdvSpatialError(f"autocast must be a floating torch.dtype or None, got {autocast!r}")
        self.config = ScoringConfig(
            interpolation=choice(interpolation, "interpolation", INTERPOLATIONS),
            padding=choice(padding, "padding", PADDINGS),
            chunk_size=chunk_size,
            autocast=autocast,
        )

    @property
    def max_rotation(self) -> float:
        """Half-width of the rotation range in degrees."""
        return self.box.max_rotation

    @property
    def max_translation(self) -> tuple[float, float]:
        """Half-widths of the translation range in pixels, ``(x, y)``."""
        return self.box.max_translation

    def _check_inputs(self, images: object, targets: object) -> tuple[Tensor, Tensor | None]:
        images = images_in_model_dtype(check_images(images), self.model)
        check_same_device(self.model, images)
        if targets is None:
            return images, None
        return images, self.task.check_targets(targets, images)

    @abstractmethod
    def search(self, images: Tensor, targets: Tensor | None = None) -> SearchResult:
        """Choose a transform per image; the model is left exactly as it was.

        ``targets`` are what the task scores against (labels, masks, boxes or points), or ``None``
        to score the divergence from the model's own clean prediction.
        """

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        """Warp ``images`` with chosen ``params`` using this transform's interpolation and padding."""
        if images.shape[0] == 0:
            return images.clone()
        return _warp(images, params, self.config.interpolation, self.config.padding)

    def __call__(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        """Return each image under its worst transform: same shape, dtype and device.

        For the moved targets too, call :meth:`search` and :meth:`apply`: ``result.targets``.
        """
        return self.apply(images, self.search(images, targets).params)

    def _moved_targets(self, targets: Tensor | None, params: Tensor, images: Tensor) -> Tensor | None:
        """``targets`` moved by the chosen ``params`` as the task moves them (``None`` stays ``None``)."""
        if targets is None:
            return None
        return self.task.move_targets(targets, params.to(images.device), (images.shape[-2], images.shape[-1]))

    def _result(
        self, scores: Scores, candidates: Tensor, images: Tensor, targets: Tensor | None
    ) -> SearchResult:
        """Select the worst candidate per image from the engine's scores."""
        batch = scores.losses.shape[0]
        index = select_worst(scores.losses, scores.correct, self.selection)
        rows = torch.arange(batch, device=index.device)
        chosen = candidates[index] if candidates.ndim == 2 else candidates[rows, index]
        return SearchResult(
            params=chosen.to(torch.float32),
            loss=scores.losses[rows, index],
            correct=scores.correct.all(dim=1),
            chosen_correct=scores.correct[rows, index],
            candidate_losses=scores.losses,
            candidate_correct=scores.correct,
            evaluations=scores.evaluations,
            exhaustive_evaluations=scores.exhaustive_evaluations,
            targets=self._moved_targets(targets, chosen, images),
            chunk_size=scores.chunk_size,
        )

    def _extra_repr(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        ranges: dict[str, Any] = (
            {"space": self.box}
            if self.box.columns != 3
            else {"max_rotation": self.max_rotation, "max_translation": self.max_translation}
        )
        fields = {
            **self._extra_repr(),
            **ranges,
            "selection": self.selection,
            "interpolation": self.config.interpolation,
            "padding": self.config.padding,
            **({} if isinstance(self.task, Classification) else {"task": self.task}),
        }
        inner = ", ".join(f"{key}={value!r}" for key, value in fields.items())
        return f"{type(self).__name__}(model={type(self.model).__name__}, {inner})"
