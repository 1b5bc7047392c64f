"""CuSP (Kamath et al. 2021): a curriculum of random rotations and l-infinity PGD (layer 4).

The Lightning callback lives in :mod:`advspatial.curriculum.lightning_callback` and is imported only
from there, so that this package works without Lightning.
"""

from advspatial.curriculum.cusp import CurriculumSpatial
from advspatial.curriculum.pgd import linf_pgd, trades_loss
from advspatial.curriculum.schedule import CurriculumSchedule, curriculum_stage, stage_at_epoch

__all__ = [
    "CurriculumSchedule",
    "CurriculumSpatial",
    "curriculum_stage",
    "linf_pgd",
    "stage_at_epoch",
    "trades_loss",
]
