"""A DDP training loop with a spatial transform on each rank's shard (layer 7).

Each rank draws its own batches (``DistributedSampler``), searches its own worst transforms on them
(the search scores through ``ddp.module``, in eval mode and under ``torch.inference_mode``: no
gradient hooks fire and no buffers are broadcast by the extra forwards), and trains the
DDP-wrapped model, whose gradients are averaged over the ranks: every rank ends with the same
weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from advspatial.distributed.collectives import all_reduce_sum
from advspatial.distributed.context import current_context
from advspatial.engine.model_state import check_model, model_device, unwrap_model
from advspatial.errors import AdvSpatialError, positive_int
from advspatial.training.fit import (
    BatchLoss,
    BatchTransform,
    EpochCallback,
    check_epoch_callback,
    train_one_epoch,
)

__all__ = ["broadcast_model_state", "fit_distributed", "wrap_ddp"]


def wrap_ddp(model: nn.Module, **options: Any) -> nn.Module:
    """``DistributedDataParallel(model)`` when a process group of several ranks runs, else ``model``.

    On CUDA the model's device is passed as ``device_ids``. An already wrapped model is returned as is.
    A model with ``SyncBatchNorm`` on CPU is refused (torch's DDP and SyncBatchNorm need a GPU for it).

    Example:
        >>> model = torch.nn.Linear(2, 2)
        >>> wrap_ddp(model) is model  # no process group here
        True
    """
    check_model(model)
    if isinstance(model, DistributedDataParallel) or current_context().world_size == 1:
        return model
    device = model_device(model)
    if device is not None and device.type == "cuda":
        options.setdefault("device_ids", [device])
    elif any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        raise AdvSpatialError(
            f"model holds SyncBatchNorm layers but is on {device}: torch synchronises batch statistics "
            "of CUDA (XPU, HPU) tensors only; keep BatchNorm on CPU (each rank normalises with its own "
            "batch) or train on CUDA"
        )
    return DistributedDataParallel(model, **options)


def broadcast_model_state(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's model (collective; in place).

    DDP keeps the parameters equal but broadcasts buffers at the *start* of each forward pass, so
    after training each rank's BatchNorm running statistics hold its own last batch. Call this (as
    :func:`fit_distributed` does) before evaluating, so every rank evaluates the same model.

    Example:
        >>> model = torch.nn.BatchNorm1d(3)
        >>> broadcast_model_state(model)  # no process group: nothing to do
    """
    net = unwrap_model(check_model(model))
    context = current_context()
    if context.world_size == 1:
        return
    with torch.no_grad():
        for tensor in [*net.parameters(), *net.buffers()]:
            staged = tensor.detach().to(context.device)
            torch.distributed.broadcast(staged, src=src)
            if staged is not tensor:
                tensor.copy_(staged)


def _check_loss_model(loss_fn: object, ddp: nn.Module) -> None:
    """A loss that holds a model must hold the DDP wrapper, else its gradients are never averaged."""
    held = getattr(loss_fn, "model", None)
    if isinstance(ddp, DistributedDataParallel) and isinstance(held, nn.Module) and held is not ddp:
        raise AdvSpatialError(
            f"loss_fn holds the unwrapped {type(held).__name__}: its forward pass would bypass "
            "DistributedDataParallel and the ranks' gradients would not be averaged; wrap first "
            "(ddp = wrap_ddp(model)), build the loss with ddp and pass ddp to fit_distributed"
        )


def fit_distributed(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 3e-3,
    transform: BatchTransform | None = None,
    loss_fn: BatchLoss | None = None,
    on_epoch_end: EpochCallback | None = None,
    seed: int = 0,
    progress: bool = False,
    desc: str = "train",
) -> list[float]:
    """:func:`advspatial.training.fit` under DDP: Adam, cosine schedule, a transform per batch.

    Call it on every rank with the same ``model`` initialisation; a plain model is wrapped with
    :func:`wrap_ddp` for the loop and trained in place. ``batch_size`` is per rank (the
    global batch is ``batch_size * world_size``). Without a process group this is ``fit`` on one
    process (with a ``DistributedSampler`` of one replica).

    Args:
        model: the classifier, on this rank's device.
        dataset: ``(image, label)`` pairs; each rank trains on its ``DistributedSampler`` shard,
            reshuffled every epoch with ``seed``.
        epochs: passes over the dataset.
        batch_size: samples per step on each rank.
        lr: Adam's learning rate (cosine-annealed to 0 over the run).
        transform: ``transform(images, labels) -> images`` on each batch, e.g. a
            :class:`advspatial.WorstOfK` holding ``model`` and a
            :func:`~advspatial.distributed.rank_generator`.
        loss_fn: ``loss_fn(images, labels) -> loss`` (e.g. an
            :class:`advspatial.InvarianceRegularizedLoss`); cross-entropy of the model by default. A
            loss that calls the model must hold the DDP wrapper: ``ddp = wrap_ddp(model)``, build the
            loss with ``ddp`` and pass ``ddp`` here (a loss holding the plain module is refused).
        on_epoch_end: ``on_epoch_end(epoch, mean_loss)`` after each epoch on every rank, with the
            mean loss over all ranks (``epoch`` counts from 0) and the model still in training mode;
            return ``True`` to stop training there. Training stops on every rank when the callback
            returns ``True`` on any rank, so the ranks stay in step.
        seed: seed of the shuffling.
        progress: show a progress bar over the epochs, on rank 0 only.
        desc: the progress bar's label, e.g. ``"train worst-of-10"``.

    Returns:
        The mean training loss of each epoch over all ranks. Every rank ends with the same
        parameters and buffers (rank 0's BatchNorm statistics, see :func:`broadcast_model_state`).
    """
    positive_int(epochs, "epochs", minimum=0)
    positive_int(batch_size, "batch_size")
    check_epoch_callback(on_epoch_end)
    context = current_context()
    ddp = wrap_ddp(model)
    device = model_device(unwrap_model(ddp)) or torch.device("cpu")
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed
    )
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
    if loss_fn is not None:
        _check_loss_model(loss_fn, ddp)
    history = []
    epoch_iter: Any = range(epochs)
    if progress and context.is_main:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc=desc, unit="epoch", leave=False)
    for epoch in epoch_iter:
        sampler.set_epoch(epoch)
        total, seen = train_one_epoch(
            ddp, loader, optimizer, scheduler, device=device, transform=transform, loss_fn=loss_fn
        )
        totals = torch.tensor([total, seen], dtype=torch.float64, device=context.device)
        if context.world_size > 1:
            torch.distributed.all_reduce(totals)
        history.append(float(totals[0] / totals[1].clamp(min=1)))
        if on_epoch_end is not None:  # every rank votes: the ranks stop together
            stop = on_epoch_end(epoch, history[-1]) is True
            if all_reduce_sum([int(stop)], context)[0] > 0:
                break
    broadcast_model_state(ddp)  # BatchNorm statistics of rank 0 everywhere: identical models
    model.eval()
    return history
