"""Layer 7: evaluation of models under spatial searches, with per-sample details and plots."""

from advspatial.evaluation.accuracy import AccuracyReport, evaluate_accuracy
from advspatial.evaluation.landscape import LossLandscape, loss_landscape
from advspatial.evaluation.profiles import (
    Profile,
    invariance_profile,
    pgd_accuracy,
    robustness_profile,
    rotation_accuracy,
)
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
    "Profile",
    "RotationProfile",
    "SweepResult",
    "evaluate_accuracy",
    "first_order_accuracy",
    "grid_accuracy",
    "invariance_profile",
    "loss_landscape",
    "natural_accuracy",
    "pgd_accuracy",
    "random_accuracy",
    "robustness_profile",
    "robustness_sweep",
    "rotation_accuracy",
    "rotation_profile",
    "search_accuracy",
    "worst_of_k_accuracy",
]
