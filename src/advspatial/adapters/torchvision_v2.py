"""torchvision ``transforms.v2`` adapter: a ``v2.Transform`` that searches, then moves every target.

Needs ``torchvision`` (``pip install 'advspatial[torchvision]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from advspatial.adapters._workers import check_search, enter_worker, target_device
from advspatial.errors import AdvSpatialError, check_labels
from advspatial.geometry.points import roto_translate_boxes, roto_translate_points
from advspatial.geometry.warp import roto_translate_masks
from advspatial.strategies.base import SpatialSearch

__all__ = ["SpatialSearchV2"]

LabelsGetter = Callable[[Any], Any]
_PLAIN_BOX_FORMATS = ("XYXY", "XYWH", "CXCYWH")


def _labels_in_mapping(mapping: Mapping[Any, Any]) -> Any:
    for key in mapping:
        if isinstance(key, str) and key.lower() in ("label", "labels"):
            return mapping[key]
    return None


def _default_labels(sample: Any) -> Any:
    """``(image, label, ...)``, ``(image, {"label": ...})`` or ``{"image": ..., "label": ...}``."""
    if isinstance(sample, tuple | list) and len(sample) >= 2:
        second = sample[1]
        return _labels_in_mapping(second) if isinstance(second, Mapping) else second
    if isinstance(sample, Mapping):
        return _labels_in_mapping(sample)
    return None


def _as_label_tensor(labels: Any, batch: int, batched: bool) -> Tensor:
    if isinstance(labels, bool) or not isinstance(labels, int | Tensor):
        raise AdvSpatialError(
            "SpatialSearchV2 needs the sample's label: pass (image, label), (image, {'label': ...}) or "
            "{'image': ..., 'label': ...}, give labels_getter=callable, or labels_getter=None to score "
            f"against the model's own prediction; found {type(labels).__name__}"
        )
    tensor = torch.as_tensor(labels)
    if not batched and tensor.ndim == 0:
        tensor = tensor.reshape(1)
    return tensor if tensor.ndim else tensor.reshape(1).expand(batch)


class SpatialSearchV2(v2.Transform):  # type: ignore[misc]
    """A ``transforms.v2`` transform that applies each image's worst roto-translation.

    On a single sample ``(image, label, ...)`` (image ``(C, H, W)``: tensor, ``tv_tensors.Image`` or
    PIL) it runs the search on that image; on a batch ``(images (B, C, H, W), labels (B,))``, found
    the way ``v2.CutMix`` finds its labels, it searches the whole batch at once. ``tv_tensors.Mask``,
    ``BoundingBoxes`` and ``KeyPoints`` in the sample move with the same chosen rows; other inputs
    pass through. The model is held by reference (it is not a submodule: ``state_dict()`` is empty).

    Convention:
        Rows ``(angle, tx, ty)``: degrees counter-clockwise on screen, then pixels right and down,
        about the image centre. The image is warped with the search's interpolation and padding
        (bilinear, zeros by default) exactly as :func:`advspatial.roto_translate` does, masks by
        nearest neighbour with ``mask_fill`` outside (:func:`advspatial.roto_translate_masks`),
        boxes as torchvision's ``affine`` does (enclosing box of the moved corners, clamped to the
        canvas unless ``clamping_mode=None``), keypoints exactly (not clamped). The model scores the
        image as it reaches this transform, as float in ``[0, 1]`` for integer images and PIL; the
        output keeps the input's type and dtype.

    Args:
        search: the strategy, e.g. :class:`advspatial.WorstOfK` (it holds the model).
        labels_getter: ``"default"`` (the heuristic above), a callable ``sample -> labels``, or
            ``None`` to score without labels (divergence from the clean prediction).
        mask_fill: value of mask pixels that come from outside the mask.

    Example:
        >>> from advspatial import WorstOfK
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> pipeline = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
        ...                        SpatialSearchV2(WorstOfK(model, k=4))])
        >>> image, label = pipeline(torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8), 3)
        >>> type(image).__name__, image.shape, label
        ('Image', torch.Size([1, 8, 8]), 3)
        >>> len(pipeline.state_dict())
        0
    """

    def __init__(
        self,
        search: SpatialSearch,
        *,
        labels_getter: str | LabelsGetter | None = "default",
        mask_fill: int | float = 0,
    ) -> None:
        super().__init__()
        self.search = check_search(search)
        if not (labels_getter is None or labels_getter == "default" or callable(labels_getter)):
            raise AdvSpatialError(
                f"labels_getter must be 'default', a callable or None, got {labels_getter!r}"
            )
        if isinstance(mask_fill, bool) or not isinstance(mask_fill, int | float):
            raise AdvSpatialError(f"mask_fill must be a number, got {mask_fill!r}")
        self.labels_getter = labels_getter
        self.mask_fill = mask_fill
        self._worker_seed: dict[str, int] = {}

    def _labels(self, sample: Any) -> Any:
        if self.labels_getter is None:
            return None
        if self.labels_getter == "default":
            return _default_labels(sample)
        return self.labels_getter(sample)  # type: ignore[operator]

    @staticmethod
    def _find_image(flat: list[Any], labels: Any) -> int:
        explicit = [i for i, x in enumerate(flat) if isinstance(x, tv_tensors.Image)]
        if len(explicit) > 1:
            raise AdvSpatialError(f"SpatialSearchV2 expects one image per sample, got {len(explicit)}")
        if explicit:
            return explicit[0]
        for i, x in enumerate(flat):
            if isinstance(x, PIL.Image.Image) or (
                type(x) is Tensor and x is not labels and x.ndim >= 2  # a pure tensor image, as v2 reads it
            ):
                return i
        raise AdvSpatialError(
            "SpatialSearchV2 found no image in the sample: expected a tensor (C, H, W) / (B, C, H, W), "
            "a tv_tensors.Image or a PIL image"
        )

    def forward(self, *inputs: Any) -> Any:
        """Search the sample's (or batch's) image, then move the image and its targets."""
        sample = inputs if len(inputs) > 1 else inputs[0]
        raw_labels = self._labels(sample)
        flat, spec = tree_flatten(sample)
        index = self._find_image(flat, raw_labels)
        image = flat[index]
        tensor = F.pil_to_tensor(image) if isinstance(image, PIL.Image.Image) else image.as_subclass(Tensor)
        if tensor.ndim not in (3, 4) or (
            tensor.shape[-3] not in (1, 2, 3, 4) and tensor.shape[-1] in (1, 3, 4)
        ):
            raise AdvSpatialError(
                "SpatialSearchV2 expects images laid out (C, H, W) or (B, C, H, W) (channels first, "
                f"as torchvision does), got shape {tuple(tensor.shape)}"
            )
        batched = tensor.ndim == 4
        images = tensor if batched else tensor.unsqueeze(0)
        floats = images if images.is_floating_point() else F.to_dtype(images, torch.float32, scale=True)
        device = target_device(self.search, floats.device)
        floats = floats.to(device)
        labels = None
        if self.labels_getter is not None:
            labels = check_labels(
                _as_label_tensor(raw_labels, floats.shape[0], batched), floats.shape[0], device
            )
        enter_worker(self.search, type(self).__name__, self._worker_seed)
        result = self.search.search(floats, labels)
        params = result.params
        warped = self.search.apply(floats, params).to(images.device)
        if not images.is_floating_point():
            warped = F.to_dtype(warped, images.dtype, scale=True)
        out_image: Any = warped if batched else warped[0]
        if isinstance(image, PIL.Image.Image):
            out_image = F.to_pil_image(out_image, mode=image.mode)
        elif isinstance(image, tv_tensors.TVTensor):
            out_image = tv_tensors.wrap(out_image, like=image)
        size = (images.shape[-2], images.shape[-1])
        params_cpu = params.cpu()
        flat_out = [
            out_image if i == index else self._move_target(x, params_cpu, batched, size)
            for i, x in enumerate(flat)
        ]
        return tree_unflatten(flat_out, spec)

    def _move_target(self, target: Any, params: Tensor, batched: bool, size: tuple[int, int]) -> Any:
        batch = params.shape[0]
        if isinstance(target, tv_tensors.Mask):
            if target.shape[-2:] != size or target.ndim < 2 + batched or target.ndim > 3 + batched:
                raise AdvSpatialError(
                    f"Mask must be {'(B, H, W) or (B, N, H, W)' if batched else '(H, W) or (N, H, W)'} "
                    f"on the image's canvas {size}, got shape {tuple(target.shape)}"
                )
            plain = target.as_subclass(Tensor)
            stacked = plain if batched else plain.unsqueeze(0)
            moved = roto_translate_masks(stacked, params.to(plain.device), fill=self.mask_fill)
            return tv_tensors.wrap(moved if batched else moved[0], like=target)
        if isinstance(target, tv_tensors.BoundingBoxes):
            return self._move_boxes(target, params, batched, size)
        if isinstance(target, tv_tensors.KeyPoints):
            if tuple(target.canvas_size) != size:
                raise AdvSpatialError(f"KeyPoints canvas_size must be {size}, got {target.canvas_size}")
            plain = target.as_subclass(Tensor)
            if batched and (plain.ndim < 2 or plain.shape[0] != batch):
                raise AdvSpatialError(
                    f"KeyPoints in a batch must have shape (B, ..., 2) with B = {batch}, "
                    f"got {tuple(plain.shape)}"
                )
            rows = plain.reshape(batch, -1, 2)
            moved = roto_translate_points(rows, params.to(plain.device), size).reshape(plain.shape)
            return tv_tensors.wrap(moved, like=target)
        if isinstance(target, tv_tensors.TVTensor):
            raise AdvSpatialError(
                f"SpatialSearchV2 does not support {type(target).__name__} in a sample (supported: one "
                "image, Mask, BoundingBoxes in XYXY/XYWH/CXCYWH, KeyPoints)"
            )
        return target

    @staticmethod
    def _move_boxes(
        boxes: tv_tensors.BoundingBoxes, params: Tensor, batched: bool, size: tuple[int, int]
    ) -> tv_tensors.BoundingBoxes:
        if batched:
            raise AdvSpatialError(
                "BoundingBoxes hold one sample's boxes (N, 4); apply SpatialSearchV2 per sample "
                "(e.g. in the Dataset) to move boxes, not on a batch"
            )
        if boxes.format.name not in _PLAIN_BOX_FORMATS:
            raise AdvSpatialError(
                f"BoundingBoxes format must be one of {_PLAIN_BOX_FORMATS}, got {boxes.format.name} "
                "(rotated boxes are not supported)"
            )
        if tuple(boxes.canvas_size) != size:
            raise AdvSpatialError(f"BoundingBoxes canvas_size must be {size}, got {boxes.canvas_size}")
        xyxy = F.convert_bounding_box_format(
            boxes.as_subclass(Tensor), old_format=boxes.format, new_format=tv_tensors.BoundingBoxFormat.XYXY
        )
        clamp = getattr(boxes, "clamping_mode", "soft") is not None
        moved = roto_translate_boxes(xyxy.unsqueeze(0), params.to(xyxy.device), size, clamp=clamp)[0]
        back = F.convert_bounding_box_format(
            moved, old_format=tv_tensors.BoundingBoxFormat.XYXY, new_format=boxes.format
        )
        return tv_tensors.wrap(back, like=boxes)

    def extra_repr(self) -> str:
        return f"search={self.search!r}, labels_getter={self.labels_getter!r}, mask_fill={self.mask_fill!r}"
