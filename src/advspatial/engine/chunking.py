"""Chunk sizes that bound memory by the chunk, not by images x candidates (part of layer 3)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from advspatial.engine.tuning import ChunkTuner

__all__ = ["ChunkRunner", "default_chunk_size", "is_out_of_memory"]

# On CPU, throughput falls once a chunk's activations leave the caches: the digits CNN scores about
# 8k images/s in chunks of 32-512 but 6k in chunks of 2048-4096; ResNet-18-CIFAR is best at 16-32.
_CPU_BUDGET_BYTES = 2**20
_MIN_CHUNK, _MAX_CHUNK = 16, 4096


def default_chunk_size(images: torch.Tensor) -> int:
    """Number of (image, candidate) pairs per forward pass, chosen from the image size.

    On CPU the warped chunk takes about 1 MiB (334 digits of 28 x 28, 85 CIFAR images, the minimum
    of 16 ImageNet-size images), small enough for the model's activations to stay in cache; on CUDA
    a sixteenth of the free memory (the activations need the rest). Clamped to ``[16, 4096]``.

    Example:
        >>> default_chunk_size(torch.zeros(1, 1, 28, 28)), default_chunk_size(torch.zeros(1, 3, 32, 32))
        (334, 85)

    """
    per_image = max(1, images[0].numel() * 4) if images.shape[0] else 1
    budget = _CPU_BUDGET_BYTES
    if images.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(images.device)
        budget = max(budget, free // 16)
    return int(min(_MAX_CHUNK, max(_MIN_CHUNK, budget // per_image)))


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device out-of-memory error worth retrying with a smaller chunk."""
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


class ChunkRunner:
    """Runs ``count`` pairs through a per-chunk function, in chunks of a fixed or a tuned size.

    With a :class:`~advspatial.engine.tuning.ChunkTuner`, every full chunk is timed (synchronised
    on CUDA, with its peak memory) until the tuner settles; with a fixed size nothing is timed. On an
    out-of-memory error the chunk is halved (the tuner is told) and the same pairs are run again.

    Args:
        device: where the chunks run.
        size: fixed pairs per chunk, or ``None`` to ask ``tuner``.
        tuner: chooses the size when ``size`` is ``None``.

    Example:
        >>> seen = []
        >>> ChunkRunner(torch.device("cpu"), size=4).run(10, lambda start, stop: seen.append(stop - start))
        >>> seen
        [4, 4, 2]
    """

    def __init__(
        self, device: torch.device, size: int | None = None, tuner: ChunkTuner | None = None
    ) -> None:
        if size is None and tuner is None:
            raise ValueError("ChunkRunner needs a size or a tuner")
        self.device, self.tuner = device, tuner
        self._size = size
        self.chunk_size = self.size()
        """The size in effect after the last call (the tuner's choice once it has settled)."""

    def size(self) -> int:
        """Pairs in the next full chunk."""
        if self._size is not None:
            return self._size
        assert self.tuner is not None
        return self.tuner.size()

    def clock(self) -> float:
        """The tuner's clock (injectable in tests), else :func:`time.perf_counter`."""
        return self.tuner.clock() if self.tuner is not None else time.perf_counter()

    def pair_seconds(self) -> float | None:
        """Measured seconds per pair at the fastest timed size, when a tuner times the chunks."""
        return self.tuner.pair_seconds() if self.tuner is not None else None

    def run(self, count: int, chunk: Callable[[int, int], None], *, timed: bool = True) -> None:
        """Call ``chunk(start, stop)`` over ``[0, count)`` in consecutive chunks; ``timed=False``
        keeps the tuner out of it (work that is not the pairs it is tuning for)."""
        tuner = self.tuner if timed and self._size is None else None
        if tuner is not None and count:
            tuner.call(count)
        start = 0
        while start < count:
            size = self.size()
            stop = min(start + size, count)
            timing = tuner is not None and not tuner.settled and stop - start == size
            if timing:
                before = self._synchronize()
                began = self.clock()
            try:
                chunk(start, stop)
            except (RuntimeError, torch.OutOfMemoryError) as error:
                if not is_out_of_memory(error) or size == 1:
                    raise
                self._out_of_memory(size)
                continue
            if tuner is not None and timing:
                self._synchronize()
                tuner.observe(size, self.clock() - began, self._peak_since(before))
            start = stop
        self.chunk_size = self.size()

    def _out_of_memory(self, size: int) -> None:
        if self.tuner is not None and self._size is None:
            self.tuner.out_of_memory(size)
        else:
            self._size = max(1, size // 2)
        self.chunk_size = self.size()

    def _synchronize(self) -> int:
        """Wait for the device; the bytes allocated on it (0 on CPU)."""
        if self.device.type != "cuda":
            return 0
        torch.cuda.synchronize(self.device)
        return int(torch.cuda.memory_allocated(self.device))

    def _peak_since(self, allocated_before: int) -> int | None:
        """Upper bound of the memory the last chunk needed above ``allocated_before`` (CUDA only)."""
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated(self.device)) - allocated_before
