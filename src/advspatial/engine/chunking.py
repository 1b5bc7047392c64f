"""Chunk sizes that bound memory by the chunk, not by images x candidates (part of layer 3)."""

from __future__ import annotations

import torch

__all__ = ["default_chunk_size", "is_out_of_memory"]

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
