"""scikit-learn's bundled handwritten digits, upsampled to MNIST's 28 x 28 layout (no download)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

__all__ = ["load_digits_28"]


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
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the digits data needs scikit-learn: pip install 'advspatial[demo]'") from error
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    bunch = load_digits()
    small = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    digits = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    images = F.pad(digits, (4, 4, 4, 4))
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])
