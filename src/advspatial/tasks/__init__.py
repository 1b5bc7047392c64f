"""Tasks: what a candidate transform is scored against (classification, segmentation, boxes, points).

Between the geometry kernels (layer 1) and the search engine (layer 3): a task moves the targets of a
chunk of (image, candidate) pairs with the candidate rows, gives each pair's objective (higher = worse
for the model) and whether the model is still right. Every search, the loss wrapper, the evaluation
and the adapters take ``task=`` (default :class:`Classification`).
"""

from advspatial.tasks.base import RegularizationDefaults, Task, check_task
from advspatial.tasks.classification import Classification
from advspatial.tasks.regression import BoxRegression, KeypointRegression, box_iou
from advspatial.tasks.segmentation import Segmentation

__all__ = [
    "BoxRegression",
    "Classification",
    "KeypointRegression",
    "RegularizationDefaults",
    "Segmentation",
    "Task",
    "box_iou",
    "check_task",
]
