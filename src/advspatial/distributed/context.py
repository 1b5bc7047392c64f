"""Process-group set-up from ``torchrun``'s environment, and rank/world helpers (layer 7).

``torchrun`` (``torch.distributed.run``) starts one process per device and tells each its place in
the environment variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`init_distributed` reads them, chooses the backend (NCCL when the process
has a CUDA device, gloo on CPU) and the device (``cuda:LOCAL_RANK`` or ``cpu``), and starts the
default process group. Without those variables it returns a single-process context and starts
nothing, so the same script runs with ``python`` and with ``torchrun``.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from advspatial.errors import AdvSpatialError, choice

__all__ = [
    "BACKENDS",
    "DistributedContext",
    "barrier",
    "current_context",
    "default_backend",
    "destroy_distributed",
    "distributed_session",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "launched_by_torchrun",
]

BACKENDS: tuple[str, ...] = ("gloo", "nccl")
_TORCHRUN_VARIABLES: tuple[str, ...] = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global rank, ``0`` for a single process.
        world_size: number of processes, ``1`` for a single process.
        local_rank: rank on this node (the CUDA device index under ``torchrun``).
        backend: ``"gloo"``, ``"nccl"``, or ``None`` when no process group is running.
        device: the device this process computes on.

    Example:
        >>> context = current_context()
        >>> context.rank, context.world_size, context.is_main, context.is_distributed
        (0, 1, True, False)
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        """``True`` when a process group is running (even of one process)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """``True`` on rank 0, the one that prints and writes files."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` are all set."""
    return all(name in os.environ for name in _TORCHRUN_VARIABLES)


def default_backend(device: torch.device | str) -> str:
    """``"nccl"`` for a CUDA device, ``"gloo"`` otherwise (CPU).

    Example:
        >>> default_backend("cpu"), default_backend("cuda:1")
        ('gloo', 'nccl')
    """
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise AdvSpatialError(f"environment variable {name} must be a non-negative integer, got {text!r}")
    return value


def _default_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def current_context() -> DistributedContext:
    """The context of the running process group, or a single-process one when none is running."""
    local_rank = _env_int("LOCAL_RANK", 0)
    if not is_distributed():
        device = torch.device("cpu")
        return DistributedContext(0, 1, 0, None, device)
    backend = str(dist.get_backend())
    on_cuda = "nccl" in backend
    device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, backend, device)


def init_distributed(
    backend: str | None = None,
    *,
    device: torch.device | str | None = None,
    timeout_seconds: float | None = None,
) -> DistributedContext:
    """Start the default process group from ``torchrun``'s environment variables.

    Without ``torchrun``'s variables this starts nothing and returns a single-process context on
    ``device`` (default ``cuda`` when available, else ``cpu``). When a process group is already
    running it is described, not restarted.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; ``None`` chooses NCCL for a CUDA device, gloo otherwise.
        device: this process's device; ``None`` takes ``cuda:LOCAL_RANK`` when CUDA is available,
            else ``cpu``. A CUDA device is made current with ``torch.cuda.set_device``.
        timeout_seconds: timeout of collective operations; ``None`` keeps torch's default.

    Example:
        >>> context = init_distributed(device="cpu")  # plain ``python``: nothing to start
        >>> context.world_size, context.backend, str(context.device)
        (1, None, 'cpu')
    """
    if is_distributed():
        return current_context()
    local_rank = _env_int("LOCAL_RANK", 0)
    chosen = _default_device(local_rank) if device is None else torch.device(device)
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise AdvSpatialError(f"device {str(chosen)!r} asked for, but CUDA is not available")
        torch.cuda.set_device(chosen)
    if not launched_by_torchrun():
        return DistributedContext(0, 1, 0, None, chosen)
    if not dist.is_available():
        raise AdvSpatialError("torch.distributed is not available in this build of torch")
    name = choice(backend, "backend", BACKENDS) if backend is not None else default_backend(chosen)
    if name == "nccl" and chosen.type != "cuda":
        raise AdvSpatialError(f"backend 'nccl' needs a CUDA device, got device {str(chosen)!r}; use 'gloo'")
    rank, world_size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    if rank >= world_size:
        raise AdvSpatialError(
            f"RANK must be smaller than WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world_size}"
        )
    dist.init_process_group(
        name,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=None if timeout_seconds is None else timedelta(seconds=timeout_seconds),
        device_id=chosen if name == "nccl" else None,
    )
    return DistributedContext(rank, world_size, local_rank, name, chosen)


def destroy_distributed() -> None:
    """Destroy the default process group if one is running, after every rank has reached this point.

    The barrier keeps a rank from tearing down its gloo connections while a peer still uses them
    (which can abort the peer with "terminate called without an active exception"). Unreachable
    objects that still hold the group (a DDP model's reducer in a reference cycle) are collected
    first: freed later, at interpreter exit, they can abort the process the same way.
    """
    if is_distributed():
        gc.collect()
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def distributed_session(
    backend: str | None = None, *, device: torch.device | str | None = None
) -> Iterator[DistributedContext]:
    """:func:`init_distributed` on entry; destroys the group on exit if this call started it.

    Example:
        >>> with distributed_session(device="cpu") as context:
        ...     context.is_main
        True
    """
    started = not is_distributed()
    context = init_distributed(backend, device=device)
    try:
        yield context
    finally:
        if started:
            destroy_distributed()


def is_distributed() -> bool:
    """Whether a process group is running."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """Global rank; ``0`` without a process group."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes; ``1`` without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """``True`` on rank 0 (and without a process group)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank; does nothing without a process group."""
    if is_distributed():
        dist.barrier()
