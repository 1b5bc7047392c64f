"""A search's time against the bare forward passes at their best batch size, in one run (layer 7).

The baseline is not the search's own chunk: the same pre-warped (image, candidate) pairs are run
through the model bare at several batch sizes, and the fastest of them is the baseline. So the ratio
also says whether the chunk the search used is right for this model on this machine.

Procedure (all in one process, on one device):

1. One bare pass at the smallest batch size warms the model's kernels.
2. The chunk tuner of the model is cleared and searches are run until it has settled (at most
   ``max_tuning_searches``); their times are the *tuning searches*.
3. ``rounds`` alternating rounds: in each, the search once and every bare batch size once, so that a
   change in the machine's speed during the run affects both sides alike. The fastest time of each
   side counts (other load only ever slows a run down).
4. The tuning cost is the sum over the tuning searches of their time beyond the fastest settled search.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from advspatial.engine.model_state import scoring_mode, unwrap_model
from advspatial.engine.tuning import chunk_tuner, forget_chunk_tunings
from advspatial.errors import AdvSpatialError, check_images, positive_int
from advspatial.geometry.warp import roto_translate
from advspatial.strategies.grid import GridSearch
from advspatial.strategies.worst_of_k import WorstOfK

__all__ = ["BARE_BATCH_SIZES", "BestBareCost", "bare_batch_sizes", "measure_against_best_bare"]

BARE_BATCH_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
"""Batch sizes the bare forward passes are timed at (those above the pair count are left out)."""


@dataclass(frozen=True)
class BestBareCost:
    """A search against its bare forward passes at their fastest batch size.

    Attributes:
        search_seconds: fastest settled search.
        bare_seconds: fastest bare forward passes over the same pairs, per batch size.
        best_batch: the batch size of the fastest bare passes.
        ratio: ``search_seconds / bare_seconds[best_batch]``.
        chunk_size: the chunk the search used (the tuner's choice unless given).
        settled: whether the tuner settled (``False`` when every call was smaller than half its first
            size, so each ran as one chunk, or after ``max_tuning_searches``).
        tuning_searches: searches run until the tuner settled (0 with an explicit chunk size).
        tuning_seconds: their time beyond as many settled searches.
        evaluations: (image, candidate) pairs per search.
    """

    search_seconds: float
    bare_seconds: dict[int, float]
    best_batch: int
    ratio: float
    chunk_size: int
    settled: bool
    tuning_searches: int
    tuning_seconds: float
    evaluations: int


def bare_batch_sizes(pairs: int, chunk: int, sizes: Sequence[int] = BARE_BATCH_SIZES) -> list[int]:
    """The bare batch sizes worth timing for ``pairs`` pairs: those below it, all of them in one batch
    (when ``sizes`` reach that far), and the search's own ``chunk``.

    Example:
        >>> bare_batch_sizes(320, 256), bare_batch_sizes(775, 100, (16, 64))
        ([16, 32, 64, 128, 256, 320], [16, 64, 100])
    """
    chosen = {size for size in sizes if size < pairs}
    if max(sizes) >= pairs:
        chosen.add(pairs)
    chosen.add(min(chunk, pairs))
    return sorted(chosen)


def _seconds(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure_against_best_bare(
    search: WorstOfK | GridSearch,
    images: Tensor,
    labels: Tensor,
    *,
    rounds: int = 3,
    sizes: Sequence[int] = BARE_BATCH_SIZES,
    max_tuning_searches: int = 50,
) -> BestBareCost:
    """Time ``search`` and the bare forward passes of its pairs at every batch size of ``sizes``.

    Args:
        search: a :class:`advspatial.WorstOfK` or an exhaustive
            :class:`advspatial.GridSearch` (early exit would skip pairs), roto-translation or affine.
        images: ``(B, C, H, W)`` on the model's device.
        labels: the search task's targets (``(B,)`` class indices; ``(B, H, W)`` masks for
            segmentation).
        rounds: alternating rounds; the fastest time of each side counts.
        sizes: bare batch sizes to try (see :func:`bare_batch_sizes`).
        max_tuning_searches: stop waiting for the tuner after this many searches.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> cost = measure_against_best_bare(WorstOfK(model, k=4), torch.rand(8, 1, 8, 8),
        ...                                  torch.zeros(8, dtype=torch.long), rounds=1)
        >>> cost.evaluations, sorted(cost.bare_seconds), cost.ratio > 0
        (32, [16, 32], True)
    """
    images = check_images(images)
    labels = search.task.check_targets(labels, images)
    rounds = positive_int(rounds, "rounds")
    if isinstance(search, WorstOfK):
        candidates = search.sample(images.shape[0], images.device, torch.Generator().manual_seed(0))
    elif isinstance(search, GridSearch) and not search.early_exit:
        candidates = search.candidates.to(images.device).expand(images.shape[0], -1, -1)
    else:
        raise AdvSpatialError(f"search must be a WorstOfK or an exhaustive GridSearch, got {search!r}")
    batch, count = candidates.shape[:2]
    warped = roto_translate(images.repeat_interleave(count, dim=0), candidates.reshape(batch * count, -1))
    device, autocast = images.device, search.config.autocast

    def bare(size: int) -> None:
        mixed = search.config.autocast_context(device)
        with scoring_mode(search.model) as net, torch.inference_mode(), mixed:
            for start in range(0, warped.shape[0], size):
                net(warped[start : start + size])

    def run_search() -> None:
        search.search(images, labels)

    bare(min(sizes))
    tuning: list[float] = []
    chunk, settled = search.config.chunk_size, True
    if chunk is None:
        net = unwrap_model(search.model)
        forget_chunk_tunings(net)
        tuner = chunk_tuner(net, images, autocast)
        while not tuner.settled and len(tuning) < max_tuning_searches:
            tuning.append(_seconds(run_search, device))
        chunk, settled = tuner.size(), tuner.settled
    else:
        run_search()  # warm-up
    batch_sizes = bare_batch_sizes(batch * count, chunk, sizes)
    fastest_search, fastest_bare = math.inf, dict.fromkeys(batch_sizes, math.inf)
    for _ in range(rounds):
        fastest_search = min(fastest_search, _seconds(run_search, device))
        for size in batch_sizes:
            fastest_bare[size] = min(fastest_bare[size], _seconds(partial(bare, size), device))
    best = min(fastest_bare, key=fastest_bare.__getitem__)
    return BestBareCost(
        search_seconds=fastest_search,
        bare_seconds=fastest_bare,
        best_batch=best,
        ratio=fastest_search / fastest_bare[best],
        chunk_size=chunk,
        settled=settled,
        tuning_searches=len(tuning),
        tuning_seconds=sum(max(0.0, seconds - fastest_search) for seconds in tuning),
        evaluations=batch * count,
    )
