"""What every adapter shares: running a search safely inside DataLoader workers, seeding it, and the
dtype the model scores in.

A transform that runs inside a ``Dataset`` or a ``collate_fn`` with ``num_workers > 0`` runs in a worker
process that holds its own copy of the model. That copy is only live if the weights are in shared
memory (``model.share_memory()`` on a CPU model): the optimizer then updates the very storage the
workers read. Anything else would score against stale weights, so :func:`check_worker_model` refuses.

Forked children: importing an adapter registers an ``os.register_at_fork`` hook that sets one torch
thread in every forked child process (as the DataLoader does in its workers). A child forked after the
parent ran a search (e.g. by ``multiprocessing.Pool`` with the ``fork`` start method) would otherwise
hang in torch's OpenMP thread pool, which does not survive ``fork``.
"""

from __future__ import annotations

import inspect
import os
from itertools import chain

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from advspatial.engine.model_state import model_device, unwrap_model
from advspatial.errors import AdvSpatialError
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.result import SearchResult
from advspatial.tasks import Segmentation

__all__ = [
    "check_search",
    "check_worker_model",
    "enter_worker",
    "mask_fill_for",
    "mix_seed",
    "run_search",
    "scoring_dtype",
    "scoring_images",
    "target_device",
    "worker_generator",
]

_BATCH_FORM = (
    "use the batch form on the training device instead: "
    "`for images, labels in loader: images = search(images.to(device), labels.to(device))` "
    "(advspatial.adapters.dataloader.SpatialSearchBatch), or num_workers=0"
)


def check_search(search: object, name: str = "search") -> SpatialSearch:
    """Check that ``search`` is a strategy such as :class:`advspatial.WorstOfK`."""
    if not isinstance(search, SpatialSearch):
        raise AdvSpatialError(
            f"{name} must be an advspatial.SpatialSearch (e.g. WorstOfK(model)), got {type(search).__name__}"
        )
    return search


def check_worker_model(search: SpatialSearch, where: str) -> None:
    """Refuse to score in a DataLoader worker unless the worker sees the model's current weights.

    Outside a worker this does nothing. Inside one, the model must be on the CPU (CUDA cannot be used
    in a forked worker) and every parameter and buffer must live in shared memory.
    """
    info = get_worker_info()
    if info is None:
        return
    model = unwrap_model(search.model)
    device = model_device(model)
    if device is not None and device.type != "cpu":
        raise AdvSpatialError(
            f"{where} runs in DataLoader worker {info.id}, but the model is on {device}: a worker cannot "
            f"score on that device (CUDA does not start in forked workers) and a copy of the model "
            f"would be stale; {_BATCH_FORM}"
        )
    stale = [
        name
        for name, tensor in chain(model.named_parameters(), model.named_buffers())
        if not tensor.is_shared()
    ]
    if stale:
        raise AdvSpatialError(
            f"{where} runs in DataLoader worker {info.id}, but the model's weights are not in shared memory "
            f"(e.g. {stale[0]!r}), so the worker would score with a stale copy of the weights. Call "
            f"model.share_memory() on the CPU model before creating the DataLoader, or {_BATCH_FORM}"
        )


def mix_seed(*values: int) -> int:
    """Combine integers into one 63-bit seed (a splitmix-style hash; stable across runs)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & 0x7FFFFFFFFFFFFFFF


def worker_generator(search: SpatialSearch, cache: dict[str, int]) -> None:
    """Give the search's own generator a distinct stream in each DataLoader worker.

    Workers receive copies of the generator in the same state and would all draw the same candidates.
    In a worker, the generator is reseeded once from its initial seed and the worker's seed (which the
    DataLoader derives from its base seed, so the stream is reproducible with a seeded loader).
    ``cache`` remembers which worker seed was applied. A search without its own generator draws from
    torch's global generator, which the DataLoader already seeds per worker.
    """
    info = get_worker_info()
    generator = getattr(search, "generator", None)
    if info is None or not isinstance(generator, torch.Generator) or cache.get("seed") == info.seed:
        return
    if "base" not in cache:
        cache["base"] = generator.initial_seed()
    generator.manual_seed(mix_seed(cache["base"], info.seed))
    cache["seed"] = info.seed


def enter_worker(search: SpatialSearch, where: str, cache: dict[str, int]) -> None:
    """What an adapter does before each search: refuse a stale model in a DataLoader worker
    (:func:`check_worker_model`) and give the worker its own generator stream
    (:func:`worker_generator`, ``cache`` being the adapter's)."""
    check_worker_model(search, where)
    worker_generator(search, cache)


def mask_fill_for(search: SpatialSearch, mask_fill: object, where: str) -> int | float:
    """The value moved masks take outside the frame: ``mask_fill``, or by default (``None``) the task's
    ``ignore_index`` for :class:`~advspatial.tasks.Segmentation` and 0 otherwise.

    With a segmentation task the masks a user trains on must be the masks the search scored, whose
    out-of-frame pixels are ``ignore_index``: any other ``mask_fill`` is refused.
    """
    task = search.task
    if mask_fill is not None and (isinstance(mask_fill, bool) or not isinstance(mask_fill, int | float)):
        raise AdvSpatialError(f"mask_fill must be a number or None, got {mask_fill!r}")
    if isinstance(task, Segmentation):
        if mask_fill is not None and mask_fill != task.ignore_index:
            raise AdvSpatialError(
                f"{where}: mask_fill={mask_fill!r} differs from the task's ignore_index={task.ignore_index}; "
                "with a Segmentation task moved masks are filled with ignore_index (as the search scored "
                "them): leave mask_fill unset"
            )
        return task.ignore_index
    return 0 if mask_fill is None else mask_fill


def target_device(search: SpatialSearch, fallback: torch.device) -> torch.device:
    """The device of the search's model, or ``fallback`` for a model without parameters or buffers."""
    device = model_device(unwrap_model(search.model))
    return fallback if device is None else device


def scoring_dtype(search: SpatialSearch, fallback: torch.dtype = torch.float32) -> torch.dtype:
    """The floating dtype the model computes in: that of its first floating parameter or buffer.

    ``fallback`` for a model without floating tensors (e.g. the input's own float dtype).
    """
    model = unwrap_model(search.model)
    for tensor in chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return fallback


def scoring_images(search: SpatialSearch, images: Tensor) -> Tensor:
    """``images`` (float, ``(B, C, H, W)``) as the model scores them: on its device and in its float dtype.

    A float16 or float64 image with a float32 model (or a float32 one with a float64 model) would make
    the model's first layer fail on the dtype mismatch; the adapters score a cast copy and return the
    transformed input in the input's own dtype.
    """
    device = target_device(search, images.device)
    return images.to(device=device, dtype=scoring_dtype(search, images.dtype))


def run_search(
    search: SpatialSearch, images: Tensor, labels: Tensor | None, generator: torch.Generator | None = None
) -> SearchResult:
    """``search.search(images, labels)``, with ``generator`` for the strategies that draw at random."""
    if generator is not None and "generator" in inspect.signature(search.search).parameters:
        return search.search(images, labels, generator=generator)  # type: ignore[call-arg]
    return search.search(images, labels)


def _one_thread_in_forked_child() -> None:
    torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_one_thread_in_forked_child)
