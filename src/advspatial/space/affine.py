"""The affine parameter space: rotation, translation, scale and shear ranges (layer 2)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from advspatial.errors import (
    AdvSpatialError,
    check_sample_shape,
    optional_generator,
    positive_int,
    symmetric_range,
)
from advspatial.space.box import RotoTranslationBox, check_rows, clip_rows, grid_axis, grid_rows, rows_within

__all__ = ["MAX_SHEAR", "AffineBox", "Space", "check_space"]

MAX_SHEAR = 60.0
"""Largest shear half-width in degrees a box accepts (``tan(60) = 1.73``: beyond it the image is a sliver)."""


def _scale_range(value: object) -> tuple[float, float]:
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise AdvSpatialError(f"scale must be a (low, high) pair of numbers around 1, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 or high <= 0:
        raise AdvSpatialError(f"scale must have finite positive bounds, got {value!r}")
    if not low <= 1.0 <= high:
        raise AdvSpatialError(
            f"scale must be a (low, high) pair with low <= 1 <= high (the identity inside), got {value!r}"
        )
    return low, high


@dataclass(frozen=True, init=False)
class AffineBox:
    """The box of affine rows ``(angle, tx, ty, scale, shear_x, shear_y)``.

    ``[-r, r] x [-tx, tx] x [-ty, ty] x [low, high] x [-sx, sx] x [-sy, sy]``: the ranges of
    torchvision's ``RandomAffine(degrees, translate, scale, shear)`` in the library's convention
    (see :func:`advspatial.roto_translate`; translations in pixels, shears in degrees).
    :class:`RotoTranslationBox` is the 3-axis case.

    Sampling: every axis uniform, except ``scale``, which is log-uniform on ``[low, high]`` (zooming
    in by ``x`` is as likely as zooming out by ``1 / x`` when the range is symmetric in log). Grids:
    ``linspace`` per axis, scale evenly spaced in log; an odd count includes the identity on every
    axis.

    Args:
        max_rotation: half-width of the rotation range in degrees.
        max_translation: half-width in pixels, a scalar for both axes or an ``(x, y)`` pair.
        scale: ``(low, high)`` with ``0 < low <= 1 <= high``; ``(1, 1)`` for no zoom.
        shear: half-width in degrees, a scalar for both axes or an ``(x, y)`` pair, at most 60.

    Example:
        >>> box = AffineBox(max_rotation=30, max_translation=3, scale=(0.8, 1.25), shear=10)
        >>> grid = box.grid((3, 1, 1, 3, 1, 1), dtype=torch.float64)
        >>> grid.shape, grid[:, 0].unique().tolist(), grid[:, 3].unique().tolist()
        (torch.Size([9, 6]), [-30.0, 0.0, 30.0], [0.8, 1.0, 1.25])
        >>> draws = box.sample((4, 10), generator=torch.Generator().manual_seed(0))
        >>> draws.shape, bool(box.contains(draws).all())
        (torch.Size([4, 10, 6]), True)
    """

    max_rotation: float
    max_translation: tuple[float, float]
    scale: tuple[float, float]
    shear: tuple[float, float]

    columns: ClassVar[int] = 6
    """Width of the parameter rows: ``(angle, tx, ty, scale, shear_x, shear_y)``."""

    def __init__(
        self,
        max_rotation: float = 30.0,
        max_translation: float | Sequence[float] = 3.0,
        scale: Sequence[float] = (1.0, 1.0),
        shear: float | Sequence[float] = 0.0,
    ) -> None:
        roto = RotoTranslationBox(max_rotation, max_translation)
        shear_x, shear_y = symmetric_range(shear, "shear", 2)
        if max(shear_x, shear_y) > MAX_SHEAR:
            raise AdvSpatialError(f"shear must be at most {MAX_SHEAR:g} degrees per axis, got {shear!r}")
        object.__setattr__(self, "max_rotation", roto.max_rotation)
        object.__setattr__(self, "max_translation", roto.max_translation)
        object.__setattr__(self, "scale", _scale_range(scale))
        object.__setattr__(self, "shear", (shear_x, shear_y))

    @property
    def roto_translation(self) -> RotoTranslationBox:
        """The box's first three axes."""
        return RotoTranslationBox(self.max_rotation, self.max_translation)

    @property
    def bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(lows, highs)`` per axis."""
        r, (tx, ty), (low, high), (sx, sy) = self.max_rotation, self.max_translation, self.scale, self.shear
        return (-r, -tx, -ty, low, -sx, -sy), (r, tx, ty, high, sx, sy)

    def _limits(self, device: torch.device | str | None, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        lows, highs = self.bounds
        return torch.tensor(lows, device=device, dtype=dtype), torch.tensor(highs, device=device, dtype=dtype)

    def identity(
        self,
        shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``(*shape, 6)`` identity rows ``(0, 0, 0, 1, 0, 0)``."""
        rows = torch.zeros((*shape, 6), device=device, dtype=dtype)
        rows[..., 3] = 1.0
        return rows

    def sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw rows from the box: uniform per axis, ``scale`` log-uniform.

        Six uniforms per row, consecutive in the generator's stream, so drawing ``(B1, K)`` then
        ``(B2, K)`` gives the rows of one ``(B1 + B2, K)`` draw (a dataset walked in batches gets the
        same candidates whatever the batch size).

        Args:
            shape: leading shape, e.g. ``(B, K)``; the result is ``(*shape, 6)``.
            generator: the caller's generator; its device is used for the draw.
            device: where the result goes.
            dtype: float dtype of the result.
        """
        shape, generator = check_sample_shape(shape), optional_generator(generator)
        draw_device = generator.device if generator is not None else device
        unit = torch.rand((*shape, 6), generator=generator, device=draw_device, dtype=torch.float64)
        lows, highs = self._limits(draw_device, torch.float64)
        log_low, log_high = math.log(self.scale[0]), math.log(self.scale[1])
        rows = lows + unit * (highs - lows)
        scale = torch.exp(log_low + unit[..., 3] * (log_high - log_low)).clamp(*self.scale)
        rows = torch.cat([rows[..., :3], scale.unsqueeze(-1), rows[..., 4:]], dim=-1)
        return rows.to(device=device, dtype=dtype)

    def grid(
        self,
        steps: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Every point of a regular grid with ``steps[i]`` points on axis ``i``.

        ``linspace`` per axis, ``scale`` evenly spaced in log (see :func:`advspatial.space.box.grid_axis`);
        a single point sits on the identity of its axis, an odd count includes it.

        Args:
            steps: six positive counts ``(rotations, tx, ty, scale, shear_x, shear_y)``.

        Returns:
            ``(prod(steps), 6)`` rows, the first axis slowest and the last fastest.
        """
        if isinstance(steps, str) or not isinstance(steps, Sequence) or len(steps) != 6:
            raise AdvSpatialError(
                "steps must be six positive integers (rotations, tx, ty, scale, shear_x, shear_y), "
                f"got {steps!r}"
            )
        counts = [positive_int(n, f"steps[{i}]") for i, n in enumerate(steps)]
        lows, highs = self.bounds
        axes = [
            grid_axis(low, high, n, geometric=axis == 3)
            for axis, (low, high, n) in enumerate(zip(lows, highs, counts, strict=True))
        ]
        return grid_rows(axes).to(device=device, dtype=dtype)

    def project(self, params: Tensor) -> Tensor:
        """Clip ``(..., 6)`` rows into the box, axis by axis."""
        return clip_rows(check_rows(params, 6, "an AffineBox"), self.bounds)

    def contains(self, params: Tensor, atol: float = 1e-6) -> Tensor:
        """Whether each ``(..., 6)`` row lies in the box (with tolerance ``atol``)."""
        return rows_within(check_rows(params, 6, "an AffineBox"), self.bounds, atol)


Space = RotoTranslationBox | AffineBox
"""A parameter space a search draws from: its rows are ``space.columns`` wide."""


def check_space(value: object, name: str = "space") -> Space:
    """Check that ``value`` is a :class:`RotoTranslationBox` or an :class:`AffineBox`."""
    if not isinstance(value, RotoTranslationBox | AffineBox):
        raise AdvSpatialError(
            f"{name} must be an advspatial.RotoTranslationBox or advspatial.AffineBox, "
            f"got {type(value).__name__}"
        )
    return value
