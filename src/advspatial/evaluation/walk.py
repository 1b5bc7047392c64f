"""The one sweep every metric uses: walk the data, collect per-sample rows in dataset order, reduce.

A metric is a per-batch *step* ``step(images, targets, index) -> BatchRows`` (index: the samples'
dataset positions) and a reduction of the rows :func:`walk` returns. The walk owns everything
else, once:

* the data: a map-style ``Dataset`` (batched in order with ``batch_size``), a ``DataLoader``, or
  any iterable of ``(images, targets)`` batches; images are checked and moved to the model's device;
* the order: rows come back on the CPU, one per sample, in dataset (loader) order;
* distribution: when a process group of several ranks is running (``torchrun``), the data is
  split with ``DistributedSampler(shuffle=False)``, each rank runs the step on its shard, the
  sampler's padding is dropped, the counts are all-reduced and the rows all-gathered into dataset
  order, so that every rank returns what one process returns (call it on every rank; the ranks
  must hold the same model, which is checked);
* randomness: :class:`KeyedDraws` gives sample ``i`` row ``i`` of one sequential stream of draws,
  whatever the batch or the rank that scores it, so random searches give the single-process
  numbers under ``torchrun`` too.

The targets are generic here: the task checks them (labels, masks, boxes, points) and a
task-specific reduction reads them from ``rows["targets"]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler

from advspatial.distributed.collectives import (
    all_gather_tensor,
    all_reduce_sum,
    check_same_model,
    check_same_tensor,
)
from advspatial.distributed.context import DistributedContext, current_context
from advspatial.distributed.sampling import shard_sampler
from advspatial.engine.model_state import check_model, model_device
from advspatial.engine.search import model_outputs
from advspatial.errors import (
    AdvSpatialError,
    check_images,
    check_label_range,
    optional_generator,
    positive_int,
)
from advspatial.tasks import Classification, Task

__all__ = ["BatchRows", "Data", "KeyedDraws", "Step", "Walk", "model_logits", "walk"]

Data = Dataset[Any] | DataLoader[Any] | Iterable[Any]
"""What every evaluation function walks: a map-style dataset, a loader, or an iterable of batches."""

DEFAULT_BATCH_SIZE = 256
_INDEX, _OWNED = " index", " owned"  # the walk's own rows (no step's row name starts with a space)


@dataclass(frozen=True)
class BatchRows:
    """What a step returns for one batch of ``B`` samples.

    Attributes:
        rows: per-sample tensors, each with leading dimension ``B``.
        counts: integers summed over batches (and ranks), e.g. forward evaluations.
    """

    rows: dict[str, Tensor]
    counts: dict[str, int] = field(default_factory=dict)


Step = Callable[[Tensor, Tensor, Tensor], BatchRows]
"""``step(images (B, ...) on the model's device, targets (B, ...), index (B,) long) -> BatchRows``."""


@dataclass(frozen=True)
class Walk:
    """The rows of every sample, in dataset order, on the CPU.

    Attributes:
        rows: ``{name: (N, ...) tensor}``; ``"targets"`` is always there (empty data: only it).
        counts: summed counts.
        seconds: wall time of the walk.
    """

    rows: dict[str, Tensor]
    counts: dict[str, int]
    seconds: float

    @property
    def samples(self) -> int:
        """Number of samples walked."""
        return int(self.rows["targets"].shape[0])

    def row(self, name: str, empty: Tensor) -> Tensor:
        """``rows[name]``, or ``empty`` when no batch was walked."""
        return self.rows.get(name, empty)


class KeyedDraws:
    """Random rows keyed by dataset index: sample ``i`` gets row ``i`` of one sequential stream.

    ``draw(n, device)`` draws the next ``n`` rows from a generator. Rows are drawn lazily, in
    order, up to the largest index asked for: walking the data in order draws exactly what drawing
    batch by batch would, so the keyed rows equal the single-process draws whatever the batch size,
    and any rank can look up the rows of its own samples. Under ``torchrun`` the walk checks that
    the generator is in the same state on every rank, and draws the whole stream on every rank at
    the end so that the generators stay in step.

    Args:
        draw: ``draw(n, device) -> (n, ...)`` tensor of the next ``n`` rows.
        generator: the generator ``draw`` advances (``None``: torch's global generator, refused
            under ``torchrun``, where the ranks' global streams differ).

    Example:
        >>> generator = torch.Generator().manual_seed(0)
        >>> draws = KeyedDraws(lambda n, device: torch.rand(n, generator=generator, device=device), generator)
        >>> later = draws(torch.tensor([3, 4]), torch.device("cpu"))
        >>> torch.equal(later, torch.rand(5, generator=torch.Generator().manual_seed(0))[3:])
        True
    """

    def __init__(
        self, draw: Callable[[int, torch.device], Tensor], generator: torch.Generator | None
    ) -> None:
        self._draw = draw
        self.generator = optional_generator(generator)
        self._table: Tensor | None = None

    @property
    def drawn(self) -> int:
        """Rows drawn so far."""
        return 0 if self._table is None else int(self._table.shape[0])

    def extend_to(self, count: int, device: torch.device) -> None:
        """Draw rows until ``count`` are drawn."""
        if count > self.drawn:
            rows = self._draw(count - self.drawn, device)
            self._table = (
                rows if self._table is None else torch.cat([self._table, rows.to(self._table.device)])
            )

    def __call__(self, index: Tensor, device: torch.device) -> Tensor:
        """The rows of the samples at dataset positions ``index``, on ``device``."""
        if index.numel():
            self.extend_to(int(index.max()) + 1, device)
        if self._table is None:
            return self._draw(0, device)
        return self._table[index.to(self._table.device)].to(device)


def model_logits(model: nn.Module, images: Tensor, labels: Tensor | None = None) -> Tensor:
    """The model's float32 logits on ``images`` in eval mode (the model is left as it was), checked.

    Chunked with out-of-memory back-off (:func:`advspatial.engine.model_outputs`). Raises a clear
    :class:`~advspatial.errors.AdvSpatialError` when the model does not return one
    ``(B, num_classes)`` tensor of finite logits, or when ``labels`` index past its classes.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> model_logits(model, torch.rand(2, 1, 2, 2)).shape
        torch.Size([2, 3])
    """
    logits = model_outputs(model, images, Classification()).float()
    if labels is not None:
        check_label_range(labels, logits.shape[1])
    return logits


def _pair(batch: Any, device: torch.device, task: Task) -> tuple[Tensor, Tensor]:
    if not (isinstance(batch, Sequence) and len(batch) == 2):
        raise AdvSpatialError(
            f"data must yield (images, targets) pairs, got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, Sequence) else "")
        )
    images = check_images(batch[0]).to(device)
    return images, task.check_targets(batch[1], images)


def _is_map_dataset(data: object) -> bool:
    return isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__")


def _one_process_batches(data: Data, batch_size: int | None) -> Iterable[Any]:
    if _is_map_dataset(data):
        return DataLoader(data, batch_size=batch_size or DEFAULT_BATCH_SIZE, shuffle=False)  # type: ignore[arg-type]
    if batch_size is not None:
        raise AdvSpatialError(
            f"batch_size applies to a Dataset; {type(data).__name__} brings its own batches"
        )
    if not isinstance(data, Iterable):
        raise AdvSpatialError(
            f"data must be a Dataset, a DataLoader or an iterable of (images, labels) batches, "
            f"got {type(data).__name__}"
        )
    return data


def _sharded_batches(
    data: Data, batch_size: int | None, context: DistributedContext
) -> tuple[DataLoader[Any], list[int], Tensor, int]:
    """This rank's loader, the dataset index of each of its positions, which it owns, and ``N``."""
    if _is_map_dataset(data):
        dataset, size, options = data, batch_size or DEFAULT_BATCH_SIZE, {}
    elif isinstance(data, DataLoader) and batch_size is None and _is_map_dataset(data.dataset):
        if not isinstance(data.sampler, SequentialSampler) or data.batch_size is None or data.drop_last:
            raise AdvSpatialError(
                "under torchrun the DataLoader must walk its dataset in order to be sharded "
                "(shuffle=False, a batch_size, drop_last=False, no custom sampler)"
            )
        dataset, size = data.dataset, data.batch_size
        options = {
            "collate_fn": data.collate_fn,
            "num_workers": data.num_workers,
            "pin_memory": data.pin_memory,
        }
    else:
        raise AdvSpatialError(
            f"under torchrun ({context.world_size} processes) data must be a map-style Dataset or a "
            f"DataLoader over one, to be sharded; got {type(data).__name__}"
            + (" with batch_size" if batch_size is not None else "")
        )
    sampler, owned = shard_sampler(dataset, context)  # type: ignore[arg-type]
    loader = DataLoader(dataset, batch_size=size, sampler=sampler, **options)  # type: ignore[arg-type]
    return loader, list(sampler), owned, len(dataset)  # type: ignore[arg-type]


def _progress(batches: Iterable[Any], show: bool, desc: str) -> Iterable[Any]:
    if not show:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=desc, unit="batch", leave=False)


def _run(
    batches: Iterable[Any],
    device: torch.device,
    step: Step,
    index_of: Callable[[int, int], Tensor],
    task: Task,
) -> Iterator[tuple[BatchRows, Tensor, Tensor]]:
    seen = 0
    for batch in batches:
        images, targets = _pair(batch, device, task)
        index = index_of(seen, images.shape[0])
        seen += images.shape[0]
        out = step(images, targets, index)
        yield out, targets, index


def _concat(parts: dict[str, list[Tensor]]) -> dict[str, Tensor]:
    return {key: torch.cat(values) for key, values in parts.items()}


def walk(
    model: nn.Module,
    data: Data,
    step: Step,
    *,
    name: str = "evaluate",
    batch_size: int | None = None,
    progress: bool = False,
    draws: Sequence[KeyedDraws] = (),
    task: Task | None = None,
) -> Walk:
    """Run ``step`` on every batch of ``data`` and return every sample's rows in dataset order.

    Args:
        model: the evaluated model (plain or DDP-wrapped); batches go to its device.
        data: a map-style ``Dataset`` of ``(image, target)`` pairs (batched in order), a
            ``DataLoader``, or any iterable of ``(images, targets)`` batches (one process only).
        step: the metric's per-batch step.
        name: the progress bar's label.
        batch_size: batch size for a ``Dataset`` (default 256); refused for other data.
        progress: show a progress bar (on rank 0 only).
        draws: the random streams ``step`` uses, kept in step across ranks.
        task: checks the targets of each batch (labels for the default
            :class:`~advspatial.tasks.Classification`, masks for segmentation, ...).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> data = torch.utils.data.TensorDataset(torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
        >>> def step(images, targets, index):
        ...     return BatchRows({"index": index}, {"images": len(index)})
        >>> out = walk(model, data, step, batch_size=2)
        >>> out.rows["index"].tolist(), out.counts, out.samples
        ([0, 1, 2, 3, 4], {'images': 5}, 5)
    """
    check_model(model)
    if batch_size is not None:
        positive_int(batch_size, "batch_size")
    device = model_device(model) or torch.device("cpu")
    context = current_context()
    start = time.perf_counter()
    sharded = context.world_size > 1
    if sharded:
        check_same_model(model, context)
        for stream in draws:
            _check_same_stream(stream, context)
        loader, positions, owned, total = _sharded_batches(data, batch_size, context)
        batches: Iterable[Any] = loader

        def index_of(seen: int, count: int) -> Tensor:
            return torch.tensor(positions[seen : seen + count], dtype=torch.long)
    else:
        batches = _one_process_batches(data, batch_size)

        def index_of(seen: int, count: int) -> Tensor:
            return torch.arange(seen, seen + count)

    parts: dict[str, list[Tensor]] = {"targets": [], _INDEX: []}
    counts: dict[str, int] = {}
    for out, targets, index in _run(
        _progress(batches, progress and context.is_main, name),
        device,
        step,
        index_of,
        task or Classification(),
    ):
        for key, value in out.rows.items():
            if key in ("targets", _INDEX):
                raise AdvSpatialError(f"a step's rows must not be named {key!r} (the walk keeps it)")
            parts.setdefault(key, []).append(value.detach().cpu())
        parts["targets"].append(targets.detach().cpu())
        parts[_INDEX].append(index)
        for key, number in out.counts.items():
            counts[key] = counts.get(key, 0) + int(number)
    if not parts["targets"]:
        parts = {"targets": [torch.zeros(0, dtype=torch.long)], _INDEX: [torch.zeros(0, dtype=torch.long)]}
    local = _concat(parts)
    if not sharded:
        del local[_INDEX]
        return Walk(local, counts, time.perf_counter() - start)
    for stream in draws:  # every rank consumes the whole stream, as one process would
        stream.extend_to(total, device)
    keys = sorted(counts)
    counted, *sums = all_reduce_sum([int(owned.sum()), *(counts[k] for k in keys)], context)
    if counted != total:
        raise AdvSpatialError(f"the shards hold {counted} samples, expected len(dataset) = {total}")
    rows = _gather_in_order({**local, _OWNED: owned}, total, context)
    return Walk(rows, dict(zip(keys, sums, strict=True)), time.perf_counter() - start)


def _gather_in_order(local: dict[str, Tensor], total: int, context: DistributedContext) -> dict[str, Tensor]:
    """Every rank's rows, padding dropped, put back at their dataset positions."""
    gathered = {key: all_gather_tensor(value, context).flatten(0, 1) for key, value in local.items()}
    keep = gathered.pop(_OWNED)
    order = gathered.pop(_INDEX)[keep]
    rows = {}
    for key, values in gathered.items():
        out = torch.empty((total, *values.shape[1:]), dtype=values.dtype)
        out[order] = values[keep]
        rows[key] = out
    return rows


def _check_same_stream(stream: KeyedDraws, context: DistributedContext) -> None:
    if stream.generator is None:
        raise AdvSpatialError(
            "under torchrun a random search needs a generator seeded alike on every rank "
            "(e.g. generator=torch.Generator().manual_seed(seed)), so that every sample meets the "
            "candidates it would meet in one process; got generator=None"
        )
    check_same_tensor(
        stream.generator.get_state().to(torch.int64),
        "the random search's generator is in a different state on each rank; seed it alike on every "
        "rank (torch.Generator().manual_seed(seed), not rank_generator) for a sharded evaluation",
        context,
    )
