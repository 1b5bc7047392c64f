"""Which samples and which random draws belong to this rank (layer 7 plumbing).

* training: each rank must draw *different* candidates (else every shard sees the same
  transforms), reproducibly: :func:`rank_generator` seeds a generator from ``(seed, rank)``;
* evaluation: :func:`shard_sampler` gives this rank its shard of a dataset, in order, and says
  which of its positions are the sampler's padding. (Random searches draw the same candidates per
  sample on every rank through ``WorstOfK.search(..., candidates=...)``; see
  :mod:`advspatial.evaluation.walk`.)

The library never seeds torch's global generator.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, DistributedSampler

from advspatial.distributed.context import DistributedContext, current_context, get_rank
from advspatial.errors import positive_int

__all__ = ["rank_generator", "rank_seed", "shard_sampler"]


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


def shard_sampler(
    dataset: Dataset[object], context: DistributedContext | None = None
) -> tuple[DistributedSampler[object], Tensor]:
    """This rank's ``DistributedSampler(shuffle=False, drop_last=False)`` and which positions it owns.

    Rank ``r`` of ``W`` gets the sampler positions ``r, r + W, r + 2W, ...``; the sampler pads the
    last shard by repeating the first samples so that every rank gets the same number. The second
    value is a bool ``(len(sampler),)`` tensor: ``False`` at padding positions (``>= len(dataset)``).

    Example:
        >>> data = torch.utils.data.TensorDataset(torch.arange(5))
        >>> context = current_context()
        >>> sampler, owned = shard_sampler(data, context)
        >>> list(sampler), owned.tolist()
        ([0, 1, 2, 3, 4], [True, True, True, True, True])
    """
    context = context or current_context()
    sampler: DistributedSampler[object] = DistributedSampler(
        dataset, num_replicas=context.world_size, rank=context.rank, shuffle=False, drop_last=False
    )
    positions = context.rank + context.world_size * torch.arange(len(sampler))
    return sampler, positions < len(dataset)  # type: ignore[arg-type]
