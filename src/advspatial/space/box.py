"""The parameter space: a symmetric box of rotations and translations (layer 2)."""

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

__all__ = ["RotoTranslationBox", "check_rows", "grid_axis"]


def check_rows(params: object, columns: int, space: str, name: str = "params") -> Tensor:
    """Check that ``params`` is a float tensor ``(..., columns)``: the rows of ``space``."""
    if not isinstance(params, Tensor) or params.ndim < 1 or params.shape[-1] != columns:
        shape = tuple(params.shape) if isinstance(params, Tensor) else type(params).__name__
        raise AdvSpatialError(
            f"{name} must be a tensor of shape (..., {columns}) (rows of {space}), got {shape}"
        )
    if not params.is_floating_point():
        raise AdvSpatialError(f"{name} must be a floating point tensor, got dtype {params.dtype}")
    return params


Bounds = tuple[tuple[float, ...], tuple[float, ...]]


def grid_rows(axes: Sequence[Tensor]) -> Tensor:
    """Every combination of the per-axis values, the first axis slowest: ``(prod(len), len(axes))``."""
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def clip_rows(params: Tensor, bounds: Bounds) -> Tensor:
    """``params`` clipped axis by axis into ``bounds = (lows, highs)``."""
    lows, highs = (torch.tensor(b, device=params.device, dtype=params.dtype) for b in bounds)
    return torch.maximum(torch.minimum(params, highs), lows)


def rows_within(params: Tensor, bounds: Bounds, atol: float) -> Tensor:
    """Whether each row lies within ``bounds = (lows, highs)``, with tolerance ``atol``."""
    lows, highs = (torch.tensor(b, device=params.device, dtype=params.dtype) for b in bounds)
    return ((params >= lows - atol) & (params <= highs + atol)).all(dim=-1)


def grid_axis(low: float, high: float, count: int, *, geometric: bool = False) -> Tensor:
    """``count`` float64 points from ``low`` to ``high`` (the midpoint of the range when ``count == 1``).

    With ``geometric=True`` (scale axes, ``low <= 1 <= high``) the points are evenly spaced in
    ``log``; an odd count puts one on ``1`` (half of the others on each side, evenly spaced in
    ``log`` on each side), so the identity is on the grid as it is for the symmetric axes.
    """
    if not geometric:
        if count == 1:
            return torch.tensor([(low + high) / 2.0], dtype=torch.float64)
        return torch.linspace(low, high, count, dtype=torch.float64)
    if count == 1:
        return torch.ones(1, dtype=torch.float64)
    log_low, log_high = math.log(low), math.log(high)
    if count % 2 == 0:
        return torch.linspace(log_low, log_high, count, dtype=torch.float64).exp()
    half = count // 2 + 1
    below = torch.linspace(log_low, 0.0, half, dtype=torch.float64)
    above = torch.linspace(0.0, log_high, half, dtype=torch.float64)
    return torch.cat([below, above[1:]]).exp()


@dataclass(frozen=True, init=False)
class RotoTranslationBox:
    """The box ``[-r, r] x [-tx, tx] x [-ty, ty]`` of ``(angle, tx, ty)`` parameters.

    Convention: ``angle`` in degrees (counter-clockwise positive), translations in pixels; see
    :func:`advspatial.roto_translate`. The 3-axis case of :class:`advspatial.AffineBox`.

    Args:
        max_rotation: half-width ``r`` of the rotation range in degrees.
        max_translation: half-width in pixels, a scalar for both axes or an ``(x, y)`` pair.

    Example:
        >>> RotoTranslationBox(30, 3)
        RotoTranslationBox(max_rotation=30.0, max_translation=(3.0, 3.0))
        >>> box = RotoTranslationBox.of(30, (3, 2))
        >>> box.grid(3, 3).shape
        torch.Size([27, 3])
        >>> box.contains(torch.tensor([[30.0, -3.0, 2.0], [31.0, 0.0, 0.0]])).tolist()
        [True, False]
    """

    max_rotation: float
    max_translation: tuple[float, float]

    columns: ClassVar[int] = 3
    """Width of the parameter rows: ``(angle, tx, ty)``."""

    def __init__(self, max_rotation: float = 30.0, max_translation: float | Sequence[float] = 3.0) -> None:
        (rotation,) = symmetric_range(max_rotation, "max_rotation", 1)
        tx, ty = symmetric_range(max_translation, "max_translation", 2)
        object.__setattr__(self, "max_rotation", rotation)
        object.__setattr__(self, "max_translation", (tx, ty))

    @classmethod
    def of(cls, max_rotation: float, max_translation: float | Sequence[float]) -> RotoTranslationBox:
        """Validate and normalise ``30`` / ``(3, 2)`` style arguments into a box (same as the constructor)."""
        return cls(max_rotation, max_translation)

    @property
    def half_widths(self) -> tuple[float, float, float]:
        """``(r, tx, ty)``."""
        return (self.max_rotation, *self.max_translation)

    @property
    def bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(lows, highs)`` per axis."""
        return tuple(-h for h in self.half_widths), self.half_widths

    def identity(
        self,
        shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``(*shape, 3)`` identity rows (zeros)."""
        return torch.zeros((*shape, 3), device=device, dtype=dtype)

    def _limits(self, device: torch.device | str | None, dtype: torch.dtype) -> Tensor:
        return torch.tensor(self.half_widths, device=device, dtype=dtype)

    def sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Draw parameters uniformly from the box.

        Args:
            shape: leading shape, e.g. ``(B, K)``; the result is ``(*shape, 3)``.
            generator: the caller's generator; its device is used for the draw.
            device: where the result goes.
            dtype: float dtype of the result.
        """
        shape, generator = check_sample_shape(shape), optional_generator(generator)
        draw_device = generator.device if generator is not None else device
        unit = torch.rand((*shape, 3), generator=generator, device=draw_device, dtype=torch.float64)
        limits = self._limits(draw_device, torch.float64)
        return ((unit * 2.0 - 1.0) * limits).to(device=device, dtype=dtype)

    def grid(
        self,
        rotations: int,
        translations: int | Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Every point of a regular grid, ``linspace`` per axis (identity included for odd counts).

        Args:
            rotations: number of angles in ``[-r, r]``.
            translations: number of offsets per axis, a scalar or an ``(x, y)`` pair.

        Returns:
            ``(rotations * nx * ny, 3)`` rows ordered angle-major, then ``tx``, then ``ty``.
        """
        n_rot = positive_int(rotations, "rotations")
        if isinstance(translations, int) and not isinstance(translations, bool):
            n_x = n_y = positive_int(translations, "translations")
        elif isinstance(translations, Sequence) and len(translations) == 2:
            n_x = positive_int(translations[0], "translations[0]")
            n_y = positive_int(translations[1], "translations[1]")
        else:
            raise AdvSpatialError(
                f"translations must be an int or an (x, y) pair of ints, got {translations!r}"
            )
        axes = [grid_axis(-h, h, n) for h, n in zip(self.half_widths, (n_rot, n_x, n_y), strict=True)]
        return grid_rows(axes).to(device=device, dtype=dtype)

    def project(self, params: Tensor) -> Tensor:
        """Clip ``(..., 3)`` parameters into the box."""
        return clip_rows(check_rows(params, 3, "a RotoTranslationBox"), self.bounds)

    def contains(self, params: Tensor, atol: float = 1e-6) -> Tensor:
        """Whether each ``(..., 3)`` row lies in the box (with tolerance ``atol``)."""
        return rows_within(check_rows(params, 3, "a RotoTranslationBox"), self.bounds, atol)
