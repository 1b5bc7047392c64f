"""A plain training loop, used by the demo and the end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from advspatial.engine.model_state import check_model, model_device
from advspatial.errors import positive_int

__all__ = ["fit", "train_one_epoch"]

BatchTransform = Callable[[Tensor, Tensor], Tensor]
BatchLoss = Callable[[Tensor, Tensor], Tensor]


def fit(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 3e-3,
    transform: BatchTransform | None = None,
    loss_fn: BatchLoss | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Train ``model`` with Adam; ``transform(images, labels)`` maps each batch.

    The transform runs on the batch right after the loader (the fast path of the library), e.g. a
    :class:`advspatial.WorstOfK` for adversarial training. The loss is cross-entropy, or
    ``loss_fn(images, labels)`` (e.g. an :class:`advspatial.InvarianceRegularizedLoss`) when given.

    Returns:
        The mean training loss of each epoch.
    """
    check_model(model)
    positive_int(epochs, "epochs", minimum=0)
    positive_int(batch_size, "batch_size")
    device = model_device(model) or torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
    history = []
    epoch_iter: range = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc="train", unit="epoch", leave=False)
    for _ in epoch_iter:
        total, seen = train_one_epoch(
            model, loader, optimizer, scheduler, device=device, transform=transform, loss_fn=loss_fn
        )
        history.append(total / max(seen, 1))
    model.eval()
    return history


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    device: torch.device,
    transform: BatchTransform | None = None,
    loss_fn: BatchLoss | None = None,
) -> tuple[float, int]:
    """One pass over ``loader`` in training mode, stepping ``scheduler`` per batch.

    Returns:
        ``(sum of batch loss x batch size, number of samples)``.
    """
    model.train()
    total, seen = 0.0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        if transform is not None:
            images = transform(images, labels)
        loss = F.cross_entropy(model(images), labels) if loss_fn is None else loss_fn(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss.detach()) * len(labels)
        seen += len(labels)
    return total, seen
