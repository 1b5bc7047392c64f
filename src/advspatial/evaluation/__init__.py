"""Layer 7: evaluation of models under spatial searches, with per-sample details and plots.

Every metric walks the data once through :func:`advspatial.evaluation.walk.walk`; under
``torchrun`` the same function shards the data and returns the single-process result on every rank.
"""

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
    "LossLandscape",
    "Profile",
    "RotationProfile",
    "SweepResult",
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
