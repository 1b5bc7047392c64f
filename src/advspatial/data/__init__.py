"""Bundled real data for demos and end-to-end tests (generated in memory from scikit-learn's digits)."""

from advspatial.data.digits import STROKE_THRESHOLD, load_digits_28
from advspatial.data.digits_localization import load_digits_localization
from advspatial.data.digits_segmentation import load_digits_segmentation

__all__ = ["STROKE_THRESHOLD", "load_digits_28", "load_digits_localization", "load_digits_segmentation"]
