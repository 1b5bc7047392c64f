"""Layer 7: evaluation of models under spatial searches, with per-sample details and plots."""

from advspatial.evaluation.accuracy import AccuracyReport, evaluate_accuracy
from advspatial.evaluation.landscape import LossLandscape, loss_landscape
from advspatial.evaluation.rotation_profile import RotationProfile, rotation_profile
from advspatial.evaluation.sweeps import (
    SweepResult,
    first_order_accuracy,
    grid_accuracy,
    natural_accuracy,
    random_accuracy,
    robustness_sweep,
    search_accuracy,
    worst_of_k_accuracy,
)

__all__ = [
    "AccuracyReport",
    "LossLandscape",
    "RotationProfile",
    "SweepResult",
    "evaluate_accuracy",
    "first_order_accuracy",
    "grid_accuracy",
    "loss_landscape",
    "natural_accuracy",
    "random_accuracy",
    "robustness_sweep",
    "rotation_profile",
    "search_accuracy",
    "worst_of_k_accuracy",
]
