"""advspatial: model-aware spatial augmentations for PyTorch.

Search the rotations and translations that hurt a model most, in batched forward passes on the
model's device, and train or evaluate on them.

Convention (everywhere): a transform is a row ``(angle, tx, ty)``: rotation about the image centre by
``angle`` degrees, counter-clockwise positive on screen, then a translation by ``tx`` pixels right and
``ty`` pixels down; bilinear interpolation and zero fill by default. Affine rows add
``(scale, shear_x, shear_y)`` (:class:`AffineBox`). What a candidate is scored against is a task
(:mod:`advspatial.tasks`: classification by default, segmentation, boxes, keypoints).
"""

from advspatial import tasks
from advspatial.curriculum import CurriculumSchedule, CurriculumSpatial
from advspatial.engine import ScoringConfig, score_candidates
from advspatial.errors import AdvSpatialError
from advspatial.geometry import (
    forward_matrices,
    roto_translate,
    roto_translate_boxes,
    roto_translate_masks,
    roto_translate_points,
)
from advspatial.losses import InvarianceLossComponents, InvarianceRegularizedLoss
from advspatial.space import AffineBox, RotoTranslationBox
from advspatial.strategies import (
    GridSearch,
    GridSearchRotoTranslation,
    SearchResult,
    SpatialPGD,
    SpatialSearch,
    WorstOfK,
)

__version__ = "0.2.0"

__all__ = [
    "AdvSpatialError",
    "AffineBox",
    "CurriculumSchedule",
    "CurriculumSpatial",
    "GridSearch",
    "GridSearchRotoTranslation",
    "InvarianceLossComponents",
    "InvarianceRegularizedLoss",
    "RotoTranslationBox",
    "ScoringConfig",
    "SearchResult",
    "SpatialPGD",
    "SpatialSearch",
    "WorstOfK",
    "__version__",
    "forward_matrices",
    "roto_translate",
    "roto_translate_boxes",
    "roto_translate_masks",
    "roto_translate_points",
    "score_candidates",
    "tasks",
]
