"""Shared fixtures of the adapter tests: tiny models and searches whose choice is known or seeded."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from advspatial import GridSearchRotoTranslation, SpatialPGD, SpatialSearch, WorstOfK


def tiny_model(channels: int = 1, size: int = 12, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 5))


def grid_search(model: nn.Module, padding: str = "zeros") -> GridSearchRotoTranslation:
    """A small deterministic grid (no identity) so the chosen params can be recomputed in the test."""
    return GridSearchRotoTranslation(
        model, rotations=4, translations=2, max_rotation=40.0, max_translation=2.0, padding=padding
    )


class AnyShapeNet(nn.Module):
    """Scores images of any channel count and size (the generic checks feed 1, 3 and 6 channels):
    channel mean, BatchNorm and dropout (state the search must leave alone), pooled to 4 x 4."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn(x.mean(1, keepdim=True))
        return self.head(self.drop(nn.functional.adaptive_avg_pool2d(h, 4).flatten(1)))


def any_shape_model(seed: int = 0) -> AnyShapeNet:
    torch.manual_seed(seed)
    return AnyShapeNet().train()


# The strategies every generic check runs over: a grid (deterministic), worst-of-k with its own
# generator, worst-of-k on the ambient generator (seeded by the host library or torch), and first-order.
SEARCHES: dict[str, Callable[[nn.Module], SpatialSearch]] = {
    "grid": grid_search,
    "worst_of_k": lambda model: WorstOfK(model, k=4, generator=torch.Generator().manual_seed(0)),
    "worst_of_k_ambient": lambda model: WorstOfK(model, k=4),
    "spatial_pgd": lambda model: SpatialPGD(model, steps=2),
}


def model_state(model: nn.Module) -> tuple[dict[str, Tensor], list[bool], list[Tensor | None]]:
    """Everything a search must leave as it was: weights and buffers, training flags, gradients."""
    return (
        {name: value.detach().clone() for name, value in model.state_dict().items()},
        [module.training for module in model.modules()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
    )


def assert_same_state(
    model: nn.Module, before: tuple[dict[str, Tensor], list[bool], list[Tensor | None]]
) -> None:
    weights, flags, grads = before
    after_weights, after_flags, after_grads = model_state(model)
    assert weights.keys() == after_weights.keys()
    assert all(torch.equal(weights[name], after_weights[name]) for name in weights)
    assert flags == after_flags
    assert all(
        (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
        for a, b in zip(grads, after_grads, strict=True)
    )


class TinySegmenter(nn.Module):
    """Per-pixel logits ``(N, classes, H, W)`` of any image: channel mean, BatchNorm, dropout (state the
    search must leave alone) and one convolution."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(1)
        self.drop = nn.Dropout2d(0.2)
        self.conv = nn.Conv2d(1, classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.drop(self.bn(x.mean(1, keepdim=True))))


class TinyLocator(nn.Module):
    """``(N, 4)`` boxes (``points=0``) or ``(N, points, 2)`` keypoints from a ``size`` x ``size`` image,
    with BatchNorm and dropout."""

    def __init__(self, size: int = 12, points: int = 0) -> None:
        super().__init__()
        self.points = points
        self.bn = nn.BatchNorm2d(1)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(size * size, 2 * points if points else 4)

    def forward(self, x: Tensor) -> Tensor:
        out = self.head(self.drop(self.bn(x.mean(1, keepdim=True)).flatten(1))) * 4.0 + 6.0
        return out.reshape(-1, self.points, 2) if self.points else out


def dense_model(kind: str, seed: int = 0, size: int = 12) -> nn.Module:
    """A model in training mode for ``kind`` in ``("masks", "boxes", "points")``."""
    torch.manual_seed(seed)
    net = TinySegmenter() if kind == "masks" else TinyLocator(size, points=2 if kind == "points" else 0)
    return net.train()
