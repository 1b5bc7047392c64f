"""A localization set built from scikit-learn's digits: one digit per canvas, its box and a keypoint."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from advspatial.data.digits import STROKE_THRESHOLD, sklearn_digits, split_indices, upsample
from advspatial.errors import AdvSpatialError, positive_int

__all__ = ["load_digits_localization"]


def load_digits_localization(
    *, canvas_size: int = 40, digit_size: int = 14, test_fraction: float = 0.2, seed: int = 0
) -> tuple[TensorDataset, TensorDataset]:
    """One digit at a random place on a black canvas, with its box, its centre of mass and its label.

    The 1797 digits of ``sklearn.datasets.load_digits`` are split as :func:`load_digits_28` splits them
    (same permutation for the same ``seed``); each is upsampled (bilinear) to ``digit_size`` x
    ``digit_size`` and drawn at a uniformly random integer position, entirely inside a ``canvas_size``
    x ``canvas_size`` canvas. With the defaults: 1438 training and 359 test canvases of 40 x 40.

    The stroke is the set of pixels above :data:`STROKE_THRESHOLD` (0.25 of full ink). Targets, in the
    library's continuous pixel coordinates (top-left corner of the image ``(0, 0)``, centre of pixel
    ``(row i, column j)`` at ``(j + 0.5, i + 0.5)``; see the convention guide):

    - box: ``(x1, y1, x2, y2)``, the smallest box that contains every stroke pixel *entirely*, i.e.
      ``x1 = min j``, ``x2 = max j + 1`` (and the same for rows) over the stroke pixels; this is the
      ``BoundingBoxes`` XYXY format of torchvision and the input of
      :func:`advspatial.roto_translate_boxes`.
    - keypoint: the intensity-weighted centre of mass of the stroke pixels, ``sum_p I_p c_p / sum_p I_p``
      over stroke pixels ``p`` with centres ``c_p``; it always lies inside the box.

    Everything is generated in memory and deterministic: one ``torch.Generator`` seeded with ``seed``
    draws the split and then the positions.

    Args:
        canvas_size: height and width of the canvases, in pixels.
        digit_size: side of the upsampled digit, in pixels (``<= canvas_size``).
        test_fraction: share of the digits held out.
        seed: seed of the split and of the positions.

    Returns:
        ``(train, test)`` datasets of ``(image, box, keypoint, label)``.

    Shape:
        - image: ``(1, H, W)`` float32 in ``[0, 1]``; a batch is ``(N, 1, H, W)``.
        - box: ``(4,)`` float32 ``(x1, y1, x2, y2)`` pixels; a batch is ``(N, 4)``.
        - keypoint: ``(1, 2)`` float32 ``(x, y)`` pixels; a batch is ``(N, 1, 2)``.
        - label: int64 scalar, the digit (0 to 9); a batch is ``(N,)``.

    Example:
        >>> train, test = load_digits_localization()
        >>> image, box, keypoint, label = train[0]
        >>> image.shape, box.shape, keypoint.shape, len(train), len(test)
        (torch.Size([1, 40, 40]), torch.Size([4]), torch.Size([1, 2]), 1438, 359)
        >>> x, y = keypoint[0]
        >>> bool(box[0] <= x <= box[2] and box[1] <= y <= box[3])
        True
    """
    canvas = positive_int(canvas_size, "canvas_size")
    size = positive_int(digit_size, "digit_size")
    if size > canvas:
        raise AdvSpatialError(
            f"digit_size must be <= canvas_size ({canvas}) so that the digit fits, got {size}"
        )
    small, labels = sklearn_digits()
    train, test, generator = split_indices(len(labels), test_fraction, seed)
    digits = upsample(small, size)[:, 0]  # (N, s, s)
    span = torch.arange(size)
    centres = span.to(torch.float32) + 0.5
    datasets = []
    for indices in (train, test):
        n = len(indices)
        patch = digits[indices]
        top = torch.randint(0, canvas - size + 1, (n,), generator=generator)
        left = torch.randint(0, canvas - size + 1, (n,), generator=generator)
        images = torch.zeros(n, 1, canvas, canvas)
        rows = torch.arange(n)[:, None, None]
        images[rows, 0, (top[:, None] + span)[:, :, None], (left[:, None] + span)[:, None, :]] = patch
        stroke = patch > STROKE_THRESHOLD
        in_cols, in_rows = stroke.any(dim=1), stroke.any(dim=2)  # (n, s) each
        first_col = in_cols.to(torch.int64).argmax(dim=1)
        last_col = size - 1 - in_cols.flip(1).to(torch.int64).argmax(dim=1)
        first_row = in_rows.to(torch.int64).argmax(dim=1)
        last_row = size - 1 - in_rows.flip(1).to(torch.int64).argmax(dim=1)
        boxes = torch.stack(
            [left + first_col, top + first_row, left + last_col + 1, top + last_row + 1], dim=1
        ).to(torch.float32)
        weights = torch.where(stroke, patch, 0.0)
        total = weights.sum(dim=(1, 2))
        x = left + (weights.sum(dim=1) * centres).sum(dim=1) / total
        y = top + (weights.sum(dim=2) * centres).sum(dim=1) / total
        keypoints = torch.stack([x, y], dim=1)[:, None, :].to(torch.float32)
        datasets.append(TensorDataset(images, boxes, keypoints, labels[indices]))
    return datasets[0], datasets[1]
