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
from torch.utils.data import get_worker_info

from advspatial.adapters._workers import (
    check_search,
    enter_worker,
    mask_fill_for,
    mix_seed,
    run_search,
    scoring_images,
)
from advspatial.errors import AdvSpatialError, check_labels
from advspatial.geometry.matrices import forward_matrices
from advspatial.geometry.points import roto_translate_boxes, roto_translate_points
from advspatial.geometry.warp import roto_translate_masks
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.result import SearchResult
from advspatial.tasks import BoxRegression, Classification, Segmentation

__all__ = ["SpatialSearchAlbumentations"]

_ANGLE = 3  # column of the angle in albumentations' internal keypoint layout (x, y, z, angle, scale)


_FLOATS = (np.float16, np.float32, np.float64)


def _to_nchw(image: np.ndarray, name: str = "image") -> tuple[Tensor, bool]:
    """HWC / HW numpy image -> float ``(1, C, H, W)`` (``uint8 / 255``, floats as given); also whether
    it was 2-D."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        shape = image.shape if isinstance(image, np.ndarray) else type(image).__name__
        raise AdvSpatialError(f"{name} must be a numpy array (H, W) or (H, W, C), got {shape}")
    if image.ndim == 3 and image.shape[-1] > 4 and image.shape[0] in (1, 3, 4):
        raise AdvSpatialError(
            f"{name} must be laid out (H, W, C) as albumentations expects, got {image.shape} "
            "(channels first?); use image.transpose(1, 2, 0)"
        )
    if image.dtype == np.uint8:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).float() / 255.0
    elif image.dtype in _FLOATS:
        tensor = torch.from_numpy(np.ascontiguousarray(image))
    else:
        raise AdvSpatialError(f"{name} dtype must be uint8 or float (16, 32 or 64 bits), got {image.dtype}")
    flat = tensor.ndim == 2
    hwc = tensor.unsqueeze(-1) if flat else tensor
    return hwc.permute(2, 0, 1).unsqueeze(0), flat


def _from_nchw(tensor: Tensor, flat: bool, dtype: np.dtype[Any]) -> np.ndarray:
    hwc = tensor[0].permute(1, 2, 0)
    hwc = hwc[..., 0] if flat else hwc
    if dtype == np.uint8:
        return np.ascontiguousarray((hwc * 255.0).round().clamp(0, 255).to(torch.uint8).numpy())
    return np.ascontiguousarray(hwc.numpy())


def _scored_image(data: dict[str, Any]) -> tuple[np.ndarray, str]:
    """The image the search scores: ``image``, else the first of ``images`` (all then get its row)."""
    if "image" in data:
        return data["image"], "image"
    images = data.get("images")
    if isinstance(images, np.ndarray | list | tuple) and len(images) > 0:
        return np.asarray(images[0]), "images[0]"
    raise AdvSpatialError(
        "SpatialSearchAlbumentations needs an image to search: call the pipeline with image=... "
        f"or a non-empty images=...; got keys {sorted(data)}"
    )


def _mask_target(data: dict[str, Any], task: Segmentation, images: Tensor) -> Tensor:
    """The call's ``mask=`` (``(H, W)`` or ``(H, W, 1)`` class indices) as a ``(1, H, W)`` tensor."""
    if "mask" not in data:
        raise AdvSpatialError(
            f"SpatialSearchAlbumentations with {task!r} scores against the call's mask: call the pipeline "
            f"with mask=... (H, W) of class indices (or label_key=None to score without it); got keys "
            f"{sorted(data)}"
        )
    mask, size = data["mask"], tuple(images.shape[-2:])
    if not isinstance(mask, np.ndarray) or mask.shape not in (size, (*size, 1)):
        shape = mask.shape if isinstance(mask, np.ndarray) else type(mask).__name__
        raise AdvSpatialError(
            f"mask must be one numpy mask of class indices, {size} or {(*size, 1)} like the image, "
            f"got {shape}"
        )
    if mask.dtype == np.bool_ or not np.issubdtype(mask.dtype, np.integer):
        raise AdvSpatialError(f"mask must hold integer class indices, got dtype {mask.dtype}")
    limits = np.iinfo(mask.dtype)
    if not limits.min <= task.ignore_index <= limits.max:
        raise AdvSpatialError(
            f"a mask of dtype {mask.dtype} cannot hold the ignore_index moved masks are filled with "
            f"({task.ignore_index}); convert it, e.g. mask.astype(np.int64)"
        )
    return torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)).reshape(1, *size)


def _box_target(data: dict[str, Any], task: BoxRegression, images: Tensor) -> Tensor:
    """The call's one box (``bboxes=[box]``; Compose hands it over normalised XYXY) as ``(1, 4)`` pixels."""
    boxes = data.get("bboxes")
    if not isinstance(boxes, np.ndarray) or boxes.ndim != 2 or boxes.shape[0] != 1:
        count = len(boxes) if isinstance(boxes, np.ndarray | list | tuple) else "no"
        raise AdvSpatialError(
            f"SpatialSearchAlbumentations with {task!r} scores against exactly one box per image: call the "
            f"pipeline with bboxes=[box] and A.Compose(bbox_params=A.BboxParams(...)), got {count} boxes"
        )
    height, width = images.shape[-2:]
    scale = np.array([width, height, width, height], dtype=np.float64)
    return torch.from_numpy(boxes[:, :4].astype(np.float64) * scale).float()


class SpatialSearchAlbumentations(A.DualTransform):  # type: ignore[misc]
    """Apply the worst roto-translation the search finds, inside ``A.Compose``.

    The label is read from the call (``compose(image=img, label=y, ...)``, key ``label_key``), the
    search scores ``image`` (or, without it, the first of ``images``: every image of ``images`` then
    gets that row, as albumentations applies one set of params to all of them), and images, masks,
    boxes and keypoints all follow the chosen ``(angle, tx, ty)``. The last search is kept in
    :attr:`last_result`.

    Dense tasks: with a :class:`~advspatial.tasks.Segmentation` search the target is the call's
    ``mask=`` (one mask ``(H, W)`` or ``(H, W, 1)`` of class indices; no label needed), moved with
    ``ignore_index`` outside, so ``out["mask"]`` equals ``result.targets[0]`` (``masks=`` move the same
    way and are not scored). With :class:`~advspatial.tasks.BoxRegression` it is the call's one box
    (``bboxes=[box]``, any ``BboxParams`` format): Compose then clips the moved box and filters it by its
    ``BboxParams``, so the returned box equals ``result.targets[0]`` (in the call's format) when it is
    kept, and a box the task drops (``nan``) is removed. Keypoint regression is refused (albumentations'
    keypoints use pixel-index coordinates and drop points out of frame).

    Albumentations' contracts: ``strict=True`` accepts the label key; ``A.ReplayCompose`` records the
    chosen row under ``params["roto"]`` and ``ReplayCompose.replay`` re-applies it to other data without
    searching (the replay dict holds a reference to the search, which replays need to rebuild the
    transform); ``p`` is drawn from albumentations' own generator. ``to_dict`` / ``A.save`` are refused
    with an :class:`~advspatial.AdvSpatialError`: the transform holds a model, which a JSON or YAML file
    cannot carry (rebuild it in code and pickle the pipeline instead, which works).

    Seeding: when the search has its own generator (``WorstOfK(generator=...)``) its candidates come
    from that generator. Otherwise each call draws a seed from albumentations' random state
    (``self.random_generator``, set by ``A.Compose(seed=...)`` or ``set_random_seed``) and the search
    draws its candidates from a ``torch.Generator`` seeded with it, so a seeded pipeline is
    reproducible and an unseeded one is not. In a DataLoader worker that seed is mixed with the
    worker's seed: the workers hold copies of one random state and would otherwise draw the same
    candidates (a seeded loader reproduces them for a fixed number of workers).

    Convention:
        Rows ``(angle, tx, ty)``: degrees counter-clockwise on screen (as ``A.Rotate``), then pixels
        right and down, about the image centre. Images are warped with :func:`advspatial.roto_translate`
        (the search's interpolation and padding), masks with :func:`advspatial.roto_translate_masks`
        (nearest, ``mask_fill`` outside), boxes (any format ``BboxParams`` accepts; Compose hands
        them over normalised) by the enclosing box of the moved corners, unclamped (Compose then
        clips or drops them as its ``BboxParams`` say), keypoints at pixel-index coordinates
        (pixel ``(row i, col j)`` is ``(j, i)``, as albumentations) moved exactly, their angle
        turned with the image as ``A.Affine(rotate=...)`` turns it.

    Dtypes:
        Images are ``uint8`` (scored as ``x / 255``) or float (16, 32 or 64 bits, scored as given),
        cast to the model's floating dtype for scoring; the output keeps the input's dtype.

    Forked processes:
        Importing the adapter makes forked child processes run torch with one thread (see
        ``advspatial.adapters._workers``): a ``multiprocessing.Pool`` forked after a search would
        otherwise hang in torch's OpenMP pool.

    Args:
        search: the strategy, e.g. :class:`advspatial.WorstOfK` (it holds the model).
        label_key: the key of the class index in the call, or ``None`` to score without labels
            (for every task).
        mask_fill: value of mask pixels that come from outside the mask; by default the task's
            ``ignore_index`` for segmentation (any other value is refused there), else 0.
        p: probability of applying the transform.

    Example:
        >>> from advspatial import WorstOfK
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> pipeline = A.Compose([SpatialSearchAlbumentations(WorstOfK(model, k=4))], strict=True, seed=0)
        >>> out = pipeline(image=np.zeros((8, 8, 1), np.uint8), mask=np.ones((8, 8), np.uint8), label=3)
        >>> out["image"].shape, out["mask"].shape, out["label"]
        ((8, 8, 1), (8, 8), 3)
    """

    class InitSchema(BaseTransformInitSchema):  # type: ignore[misc]
        """albumentations validates ``__init__`` arguments against this; the model must be declared."""

        search: Any
        label_key: str | None
        mask_fill: float | None

    def __init__(
        self,
        search: SpatialSearch,
        label_key: str | None = "label",
        mask_fill: float | None = None,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.search = check_search(search)
        if not isinstance(self.search.task, Classification | Segmentation | BoxRegression):
            raise AdvSpatialError(
                f"SpatialSearchAlbumentations scores classification, Segmentation (mask=) and BoxRegression "
                f"(bboxes=) searches, got {self.search.task!r}: albumentations' keypoints use another pixel "
                "convention and drop points that leave the frame; use SpatialSearchV2 or SpatialSearchBatch"
            )
        if label_key is not None and not isinstance(label_key, str):
            raise AdvSpatialError(f"label_key must be a string or None, got {label_key!r}")
        self.label_key = label_key
        self.mask_fill = mask_fill_for(self.search, mask_fill, type(self).__name__)
        self.last_result: SearchResult | None = None
        self._worker_seed: dict[str, int] = {}

    @property
    def available_keys(self) -> set[str]:
        """The keys ``A.Compose(strict=True)`` accepts for this transform: its targets and the label key."""
        keys = set(super().available_keys)
        return keys | {self.label_key} if self.label_key is not None else keys

    @property
    def targets_as_params(self) -> list[str]:
        """Empty: the search reads the image (or ``images``) and the label itself, with clear errors.

        Declaring ``["image"]`` would make albumentations warn that the transform "could work incorrectly
        in ReplayMode": replaying the recorded row on other data is what ``ReplayCompose`` is for here.
        """
        return []

    def _target(self, data: dict[str, Any], images: Tensor) -> Tensor | None:
        """What the search scores the image against: the class index read from the call
        (classification), the call's ``mask=`` (segmentation) or its one box (box regression)."""
        if self.label_key is None:
            return None
        task = self.search.task
        if isinstance(task, Segmentation):
            return _mask_target(data, task, images)
        if isinstance(task, BoxRegression):
            return _box_target(data, task, images)
        if self.label_key not in data:
            raise AdvSpatialError(
                f"SpatialSearchAlbumentations needs the image's class index: call the pipeline with "
                f"{self.label_key}=..., or construct it with label_key=None to score against the "
                f"model's own prediction; got keys {sorted(data)}"
            )
        raw = data[self.label_key]
        if isinstance(raw, bool) or not isinstance(raw, int | np.integer | Tensor | np.ndarray):
            raise AdvSpatialError(f"{self.label_key} must be an integer class index, got {raw!r}")
        return check_labels(torch.as_tensor(np.asarray(raw)).reshape(-1), 1, images.device, self.label_key)

    def _generator(self) -> torch.Generator | None:
        """The search's own generator, else one seeded from albumentations' random state."""
        if isinstance(getattr(self.search, "generator", None), torch.Generator):
            return None
        seed = int(self.random_generator.integers(0, 2**63 - 1))
        worker = get_worker_info()
        if worker is not None:  # forked workers hold copies of one random state: give each its own stream
            seed = mix_seed(seed, worker.seed)
        return torch.Generator().manual_seed(seed)

    def update_transform_params(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """albumentations' own step (it reads the image's shape), after checking there is an image."""
        _scored_image(data)
        return super().update_transform_params(params, data)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Run the search on the call's image and label; the chosen row is ``params["roto"]``."""
        image, name = _scored_image(data)
        images = scoring_images(self.search, _to_nchw(image, name)[0])
        labels = self._target(data, images)
        enter_worker(self.search, type(self).__name__, self._worker_seed)
        result = run_search(self.search, images, labels, self._generator())
        self.last_result = result
        return {"roto": result.params.detach().cpu()}

    def apply(self, img: np.ndarray, roto: Tensor, **params: Any) -> np.ndarray:
        """Warp an image with the chosen row in its own dtype (``uint8`` rounded back after a float warp)."""
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
        """Move keypoints in albumentations' internal layout ``(x, y, z, angle, scale, ...)``.

        ``x, y`` are pixel-index coordinates, ``angle`` is in radians (Compose converts the user's
        format, e.g. ``xya`` in degrees, to this layout and back).
        """
        if len(keypoints) == 0:
            return keypoints
        height, width = params["shape"][:2]
        centres = torch.from_numpy(keypoints[:, :2].astype(np.float64) + 0.5).unsqueeze(0)
        moved = roto_translate_points(centres, roto.double(), (height, width))[0].numpy() - 0.5
        out = keypoints.copy()
        out[:, :2] = moved
        if out.shape[1] > _ANGLE:
            # As albumentations' own Affine: the angle turns by the rotation part of the matrix
            # (the row's angle for a roto-translation), the scale grows with an affine row's zoom.
            linear = forward_matrices(roto[:1].double(), (height, width))[0, :, :2]
            turn = math.atan2(-float(linear[1, 0]), float(linear[0, 0]))
            out[:, _ANGLE] = np.mod(out[:, _ANGLE] + turn, 2 * math.pi)
        if out.shape[1] > _ANGLE + 1 and roto.shape[-1] == 6:
            out[:, _ANGLE + 1] = out[:, _ANGLE + 1] * float(roto[0, 3])
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Arguments shown in ``repr`` and recorded for ``ReplayCompose``."""
        return ("label_key", "mask_fill")

    def get_dict_with_id(self) -> dict[str, Any]:
        """What ``A.ReplayCompose`` records: the arguments and the search (to rebuild the transform)."""
        state = A.DualTransform.to_dict_private(self)
        state.update({"search": self.search, "id": id(self)})
        return state

    def to_dict_private(self) -> dict[str, Any]:
        """Refused: the transform holds a model, which albumentations' JSON / YAML cannot carry."""
        raise AdvSpatialError(
            "SpatialSearchAlbumentations cannot be serialised with to_dict / A.save: it holds the search "
            "and its model. Build the pipeline in code (the search's settings are in repr(search)) and "
            "re-attach the model, or pickle the whole pipeline (pickle.dumps works)"
        )
