"""Layer 2: the parameter space (ranges, uniform sampling, grids)."""

from advspatial.space.box import RotoTranslationBox

__all__ = ["RotoTranslationBox"]
