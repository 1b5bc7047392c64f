"""Shared bits of the examples: the digits data, a model, and one optimisation step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advspatial.data import load_digits_28
from advspatial.models import SmallCNN


def setup(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, torch.utils.data.TensorDataset]:
    """A SmallCNN, its Adam optimizer and the digits training set (28 x 28, no download)."""
    torch.manual_seed(seed)
    model = SmallCNN()
    train, _ = load_digits_28()
    return model, torch.optim.Adam(model.parameters(), lr=3e-3), train


def step(model: nn.Module, optimizer: torch.optim.Optimizer, images: Tensor, labels: Tensor) -> float:
    """One training step on (already transformed) images."""
    model.train()
    loss = F.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
