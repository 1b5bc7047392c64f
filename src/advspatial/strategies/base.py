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
from advspatial.errors import (
    AdvSpatialError,
    check_images,
    check_labels,
    choice,
    images_in_model_dtype,
    positive_int,
)
from advspatial.geometry.warp import INTERPOLATIONS, PADDINGS, _warp
from advspatial.space.box import RotoTranslationBox
from advspatial.strategies.result import SearchResult

__all__ = ["SELECTIONS", "SpatialSearch"]

SELECTIONS: tuple[str, ...] = ("engstrom", "max_loss")


class SpatialSearch(ABC):
    """Base class: holds a model reference (never as a submodule) and a parameter box.

    Subclasses implement :meth:`search`; calling the transform searches, then warps the images with
    the chosen parameters (differentiably with respect to the images).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        max_rotation: float,
        max_translation: float | Sequence[float],
        selection: str = "engstrom",
        interpolation: str = "bilinear",
        padding: str = "zeros",
        chunk_size: int | None = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.model = check_model(model)
        self.box = RotoTranslationBox.of(max_rotation, max_translation)
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

    def _check_inputs(self, images: object, labels: object) -> tuple[Tensor, Tensor | None]:
        images = images_in_model_dtype(check_images(images), self.model)
        check_same_device(self.model, images)
        if labels is None:
            return images, None
        return images, check_labels(labels, images.shape[0], images.device)

    @abstractmethod
    def search(self, images: Tensor, labels: Tensor | None = None) -> SearchResult:
        """Choose a transform per image; the model is left exactly as it was."""

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        """Warp ``images`` with chosen ``params`` using this transform's interpolation and padding."""
        if images.shape[0] == 0:
            return images.clone()
        return _warp(images, params, self.config.interpolation, self.config.padding)

    def __call__(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """Return each image under its worst transform: same shape, dtype and device."""
        result = self.search(images, labels)
        return self.apply(images, result.params)

    def _result(self, scores: Scores, candidates: Tensor) -> SearchResult:
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
        )

    def _extra_repr(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        fields = {
            **self._extra_repr(),
            "max_rotation": self.max_rotation,
            "max_translation": self.max_translation,
            "selection": self.selection,
            "interpolation": self.config.interpolation,
            "padding": self.config.padding,
        }
        inner = ", ".join(f"{key}={value!r}" for key, value in fields.items())
        return f"{type(self).__name__}(model={type(self.model).__name__}, {inner})"
