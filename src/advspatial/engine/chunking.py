"""Chunk sizes that bound memory by the chunk, not by images x candidates (part of layer 3)."""

from __future__ import annotations

import torch

__all__ = ["default_chunk_size", "is_out_of_memory"]

_CPU_BUDGET_BYTES = 48 * 2**20
_MIN_CHUNK, _MAX_CHUNK = 16, 4096


def default_chunk_size(images: torch.Tensor) -> int:
    """Number of (image, candidate) pairs per forward pass, chosen from the image size.

    The warped chunk takes about 48 MiB on CPU; on CUDA, a sixteenth of the free memory (activations
    of the model need the rest). Clamped to ``[16, 4096]``.
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
