"""Shared fixtures of the adapter tests: a tiny model and a deterministic search whose choice is known."""

from __future__ import annotations

import torch
from torch import nn

from advspatial import GridSearchRotoTranslation


def tiny_model(channels: int = 1, size: int = 12, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 5))


def grid_search(model: nn.Module) -> GridSearchRotoTranslation:
    """A small deterministic grid (no identity) so the chosen params can be recomputed in the test."""
    return GridSearchRotoTranslation(
        model, rotations=4, translations=2, max_rotation=40.0, max_translation=2.0
    )
