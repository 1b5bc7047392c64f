"""Layer 6: adapters that drop the searches into torchvision v2, albumentations, kornia and the DataLoader.

Each adapter lives in its own module and imports its library only there, so ``import advspatial`` and
``import advspatial.adapters`` work without any of them installed. Every adapter applies the chosen
``(angle, tx, ty)`` rows with the core kernel (:func:`advspatial.roto_translate` and its companions),
so the picture a user gets is exactly the one the model was scored on, and masks, boxes and keypoints
move with the same rows. With a dense task (``Segmentation``, ``BoxRegression``,
``KeypointRegression``) the mask, box or keypoints an adapter moves are the targets the search scores
against, and they come back equal to ``result.targets``.

Modules:
    ``advspatial.adapters.dataloader``: :class:`SpatialSearchBatch` (after the loader, the fast path),
        :class:`SpatialSearchCollate` and :class:`SpatialSearchDataset`.
    ``advspatial.adapters.torchvision_v2``: :class:`SpatialSearchV2`, a ``transforms.v2.Transform``.
    ``advspatial.adapters.albumentations``: :class:`SpatialSearchAlbumentations`, a ``DualTransform``.
    ``advspatial.adapters.kornia``: :class:`SpatialSearchKornia`, a ``GeometricAugmentationBase2D``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "SpatialSearchAlbumentations",
    "SpatialSearchBatch",
    "SpatialSearchCollate",
    "SpatialSearchDataset",
    "SpatialSearchKornia",
    "SpatialSearchV2",
]

_HOMES = {
    "SpatialSearchAlbumentations": "advspatial.adapters.albumentations",
    "SpatialSearchBatch": "advspatial.adapters.dataloader",
    "SpatialSearchCollate": "advspatial.adapters.dataloader",
    "SpatialSearchDataset": "advspatial.adapters.dataloader",
    "SpatialSearchKornia": "advspatial.adapters.kornia",
    "SpatialSearchV2": "advspatial.adapters.torchvision_v2",
}


def __getattr__(name: str) -> Any:
    """Import an adapter's module (and its library) only when the adapter is first used."""
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'advspatial.adapters' has no attribute {name!r}")
