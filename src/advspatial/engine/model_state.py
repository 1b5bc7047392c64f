"""Holding a model for scoring without changing it (part of layer 3)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from advspatial.errors import AdvSpatialError

__all__ = ["check_model", "model_device", "scoring_mode", "unwrap_model"]


def check_model(model: object, name: str = "model") -> nn.Module:
    """Check that ``model`` is an ``nn.Module`` (a DDP or ``torch.compile`` wrapper is fine)."""
    if not isinstance(model, nn.Module):
        raise AdvSpatialError(f"{name} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module to score with: ``model.module`` for DDP / DataParallel wrappers, else ``model``.

    Scoring through the wrapped module keeps the extra forwards out of DDP's gradient hooks and
    buffer broadcasts.
    """
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def model_device(model: nn.Module) -> torch.device | None:
    """Device of the model's first parameter or buffer; ``None`` for a model without tensors."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return None


def check_same_device(model: nn.Module, tensor: torch.Tensor, name: str = "images") -> torch.device:
    """The device to score on; raises when ``tensor`` is elsewhere than the model."""
    device = model_device(model)
    if device is not None and tensor.device != device:
        raise AdvSpatialError(
            f"{name} are on {tensor.device} but the model is on {device}; "
            f"move them with {name}.to({str(device)!r}) (the search runs on the model's device)"
        )
    return tensor.device


@contextmanager
def scoring_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (unwrapped) in eval mode and restore every submodule's training flag afterwards.

    The flags are restored also when the body raises. Weights, buffers and ``.grad`` are never
    touched here; scoring under ``torch.inference_mode`` keeps BatchNorm statistics and gradients as
    they were.
    """
    net = unwrap_model(model)
    flags = [(module, module.training) for module in model.modules()]
    try:
        net.eval()
        yield net
    finally:
        for module, flag in flags:
            module.training = flag
