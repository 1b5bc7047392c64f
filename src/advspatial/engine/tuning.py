"""Chunk sizes measured on the machine, and when early exit's rounds stop paying (part of layer 3).

**Chunk autotuning.** The fastest chunk depends on the model, the input size, the device, the
threads and the machine's load, so the engine measures it instead of guessing (like
``torch.backends.cudnn.benchmark``). The first chunks of a search are its real work, run at a few
sizes (the input-size rule of :func:`default_chunk_size` first, then octaves and half-octaves around
the fastest size so far), and the size of most pairs per second is kept for the rest of the search
and for later searches with the same :class:`TuningKey` (model identity, image shape and dtype,
device, autocast, threads). No forward pass is spent on tuning beyond the work itself.

*Timing rule.* The first chunk a tuner sees is a warm-up and is not counted (lazy initialisation,
allocator growth). Each size is then timed on :data:`REPEATS` full chunks and its **fastest** chunk
counts: other load on the machine only ever makes a chunk slower, so the minimum is the estimate
least disturbed by it. The climb times, around the fastest size so far, the octave above, the
octave below, then the half-octaves between (the sizes ``8, 12, 16, 24, 32, 48, ...`` nearest the
geometric means), until all four are timed. Octaves cross a flat stretch in few steps (a U-Net at
64 x 64 starts at 64 pairs where 16 is twice as fast); half-octaves find a peak between them
(ResNet-50 at 64 x 64: 21 and 42 tie, 32 is about 6 % faster). Then the fastest size and its nearest
timed neighbours are timed once more, since the first sizes ran in a cold process (on the digits CNN
the first size measured 11,700 pairs/s before and 21,000 after the allocator had grown), and the
climb goes on if the fastest changed. The tuner keeps the smallest size within :data:`GAIN` (3 %) of
the fastest: within noise the smaller chunk (less memory) wins. Chunks cut short by the end of
a call are not timed; no size above the largest call is tried, and a whole call of at least half the
size being timed stands in for it, so a search smaller than the first size is tuned too (calls all
smaller than half the first size run as one chunk each and leave the tuner unsettled: there is
nothing to choose). On CUDA every timed chunk is synchronised; once settled, nothing is.

*Memory bound.* No size on the ladder exceeds :func:`memory_bound`: on CUDA half the memory PyTorch
could still use when the tuner starts, divided by the activation memory per pair measured on the
timed chunks (``max_memory_allocated`` above the memory allocated before the chunk: an upper
bound); on CPU a quarter of the available RAM divided by an estimate of 32 times the input bytes per
pair. An out-of-memory error still halves the chunk, and the tuner never tries that size again.

Chunking never changes a result: every pair is scored by the same function whatever the chunk, so a
tuned search returns the same scores as an untuned one, as long as the model's own kernels give the
same numbers for a row whatever the batch (true for the usual convolutions and linear layers at
batch sizes above one on CPU).

**Round budget for early exit.** :class:`RoundBudget` times the rounds of
:func:`advspatial.engine.ordering.score_until_fooled` and tells it to score the rest exhaustively
once the rounds' overhead (their time beyond the per-pair cost of the pairs they scored) exceeds what
they saved (the pairs fooled images no longer need, at the per-pair cost) plus a stake of
:data:`STAKE` (5 %) of the exhaustive cost: so early exit costs at most about 5 % more than the
exhaustive search, and saves wherever images are fooled.
"""

from __future__ import annotations

import logging
import math
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advspatial.engine.chunking import default_chunk_size

__all__ = [
    "GAIN",
    "REPEATS",
    "STAKE",
    "ChunkTuner",
    "RoundBudget",
    "TuningKey",
    "chunk_tuner",
    "forget_chunk_tunings",
    "half_octave",
    "memory_bound",
]

REPEATS = 3
"""Full chunks timed per size; the fastest of them counts."""
GAIN = 1.03
"""A size must be this many times faster (pairs per second) than a smaller one to be taken."""
STAKE = 0.05
"""Share of the exhaustive cost early exit may spend on rounds before they have saved anything."""

_MIN_CHUNK, _MAX_CHUNK = 8, 4096
_CPU_RAM_SHARE, _CUDA_MEMORY_SHARE = 0.25, 0.5
_ACTIVATION_FACTOR = 32
_TUNINGS_PER_MODEL = 16
_FALLBACK_RAM = 4 * 2**30

Clock = Callable[[], float]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningKey:
    """What a chunk size is measured for: one model on one kind of input, on one device.

    Attributes:
        shape: ``(C, H, W)`` of one image.
        dtype: the images' dtype.
        device: e.g. ``"cpu"``, ``"cuda:0"``.
        autocast: the autocast dtype, or ``None``.
        threads: ``torch.get_num_threads()`` when the search ran.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    device: str
    autocast: torch.dtype | None
    threads: int

    @classmethod
    def of(cls, images: Tensor, autocast: torch.dtype | None) -> TuningKey:
        """The key of a search over ``images``."""
        return cls(
            tuple(images.shape[1:]), images.dtype, str(images.device), autocast, torch.get_num_threads()
        )


def _available_ram() -> int:
    """Bytes of RAM available to new allocations (``MemAvailable`` on Linux)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return _FALLBACK_RAM


def _memory_budget(device: torch.device) -> int:
    """Bytes the activations of one chunk may take on ``device``."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int((free + cached) * _CUDA_MEMORY_SHARE)
    return int(_available_ram() * _CPU_RAM_SHARE)


def memory_bound(budget_bytes: int, pair_bytes: float) -> int:
    """Largest chunk whose pairs fit in ``budget_bytes``, clamped to ``[1, 4096]``.

    Example:
        >>> memory_bound(2**30, 2**20), memory_bound(10, 2**20), memory_bound(2**40, 1.0)
        (1024, 1, 4096)
    """
    return int(min(_MAX_CHUNK, max(1, budget_bytes // max(1.0, pair_bytes))))


class ChunkTuner:
    """Chooses a chunk size by timing real chunks at sizes on a geometric ladder.

    The scorer asks :meth:`size` before each chunk and reports every full chunk with
    :meth:`observe`; once :attr:`settled`, :meth:`size` is the chosen size.

    Args:
        start: first size on the ladder (the input-size rule's default).
        budget_bytes: memory the activations of one chunk may take.
        pair_bytes: estimated activation bytes per pair, refined by measured peaks.
        clock: seconds, monotonic; :func:`time.perf_counter` unless a test injects its own.
        repeats: timed full chunks per size.

    Example:
        >>> tuner = ChunkTuner(start=64, budget_bytes=2**30, pair_bytes=2**10, repeats=1)
        >>> tuner.observe(64, 1.0)  # warm-up, not counted
        >>> octaves = [(64, 1.0), (128, 1.5), (256, 3.5)]  # 128 is fastest, both octaves timed
        >>> halves = [(192, 2.4), (96, 1.2)]  # the half-octaves between
        >>> confirm = [(128, 1.5), (192, 2.4), (96, 1.2)]  # once more each, then the choice
        >>> for size, seconds in octaves + halves + confirm:
        ...     assert tuner.size() == size
        ...     tuner.observe(size, seconds)
        >>> tuner.settled, tuner.size()
        (True, 128)
    """

    def __init__(
        self,
        start: int,
        budget_bytes: int,
        pair_bytes: float,
        clock: Clock | None = None,
        repeats: int = REPEATS,
    ) -> None:
        self.clock: Clock = clock or time.perf_counter
        self.repeats = repeats
        self.budget_bytes = budget_bytes
        self.pair_bytes = float(pair_bytes)
        self._ceiling = _MAX_CHUNK
        self.limit = memory_bound(budget_bytes, self.pair_bytes)
        self._current = max(1, min(start, self.limit))
        self._best_seconds: dict[int, float] = {}
        self._counts: dict[int, int] = {}
        self._due: dict[int, int] = {}  # timed chunks a size needs before the climb moves on
        self._recheck: list[int] = []
        self._confirmed = False
        self._warm = False
        self._measured = False
        self.largest_call = 0
        self.chosen: int | None = None

    @property
    def settled(self) -> bool:
        """Whether the size is chosen (no more timing)."""
        return self.chosen is not None

    def size(self) -> int:
        """Chunk size to use next: the chosen one once settled, else the one being timed."""
        return self.chosen if self.chosen is not None else self._current

    def rates(self) -> dict[int, float]:
        """Pairs per second of each fully timed size (its fastest chunk)."""
        return {
            size: size / max(seconds, 1e-12)
            for size, seconds in self._best_seconds.items()
            if self._counts[size] >= self.repeats
        }

    def pair_seconds(self) -> float | None:
        """Seconds per pair at the fastest size timed so far (any count), or ``None``."""
        if not self._best_seconds:
            return None
        return min(max(seconds, 1e-12) / size for size, seconds in self._best_seconds.items())

    def call(self, pairs: int) -> None:
        """A call of ``pairs`` pairs starts: no size above the largest call is ever timed, and a call
        smaller than the size being timed but at least half of it stands in for it (run as one
        chunk, so a search smaller than the first size is still tuned)."""
        self.largest_call = max(self.largest_call, pairs)
        current = self._current
        if not self.settled and current / 2 <= pairs < current and current not in self._best_seconds:
            self._current = pairs

    def observe(self, size: int, seconds: float, peak_bytes: int | None = None) -> None:
        """Record that a full chunk of ``size`` pairs took ``seconds``.

        Args:
            size: pairs in the chunk (chunks cut short by the end of a call are not reported).
            seconds: its wall time, synchronised on CUDA.
            peak_bytes: memory the chunk needed above what was allocated before it, when measured.
        """
        if peak_bytes is not None and peak_bytes > 0:
            # Each measured peak bounds the activations per pair from above (it includes fixed
            # buffers), so the tightest one replaces the estimate.
            measured = peak_bytes / size
            self.pair_bytes = measured if not self._measured else min(self.pair_bytes, measured)
            self._measured = True
            self.limit = min(self._ceiling, memory_bound(self.budget_bytes, self.pair_bytes))
            self._current = min(self._current, self.limit)
            if self.chosen is not None:
                self.chosen = min(self.chosen, self.limit)
        if self.settled or size != self._current:
            return
        if not self._warm:
            self._warm = True
            return
        self._best_seconds[size] = min(self._best_seconds.get(size, math.inf), seconds)
        self._counts[size] = self._counts.get(size, 0) + 1
        if self._counts[size] >= self._due.get(size, self.repeats):
            self._advance()

    def _time_again(self, size: int) -> None:
        """Time ``size`` for :attr:`repeats` more chunks; its fastest chunk over all of them counts."""
        self._due[size] = self._counts[size] + self.repeats
        self._current = size

    def out_of_memory(self, size: int) -> None:
        """A chunk of ``size`` pairs ran out of memory: never try ``size`` or more again."""
        self._ceiling = max(1, min(self.limit, size // 2))
        self.limit = self._ceiling
        for larger in [s for s in self._best_seconds if s > self.limit]:
            del self._best_seconds[larger], self._counts[larger]
        self._recheck = [size for size in self._recheck if size <= self.limit]
        if self.chosen is not None:
            self.chosen = min(self.chosen, self.limit)
        self._current = min(self._current, self.limit)

    def _best(self) -> int:
        rates = self.rates()
        fastest = max(rates.values())
        return min(size for size, rate in rates.items() if rate * GAIN >= fastest)

    def _advance(self) -> None:
        if self._recheck:
            self._time_again(self._recheck.pop(0))
            return
        rates = self.rates()
        fastest = max(rates, key=lambda size: rates[size])
        cap = min(self.limit, self.largest_call or self.limit)
        up, down = min(2 * fastest, cap), fastest // 2
        # Octaves first (they cross a plateau in few steps), then the half-octaves between.
        for size in (up, down, half_octave(fastest, up), half_octave(down, fastest)):
            if size is not None and _MIN_CHUNK <= size != fastest and size not in self._best_seconds:
                self._current = size
                return
        if not self._confirmed:
            # The first sizes were timed in a cold process (allocator and kernel caches still
            # growing): time the fastest size and its nearest timed neighbours once more.
            self._confirmed = True
            above = [size for size in self._best_seconds if size > fastest]
            below = [size for size in self._best_seconds if size < fastest]
            self._recheck = [fastest, *([min(above)] if above else []), *([max(below)] if below else [])]
            self._advance()
            return
        self.chosen = self._best()
        logger.debug(
            "chunk size %d chosen (pairs/s by size: %s)",
            self.chosen,
            ", ".join(f"{size}: {rate:.0f}" for size, rate in sorted(self.rates().items())),
        )


_LADDER = sorted({2**k for k in range(1, 14)} | {3 * 2**k for k in range(13)})


def half_octave(low: int, high: int) -> int | None:
    """The size on the ladder ``8, 12, 16, 24, 32, 48, ...`` (``2**k`` and ``3 * 2**k``) strictly
    between ``low`` and ``high`` that is nearest their geometric mean, or ``None``.

    Example:
        >>> half_octave(21, 42), half_octave(10, 21), half_octave(64, 128), half_octave(64, 64)
        (32, 16, 96, None)
    """
    inside = [size for size in _LADDER if low < size < high]
    if not inside:
        return None
    middle = math.log(max(low, 1) * high) / 2
    return min(inside, key=lambda size: abs(math.log(size) - middle))


_TUNERS: weakref.WeakKeyDictionary[nn.Module, OrderedDict[TuningKey, ChunkTuner]] = (
    weakref.WeakKeyDictionary()
)


def chunk_tuner(
    model: nn.Module, images: Tensor, autocast: torch.dtype | None = None, *, clock: Clock | None = None
) -> ChunkTuner:
    """The tuner of ``model`` for searches over images like ``images``, created on first use.

    Tuners live as long as the model (a weak reference) and at most 16 per model (the least recently
    used goes first). ``clock`` is used only when the tuner is created.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        >>> chunk_tuner(model, torch.zeros(2, 1, 28, 28)).size()
        334
        >>> chunk_tuner(model, torch.zeros(5, 1, 28, 28)) is chunk_tuner(model, torch.zeros(1, 1, 28, 28))
        True
    """
    key = TuningKey.of(images, autocast)
    tuners = _TUNERS.setdefault(model, OrderedDict())
    tuner = tuners.get(key)
    if tuner is None:
        pair_bytes = images[0].numel() * images.element_size() * _ACTIVATION_FACTOR if images.shape[0] else 1
        tuner = ChunkTuner(default_chunk_size(images), _memory_budget(images.device), pair_bytes, clock)
        tuners[key] = tuner
        if len(tuners) > _TUNINGS_PER_MODEL:
            tuners.popitem(last=False)
    tuners.move_to_end(key)
    return tuner


def forget_chunk_tunings(model: nn.Module | None = None) -> None:
    """Drop the chunk sizes measured for ``model`` (every model when ``None``): the next search tunes anew."""
    if model is None:
        _TUNERS.clear()
    else:
        _TUNERS.pop(model, None)


class RoundBudget:
    """Whether early exit's rounds still pay for themselves, from their measured time.

    The rounds' overhead is their wall time minus ``pair_seconds`` per pair scored; they may spend
    what they saved (``pair_seconds`` per pair that fooled images no longer need) plus
    ``stake`` times the exhaustive cost.

    Args:
        exhaustive_pairs: pairs an exhaustive search scores.
        pair_seconds: the per-pair cost of the exhaustive search's full chunks, when measured (asked
            after every round); otherwise the fastest per-pair time of a round so far stands in.
        clock: seconds, monotonic.
        stake: share of the exhaustive cost rounds may spend before saving anything.

    Example:
        >>> ticks = iter([0.0, 1.0, 3.0])
        >>> budget = RoundBudget(100, lambda: 0.01, clock=lambda: next(ticks))
        >>> budget.start()
        >>> budget.round_done(pairs=10, saved_pairs=0)  # 1 s for 10 pairs: 0.9 s of overhead
        >>> budget.exhausted()  # may spend 0.05 * 100 * 0.01 = 0.05 s
        True
    """

    def __init__(
        self,
        exhaustive_pairs: int,
        pair_seconds: Callable[[], float | None],
        clock: Clock | None = None,
        stake: float = STAKE,
    ) -> None:
        self.exhaustive_pairs, self.stake = exhaustive_pairs, stake
        self._pair_seconds = pair_seconds
        self.clock: Clock = clock or time.perf_counter
        self.round_seconds = 0.0
        self.round_pairs = 0
        self.saved_pairs = 0
        self._fastest_round = math.inf
        self._last = 0.0

    def start(self) -> None:
        """Start the clock (before the first round)."""
        self._last = self.clock()

    def round_done(self, pairs: int, saved_pairs: int) -> None:
        """A round scored ``pairs``; fooled images now need ``saved_pairs`` fewer than exhaustive."""
        now = self.clock()
        seconds, self._last = now - self._last, now
        self.round_seconds += seconds
        self.round_pairs += pairs
        self.saved_pairs = saved_pairs
        if pairs:
            self._fastest_round = min(self._fastest_round, seconds / pairs)

    def exhausted(self) -> bool:
        """Whether the rounds have spent more than they saved plus the stake."""
        per_pair = self._pair_seconds()
        if per_pair is None:
            per_pair = self._fastest_round
        if not math.isfinite(per_pair):
            return False
        overhead = self.round_seconds - per_pair * self.round_pairs
        return overhead > per_pair * (self.saved_pairs + self.stake * self.exhaustive_pairs)
