"""Cost of a search as a ratio to the bare forward passes it cannot avoid (layer 7).

The bare forward passes are those of exactly the (image, candidate) pairs the search scores,
pre-warped up front and run in the same chunks, timed in the same process. A ratio near 1 means the
search adds little beyond those forward passes (the warp, the loss and the selection are the rest).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from advspatial.engine.chunking import default_chunk_size
from advspatial.engine.model_state import scoring_mode
from advspatial.errors import AdvSpatialError, check_images, check_labels, positive_int
from advspatial.geometry.warp import roto_translate
from advspatial.strategies.grid import GridSearch
from advspatial.strategies.worst_of_k import WorstOfK

__all__ = ["SearchCost", "measure_search_cost"]


@dataclass(frozen=True)
class SearchCost:
    """Median wall times of a search and of its bare forward passes.

    Attributes:
        search_seconds: median time of ``search.search(images, labels)``.
        bare_seconds: median time of the forward passes over the same pre-warped pairs.
        ratio: ``search_seconds / bare_seconds``.
        evaluations: (image, candidate) pairs per search.
    """

    search_seconds: float
    bare_seconds: float
    ratio: float
    evaluations: int


def _median_seconds(fn: Callable[[], object], device: torch.device, rounds: int) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up
    times = []
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_search_cost(
    search: WorstOfK | GridSearch, images: Tensor, labels: Tensor, *, rounds: int = 3
) -> SearchCost:
    """Time ``search`` and the bare forward passes of its candidates on ``images`` (after a warm-up).

    Args:
        search: a :class:`advspatial.WorstOfK` or an exhaustive :class:`advspatial.GridSearch`
            (e.g. :class:`advspatial.GridSearchRotoTranslation`; early exit would skip pairs), over a
            roto-translation or an affine space.
        images: ``(B, C, H, W)`` on the model's device.
        labels: ``(B,)`` class indices.
        rounds: timed repetitions; the median is reported.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> cost = measure_search_cost(WorstOfK(model, k=4), torch.rand(8, 1, 8, 8),
        ...                            torch.zeros(8, dtype=torch.long), rounds=1)
        >>> cost.evaluations, cost.ratio > 0
        (32, True)
    """
    images = check_images(images)
    labels = check_labels(labels, images.shape[0], images.device)
    rounds = positive_int(rounds, "rounds")
    if isinstance(search, WorstOfK):
        candidates = search.sample(images.shape[0], images.device, torch.Generator().manual_seed(0))
    elif isinstance(search, GridSearch) and not search.early_exit:
        candidates = search.candidates.to(images.device).expand(images.shape[0], -1, -1)
    else:
        raise AdvSpatialError(f"search must be a WorstOfK or an exhaustive GridSearch, got {search!r}")
    batch, count = candidates.shape[:2]
    warped = roto_translate(images.repeat_interleave(count, dim=0), candidates.reshape(batch * count, -1))
    chunk = search.config.chunk_size or default_chunk_size(images)

    def bare() -> None:
        with scoring_mode(search.model) as net, torch.inference_mode():
            for start in range(0, warped.shape[0], chunk):
                net(warped[start : start + chunk])

    bare_seconds = _median_seconds(bare, images.device, rounds)
    search_seconds = _median_seconds(lambda: search.search(images, labels), images.device, rounds)
    return SearchCost(search_seconds, bare_seconds, search_seconds / bare_seconds, batch * count)
