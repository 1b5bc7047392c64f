"""Collectives over the default process group, each a no-op for a single process (layer 7 plumbing).

The evaluation sweep uses them to reduce its per-sample rows and counts (see
:func:`advspatial.evaluation.walk.walk`); they know nothing about metrics.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from advspatial.distributed.context import DistributedContext, current_context
from advspatial.errors import AdvSpatialError

__all__ = ["all_gather_tensor", "all_reduce_sum", "check_same_model", "check_same_tensor"]


def all_gather_tensor(tensor: Tensor, context: DistributedContext | None = None) -> Tensor:
    """Every rank's ``tensor`` (the same shape on every rank), stacked: ``(world_size, *shape)`` on CPU.

    Example:
        >>> all_gather_tensor(torch.tensor([1, 2])).tolist()  # one process
        [[1, 2]]
    """
    context = context or current_context()
    if context.world_size == 1:
        return tensor.detach().cpu().unsqueeze(0)
    local = tensor.detach().to(context.device).contiguous()
    parts = [torch.empty_like(local) for _ in range(context.world_size)]
    dist.all_gather(parts, local)
    return torch.stack(parts).cpu()


def all_reduce_sum(values: list[int], context: DistributedContext | None = None) -> list[int]:
    """The element-wise sum of every rank's ``values`` (integers; the same length on every rank).

    Example:
        >>> all_reduce_sum([3, 4])  # one process
        [3, 4]
    """
    context = context or current_context()
    if context.world_size == 1 or not values:
        return list(values)
    total = torch.tensor(values, dtype=torch.int64, device=context.device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return [int(v) for v in total.tolist()]


def check_same_tensor(tensor: Tensor, message: str, context: DistributedContext | None = None) -> None:
    """Raise ``AdvSpatialError(message)`` unless every rank holds an equal ``tensor`` (collective)."""
    context = context or current_context()
    if context.world_size == 1:
        return
    gathered = all_gather_tensor(tensor, context)
    if not bool((gathered == gathered[0]).all()):
        raise AdvSpatialError(message)


def check_same_model(model: nn.Module, context: DistributedContext | None = None) -> None:
    """Raise when the ranks hold different parameters or buffers (a float64 checksum per tensor)."""
    context = context or current_context()
    if context.world_size == 1:
        return
    tensors = [*model.parameters(), *model.buffers()]
    local = torch.tensor(
        [float(t.detach().double().abs().sum()) + float(t.detach().double().sum()) for t in tensors] or [0.0],
        dtype=torch.float64,
    )
    check_same_tensor(
        local,
        "the ranks hold different models (parameters or buffers differ, e.g. BatchNorm running "
        "statistics after DDP training); call advspatial.distributed.broadcast_model_state(model) "
        "on every rank before a sharded evaluation",
        context,
    )
