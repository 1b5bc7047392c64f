"""The library's exceptions and the one input checker used by every layer."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = [
    "MAX_CANDIDATES",
    "AdvSpatialError",
    "candidate_count",
    "check_candidates",
    "check_images",
    "check_labels",
    "check_params",
    "images_fit_model",
    "images_in_model_dtype",
]

MAX_CANDIDATES = 2**20
"""Most candidates per image a search accepts (``k``, grid points): the engine keeps per-pair tables."""


class AdvSpatialError(ValueError):
    """Invalid input or configuration; the message names the argument, the expectation and the value."""


def check_images(images: object, name: str = "images") -> Tensor:
    """Check that ``images`` is a float tensor of shape ``(B, C, H, W)`` with ``H, W >= 1``."""
    if not isinstance(images, Tensor):
        raise AdvSpatialError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}"
        )
    if images.ndim != 4:
        raise AdvSpatialError(
            f"{name} must have shape (B, C, H, W) (4 dimensions), got {images.ndim} dimensions "
            f"with shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise AdvSpatialError(
            f"{name} must be a floating point tensor (convert with images.float() / 255), "
            f"got dtype {images.dtype}"
        )
    if images.shape[-1] < 1 or images.shape[-2] < 1:
        raise AdvSpatialError(f"{name} must have positive height and width, got shape {tuple(images.shape)}")
    return images


PARAM_COLUMNS: dict[int, str] = {
    3: "(angle_degrees, tx_pixels, ty_pixels)",
    6: "(angle_degrees, tx_pixels, ty_pixels, scale, shear_x_degrees, shear_y_degrees)",
}
"""The parameter rows the library accepts, by number of columns: roto-translation and affine."""


def check_params(
    params: object, batch: int | None, name: str = "params", columns: tuple[int, ...] = (3, 6)
) -> Tensor:
    """Check that ``params`` is a float tensor ``(batch, 3)`` or ``(batch, 6)`` of finite parameter rows.

    Affine rows must have ``scale > 0`` and shears strictly inside ``(-90, 90)`` degrees.
    ``columns`` narrows the accepted widths (a space accepts its own rows only); ``batch=None``
    accepts any number of rows.
    """
    rows = "N" if batch is None else batch
    shapes = " or ".join(f"({rows}, {n}) with rows {PARAM_COLUMNS[n]}" for n in columns)
    if not isinstance(params, Tensor):
        raise AdvSpatialError(f"{name} must be a torch.Tensor of shape {shapes}, got {type(params).__name__}")
    if params.ndim != 2 or params.shape[1] not in columns or (batch is not None and params.shape[0] != batch):
        raise AdvSpatialError(f"{name} must have shape {shapes}, got {tuple(params.shape)}")
    if not params.is_floating_point():
        raise AdvSpatialError(f"{name} must be a floating point tensor, got dtype {params.dtype}")
    if params.numel() and not bool(torch.isfinite(params.detach()).all()):
        raise AdvSpatialError(f"{name} must be finite, got a non-finite value")
    if params.shape[1] == 6 and params.numel():
        values = params.detach()
        if not bool((values[:, 3] > 0).all()):
            raise AdvSpatialError(
                f"{name}[:, 3] (scale) must be > 0, got minimum {float(values[:, 3].min())}"
            )
        if not bool((values[:, 4:6].abs() < 90).all()):
            raise AdvSpatialError(
                f"{name}[:, 4:6] (shear_x, shear_y) must lie in (-90, 90) degrees, "
                f"got largest magnitude {float(values[:, 4:6].abs().max())}"
            )
    return params


def check_canvas_size(canvas_size: object, name: str = "canvas_size") -> tuple[int, int]:
    """Check that ``canvas_size`` is a pair ``(H, W)`` of positive integers."""
    if (
        not isinstance(canvas_size, tuple | list)
        or len(canvas_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in canvas_size)
    ):
        raise AdvSpatialError(f"{name} must be a pair (H, W) of positive integers, got {canvas_size!r}")
    return int(canvas_size[0]), int(canvas_size[1])


def check_labels(labels: object, batch: int, device: torch.device, name: str = "labels") -> Tensor:
    """Check that ``labels`` is an integer tensor of shape ``(batch,)`` with non-negative entries."""
    if not isinstance(labels, Tensor):
        raise AdvSpatialError(
            f"{name} must be a torch.Tensor of shape ({batch},), got {type(labels).__name__}"
        )
    if labels.ndim != 1 or labels.shape[0] != batch:
        raise AdvSpatialError(
            f"{name} must have shape ({batch},) to match the images, got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise AdvSpatialError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise AdvSpatialError(f"{name} must be >= 0, got minimum {int(labels.min())}")
    return labels.to(device=device, dtype=torch.long)


def check_label_range(labels: Tensor, num_classes: int, name: str = "labels") -> None:
    """Check that every label indexes one of the model's ``num_classes`` outputs."""
    if labels.numel() and int(labels.max()) >= num_classes:
        raise AdvSpatialError(
            f"{name} must be < the model's number of classes ({num_classes}), got maximum {int(labels.max())}"
        )


def check_logits(logits: object, rows: int, name: str = "model output") -> Tensor:
    """Check that the model returned finite ``(rows, num_classes)`` logits."""
    if not isinstance(logits, Tensor):
        raise AdvSpatialError(f"{name} must be a tensor of logits, got {type(logits).__name__}")
    if logits.ndim != 2 or logits.shape[0] != rows:
        raise AdvSpatialError(f"{name} must have shape ({rows}, num_classes), got {tuple(logits.shape)}")
    if not bool(torch.isfinite(logits).all()):
        raise AdvSpatialError(f"{name} contains NaN or infinite logits; the search cannot rank candidates")
    return logits


def symmetric_range(value: float | Sequence[float], name: str, size: int) -> tuple[float, ...]:
    """Normalise ``30`` or ``(3, 2)`` into a tuple of ``size`` non-negative finite half-widths."""
    if isinstance(value, bool):
        raise AdvSpatialError(f"{name} must be a number or a sequence of {size} numbers, got {value!r}")
    if isinstance(value, int | float):
        values: tuple[float, ...] = (float(value),) * size
    elif (
        isinstance(value, Sequence)
        and len(value) == size
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        values = tuple(float(v) for v in value)
    else:
        raise AdvSpatialError(f"{name} must be a number or a sequence of {size} numbers, got {value!r}")
    for v in values:
        if not math.isfinite(v) or v < 0:
            raise AdvSpatialError(
                f"{name} must be finite and >= 0 (a symmetric range [-v, v]), got {value!r}"
            )
    return values


def positive_int(value: object, name: str, minimum: int = 1) -> int:
    """Check that ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AdvSpatialError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def flag(value: object, name: str) -> bool:
    """Check that ``value`` is a bool (not merely truthy)."""
    if not isinstance(value, bool):
        raise AdvSpatialError(f"{name} must be a bool, got {value!r}")
    return value


def optional_generator(value: object, name: str = "generator") -> torch.Generator | None:
    """Check that ``value`` is a ``torch.Generator`` or ``None``."""
    if value is not None and not isinstance(value, torch.Generator):
        raise AdvSpatialError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value


def choice(value: object, name: str, options: Sequence[str]) -> str:
    """Check that ``value`` is one of ``options``."""
    if value not in options:
        raise AdvSpatialError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return str(value)


def check_epsilon(value: object, name: str = "eps") -> float:
    """Check that ``value`` is a finite number ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise AdvSpatialError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_clip(clip: object) -> tuple[float, float] | None:
    """Check that ``clip`` is ``None`` or a pixel range ``(low, high)`` with ``low < high``."""
    if clip is None:
        return None
    if (
        not isinstance(clip, tuple | list)
        or len(clip) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in clip)
        or not clip[0] < clip[1]
    ):
        raise AdvSpatialError(f"clip must be None or a pixel range (low, high) with low < high, got {clip!r}")
    return float(clip[0]), float(clip[1])


def check_candidates(candidates: object, batch: int, name: str = "candidates", columns: int = 3) -> Tensor:
    """Check that ``candidates`` is a float ``(batch, K, columns)`` tensor of finite rows, ``K >= 1``.

    ``columns`` is 3 for roto-translation rows, 6 for affine rows (the search's space decides).
    """
    shape = f"({batch}, K, {columns})"
    if not isinstance(candidates, Tensor):
        raise AdvSpatialError(
            f"{name} must be a torch.Tensor of shape {shape}, got {type(candidates).__name__}"
        )
    if (
        candidates.ndim != 3
        or candidates.shape[0] != batch
        or candidates.shape[2] != columns
        or not candidates.shape[1]
    ):
        raise AdvSpatialError(
            f"{name} must have shape {shape} with K >= 1 rows {PARAM_COLUMNS[columns]} "
            f"per image, got {tuple(candidates.shape)}"
        )
    if not candidates.is_floating_point():
        raise AdvSpatialError(f"{name} must be a floating point tensor, got dtype {candidates.dtype}")
    if candidates.numel() and not bool(torch.isfinite(candidates.detach()).all()):
        raise AdvSpatialError(f"{name} must be finite, got a non-finite value")
    if columns == 6:
        check_params(candidates.reshape(-1, 6), candidates.shape[0] * candidates.shape[1], name, (6,))
    return candidates


def candidate_count(value: object, name: str) -> int:
    """Check that ``value`` is an integer in ``[1, MAX_CANDIDATES]`` (candidates per image).

    The engine keeps a loss, a correctness flag and an index per (image, candidate) pair, so an
    absurd count would allocate a table of terabytes before scoring anything.

    Example:
        >>> candidate_count(10, "k")
        10
    """
    count = positive_int(value, name)
    if count > MAX_CANDIDATES:
        raise AdvSpatialError(
            f"{name} must be <= {MAX_CANDIDATES} candidates per image (the search keeps a table of "
            f"batch x candidates entries), got {count}"
        )
    return count


def images_in_model_dtype(images: Tensor, model: nn.Module) -> Tensor:
    """``images`` cast to the floating dtype of the model's first floating parameter or buffer.

    The library's one dtype rule: any floating image dtype is accepted; the model scores the images
    in its own floating dtype, and what a transform returns keeps the input dtype. A model without
    floating tensors gets the images unchanged.

    Example:
        >>> images_in_model_dtype(torch.zeros(1, 1, 2, 2, dtype=torch.float16), nn.Linear(2, 2)).dtype
        torch.float32
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return images if images.dtype == tensor.dtype else images.to(tensor.dtype)
    return images


_SHAPE_ERRORS = (
    "channels",
    "shapes cannot be multiplied",
    "size mismatch",
    "must match the size of tensor",
    "kernel size can't be greater",
    "padded input size per channel",
    "output size is too small",
    "input size is too small",
    "non-empty 2d or 3d",
    "non-empty 3d or 4d",
    "expected 4d",
)


@contextmanager
def images_fit_model(images: Tensor, name: str = "images") -> Iterator[None]:
    """Turn torch's shape errors from the model into an :class:`AdvSpatialError` about ``images``.

    Torch names the shape of one chunk of warped candidates; the message here names the batch the
    caller passed. Other errors (out of memory included) pass through unchanged.
    """
    try:
        yield
    except RuntimeError as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        lower = text.lower()
        if "out of memory" in lower or not any(key in lower for key in _SHAPE_ERRORS):
            raise
        shape = tuple(images.shape)
        found = re.search(r"weight of size \[(\d+), (\d+)[^\]]*\].*to have (\d+) channels", text)
        if found:
            detail = f"the model expects {found.group(3)} channel(s), the images have {shape[1]}"
        else:
            detail = re.sub(r"input\[\d+,", "input[N,", re.sub(r"\((\d+)x(\d+) and", r"(Nx\2 and", text))
        raise AdvSpatialError(
            f"{name} of shape {shape} (a batch of {shape[0]}) do not fit the model: {detail}"
        ) from error


def check_grid_size(rotations: object, translations: object) -> None:
    """Refuse a grid of more than ``MAX_CANDIDATES`` points before it is built.

    Malformed counts are left to :meth:`advspatial.RotoTranslationBox.grid`, which names them.
    """
    pair = translations if isinstance(translations, Sequence) else (translations, translations)
    counts = (rotations, *pair)
    if len(counts) != 3 or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts):
        return
    points = math.prod(counts)
    if points > MAX_CANDIDATES:
        raise AdvSpatialError(
            f"rotations x translations must give <= {MAX_CANDIDATES} grid points per image, got "
            f"{rotations} x {pair[0]} x {pair[1]} = {points}"
        )


def check_sample_shape(shape: object, name: str = "shape") -> tuple[int, ...]:
    """Check that ``shape`` is a sequence of integers ``>= 0`` (the leading shape of a draw)."""
    if not isinstance(shape, Sequence) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise AdvSpatialError(f"{name} must be a sequence of integers >= 0, e.g. (B, K), got {shape!r}")
    return tuple(shape)
