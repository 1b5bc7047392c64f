"""A minimal training loop for demos and tests."""

from advspatial.training.fit import fit, train_one_epoch

__all__ = ["fit", "train_one_epoch"]
