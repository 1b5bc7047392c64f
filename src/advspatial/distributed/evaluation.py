"""Sharded accuracy under a spatial search: each rank scores its shard, the counts are reduced (layer 7).

The dataset is split with ``DistributedSampler(shuffle=False, drop_last=False)``, which pads the
last shard by repeating samples so that every rank has the same number. The padding is dropped:
the counts are all-reduced over the samples each rank *owns* (sampler position ``< len(dataset)``)
and the per-sample details are all-gathered and put back in dataset order, so every rank returns
the single-process :class:`advspatial.evaluation.SweepResult`. The ranks must hold the same model
(checked: a per-tensor checksum is compared; see
:func:`~advspatial.distributed.broadcast_model_state`). For a deterministic search (grid,
first-order without random start) and for :func:`sharded_worst_of_k_accuracy` (candidates keyed
by dataset index) the numbers equal those of one process.

Without a process group these functions run in one process over the whole dataset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from advspatial.distributed.context import DistributedContext, current_context
from advspatial.distributed.sampling import candidate_table
from advspatial.engine.model_state import check_model, model_device
from advspatial.engine.search import score_candidates
from advspatial.errors import AdvSpatialError, positive_int
from advspatial.evaluation.outcomes import (
    Outcome,
    OutcomeRows,
    natural_outcome,
    result_outcome,
    search_outcome,
)
from advspatial.evaluation.sweeps import SweepResult, _batch_pair, _iterate
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.first_order import SpatialPGD
from advspatial.strategies.grid import GridSearchRotoTranslation
from advspatial.strategies.worst_of_k import WorstOfK

__all__ = [
    "IndexedDataset",
    "shard_loader",
    "sharded_grid_accuracy",
    "sharded_robustness_sweep",
    "sharded_search_accuracy",
    "sharded_worst_of_k_accuracy",
]

# step(images, labels, indices) -> the batch's outcome
Step = Callable[[Tensor, Tensor, Tensor], Outcome]


class IndexedDataset(Dataset[tuple[Any, Any, int]]):
    """Wraps a dataset of ``(image, label)`` pairs to yield ``(image, label, index)``."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        item = self.dataset[index]
        if not (isinstance(item, Sequence) and len(item) == 2):
            raise AdvSpatialError(
                f"dataset must yield (image, label) pairs, got {type(item).__name__} at index {index}"
            )
        return item[0], item[1], index


def shard_loader(
    dataset: Dataset[Any], *, batch_size: int = 256, context: DistributedContext | None = None
) -> DataLoader[Any]:
    """This rank's shard of ``dataset`` in order, as batches of ``(images, labels, indices)``.

    The sampler is ``DistributedSampler(shuffle=False, drop_last=False)``: rank ``r`` gets the
    sampler positions ``r, r + W, r + 2W, ...``; positions ``>= len(dataset)`` are padding.

    Example:
        >>> data = torch.utils.data.TensorDataset(torch.rand(5, 1, 8, 8), torch.arange(5))
        >>> batches = list(shard_loader(data, batch_size=2))
        >>> [len(batch[2]) for batch in batches], torch.cat([batch[2] for batch in batches])
        ([2, 2, 1], tensor([0, 1, 2, 3, 4]))
    """
    positive_int(batch_size, "batch_size")
    context = context or current_context()
    indexed = IndexedDataset(dataset)
    if context.world_size == 1:
        return DataLoader(indexed, batch_size=batch_size, shuffle=False)
    sampler: DistributedSampler[Any] = DistributedSampler(
        indexed, num_replicas=context.world_size, rank=context.rank, shuffle=False, drop_last=False
    )
    return DataLoader(indexed, batch_size=batch_size, sampler=sampler)


def _gather(tensor: Tensor, context: DistributedContext) -> Tensor:
    """All-gather equal-shaped tensors; ``(W, *shape)`` on CPU."""
    if context.world_size == 1:
        return tensor.unsqueeze(0)
    local = tensor.to(context.device).contiguous()
    parts = [torch.empty_like(local) for _ in range(context.world_size)]
    dist.all_gather(parts, local)
    return torch.stack(parts).cpu()


def _reduce_sum(values: list[int], context: DistributedContext) -> list[int]:
    if context.world_size == 1:
        return values
    total = torch.tensor(values, dtype=torch.int64, device=context.device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return [int(v) for v in total.tolist()]


def _check_same_model(model: nn.Module, context: DistributedContext) -> None:
    """Raise when the ranks hold different parameters or buffers (a float64 checksum per rank)."""
    if context.world_size == 1:
        return
    tensors = [*model.parameters(), *model.buffers()]
    local = torch.tensor(
        [float(t.detach().double().abs().sum()) + float(t.detach().double().sum()) for t in tensors] or [0.0],
        dtype=torch.float64,
    )
    sums = _gather(local, context)
    if not bool((sums == sums[0]).all()):
        raise AdvSpatialError(
            "the ranks hold different models (parameters or buffers differ, e.g. BatchNorm running "
            "statistics after DDP training); call advspatial.distributed.broadcast_model_state(model) "
            "on every rank before a sharded evaluation"
        )


def _collect(
    name: str, model: nn.Module, dataset: Dataset[Any], step: Step, batch_size: int, progress: bool
) -> SweepResult:
    check_model(model)
    context = current_context()
    device = model_device(model) or torch.device("cpu")
    total = len(dataset)  # type: ignore[arg-type]
    _check_same_model(model, context)
    start = time.perf_counter()
    loader = shard_loader(dataset, batch_size=batch_size, context=context)
    indices: list[Tensor] = []
    rows = OutcomeRows()
    for images, targets, index in _iterate(loader, progress and context.is_main, name):
        images, targets = _batch_pair((images, targets), device)
        rows.add(step(images, targets, index), targets)
        indices.append(index.long())
    local = rows.tensors()
    local_index = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long)
    local_correct = local["correct"]
    # Sampler position of each local sample; positions past the dataset are the sampler's padding.
    positions = context.rank + context.world_size * torch.arange(local_index.numel())
    owned = positions < total
    right, counted, evaluations, exhaustive = _reduce_sum(
        [int(local_correct[owned].sum()), int(owned.sum()), rows.evaluations, rows.exhaustive_evaluations],
        context,
    )
    if counted != total:
        raise AdvSpatialError(f"the shards hold {counted} samples, expected len(dataset) = {total}")
    local.update(index=local_index, owned=owned)
    gathered = {key: _gather(value, context).flatten(0, 1) for key, value in local.items()}
    keep = gathered["owned"]
    order = gathered["index"][keep]

    def in_dataset_order(values: Tensor) -> Tensor:
        out = torch.empty((total, *values.shape[1:]), dtype=values.dtype)
        out[order] = values[keep]
        return out

    return SweepResult(
        name=name,
        # float32 mean, as the single-process sweeps compute it
        accuracy=float(torch.tensor(right, dtype=torch.float32) / total) if total else float("nan"),
        correct=in_dataset_order(gathered["correct"]),
        labels=in_dataset_order(gathered["labels"]),
        params=in_dataset_order(gathered["params"]),
        loss=in_dataset_order(gathered["loss"]),
        evaluations=evaluations,
        exhaustive_evaluations=exhaustive,
        seconds=time.perf_counter() - start,
    )


def sharded_search_accuracy(
    model: nn.Module,
    dataset: Dataset[Any],
    search: SpatialSearch | None = None,
    *,
    batch_size: int = 256,
    name: str | None = None,
    progress: bool = False,
) -> SweepResult:
    """Accuracy over ``dataset`` under ``search`` (natural accuracy when ``None``), sharded over ranks.

    Every rank returns the same result: the accuracy and the per-sample details (correctness,
    chosen params, loss, labels) of the whole dataset in dataset order; ``evaluations`` sums the
    work of all ranks (the sampler's padding included). Call it on every rank (it is collective).

    Args:
        model: the evaluated classifier (plain or DDP-wrapped), on this rank's device.
        dataset: map-style dataset of ``(image (C, H, W) float, label)`` pairs.
        search: any :class:`advspatial.SpatialSearch` holding ``model``, or ``None``.
        batch_size: per-rank batch size.
        name: the result's name; ``"natural"`` or ``"search"`` by default.
        progress: progress bar on rank 0.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> data = torch.utils.data.TensorDataset(torch.rand(6, 1, 8, 8), torch.arange(6))
        >>> grid = GridSearchRotoTranslation(model, rotations=3, translations=1)
        >>> result = sharded_search_accuracy(model, data, grid, batch_size=4)
        >>> result.correct.shape, result.evaluations
        (torch.Size([6]), 18)
    """
    if search is None:

        def natural(images: Tensor, labels: Tensor, index: Tensor) -> Outcome:
            return natural_outcome(model, images, labels)

        return _collect(name or "natural", model, dataset, natural, batch_size, progress)
    if not isinstance(search, SpatialSearch):
        raise AdvSpatialError(
            f"search must be an advspatial.SpatialSearch or None, got {type(search).__name__}"
        )
    if search.model is not model:
        raise AdvSpatialError("search must hold the same model object that is evaluated")

    def searched(images: Tensor, labels: Tensor, index: Tensor) -> Outcome:
        return search_outcome(search, images, labels)

    return _collect(name or "search", model, dataset, searched, batch_size, progress)


def sharded_worst_of_k_accuracy(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    k: int = 10,
    max_rotation: float = 30.0,
    max_translation: float | Sequence[float] = 3.0,
    seed: int = 0,
    batch_size: int = 256,
    name: str | None = None,
    progress: bool = False,
) -> SweepResult:
    """Worst-of-``k`` accuracy, sharded, with the candidates of each sample keyed by its index.

    Sample ``i`` gets row ``i`` of :func:`advspatial.distributed.candidate_table`, whatever the
    number of ranks: the result equals
    ``worst_of_k_accuracy(model, DataLoader(dataset), k=k, generator=torch.Generator().manual_seed(seed))``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> data = torch.utils.data.TensorDataset(torch.rand(6, 1, 8, 8), torch.arange(6))
        >>> sharded_worst_of_k_accuracy(model, data, k=4, batch_size=4).evaluations
        24
    """
    search = WorstOfK(model, k=k, max_rotation=max_rotation, max_translation=max_translation)
    table = candidate_table(search.box, len(dataset), k, seed)  # type: ignore[arg-type]

    def step(images: Tensor, labels: Tensor, index: Tensor) -> Outcome:
        candidates = table[index].to(images.device)
        scores = score_candidates(model, images, labels, candidates, search.config)
        return result_outcome(search._result(scores, candidates, images, labels))

    return _collect(name or f"worst_of_{k}", model, dataset, step, batch_size, progress)


def sharded_grid_accuracy(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    rotations: int = 31,
    translations: int | Sequence[int] = 5,
    max_rotation: float = 30.0,
    max_translation: float | Sequence[float] = 3.0,
    early_exit: bool = True,
    batch_size: int = 256,
    progress: bool = False,
) -> SweepResult:
    """Grid accuracy (31 x 5 x 5 by default), sharded; equals the single-process grid accuracy.

    With ``early_exit`` the accuracy and the per-sample correctness are exact; the chosen params of
    a fooled sample are *a* fooling transform and may depend on which samples share its batch.
    """
    search = GridSearchRotoTranslation(
        model,
        rotations=rotations,
        translations=translations,
        max_rotation=max_rotation,
        max_translation=max_translation,
        early_exit=early_exit,
    )
    return sharded_search_accuracy(
        model, dataset, search, batch_size=batch_size, name="grid", progress=progress
    )


def sharded_robustness_sweep(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    max_rotation: float = 30.0,
    max_translation: float | Sequence[float] = 3.0,
    k: int = 10,
    rotations: int = 31,
    translations: int | Sequence[int] = 5,
    pgd_steps: int = 5,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, SweepResult]:
    """:func:`advspatial.evaluation.robustness_sweep`, sharded over the ranks: the same keys and numbers.

    Random (worst-of-1, seed ``seed``) and worst-of-k (seed ``seed + 1``) use index-keyed
    candidates, so they match a single process walking the dataset in order with those seeds.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> data = torch.utils.data.TensorDataset(torch.rand(4, 1, 8, 8), torch.arange(4))
        >>> sorted(sharded_robustness_sweep(model, data, rotations=3, translations=3, pgd_steps=1))
        ['first_order', 'grid', 'natural', 'random', 'worst_of_10']
    """
    positive_int(seed, "seed", minimum=0)
    space: dict[str, Any] = {"max_rotation": max_rotation, "max_translation": max_translation}
    common: dict[str, Any] = {"batch_size": batch_size, "progress": progress}
    pgd = SpatialPGD(model, steps=pgd_steps, **space)
    results = [
        sharded_search_accuracy(model, dataset, None, **common),
        sharded_worst_of_k_accuracy(model, dataset, k=1, seed=seed, name="random", **space, **common),
        sharded_worst_of_k_accuracy(model, dataset, k=k, seed=seed + 1, **space, **common),
        sharded_grid_accuracy(
            model, dataset, rotations=rotations, translations=translations, **space, **common
        ),
        sharded_search_accuracy(model, dataset, pgd, name="first_order", **common),
    ]
    return {result.name: result for result in results}
