"""kornia adapter: a geometric augmentation whose per-sample matrices come from the search.

Needs ``kornia`` (``pip install 'advspatial[kornia]'``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from kornia.augmentation import GeometricAugmentationBase2D
from kornia.constants import Resample
from kornia.geometry.transform import warp_affine
from torch import Tensor

from advspatial.adapters._workers import check_search, enter_worker, mask_fill_for, scoring_images
from advspatial.errors import AdvSpatialError, check_labels, check_params, flag
from advspatial.geometry.matrices import forward_matrices
from advspatial.geometry.warp import roto_translate_masks
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.result import SearchResult
from advspatial.tasks import Classification, Segmentation

__all__ = ["SpatialSearchKornia", "kornia_matrices"]

_UNSET = object()


def kornia_matrices(params: Tensor, canvas_size: tuple[int, int]) -> Tensor:
    """``(B, 3, 3)`` matrices of ``(angle, tx, ty)`` rows in kornia's pixel convention.

    kornia puts pixel centres at integers (corners ``(0, 0)`` and ``(W - 1, H - 1)``), the library at
    half-integers; with ``p_kornia = p - 0.5`` the same roto-translation reads
    ``K = S^-1 M S`` where ``M`` is :func:`advspatial.forward_matrices` and ``S`` shifts by ``0.5``.
    ``kornia.geometry.transform.warp_affine(x, K[:, :2], (H, W))`` then equals
    :func:`advspatial.roto_translate` (up to float rounding), and kornia's ``Boxes`` and ``Keypoints``
    move with the image.

    Example:
        >>> (kornia_matrices(torch.tensor([[90.0, 0.0, 0.0]]), (4, 4))[0].round(decimals=4) + 0.0).tolist()
        [[0.0, 1.0, 0.0], [-1.0, 0.0, 3.0], [0.0, 0.0, 1.0]]
    """
    forward = forward_matrices(params, canvas_size)
    linear, shift = forward[:, :, :2], forward[:, :, 2]
    half = torch.full((2,), 0.5, dtype=params.dtype, device=params.device)
    out = torch.zeros(params.shape[0], 3, 3, dtype=params.dtype, device=params.device)
    out[:, :2, :2] = linear
    out[:, :2, 2] = linear @ half + shift - half
    out[:, 2, 2] = 1.0
    return out


class SpatialSearchKornia(GeometricAugmentationBase2D):
    """A kornia geometric augmentation that applies each image's worst roto-translation.

    The search runs when the image passes (``AugmentationSequential`` handles ``"input"`` first);
    the chosen rows are stored in the augmentation's params under ``"roto"`` and returned as
    ``transform_matrix`` in kornia's convention (:func:`kornia_matrices`), so masks, boxes and
    keypoints follow, ``inverse`` works, and ``seq(..., params=seq._params)`` replays the choice
    without searching again. The public view of the choice is :attr:`last_params` (the ``(B, 3)`` rows
    applied to the last batch) and :attr:`last_result` (the last search). Labels are passed explicitly
    for each call::

        with aug.labels(y):
            out = seq(images, masks, boxes, keypoints)

    (``aug.labels(None)`` scores against the model's own prediction).

    Dense tasks: kornia runs the image before any other data key, so the search reads its targets
    from the same context: ``with aug.labels(masks): seq(images, masks)`` for a
    :class:`~advspatial.tasks.Segmentation` search (masks ``(B, H, W)`` or ``(B, 1, H, W)`` of class
    indices; pass the same masks as the ``"mask"`` key). Masks move with the task's ``ignore_index``
    outside, so the ``"mask"`` output equals ``last_result.targets`` (kornia's ``(B, 1, H, W)`` layout;
    with ``p < 1`` for the gated samples, the others are unchanged; with ``same_on_batch`` the search
    scores the first gated image only). Box and keypoint regression score the ``(B, 4)`` XYXY boxes or
    ``(B, P, 2)`` points given to ``labels`` (the library's pixel convention) and
    ``last_result.targets`` holds them moved; kornia's ``"bbox_*"`` and ``"keypoints"`` keys follow
    kornia's own geometry (keypoints in pixel-index coordinates, ``targets - 0.5`` while in frame, never
    ``nan``; boxes unclamped and within a pixel of the targets once clamped): train on
    ``last_result.targets`` there.

    kornia's common arguments behave as for its other augmentations: ``p`` and ``p_batch`` gate
    samples and batches with kornia's draw (torch's global generator); only the gated samples are
    searched, the others get the identity row ``(0, 0, 0)``. ``same_on_batch=True`` applies one row to
    the whole batch: the search scores the first gated image (with its label) and its row is used for
    all. ``keepdim=True`` returns an unbatched ``(C, H, W)`` input unbatched.

    Convention:
        Rows ``(angle, tx, ty)``: degrees counter-clockwise on screen, then pixels right and down,
        about the image centre. Images are warped with the search's kernel
        (:func:`advspatial.roto_translate`), masks with :func:`advspatial.roto_translate_masks`
        (nearest, ``mask_fill`` outside), boxes and keypoints by kornia with the matrix (kornia's
        pixel-centre coordinates). ``inverse`` uses ``kornia.geometry.transform.warp_affine``.

    Dtypes:
        Images are scored cast to the model's floating dtype (a float16 or float64 batch with a
        float32 model is scored in float32) and warped in their own dtype.

    Args:
        search: the strategy, e.g. :class:`advspatial.WorstOfK` (it holds the model; images on
            another device are scored on the model's and warped where they are).
        mask_fill: value of mask pixels that come from outside the mask; by default the task's
            ``ignore_index`` for segmentation (any other value is refused there), else 0.
        p: probability of applying the transform to each sample.
        p_batch: probability of applying it to the batch.
        same_on_batch: one row for the whole batch.
        keepdim: keep an unbatched input's shape.

    Example:
        >>> import kornia.augmentation as K
        >>> from advspatial import WorstOfK
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> aug = SpatialSearchKornia(WorstOfK(model, k=4))
        >>> seq = K.AugmentationSequential(aug, data_keys=["input", "mask"])
        >>> with aug.labels(torch.tensor([1, 2])):
        ...     images, masks = seq(torch.rand(2, 1, 8, 8), torch.ones(2, 1, 8, 8))
        >>> images.shape, aug.last_params.shape
        (torch.Size([2, 1, 8, 8]), torch.Size([2, 3]))
    """

    def __init__(
        self,
        search: SpatialSearch,
        *,
        mask_fill: float | None = None,
        p: float = 1.0,
        p_batch: float = 1.0,
        same_on_batch: bool = False,
        keepdim: bool = False,
    ) -> None:
        for name, value in (("p", p), ("p_batch", p_batch)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise AdvSpatialError(f"{name} must be a probability in [0, 1], got {value!r}")
        super().__init__(
            p=float(p),
            p_batch=float(p_batch),
            same_on_batch=flag(same_on_batch, "same_on_batch"),
            keepdim=flag(keepdim, "keepdim"),
        )
        self.search = check_search(search)
        self.mask_fill = mask_fill_for(self.search, mask_fill, type(self).__name__)
        self.flags = {"resample": Resample.BILINEAR, "align_corners": True}
        self.last_params: Tensor | None = None
        self.last_result: SearchResult | None = None
        self._labels: Any = _UNSET
        self._worker_seed: dict[str, int] = {}

    @contextmanager
    def labels(self, labels: Tensor | None) -> Iterator[SpatialSearchKornia]:
        """Use ``labels`` for the searches inside the block: ``(B,)`` class indices, the task's targets
        (e.g. the masks ``(B, H, W)`` or ``(B, 1, H, W)`` of a segmentation search), or ``None``."""
        previous, self._labels = self._labels, labels
        try:
            yield self
        finally:
            self._labels = previous

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, Tensor]:
        """Nothing is drawn up front: the search needs the pixels, see :meth:`compute_transformation`."""
        return {}

    def _target(self, batch: int, device: torch.device) -> Tensor | None:
        """What the search scores the images against: what :meth:`labels` gave, as the task wants it
        (class indices ``(B,)``; masks ``(B, H, W)`` or ``(B, 1, H, W)`` for segmentation; boxes
        ``(B, 4)``; points ``(B, P, 2)``), on the images' device."""
        task = self.search.task
        if self._labels is _UNSET:
            what = "labels" if isinstance(task, Classification) else f"targets for {task!r}"
            raise AdvSpatialError(
                f"SpatialSearchKornia needs the batch's {what}: call it inside `with aug.labels(...):` "
                "(or `with aug.labels(None):` to score against the model's own prediction)"
            )
        if self._labels is None:
            return None
        labels = self._labels
        if isinstance(task, Classification):
            if isinstance(labels, Tensor) and labels.ndim == 0:
                labels = labels.reshape(1)
            return check_labels(labels, batch, device)
        if not isinstance(labels, Tensor) or labels.ndim == 0 or labels.shape[0] != batch:
            got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise AdvSpatialError(
                f"aug.labels(...) must hold the batch's targets for {task!r}, a tensor with one row per "
                f"image ({batch}), got {got}"
            )
        if isinstance(task, Segmentation) and labels.ndim == 4 and labels.shape[1] == 1:
            labels = labels[:, 0]  # kornia's (B, 1, H, W) mask layout
        return labels.to(device)

    def _choose(self, input: Tensor, params: dict[str, Tensor]) -> Tensor:
        if "roto" in params:
            roto = check_params(params["roto"], input.shape[0], "params['roto']")
            self.last_params = roto
            return roto
        batch = input.shape[0]
        labels = self._target(batch, input.device)
        gate = params.get("batch_prob")
        applied = torch.ones(batch, dtype=torch.bool) if gate is None else torch.atleast_1d(gate.cpu() > 0.5)
        if self.p == 1.0 and self.p_batch == 1.0:  # kornia ignores the gate then (its fast path)
            applied = torch.ones(batch, dtype=torch.bool)
        rows = applied.nonzero().flatten()
        searched = rows[:1] if self.same_on_batch else rows
        roto = self.search.box.identity((batch,), device=input.device)  # (B, 3) or affine (B, 6)
        if searched.numel():
            index = searched.to(input.device)
            enter_worker(self.search, type(self).__name__, self._worker_seed)
            result = self.search.search(
                scoring_images(self.search, input[index]), None if labels is None else labels[index]
            )
            self.last_result = result
            roto[rows.to(input.device)] = result.params.detach().to(input.device)
        params["roto"] = roto
        self.last_params = roto
        # A container call hands this method a copy of its params dict; record the choice in the dict
        # the call committed (the container's ParamItem) too, so masks, boxes, replay and inverse see it.
        committed = self._params
        if isinstance(committed, dict) and committed is not params and "roto" not in committed:
            committed["roto"] = roto
        return roto

    def compute_transformation(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any]
    ) -> Tensor:
        """Search (once per params dict) and return kornia's ``(B, 3, 3)`` matrices of the choice."""
        roto = self._choose(input, params)
        return kornia_matrices(roto.to(input.dtype), (input.shape[-2], input.shape[-1]))

    def apply_transform(
        self,
        input: Tensor,
        params: dict[str, Tensor],
        flags: dict[str, Any],
        transform: Tensor | None = None,
    ) -> Tensor:
        """Warp images with the core kernel and the chosen rows."""
        return self.search.apply(input, self._choose(input, params).to(input.dtype))

    def apply_transform_mask(
        self,
        input: Tensor,
        params: dict[str, Tensor],
        flags: dict[str, Any],
        transform: Tensor | None = None,
    ) -> Tensor:
        """Move masks by nearest neighbour with the chosen rows."""
        roto = check_params(params.get("roto"), input.shape[0], "params['roto'] (run the image first)")
        return roto_translate_masks(input, roto.to(torch.float64), fill=self.mask_fill)

    def inverse_transform(
        self,
        input: Tensor,
        flags: dict[str, Any],
        transform: Tensor | None = None,
        size: tuple[int, int] | None = None,
    ) -> Tensor:
        """Warp back with the (inverted) matrix kornia hands over."""
        if not isinstance(transform, Tensor):
            raise AdvSpatialError(f"inverse needs the transform matrix, got {type(transform).__name__}")
        mode = flags.get("resample", Resample.BILINEAR).name.lower()
        matrix = transform.to(device=input.device, dtype=input.dtype)[:, :2, :3]
        return warp_affine(input, matrix, (input.shape[-2], input.shape[-1]), mode=mode, align_corners=True)
