"""The DataLoader forms: after the loader (the fast path), as a ``collate_fn``, or inside a Dataset.

Where to put the search, fastest first:

1. :class:`SpatialSearchBatch` right after the loader, on the model's device: one batched search per
   batch, live weights by construction, any number of workers loading the data.
2. :class:`SpatialSearchCollate` as the loader's ``collate_fn``: the same batched search, in the
   main process with ``num_workers=0``, or in the workers when the weights are shared (below).
3. :class:`SpatialSearchDataset` around a dataset: one search per sample, with candidates drawn from
   a generator keyed by ``(seed, epoch, index)``, so the result does not depend on the worker count.

Dtypes: float images of any precision are accepted; the model scores them cast to its own floating
dtype (a float16 or float64 batch with a float32 model is scored in float32) and the transformed
images keep their own dtype.

Inside workers (forms 2 and 3 with ``num_workers > 0``) each worker holds a copy of the model. The
adapters refuse to score with it unless it is live: a CPU model whose parameters and buffers are in
shared memory (call ``model.share_memory()`` before creating the loader; the optimizer then updates the
storage the workers read, in place). A model on another device gets an error that points to form 1.
The weights a worker sees are those of the moment it scores, up to ``prefetch_factor * num_workers``
batches ahead of the training step; do not replace the parameter tensors (``model.to(...)``) after
``share_memory()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate, get_worker_info

from advspatial.adapters._workers import (
    check_search,
    check_worker_model,
    enter_worker,
    mix_seed,
    run_search,
    scoring_images,
    target_device,
)
from advspatial.errors import AdvSpatialError, check_images, check_labels, positive_int
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.result import SearchResult
from advspatial.tasks import Classification

__all__ = ["SpatialSearchBatch", "SpatialSearchCollate", "SpatialSearchDataset"]


def _split_batch(batch: object, where: str) -> tuple[Tensor, Tensor, tuple[Any, ...]]:
    if not isinstance(batch, Sequence) or isinstance(batch, str) or len(batch) < 2:
        raise AdvSpatialError(
            f"{where} expects a batch (images, labels, ...) as a tuple or list, got {type(batch).__name__}"
        )
    images, labels = batch[0], batch[1]
    return images, labels, tuple(batch[2:])


def _target(search: SpatialSearch, targets: object, images: Tensor, name: str | None = None) -> Tensor:
    """What the search scores ``images`` against: class labels ``(B,)`` for classification, else the
    task's targets (masks ``(B, H, W)``, boxes ``(B, 4)``, points ``(B, P, 2)``), checked by the task
    (``name``: how errors call them; by default ``labels``, or the task's own word)."""
    if isinstance(search.task, Classification):
        return check_labels(targets, images.shape[0], images.device, name or "labels")
    if name is None:
        return search.task.check_targets(targets, images)
    return search.task.check_targets(targets, images, name)


def _returned_targets(search: SpatialSearch, targets: Tensor, result: SearchResult) -> Tensor:
    """Labels as given; dense targets as the search moved them (``result.targets``)."""
    if isinstance(search.task, Classification) or result.targets is None:
        return targets
    return result.targets


class SpatialSearchBatch:
    """Search a loader's batch on the model's device: the recommended fast path.

    Args:
        search: the strategy, e.g. :class:`advspatial.WorstOfK` (it holds the model).

    Shape:
        ``batch = (images (B, C, H, W) float, labels (B,) int, *rest)``; returns
        ``(transformed images, labels, *rest)`` with images and labels on the model's device and
        ``rest`` untouched. The search's result is kept in :attr:`last_result` (chosen params, scores).
        With a dense task the second item is the task's targets (masks ``(B, H, W)``, boxes
        ``(B, 4)``, points ``(B, P, 2)``) and comes back moved: ``last_result.targets`` (masks in
        their own dtype filled with ``ignore_index`` out of frame, dropped boxes and out-of-frame
        points ``nan``).

    Example:
        >>> from advspatial import WorstOfK
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> attack = SpatialSearchBatch(WorstOfK(model, k=4, generator=torch.Generator().manual_seed(0)))
        >>> images, labels = attack((torch.rand(5, 1, 8, 8), torch.arange(5)))
        >>> images.shape, attack.last_result.params.shape
        (torch.Size([5, 1, 8, 8]), torch.Size([5, 3]))
    """

    def __init__(self, search: SpatialSearch) -> None:
        self.search = check_search(search)
        self.last_result: SearchResult | None = None

    def __call__(self, batch: Sequence[Any]) -> tuple[Any, ...]:
        """Transform the batch's images with the worst transform the search finds for each."""
        images, labels, rest = _split_batch(batch, type(self).__name__)
        images = check_images(images)
        device = target_device(self.search, images.device)
        images = images.to(device, non_blocking=True)
        targets = _target(self.search, labels, images)
        result = self.search.search(scoring_images(self.search, images), targets)
        self.last_result = result
        moved = self.search.apply(images, result.params.to(images.dtype))
        return (moved, _returned_targets(self.search, targets, result), *rest)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.search!r})"


class SpatialSearchCollate:
    """A ``collate_fn`` that collates the samples, then searches the whole batch at once.

    With ``num_workers=0`` it runs in the main process and moves the batch to the model's device.
    In workers it requires live weights (see the module notes) and draws from a per-worker stream of
    the search's generator, so no two workers draw the same candidates; the draws are reproducible
    for a seeded ``DataLoader(generator=...)`` and a fixed number of workers (use
    :class:`SpatialSearchDataset` for results that do not depend on the worker count).

    Args:
        search: the strategy, e.g. :class:`advspatial.WorstOfK`.
        collate_fn: how to build the batch ``(images, labels, *rest)`` from the samples;
            ``torch.utils.data.default_collate`` by default. With a dense task the labels are the
            task's targets and come back moved, as in :class:`SpatialSearchBatch`.

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from advspatial import WorstOfK
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> data = TensorDataset(torch.rand(6, 1, 8, 8), torch.arange(6))
        >>> loader = DataLoader(data, batch_size=3, collate_fn=SpatialSearchCollate(WorstOfK(model, k=2)))
        >>> shapes = {tuple(images.shape) for images, labels in loader}
        >>> shapes == {(3, 1, 8, 8)}
        True
    """

    def __init__(self, search: SpatialSearch, collate_fn: Callable[[list[Any]], Any] | None = None) -> None:
        self.search = check_search(search)
        if collate_fn is not None and not callable(collate_fn):
            raise AdvSpatialError(f"collate_fn must be callable or None, got {type(collate_fn).__name__}")
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self._worker_seed: dict[str, int] = {}

    def __call__(self, samples: list[Any]) -> tuple[Any, ...]:
        """Collate ``samples`` and return ``(transformed images, labels, *rest)``."""
        images, labels, rest = _split_batch(self.collate_fn(samples), type(self).__name__)
        images = check_images(images)
        enter_worker(self.search, type(self).__name__, self._worker_seed)
        if get_worker_info() is None:
            images = images.to(target_device(self.search, images.device))
        targets = _target(self.search, labels, images)
        result = self.search.search(scoring_images(self.search, images), targets)
        moved = self.search.apply(images, result.params.to(images.dtype))
        return (moved, _returned_targets(self.search, targets, result), *rest)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.search!r})"


class SpatialSearchDataset(Dataset[tuple[Tensor, Tensor]]):
    """Wrap a dataset so that each sample comes out under its worst transform.

    Candidates for sample ``index`` in epoch ``e`` are drawn from a generator seeded with
    ``(seed, e, index)``: the output is the same with any number of workers, and differs between
    samples and epochs. Call :meth:`set_epoch` at the start of every epoch; the epoch lives in shared
    memory, so persistent workers see it. In workers the model must be live (see the module notes).

    Args:
        dataset: yields ``(image (C, H, W) float tensor, label int)``; with a dense task
            ``(image, target)`` with one image's target (a mask ``(H, W)``, a box ``(4,)``, points
            ``(P, 2)``), returned moved with the image as the search moved it.
        search: the strategy, e.g. :class:`advspatial.WorstOfK`.
        seed: base seed of the per-sample generators.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from advspatial import WorstOfK
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> plain = TensorDataset(torch.rand(4, 1, 8, 8), torch.arange(4))
        >>> data = SpatialSearchDataset(plain, WorstOfK(model))
        >>> image, label = data.__getitem__(2)
        >>> again, _ = data.__getitem__(2)
        >>> image.shape, int(label), torch.equal(again, image)
        (torch.Size([1, 8, 8]), 2, True)
    """

    def __init__(self, dataset: Dataset[Any], search: SpatialSearch, *, seed: int = 0) -> None:
        if not hasattr(dataset, "__getitem__"):
            raise AdvSpatialError(f"dataset must be a map-style Dataset, got {type(dataset).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise AdvSpatialError(f"seed must be an int, got {seed!r}")
        self.dataset = dataset
        self.search = check_search(search)
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch the per-sample generators are keyed on."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Key the draws on ``epoch`` (visible to persistent workers through shared memory)."""
        self._epoch.fill_(positive_int(epoch, "epoch", minimum=0))

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        sample = self.dataset[index]
        if not isinstance(sample, Sequence) or len(sample) < 2:
            raise AdvSpatialError(
                f"dataset[{index}] must be a pair (image (C, H, W), label), got {type(sample).__name__}"
            )
        image, label = sample[0], sample[1]
        if not isinstance(image, Tensor) or image.ndim != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise AdvSpatialError(f"dataset[{index}][0] must be an image tensor (C, H, W), got {shape}")
        check_worker_model(self.search, type(self).__name__)
        device = target_device(self.search, image.device)
        images = check_images(image.unsqueeze(0).to(device), f"dataset[{index}][0][None]")
        if isinstance(self.search.task, Classification):
            one = torch.as_tensor(label).reshape(1)
        elif isinstance(label, Tensor):
            one = label.unsqueeze(0)
        else:
            raise AdvSpatialError(
                f"dataset[{index}][1] must be the image's target tensor for {self.search.task!r} "
                f"(e.g. a mask (H, W)), got {type(label).__name__}"
            )
        targets = _target(self.search, one.to(device), images, f"dataset[{index}][1]")
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))
        result = run_search(self.search, scoring_images(self.search, images), targets, generator)
        out = self.search.apply(images, result.params.to(images.dtype))[0].to(image.device)
        return out, _returned_targets(self.search, targets, result)[0].to(image.device)
