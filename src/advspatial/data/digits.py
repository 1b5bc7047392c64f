"""scikit-learn's bundled handwritten digits, upsampled to MNIST's 28 x 28 layout (no download)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from advspatial.errors import AdvSpatialError

__all__ = ["STROKE_THRESHOLD", "load_digits_28"]

STROKE_THRESHOLD = 0.25
"""Intensity above which an upsampled digit pixel counts as stroke (the dense sets' masks and boxes)."""


def load_digits_28(*, test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """The 1797 digits of ``sklearn.datasets.load_digits``, as 28 x 28 images in ``[0, 1]``.

    Each 8 x 8 digit is upsampled (bilinear) to 20 x 20 and centred on a 28 x 28 black canvas, the
    layout of MNIST, so that rotations of +-30 degrees and shifts of +-3 px keep the digit in frame.

    Args:
        test_fraction: share of the images held out, split with a fixed permutation.
        seed: seed of that permutation.

    Returns:
        ``(train, test)`` datasets of ``(image (1, 28, 28) float32, label int64)``.
    """
    small, labels = sklearn_digits()
    train, test, _ = split_indices(len(labels), test_fraction, seed)
    images = F.pad(upsample(small, 20), (4, 4, 4, 4))
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


def sklearn_digits() -> tuple[Tensor, Tensor]:
    """The 1797 8 x 8 digits as ``(N, 1, 8, 8)`` float32 in ``[0, 1]`` and their ``(N,)`` int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the digits data needs scikit-learn: pip install 'advspatial[demo]'") from error
    bunch = load_digits()
    small = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return small, torch.as_tensor(bunch.target, dtype=torch.long)


def upsample(small: Tensor, size: int) -> Tensor:
    """Bilinear upsampling of ``(N, 1, 8, 8)`` digits to ``(N, 1, size, size)``, clamped to ``[0, 1]``."""
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def split_indices(count: int, test_fraction: float, seed: int) -> tuple[Tensor, Tensor, torch.Generator]:
    """The train/test split of every digits loader: ``(train, test, generator)``.

    A ``torch.randperm`` of ``count`` drawn from ``torch.Generator().manual_seed(seed)``; its first
    ``round(count * test_fraction)`` entries are the test indices. The generator, advanced past the
    permutation, is returned for any further random choice of the loader (placements), so that one seed
    fixes everything and the split is the same as :func:`load_digits_28`'s for that seed.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float):
        raise AdvSpatialError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not 0.0 < test_fraction < 1.0:
        raise AdvSpatialError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AdvSpatialError(f"seed must be an integer, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(count, generator=generator)
    n_test = round(count * test_fraction)
    return order[n_test:], order[:n_test], generator
