"""Layer 2: the parameter space (ranges, uniform sampling, grids)."""

from advspatial.space.affine import AffineBox, Space, check_space
from advspatial.space.box import RotoTranslationBox

__all__ = ["AffineBox", "RotoTranslationBox", "Space", "check_space"]
