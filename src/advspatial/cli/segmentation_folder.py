"""``advspatial evaluate --task segmentation``: an image folder and a mask folder with the same names.

Layout: ``images/<name>.<ext>`` (any image format PIL reads) and ``masks/<name>.png``, one
single-channel PNG of class indices per image (mode ``L``, ``P``, ``I`` or ``I;16``: a palette PNG's
indices are the classes), of the image's size. With ``--resize N`` images are resized bilinearly and
masks by nearest neighbour, so labels are never blended.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from advspatial.errors import AdvSpatialError
from advspatial.tasks import Segmentation

__all__ = ["SegmentationFolder", "check_segmentation_fit"]

MASK_MODES = ("L", "P", "I", "I;16")


class SegmentationFolder(Dataset[tuple[Tensor, Tensor]]):
    """``(image (C, H, W) float, mask (H, W) long)`` pairs from matching file names.

    Args:
        images: folder of images (not searched recursively).
        masks: folder of ``<image stem>.png`` masks of class indices.
        transform: the image transform (``PIL image -> (C, H, W) float tensor``).
        resize: side ``N`` of the square size masks are resized to (nearest), or ``None``.
        suffixes: image file suffixes (lower case).
        limit: keep this many pairs, evenly spaced in name order (deterministic), or all when ``None``.

    Every kept image and mask is decoded once here, before any work: an unreadable or truncated
    file, a colour mask or a size mismatch is refused with an error naming the file.
    """

    def __init__(
        self,
        images: Path,
        masks: Path,
        transform: Callable[[Any], Tensor],
        resize: int | None,
        suffixes: tuple[str, ...],
        *,
        limit: int | None = None,
    ) -> None:
        for flag, folder in (("--image-folder", images), ("--mask-folder", masks)):
            if not folder.is_dir():
                raise AdvSpatialError(f"{flag}: folder not found: {folder}")
        files = sorted(p for p in images.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise AdvSpatialError(
                f"--image-folder: no images found in {images}; with --task segmentation the images lie "
                f"directly in the folder, their masks in --mask-folder under the same name (.png)"
            )
        missing = [p.name for p in files if not (masks / f"{p.stem}.png").is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise AdvSpatialError(f"--mask-folder: no mask <name>.png in {masks} for {shown}")
        self.pairs = [(p, masks / f"{p.stem}.png") for p in files]
        if limit is not None and limit < len(self.pairs):
            step = len(self.pairs) / limit
            self.pairs = [self.pairs[int(i * step)] for i in range(limit)]
        self.transform, self.resize = transform, resize
        self._check_files()

    def _check_files(self) -> None:
        """Decode every file in full before any work: unreadable or truncated files (a valid header
        over cut-off data), colour masks and size mismatches."""
        from PIL import Image

        for image_path, mask_path in self.pairs:
            sizes = []
            for flag, path in (("--image-folder", image_path), ("--mask-folder", mask_path)):
                try:
                    with Image.open(path) as opened:
                        sizes.append(opened.size)
                        mode = opened.mode
                        opened.load()
                except Exception as error:
                    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    raise AdvSpatialError(f"{flag}: cannot read {path}: {text}") from error
            if mode not in MASK_MODES:
                raise AdvSpatialError(
                    f"--mask-folder: {mask_path} is a {mode} image; masks must be single-channel PNGs of "
                    f"class indices (mode L, P, I or I;16)"
                )
            if sizes[0] != sizes[1]:
                raise AdvSpatialError(
                    f"--mask-folder: {mask_path} is {sizes[1][0]} x {sizes[1][1]} px but its image is "
                    f"{sizes[0][0]} x {sizes[0][1]} px"
                )
            if min(sizes[0]) < 2:
                raise AdvSpatialError(
                    f"--image-folder: image {image_path} is {sizes[0][0]} x {sizes[0][1]} px, too small to "
                    "rotate or shift; pass --resize N to scale every image to N x N"
                )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        image_path, mask_path = self.pairs[index]
        with Image.open(image_path) as opened:
            image = self.transform(opened.convert("RGB"))
        with Image.open(mask_path) as opened:
            mask = torch.from_numpy(np.array(opened, dtype=np.int64))
        if self.resize is not None:
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms.v2 import functional as TF

            mask = TF.resize(mask[None], [self.resize, self.resize], interpolation=InterpolationMode.NEAREST)[
                0
            ]
        return image, mask


def check_segmentation_fit(model: nn.Module, dataset: SegmentationFolder, task: Segmentation) -> None:
    """Score one image before the sweep: per-pixel logits at the image's size, mask classes in range."""
    image, mask = dataset[0]
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    batch = image.unsqueeze(0).to(device)
    try:
        with torch.inference_mode():
            outputs = model(batch)
    except Exception as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AdvSpatialError(
            f"the model fails on the images (one image of shape {tuple(batch.shape)}): {text}; check "
            "--resize N and --grayscale against the model's input"
        ) from error
    if (
        not isinstance(outputs, Tensor)
        or outputs.ndim != 4
        or tuple(outputs.shape[-2:]) != tuple(image.shape[-2:])
    ):
        got = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise AdvSpatialError(
            f"--model: with --task segmentation the model must return per-pixel logits (batch, num_classes, "
            f"H, W) at the image's size {tuple(image.shape[-2:])}, got {got} for one image"
        )
    labels = {int(v) for v in mask.unique().tolist()} - {task.ignore_index}
    for index in range(1, len(dataset)):
        labels |= {int(v) for v in dataset[index][1].unique().tolist()} - {task.ignore_index}
    if labels and (max(labels) >= outputs.shape[1] or min(labels) < 0):
        raise AdvSpatialError(
            f"--mask-folder: the masks hold class {max(labels) if max(labels) >= 0 else min(labels)} but the "
            f"model has {outputs.shape[1]} outputs (classes 0..{outputs.shape[1] - 1}, --ignore-index "
            f"{task.ignore_index} is skipped)"
        )
