"""A plain training loop, used by the demo and the end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from advspatial.engine.model_state import check_model, model_device
from advspatial.errors import AdvSpatialError, positive_int

__all__ = ["fit", "train_one_epoch"]

BatchTransform = Callable[[Tensor, Tensor], Tensor]
BatchLoss = Callable[[Tensor, Tensor], Tensor]
OptimizerFactory = Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer]
EpochCallback = Callable[[int, float], object]


def fit(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float | None = None,
    optimizer: torch.optim.Optimizer | OptimizerFactory | None = None,
    transform: BatchTransform | None = None,
    loss_fn: BatchLoss | None = None,
    on_epoch_end: EpochCallback | None = None,
    seed: int = 0,
    progress: bool = False,
    desc: str = "train",
) -> list[float]:
    """Train ``model`` in place; ``transform(images, labels)`` maps each batch.

    The transform runs on the batch right after the loader (the fast path of the library), e.g. a
    :class:`advspatial.WorstOfK` for adversarial training. The loss is cross-entropy, or
    ``loss_fn(images, labels)`` (e.g. an :class:`advspatial.InvarianceRegularizedLoss`) when given.
    Every parameter group's learning rate is cosine-annealed from its initial value to 0 over the run
    (stepped per batch), whichever optimizer is used.

    Args:
        model: the classifier, on the device to train on (batches are moved there).
        dataset: ``(image, label)`` pairs, reshuffled every epoch from ``seed``.
        epochs: passes over the dataset (0 trains nothing).
        batch_size: samples per step.
        lr: Adam's learning rate (default ``3e-3``); only for the default optimizer.
        optimizer: ``None`` for ``Adam(lr)``, a ``torch.optim.Optimizer`` already built over the
            model's parameters, or a factory called with ``model.parameters()`` that returns one,
            e.g. ``functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)``.
        transform: ``transform(images, labels) -> images`` applied to each batch.
        loss_fn: ``loss_fn(images, labels) -> loss``; cross-entropy of ``model`` by default.
        on_epoch_end: ``on_epoch_end(epoch, mean_loss)`` after each epoch (``epoch`` counts from 0),
            with the model still in training mode; return ``True`` to stop training there (any
            other return value, ``None`` included, goes on).
        seed: seed of the shuffling.
        progress: show a progress bar over the epochs.
        desc: the progress bar's label, e.g. ``"train worst-of-10"``.

    Returns:
        The mean training loss of each epoch run, in order.

    Example:
        >>> from functools import partial
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.rand(16, 1, 8, 8), torch.arange(16) % 2)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
        >>> seen = []
        >>> history = fit(model, data, epochs=3, batch_size=8,
        ...               optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        ...               on_epoch_end=lambda epoch, loss: seen.append(epoch))
        >>> len(history), seen
        (3, [0, 1, 2])
    """
    check_model(model)
    positive_int(epochs, "epochs", minimum=0)
    positive_int(batch_size, "batch_size")
    check_epoch_callback(on_epoch_end)
    device = model_device(model) or torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
    opt = _optimizer(model, optimizer, lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(loader)))
    history = []
    epoch_iter: range = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc=desc, unit="epoch", leave=False)
    for epoch in epoch_iter:
        total, seen = train_one_epoch(
            model, loader, opt, scheduler, device=device, transform=transform, loss_fn=loss_fn
        )
        history.append(total / max(seen, 1))
        if on_epoch_end is not None and on_epoch_end(epoch, history[-1]) is True:
            break
    model.eval()
    return history


def check_epoch_callback(on_epoch_end: object) -> None:
    """``on_epoch_end`` is ``None`` or a callable ``on_epoch_end(epoch, mean_loss)``."""
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise AdvSpatialError(
            "on_epoch_end must be a callable on_epoch_end(epoch, mean_loss), "
            f"got {type(on_epoch_end).__name__}"
        )


def _optimizer(
    model: nn.Module, optimizer: torch.optim.Optimizer | OptimizerFactory | None, lr: float | None
) -> torch.optim.Optimizer:
    """The optimizer ``fit`` steps: Adam by default, else the user's, checked to hold the model's weights."""
    if optimizer is None:
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
            raise AdvSpatialError(f"lr must be a number > 0, got {lr!r}")
        return torch.optim.Adam(model.parameters(), lr=3e-3 if lr is None else float(lr))
    if lr is not None:
        raise AdvSpatialError(
            "lr applies to the default Adam only; with optimizer=... set the learning rate on the "
            f"optimizer itself (got lr={lr!r})"
        )
    built = optimizer
    if not isinstance(built, torch.optim.Optimizer):
        if not callable(built):
            raise AdvSpatialError(
                "optimizer must be a torch.optim.Optimizer or a factory params -> Optimizer, "
                f"got {type(built).__name__}"
            )
        built = built(model.parameters())
        if not isinstance(built, torch.optim.Optimizer):
            raise AdvSpatialError(
                f"optimizer: the factory returned a {type(built).__name__}, expected a torch.optim.Optimizer"
            )
    owned = {id(p) for p in model.parameters()}
    held = [p for group in built.param_groups for p in group["params"]]
    if not held or any(id(p) not in owned for p in held):
        raise AdvSpatialError(
            "optimizer must be built over this model's parameters "
            "(e.g. torch.optim.SGD(model.parameters(), lr=0.1)); "
            f"it holds {len(held)} tensors, {sum(id(p) not in owned for p in held)} of them not the model's"
        )
    return built


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
