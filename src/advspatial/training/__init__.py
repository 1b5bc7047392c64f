"""A minimal training loop for demos and tests."""

from advspatial.training.fit import fit

__all__ = ["fit"]
