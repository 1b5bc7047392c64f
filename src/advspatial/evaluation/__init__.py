"""Layer 7: evaluation of models under spatial searches."""

from advspatial.evaluation.accuracy import AccuracyReport, evaluate_accuracy
from advspatial.evaluation.profiles import (
    Profile,
    invariance_profile,
    pgd_accuracy,
    robustness_profile,
    rotation_accuracy,
)

__all__ = [
    "AccuracyReport",
    "Profile",
    "evaluate_accuracy",
    "invariance_profile",
    "pgd_accuracy",
    "robustness_profile",
    "rotation_accuracy",
]
