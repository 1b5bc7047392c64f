"""Layer 1: pure geometry on tensors, one convention for images, masks, points and boxes."""

from advspatial.geometry.matrices import forward_matrices, sampling_matrices
from advspatial.geometry.points import roto_translate_boxes, roto_translate_points
from advspatial.geometry.warp import roto_translate, roto_translate_masks

__all__ = [
    "forward_matrices",
    "roto_translate",
    "roto_translate_boxes",
    "roto_translate_masks",
    "roto_translate_points",
    "sampling_matrices",
]
