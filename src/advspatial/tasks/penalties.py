"""Per-sample penalties between clean and transformed logits (pure functions; the loss wrapper and the
tasks share them)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PAPER_WEIGHTS", "REGULARIZERS", "logit_kl_divergence", "logit_squared_distance"]


def logit_squared_distance(clean_logits: Tensor, transformed_logits: Tensor) -> Tensor:
    """ALP-style penalty ``||z(x) - z(x')||^2 / 4`` per sample, computed in float32 (or float64).

    Yang et al. 2019 use its batch mean with weight 1.

    Args:
        clean_logits: ``(N, num_classes)`` logits ``z(x)``.
        transformed_logits: ``(N, num_classes)`` logits ``z(x')``.

    Returns:
        ``(N,)`` penalties, at least float32 whatever the input dtype (safe under autocast).

    Example:
        >>> logit_squared_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]))
        tensor([1.2500])
    """
    difference = _wide(clean_logits) - _wide(transformed_logits)
    return difference.square().sum(dim=1) / 4.0


def logit_kl_divergence(clean_logits: Tensor, transformed_logits: Tensor) -> Tensor:
    """TRADES-style penalty ``KL(softmax z(x) || softmax z(x'))`` per sample, in float32 (or float64).

    Computed from log-softmax of both sides, so it stays finite for any finite logits (no
    ``log(0)``). Yang et al. 2019 use its batch mean with weight 8.

    Args:
        clean_logits: ``(N, num_classes)`` logits ``z(x)`` (the reference distribution).
        transformed_logits: ``(N, num_classes)`` logits ``z(x')``.

    Returns:
        ``(N,)`` non-negative divergences in nats.

    Example:
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> logit_kl_divergence(z, z)
        tensor([0.])
        >>> bool(logit_kl_divergence(z, z.flip(1)) > 0)
        True
    """
    clean = F.log_softmax(_wide(clean_logits), dim=1)
    transformed = F.log_softmax(_wide(transformed_logits), dim=1)
    return (clean.exp() * (clean - transformed)).sum(dim=1).clamp(min=0.0)


def _wide(logits: Tensor) -> Tensor:
    """``logits`` in float64 if they are, else in float32 (safe under fp16/bf16 autocast)."""
    return logits if logits.dtype == torch.float64 else logits.float()


REGULARIZERS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "kl": logit_kl_divergence,
    "l2": logit_squared_distance,
}
"""Regularizer name -> per-sample penalty ``(clean_logits, transformed_logits) -> (N,)``."""

PAPER_WEIGHTS: dict[str, float] = {"kl": 8.0, "l2": 1.0}
"""The weights ``lambda`` of Yang et al. 2019 (TRADES-style KL: 8, ALP-style l2: 1)."""
