"""albumentations adapter: a ``DualTransform`` whose parameters come from the model-aware search.

Needs ``albumentations>=2`` (``pip install 'advspatial[albumentations]'``).
"""

from __future__ import annotations

import math
from typing import Any

import albumentations as A
import numpy as np
import torch
from albumentations.core.transforms_interface import BaseTransformInitSchema
from torch import Tensor

from advspatial.adapters._workers import check_search, enter_worker, target_device
from advspatial.errors import AdvSpatialError, check_labels
from advspatial.geometry.points import roto_translate_boxes, roto_translate_points
from advspatial.geometry.warp import roto_translate_masks
from advspatial.strategies.base import SpatialSearch

__all__ = ["SpatialSearchAlbumentations"]


def _to_nchw(image: np.ndarray) -> tuple[Tensor, bool]:
    """HWC / HW numpy image -> float ``(1, C, H, W)`` in ``[0, 1]``; also whether it was 2-D."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        shape = image.shape if isinstance(image, np.ndarray) else type(image).__name__
        raise AdvSpatialError(f"image must be a numpy array (H, W) or (H, W, C), got {shape}")
    if image.ndim == 3 and image.shape[-1] > 4 and image.shape[0] in (1, 3, 4):
        raise AdvSpatialError(
            f"image must be laid out (H, W, C) as albumentations expects, got {image.shape} "
            "(channels first?); use image.transpose(1, 2, 0)"
        )
    if image.dtype == np.uint8:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).float() / 255.0
    elif image.dtype == np.float32:
        tensor = torch.from_numpy(np.ascontiguousarray(image))
    else:
        raise AdvSpatialError(f"image dtype must be uint8 or float32, got {image.dtype}")
    flat = tensor.ndim == 2
    hwc = tensor.unsqueeze(-1) if flat else tensor
    return hwc.permute(2, 0, 1).unsqueeze(0), flat


def _from_nchw(tensor: Tensor, flat: bool, dtype: np.dtype[Any]) -> np.ndarray:
    hwc = tensor[0].permute(1, 2, 0)
    hwc = hwc[..., 0] if flat else hwc
    if dtype == np.uint8:
        return np.ascontiguousarray((hwc * 255.0).round().clamp(0, 255).to(torch.uint8).numpy())
    return np.ascontiguousarray(hwc.numpy())


class SpatialSearchAlbumentations(A.DualTransform):  # type: ignore[misc]
    """Apply the worst roto-translation the search finds, inside ``A.Compose``.

    The label is read from the call (``compose(image=img, label=y, ...)``, key ``label_key``), the
    search runs on the model with the image as float in ``[0, 1]`` (``uint8 / 255`` or ``float32``
    as given), and the image, masks, boxes and keypoints all follow the chosen ``(angle, tx, ty)``.

    Convention:
        Rows ``(angle, tx, ty)``: degrees counter-clockwise on screen (as ``A.Rotate``), then pixels
        right and down, about the image centre. Images are warped with :func:`advspatial.roto_translate`
        (the search's interpolation and padding), masks with :func:`advspatial.roto_translate_masks`
        (nearest, ``mask_fill`` outside), boxes (any format ``BboxParams`` accepts; Compose hands
        them over normalised) by the enclosing box of the moved corners, unclamped (Compose then
        clips or drops them as its ``BboxParams`` say), keypoints at pixel-index coordinates
        (pixel ``(row i, col j)`` is ``(j, i)``, as albumentations) moved exactly, their angle
        turned with the image.

    Args:
        search: the strategy, e.g. :class:`advspatial.WorstOfK` (it holds the model).
        label_key: the key of the class index in the call, or ``None`` to score without labels.
        mask_fill: value of mask pixels that come from outside the mask.
        p: probability of applying the transform.

    Example:
        >>> from advspatial import WorstOfK
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> pipeline = A.Compose([SpatialSearchAlbumentations(WorstOfK(model, k=4))])
        >>> out = pipeline(image=np.zeros((8, 8, 1), np.uint8), mask=np.ones((8, 8), np.uint8), label=3)
        >>> out["image"].shape, out["mask"].shape, out["label"]
        ((8, 8, 1), (8, 8), 3)
    """

    class InitSchema(BaseTransformInitSchema):  # type: ignore[misc]
        """albumentations validates ``__init__`` arguments against this; the model must be declared."""

        search: Any
        label_key: str | None
        mask_fill: float

    def __init__(
        self,
        search: SpatialSearch,
        label_key: str | None = "label",
        mask_fill: float = 0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.search = check_search(search)
        self.label_key = label_key
        self.mask_fill = mask_fill
        self._worker_seed: dict[str, int] = {}

    @property
    def targets_as_params(self) -> list[str]:
        """The search needs the image (and reads the label from the call)."""
        return ["image"]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Run the search on the call's image and label; the chosen row is ``params["roto"]``."""
        images, _ = _to_nchw(data["image"])
        device = target_device(self.search, images.device)
        images = images.to(device)
        labels = None
        if self.label_key is not None:
            if self.label_key not in data:
                raise AdvSpatialError(
                    f"SpatialSearchAlbumentations needs the image's class index: call the pipeline with "
                    f"{self.label_key}=..., or construct it with label_key=None to score against the "
                    f"model's own prediction; got keys {sorted(data)}"
                )
            raw = data[self.label_key]
            if isinstance(raw, bool) or not isinstance(raw, int | np.integer | Tensor | np.ndarray):
                raise AdvSpatialError(f"{self.label_key} must be an integer class index, got {raw!r}")
            labels = check_labels(torch.as_tensor(np.asarray(raw)).reshape(-1), 1, device, self.label_key)
        enter_worker(self.search, type(self).__name__, self._worker_seed)
        result = self.search.search(images, labels)
        return {"roto": result.params.detach().cpu()}

    def apply(self, img: np.ndarray, roto: Tensor, **params: Any) -> np.ndarray:
        """Warp an image with the chosen row (``uint8`` is rounded back after a float warp)."""
        images, flat = _to_nchw(img)
        return _from_nchw(self.search.apply(images, roto.to(images.dtype)), flat, img.dtype)

    def apply_to_mask(self, mask: np.ndarray, roto: Tensor, **params: Any) -> np.ndarray:
        """Move a mask ``(H, W)`` or ``(H, W, C)`` by nearest neighbour."""
        tensor = torch.from_numpy(np.ascontiguousarray(mask))
        stacked = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).unsqueeze(0)
        moved = roto_translate_masks(stacked, roto.double(), fill=self.mask_fill)[0]
        return np.ascontiguousarray((moved if tensor.ndim == 2 else moved.permute(1, 2, 0)).numpy())

    def apply_to_bboxes(self, bboxes: np.ndarray, roto: Tensor, **params: Any) -> np.ndarray:
        """Move normalised ``(x_min, y_min, x_max, y_max, ...)`` boxes."""
        if len(bboxes) == 0:
            return bboxes
        height, width = params["shape"][:2]
        scale = np.array([width, height, width, height], dtype=np.float64)
        pixels = torch.from_numpy(bboxes[:, :4].astype(np.float64) * scale).unsqueeze(0)
        moved = roto_translate_boxes(pixels, roto.double(), (height, width), clamp=False)[0].numpy()
        out = bboxes.copy()
        out[:, :4] = moved / scale
        return out

    def apply_to_keypoints(self, keypoints: np.ndarray, roto: Tensor, **params: Any) -> np.ndarray:
        """Move ``(x, y, angle, scale, ...)`` keypoints (pixel-index ``x, y``, angle in radians)."""
        if len(keypoints) == 0:
            return keypoints
        height, width = params["shape"][:2]
        centres = torch.from_numpy(keypoints[:, :2].astype(np.float64) + 0.5).unsqueeze(0)
        moved = roto_translate_points(centres, roto.double(), (height, width))[0].numpy() - 0.5
        out = keypoints.copy()
        out[:, :2] = moved
        if out.shape[1] > 2:
            out[:, 2] = np.mod(out[:, 2] + math.radians(float(roto[0, 0])), 2 * math.pi)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Arguments shown in ``repr`` (the search holds a model, which albumentations cannot serialise)."""
        return ("label_key", "mask_fill")
