"""Every inference-only forward pass is chunked and backs off on out-of-memory (issues 15 and 18)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from advspatial import InvarianceRegularizedLoss, WorstOfK
from advspatial.engine import model_outputs
from advspatial.evaluation import natural_accuracy, rotation_accuracy
from advspatial.tasks import Classification


class SmallMemory(nn.Module):
    """A classifier that runs out of memory on batches of more than ``limit`` images."""

    def __init__(self, limit: int = 4) -> None:
        super().__init__()
        self.limit = limit
        self.linear = nn.Linear(16, 3)
        self.largest = 0

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] > self.limit and not torch.is_grad_enabled():
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        self.largest = max(self.largest, x.shape[0]) if not torch.is_grad_enabled() else self.largest
        return self.linear(x.flatten(1))


def test_model_outputs_backs_off() -> None:
    model = SmallMemory()
    images = torch.rand(37, 1, 4, 4)
    outputs = model_outputs(model, images, Classification())
    assert outputs.shape == (37, 3) and model.largest <= 4
    assert torch.allclose(outputs, model.linear(images.flatten(1)).detach())


def test_label_free_search_and_evaluation_back_off() -> None:
    model = SmallMemory()
    images, labels = torch.rand(40, 1, 4, 4), torch.randint(0, 3, (40,))
    result = WorstOfK(model, k=3, generator=torch.Generator().manual_seed(0)).search(images)  # clean pass
    assert result.params.shape == (40, 3)
    data = TensorDataset(images, labels)
    assert natural_accuracy(model, data, batch_size=40).correct.shape == (40,)
    accuracy = rotation_accuracy(model, data, batch_size=40, generator=torch.Generator().manual_seed(0))
    assert 0.0 <= accuracy <= 1.0
    attack = WorstOfK(model, k=2, generator=torch.Generator().manual_seed(0))
    loss = InvarianceRegularizedLoss(model, attack, attack_objective="regularizer", regularizer="l2")
    # Inference-only passes (the clean logits, the candidates) back off; the training forward of
    # cat([x, x']) runs with gradients, as one batch.
    assert torch.isfinite(loss(images, labels).detach())
    assert model.largest <= 4


def test_model_outputs_follow_the_dtype_rule() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).double()
    images = torch.rand(5, 1, 4, 4)
    outputs = model_outputs(model, images, Classification())
    assert outputs.dtype == torch.float64
    assert torch.allclose(outputs, model(images.double()).detach())
    assert natural_accuracy(model, TensorDataset(images, torch.zeros(5, dtype=torch.long))).correct.shape == (
        5,
    )
