"""Bundled real data for demos and end-to-end tests."""

from advspatial.data.digits import load_digits_28

__all__ = ["load_digits_28"]
