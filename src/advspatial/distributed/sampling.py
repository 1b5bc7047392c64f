"""Reproducible randomness across ranks (layer 7).

Two needs, two tools:

* training: each rank must draw *different* candidates (else every shard sees the same
  transforms), reproducibly: :func:`rank_generator` seeds a generator from ``(seed, rank)``;
* evaluation: a sharded worst-of-k must draw, for every sample, the *same* candidates whatever the
  rank and the number of ranks: :func:`candidate_table` draws them keyed by the dataset index.

The library never seeds torch's global generator.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from advspatial.distributed.context import get_rank
from advspatial.errors import positive_int
from advspatial.space.box import RotoTranslationBox

__all__ = ["candidate_table", "rank_generator", "rank_seed"]


def rank_seed(seed: int, rank: int | None = None) -> int:
    """A 63-bit seed for ``(seed, rank)``, statistically independent across ranks.

    Mixed with numpy's ``SeedSequence`` (``spawn_key=(rank,)``), so neighbouring seeds and ranks do
    not give overlapping streams.

    Args:
        seed: the run's seed (``>= 0``).
        rank: the process's rank; ``None`` takes the current rank (``0`` without a process group).

    Example:
        >>> rank_seed(0, 0) == rank_seed(0, 0), rank_seed(0, 0) == rank_seed(0, 1)
        (True, False)
    """
    positive_int(seed, "seed", minimum=0)
    rank = get_rank() if rank is None else positive_int(rank, "rank", minimum=0)
    state = np.random.SeedSequence(seed, spawn_key=(rank,)).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def rank_generator(
    seed: int, rank: int | None = None, *, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`rank_seed`: different per rank, same on every rerun.

    Pass it to a search (``WorstOfK(model, generator=rank_generator(seed))``) so that each rank
    draws its own candidates.

    Example:
        >>> a, b = rank_generator(0, rank=0), rank_generator(0, rank=1)
        >>> bool(torch.rand(3, generator=a).eq(torch.rand(3, generator=b)).any())
        False
        >>> first = torch.rand(3, generator=rank_generator(0, rank=1))
        >>> torch.equal(first, torch.rand(3, generator=rank_generator(0, rank=1)))
        True
    """
    return torch.Generator(device=device).manual_seed(rank_seed(seed, rank))


def candidate_table(box: RotoTranslationBox, samples: int, k: int, seed: int) -> Tensor:
    """``(samples, k, 3)`` candidates, row ``i`` for dataset index ``i``, identical on every rank.

    The draw equals what :class:`advspatial.WorstOfK` with ``generator=torch.Generator().manual_seed(seed)``
    draws walking the dataset in order (whatever the batch size), so a sharded worst-of-k gives
    exactly the single-process numbers of :func:`advspatial.evaluation.worst_of_k_accuracy`.

    Example:
        >>> box = RotoTranslationBox.of(30, 3)
        >>> table = candidate_table(box, samples=5, k=10, seed=0)
        >>> table.shape, bool(box.contains(table).all())
        (torch.Size([5, 10, 3]), True)
    """
    positive_int(samples, "samples", minimum=0)
    positive_int(k, "k")
    positive_int(seed, "seed", minimum=0)
    return box.sample((samples, k), generator=torch.Generator().manual_seed(seed))
