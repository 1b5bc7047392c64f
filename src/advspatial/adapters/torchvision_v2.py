"""torchvision ``transforms.v2`` adapter: a ``v2.Transform`` that searches, then moves every target.

Needs ``torchvision`` (``pip install 'advspatial[torchvision]'``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from advspatial.adapters._workers import check_search, enter_worker, mask_fill_for, scoring_images
from advspatial.errors import AdvSpatialError, check_labels
from advspatial.geometry.points import roto_translate_boxes, roto_translate_points
from advspatial.geometry.warp import roto_translate_masks
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.result import SearchResult
from advspatial.tasks import BoxRegression, Classification, KeypointRegression, Segmentation, Task

__all__ = ["SpatialSearchV2", "find_labels"]

LabelsGetter = Callable[[Any], Any]
_PLAIN_BOX_FORMATS = ("XYXY", "XYWH", "CXCYWH")
_NOT_READ = object()  # make_params called outside forward: no labels were read from a sample


def _is_pure_tensor(x: Any) -> bool:
    return isinstance(x, Tensor) and not isinstance(x, tv_tensors.TVTensor)


def find_labels(sample: Any) -> Any:
    """Find a sample's labels with torchvision's default heuristic (that of ``v2.CutMix`` and
    ``v2.SanitizeBoundingBoxes``), also accepting a plain ``int``.

    In a tuple or list the second item is used; if it is a tensor (or an int) it is the labels, if it
    is a dict (and for a dict sample) the key equal to ``"labels"`` (any case) wins, else the first key
    that contains ``"label"`` (any case, e.g. ``"class_label"``).

    Example:
        >>> find_labels((None, {"label": 1, "labels": 2})), find_labels({"class_label": 3})
        (2, 3)
        >>> find_labels((None, 4)), find_labels(None)
        (4, None)
    """
    if isinstance(sample, tuple | list):
        if len(sample) < 2:
            return None
        sample = sample[1]
        if _is_pure_tensor(sample) or isinstance(sample, int):
            return sample
    if not isinstance(sample, Mapping):
        return None
    keys = [key for key in sample if isinstance(key, str)]
    for key in keys:
        if key.lower() == "labels":
            return sample[key]
    for key in keys:
        if "label" in key.lower():
            return sample[key]
    return None


def _as_label_tensor(labels: Any, batch: int, batched: bool) -> Tensor:
    if isinstance(labels, bool) or not isinstance(labels, int | Tensor):
        raise AdvSpatialError(
            "SpatialSearchV2 needs the sample's label: pass (image, label), (image, {'labels': ...}) or "
            "{'image': ..., 'label': ...} (found as torchvision's CutMix finds labels), give "
            "labels_getter=callable, or labels_getter=None to score against the model's own prediction; "
            f"found {type(labels).__name__}"
        )
    tensor = torch.as_tensor(labels)
    if not batched and tensor.ndim == 0:
        tensor = tensor.reshape(1)
    return tensor if tensor.ndim else tensor.reshape(1).expand(batch)


def _target_kind(task: Task) -> type[tv_tensors.TVTensor] | None:
    """The item of a sample a dense task scores against; ``None``: labels (classification, custom tasks)."""
    if isinstance(task, Segmentation):
        return tv_tensors.Mask
    if isinstance(task, BoxRegression):
        return tv_tensors.BoundingBoxes
    if isinstance(task, KeypointRegression):
        return tv_tensors.KeyPoints
    return None


def _as_target(task: Task, target: Any, images: Tensor, batched: bool) -> Tensor:
    """The sample's target as ``task`` expects it for the ``(B, C, H, W)`` scored ``images``."""
    batch = images.shape[0]
    if isinstance(task, Classification):
        return check_labels(_as_label_tensor(target, batch, batched), batch, images.device)
    kind = _target_kind(task)
    if kind is None:  # a custom task: what labels_getter returns, one sample's made a batch of one
        if not isinstance(target, Tensor):
            raise AdvSpatialError(
                f"SpatialSearchV2 with {task!r} scores against what labels_getter returns, which must be a "
                f"tensor of the task's targets, got {type(target).__name__}"
            )
        plain = target.as_subclass(Tensor)
        return plain if batched else plain.unsqueeze(0)
    if not isinstance(target, kind):
        raise AdvSpatialError(
            f"SpatialSearchV2 with {task!r} scores against the sample's tv_tensors.{kind.__name__} "
            f"(it moves with the image), got {type(target).__name__}"
        )
    height, width = images.shape[-2:]
    plain = target.as_subclass(Tensor)
    if isinstance(task, Segmentation):  # the target is a Mask
        lead = (batch,) if batched else ()
        shapes = ((*lead, height, width), (*lead, 1, height, width))
        if tuple(plain.shape) not in shapes:
            raise AdvSpatialError(
                f"the Mask scored by {task!r} must be one mask per image, shaped {shapes[0]} or "
                f"{shapes[1]} like the searched image, got {tuple(plain.shape)}"
            )
        task.check_mask_dtype(plain.dtype, f"the Mask scored by {task!r}")
        return plain.reshape(batch, height, width)
    canvas = (int(target.canvas_size[0]), int(target.canvas_size[1]))
    if canvas != (height, width) or not plain.is_floating_point():
        raise AdvSpatialError(
            f"the {kind.__name__} scored by {task!r} must be floating point (a dropped box or an "
            f"out-of-frame point becomes nan) on the searched image's canvas {(height, width)}, got "
            f"{plain.dtype} on canvas {canvas}"
        )
    if isinstance(target, tv_tensors.BoundingBoxes):
        if target.format.name not in _PLAIN_BOX_FORMATS or tuple(plain.shape) != (batch, 4):
            raise AdvSpatialError(
                f"the BoundingBoxes scored by {task!r} must hold exactly one box per image "
                f"({(batch, 4)}) in one of {_PLAIN_BOX_FORMATS}, got {tuple(plain.shape)} in "
                f"{target.format.name}"
            )
        return F.convert_bounding_box_format(
            plain, old_format=target.format, new_format=tv_tensors.BoundingBoxFormat.XYXY
        )
    if plain.ndim < 1 + batched or (batched and plain.shape[0] != batch):
        raise AdvSpatialError(
            f"the KeyPoints scored by {task!r} must be shaped (B, P, 2) with B = {batch} for a batch, "
            f"or (P, 2) for one image, got {tuple(plain.shape)}"
        )
    return plain.reshape(batch, -1, 2)


def _is_image(x: Any) -> bool:
    """An item v2 transforms as an image (``_needs_transform_list`` already dropped extra pure tensors)."""
    return isinstance(x, tv_tensors.Image | PIL.Image.Image) or _is_pure_tensor(x)


def _as_tensor(image: Any) -> Tensor:
    tensor = F.pil_to_tensor(image) if isinstance(image, PIL.Image.Image) else image.as_subclass(Tensor)
    if tensor.ndim not in (3, 4) or (tensor.shape[-3] not in (1, 2, 3, 4) and tensor.shape[-1] in (1, 3, 4)):
        raise AdvSpatialError(
            "SpatialSearchV2 expects images laid out (C, H, W) or (B, C, H, W) (channels first, "
            f"as torchvision does), got shape {tuple(tensor.shape)}"
        )
    return tensor


class SpatialSearchV2(v2.Transform):  # type: ignore[misc]
    """A ``transforms.v2`` transform that applies each image's worst roto-translation.

    It follows v2's extension contract: :meth:`make_params` runs the search and :meth:`transform`
    moves one input with the chosen rows, so ``v2.Compose``, ``v2.RandomApply`` and a replay of
    ``make_params`` on other inputs work as for any v2 transform. Which inputs are transformed is v2's
    own rule: ``tv_tensors.Image``, PIL images, ``Mask``, ``BoundingBoxes``, ``KeyPoints``, and a pure
    tensor only when the sample has no explicit image (then the first one). The search scores the first
    image among them (``(C, H, W)``, or a batch ``(B, C, H, W)`` searched at once); every other image,
    mask, box set and keypoint set moves with the same rows (a second image, e.g. a PIL mask, is warped
    as an image: wrap masks as ``tv_tensors.Mask`` to move them by nearest neighbour). Labels are read
    from the sample with torchvision's heuristic (:func:`find_labels`). The model is held by reference
    (it is not a submodule: ``state_dict()`` is empty). The last search is kept in :attr:`last_result`.

    Dense tasks: with a search whose task is :class:`~advspatial.tasks.Segmentation`,
    :class:`~advspatial.tasks.BoxRegression` or :class:`~advspatial.tasks.KeypointRegression`, the
    target is the sample's one ``Mask`` (one mask per image: ``(H, W)`` or ``(1, H, W)``; ``(B, H, W)``
    for a batch), ``BoundingBoxes`` (exactly one box per image, any plain format; ``(B, 4)`` for a
    batch) or ``KeyPoints`` (floating point), and no label is needed. That item moves as the task
    moves targets, so the returned one equals ``last_result.targets`` (reshaped, and converted back to
    the boxes' format): masks are filled with the task's ``ignore_index``, a box that leaves the frame
    becomes ``nan``, and so does a keypoint out of frame.

    Convention:
        Rows ``(angle, tx, ty)``: degrees counter-clockwise on screen, then pixels right and down,
        about the image centre. Images are warped with the search's interpolation and padding
        (bilinear, zeros by default) exactly as :func:`advspatial.roto_translate` does, masks by
        nearest neighbour with ``mask_fill`` outside (:func:`advspatial.roto_translate_masks`),
        boxes as torchvision's ``affine`` does (enclosing box of the moved corners, clamped to the
        canvas unless ``clamping_mode=None``; as the task moves them for box regression), keypoints
        exactly (not clamped; ``nan`` out of frame for keypoint regression). Boxes and keypoints keep
        their dtype (integer coordinates are truncated, as torchvision does).

    Dtypes:
        The model scores the image as it reaches this transform, as float in ``[0, 1]`` for integer
        images and PIL, cast to the model's floating dtype (a float16 or float64 image with a float32
        model is scored in float32); every output keeps its input's type and dtype.

    Args:
        search: the strategy, e.g. :class:`advspatial.WorstOfK` (it holds the model).
        labels_getter: ``"default"`` (:func:`find_labels`), a callable ``sample -> labels``, or
            ``None`` to score without labels (divergence from the clean prediction).
        mask_fill: value of mask pixels that come from outside the mask; by default the task's
            ``ignore_index`` for segmentation (any other value is refused there), else 0.

    Example:
        >>> from advspatial import WorstOfK
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> pipeline = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
        ...                        SpatialSearchV2(WorstOfK(model, k=4))])
        >>> image, label = pipeline(torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8), 3)
        >>> type(image).__name__, image.shape, label, pipeline.transforms[-1].last_result.params.shape
        ('Image', torch.Size([1, 8, 8]), 3, torch.Size([1, 3]))
        >>> len(pipeline.state_dict())
        0
    """

    def __init__(
        self,
        search: SpatialSearch,
        *,
        labels_getter: str | LabelsGetter | None = "default",
        mask_fill: int | float | None = None,
    ) -> None:
        super().__init__()
        self.search = check_search(search)
        if not (labels_getter is None or labels_getter == "default" or callable(labels_getter)):
            raise AdvSpatialError(
                f"labels_getter must be 'default', a callable or None, got {labels_getter!r}"
            )
        self.labels_getter = labels_getter
        self.mask_fill = mask_fill_for(self.search, mask_fill, type(self).__name__)
        self.last_result: SearchResult | None = None
        self._sample_labels: Any = _NOT_READ
        self._worker_seed: dict[str, int] = {}

    def forward(self, *inputs: Any) -> Any:
        """Read the sample's target (:meth:`_target`: labels as ``v2.SanitizeBoundingBoxes`` reads
        them, or a dense task's Mask / BoundingBoxes / KeyPoints), then run v2's own forward.

        v2's ``forward`` hands :meth:`make_params` only the inputs it transforms, and labels are not
        among them; this is the one thing done here. Flattening, the pure-tensor rule,
        :meth:`make_params` and :meth:`transform` are the base class's.
        """
        sample = inputs if len(inputs) > 1 else inputs[0]
        self._sample_labels = self._target(sample)
        try:
            return super().forward(*inputs)
        finally:
            self._sample_labels = _NOT_READ

    def _target(self, sample: Any) -> Any:
        """What the search scores the image against, read from the sample (or the transformed inputs).

        Classification: the class label(s) (:func:`find_labels`). Segmentation, BoxRegression,
        KeypointRegression: the sample's one ``Mask``, ``BoundingBoxes`` or ``KeyPoints``, the very
        item that moves with the image. ``labels_getter=callable`` picks it instead; ``None``: no target.
        """
        if self.labels_getter is None:
            return None
        if self.labels_getter != "default":
            return self.labels_getter(sample)  # type: ignore[operator]
        kind = _target_kind(self.search.task)
        if kind is None:
            return find_labels(sample)
        found = [item for item in tree_flatten(sample)[0] if isinstance(item, kind)]
        if len(found) != 1:
            raise AdvSpatialError(
                f"SpatialSearchV2 with {self.search.task!r} scores against the sample's tv_tensors."
                f"{kind.__name__}: expected exactly one in the sample, found {len(found)} (wrap the "
                f"target as tv_tensors.{kind.__name__}; with several, give labels_getter=callable to "
                "pick the one to score)"
            )
        return found[0]

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        """Refuse inputs this transform cannot move (before anything is searched)."""
        for item in flat_inputs:
            if isinstance(item, tv_tensors.TVTensor) and not isinstance(
                item, tv_tensors.Image | tv_tensors.Mask | tv_tensors.BoundingBoxes | tv_tensors.KeyPoints
            ):
                raise AdvSpatialError(
                    f"SpatialSearchV2 does not support {type(item).__name__} in a sample (supported: "
                    "images, Mask, BoundingBoxes in XYXY/XYWH/CXCYWH, KeyPoints)"
                )

    def make_params(self, flat_inputs: list[Any], labels: Any = _NOT_READ) -> dict[str, Any]:
        """Search the first image of ``flat_inputs`` (the inputs v2 transforms).

        Args:
            flat_inputs: as v2's ``forward`` passes them.
            labels: the image's labels; by default those :meth:`forward` read from the sample. Pass
                them when calling ``make_params`` yourself (``None`` with ``labels_getter=None``). A
                dense task's Mask / BoundingBoxes / KeyPoints is found in ``flat_inputs`` by default.

        Returns:
            ``{"params": (B, 3) rows on the CPU, "batched": bool}``; :attr:`last_result` holds the search.
        """
        labels = self._sample_labels if labels is _NOT_READ else labels
        if labels is _NOT_READ and self.labels_getter == "default" and _target_kind(self.search.task):
            labels = self._target(flat_inputs)  # a dense target is among the transformed inputs
        images = [item for item in flat_inputs if _is_image(item)]
        if not images:
            raise AdvSpatialError(
                "SpatialSearchV2 found no image in the sample: expected a tensor (C, H, W) / (B, C, H, W), "
                "a tv_tensors.Image or a PIL image"
            )
        tensor = _as_tensor(images[0])
        batched = tensor.ndim == 4
        stacked = tensor if batched else tensor.unsqueeze(0)
        floats = stacked if stacked.is_floating_point() else F.to_dtype(stacked, torch.float32, scale=True)
        floats = scoring_images(self.search, floats)
        target = None
        if self.labels_getter is not None:
            if labels is _NOT_READ:
                raise AdvSpatialError(
                    "SpatialSearchV2.make_params needs the labels when called outside forward: "
                    "make_params(flat_inputs, labels=...)"
                )
            target = _as_target(self.search.task, labels, floats, batched)
        enter_worker(self.search, type(self).__name__, self._worker_seed)
        result = self.search.search(floats, target)
        self.last_result = result
        return {"params": result.params.detach().cpu(), "batched": batched}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Move one input with the chosen rows, by its type (images, masks, boxes, keypoints)."""
        rows: Tensor = params["params"]
        batched: bool = params["batched"]
        if isinstance(inpt, tv_tensors.Mask):
            return self._move_mask(inpt, rows, batched)
        if isinstance(inpt, tv_tensors.BoundingBoxes):
            return self._move_boxes(inpt, rows, batched)
        if isinstance(inpt, tv_tensors.KeyPoints):
            return self._move_points(inpt, rows, batched)
        if _is_image(inpt):
            return self._move_image(inpt, rows, batched)
        return inpt

    @staticmethod
    def _check_batch(
        name: str, shape: tuple[int, ...], rows: Tensor, batched: bool, ndims: tuple[int, int]
    ) -> None:
        low, high = ndims[0] + batched, ndims[1] + batched
        if not low <= len(shape) <= high or (batched and shape[0] != rows.shape[0]):
            form = f"(B, ...) with B = {rows.shape[0]}" if batched else "one sample's"
            raise AdvSpatialError(
                f"{name} must match the searched image ({form}, {low} to {high} dimensions), "
                f"got shape {shape}"
            )

    def _move_image(self, image: Any, rows: Tensor, batched: bool) -> Any:
        tensor = _as_tensor(image)
        self._check_batch("every image", tuple(tensor.shape), rows, batched, (3, 3))
        stacked = tensor if batched else tensor.unsqueeze(0)
        floats = stacked if stacked.is_floating_point() else F.to_dtype(stacked, torch.float32, scale=True)
        warped = self.search.apply(floats, rows.to(device=floats.device, dtype=floats.dtype))
        if not stacked.is_floating_point():
            warped = F.to_dtype(warped, stacked.dtype, scale=True)
        out: Any = warped if batched else warped[0]
        if isinstance(image, PIL.Image.Image):
            return F.to_pil_image(out, mode=image.mode)
        if isinstance(image, tv_tensors.TVTensor):
            return tv_tensors.wrap(out, like=image)
        return out

    def _move_mask(self, mask: tv_tensors.Mask, rows: Tensor, batched: bool) -> tv_tensors.Mask:
        self._check_batch("Mask", tuple(mask.shape), rows, batched, (2, 3))
        plain = mask.as_subclass(Tensor)
        stacked = plain if batched else plain.unsqueeze(0)
        moved = roto_translate_masks(stacked, rows.to(plain.device), fill=self.mask_fill)
        return tv_tensors.wrap(moved if batched else moved[0], like=mask)

    def _move_points(self, points: tv_tensors.KeyPoints, rows: Tensor, batched: bool) -> tv_tensors.KeyPoints:
        plain = points.as_subclass(Tensor)
        batch = rows.shape[0]
        if batched and (plain.ndim < 2 or plain.shape[0] != batch):
            raise AdvSpatialError(
                f"KeyPoints in a batch must have shape (B, ..., 2) with B = {batch}, got {tuple(plain.shape)}"
            )
        size = (int(points.canvas_size[0]), int(points.canvas_size[1]))
        floats = plain if plain.is_floating_point() else plain.double()
        task = self.search.task
        if isinstance(task, KeypointRegression) and plain.is_floating_point():  # out of frame: nan
            moved = task.move_targets(floats.reshape(batch, -1, 2), rows.to(floats.device), size)
        else:
            moved = roto_translate_points(floats.reshape(batch, -1, 2), rows.to(floats.device), size)
        return tv_tensors.wrap(moved.reshape(plain.shape).to(plain.dtype), like=points)

    def _move_boxes(
        self, boxes: tv_tensors.BoundingBoxes, rows: Tensor, batched: bool
    ) -> tv_tensors.BoundingBoxes:
        plain = boxes.as_subclass(Tensor)
        task = self.search.task
        one_per_image = (
            isinstance(task, BoxRegression) and plain.ndim == 2 and plain.shape[0] == rows.shape[0]
        )
        if batched and not one_per_image:
            raise AdvSpatialError(
                "BoundingBoxes hold one sample's boxes (N, 4); apply SpatialSearchV2 per sample "
                "(e.g. in the Dataset) to move boxes, not on a batch (with a BoxRegression task, a "
                f"batch's BoundingBoxes are one box per image: ({rows.shape[0]}, 4)), got "
                f"{tuple(plain.shape)}"
            )
        if boxes.format.name not in _PLAIN_BOX_FORMATS:
            raise AdvSpatialError(
                f"BoundingBoxes format must be one of {_PLAIN_BOX_FORMATS}, got {boxes.format.name} "
                "(rotated boxes are not supported)"
            )
        size = (int(boxes.canvas_size[0]), int(boxes.canvas_size[1]))
        floats = plain if plain.is_floating_point() else plain.double()
        xyxy = F.convert_bounding_box_format(
            floats, old_format=boxes.format, new_format=tv_tensors.BoundingBoxFormat.XYXY
        )
        if isinstance(task, BoxRegression) and plain.is_floating_point():  # as the search moved its target
            per_box = rows if batched else rows.expand(xyxy.shape[0], -1)
            moved = task.move_targets(xyxy, per_box.to(xyxy.device), size)
        else:
            clamp = getattr(boxes, "clamping_mode", "soft") is not None
            moved = roto_translate_boxes(xyxy.unsqueeze(0), rows.to(xyxy.device), size, clamp=clamp)[0]
        back = F.convert_bounding_box_format(
            moved, old_format=tv_tensors.BoundingBoxFormat.XYXY, new_format=boxes.format
        )
        return tv_tensors.wrap(back.to(plain.dtype), like=boxes)

    def extra_repr(self) -> str:
        return f"search={self.search!r}, labels_getter={self.labels_getter!r}, mask_fill={self.mask_fill!r}"
