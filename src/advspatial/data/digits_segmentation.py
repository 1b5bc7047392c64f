"""A segmentation set built from scikit-learn's digits: a few digits per canvas, one class per stroke."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from advspatial.data.digits import STROKE_THRESHOLD, sklearn_digits, split_indices, upsample
from advspatial.errors import AdvSpatialError, positive_int

__all__ = ["load_digits_segmentation"]


def load_digits_segmentation(
    *,
    canvas_size: int = 32,
    digits_per_image: int = 2,
    digit_size: int = 14,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[TensorDataset, TensorDataset]:
    """Canvases with ``digits_per_image`` digits side by side and their per-pixel class masks.

    The 1797 digits of ``sklearn.datasets.load_digits`` are split as :func:`load_digits_28` splits them
    (same permutation for the same ``seed``: a digit is in the test set here exactly when it is there),
    then the digits of each split, in permuted order, are grouped ``digits_per_image`` at a time (the
    few left over are dropped) and each group is drawn on one black ``canvas_size`` x ``canvas_size``
    canvas: every digit upsampled (bilinear) to ``digit_size`` x ``digit_size``, in its own vertical
    strip of width ``canvas_size // digits_per_image`` (left to right), at a random position inside the
    strip. Digits never overlap. With the defaults: 719 training and 179 test canvases of 32 x 32.

    Classes (11 with the defaults): ``0`` is the background and a stroke pixel of digit ``d`` has class
    ``d + 1``, so that ``0`` keeps the usual meaning of background (as in Pascal VOC) and a model has
    ``num_classes = 11`` outputs. A pixel is stroke when the canvas intensity is
    above :data:`STROKE_THRESHOLD` (0.25 of full ink): ``mask > 0`` exactly where ``image > 0.25``.
    No pixel has an ignore index; the searches mark pixels moved in from outside the frame as ignored.

    Everything is generated in memory and deterministic: one ``torch.Generator`` seeded with ``seed``
    draws the split and then the positions.

    Args:
        canvas_size: height and width of the canvases, in pixels.
        digits_per_image: digits on each canvas; needs ``digit_size <= canvas_size // digits_per_image``.
        digit_size: side of each upsampled digit, in pixels.
        test_fraction: share of the digits held out for the test canvases.
        seed: seed of the split and of the positions.

    Returns:
        ``(train, test)`` datasets of ``(image, mask)``.

    Shape:
        - image: ``(1, H, W)`` float32 in ``[0, 1]`` (``H = W = canvas_size``); a batch is ``(N, 1, H, W)``.
        - mask: ``(H, W)`` int64 in ``[0, 10]``; a batch is ``(N, H, W)``.

    Example:
        >>> train, test = load_digits_segmentation()
        >>> image, mask = train[0]
        >>> image.shape, mask.shape, mask.dtype, len(train), len(test)
        (torch.Size([1, 32, 32]), torch.Size([32, 32]), torch.int64, 719, 179)
        >>> bool(((mask > 0) == (image[0] > 0.25)).all())
        True
    """
    canvas = positive_int(canvas_size, "canvas_size")
    count = positive_int(digits_per_image, "digits_per_image")
    size = positive_int(digit_size, "digit_size")
    if size > canvas // count:
        raise AdvSpatialError(
            f"digit_size must be <= canvas_size // digits_per_image = {canvas // count} so that the digits "
            f"do not overlap, got digit_size={size}, canvas_size={canvas}, digits_per_image={count}"
        )
    small, labels = sklearn_digits()
    train, test, generator = split_indices(len(labels), test_fraction, seed)
    digits = upsample(small, size)
    datasets = []
    for indices in (train, test):
        groups = indices[: len(indices) // count * count].reshape(-1, count)
        images, masks = _compose(digits[groups], labels[groups], canvas, generator)
        datasets.append(TensorDataset(images, masks))
    return datasets[0], datasets[1]


def _compose(
    digits: Tensor, labels: Tensor, canvas: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Draw ``(N, K, 1, s, s)`` digits with ``(N, K)`` labels on ``N`` canvases, one strip per digit."""
    n, count, _, size, _ = digits.shape
    strip = canvas // count
    images = torch.zeros(n, 1, canvas, canvas)
    masks = torch.zeros(n, canvas, canvas, dtype=torch.long)
    rows = torch.arange(n)[:, None, None]
    span = torch.arange(size)
    for slot in range(count):
        top = torch.randint(0, canvas - size + 1, (n,), generator=generator)
        left = slot * strip + torch.randint(0, strip - size + 1, (n,), generator=generator)
        ys, xs = (top[:, None] + span)[:, :, None], (left[:, None] + span)[:, None, :]
        patch = digits[:, slot, 0]
        images[rows, 0, ys, xs] = patch
        masks[rows, ys, xs] = torch.where(patch > STROKE_THRESHOLD, labels[:, slot, None, None] + 1, 0)
    return images, masks
