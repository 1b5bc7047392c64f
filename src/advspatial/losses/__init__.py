"""Layer 5: losses built on the searches (the invariance regularizer of Yang et al. 2019)."""

from advspatial.losses.invariance import InvarianceLossComponents, InvarianceRegularizedLoss
from advspatial.tasks.penalties import (
    PAPER_WEIGHTS,
    REGULARIZERS,
    logit_kl_divergence,
    logit_squared_distance,
)

__all__ = [
    "PAPER_WEIGHTS",
    "REGULARIZERS",
    "InvarianceLossComponents",
    "InvarianceRegularizedLoss",
    "logit_kl_divergence",
    "logit_squared_distance",
]
