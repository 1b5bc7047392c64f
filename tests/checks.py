"""The shared checker every spatial transform of the library passes."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import torch
from torch import Tensor, nn

from advspatial import SpatialSearch, roto_translate


def model_snapshot(model: nn.Module) -> dict[str, object]:
    """Everything a search must leave unchanged: weights, buffers, grads, training flags."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
    }


def assert_model_unchanged(model: nn.Module, before: dict[str, object]) -> None:
    after = model_snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    for key, value in before["state"].items():  # type: ignore[attr-defined]
        assert torch.equal(after["state"][key], value), key  # type: ignore[index]
    for key, value in before["grads"].items():  # type: ignore[attr-defined]
        other = after["grads"][key]  # type: ignore[index]
        assert (value is None and other is None) or torch.equal(value, other), key


def check_transform(
    make: Callable[[nn.Module], SpatialSearch], model: nn.Module, images: Tensor, labels: Tensor
) -> None:
    """Run every generic invariant on a transform built by ``make(model)``."""
    transform = make(model)
    # Give the model gradients, so that a leak into .grad would be visible.
    model(images).sum().backward()
    before = model_snapshot(model)
    original = images.clone()

    columns = transform.box.columns  # 3 for roto-translation, 6 for an affine space
    result = transform.search(images, labels)
    out = transform(images, labels)
    assert torch.equal(images, original), "the input was modified in place"
    assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
    assert result.params.shape == (images.shape[0], columns)
    assert result.loss.shape == (images.shape[0],)
    assert result.correct.shape == (images.shape[0],) and result.correct.dtype == torch.bool
    assert bool(transform.box.contains(result.params).all())
    assert_model_unchanged(model, before)

    # Applying the chosen params reproduces what the model was scored on.
    replay = roto_translate(images, result.params)
    assert torch.allclose(transform.apply(images, result.params), replay)

    # Without labels, and on an empty batch.
    unlabeled = transform.search(images)
    assert unlabeled.params.shape == (images.shape[0], columns)
    empty = transform(images[:0], labels[:0])
    assert empty.shape == (0, *images.shape[1:])
    assert transform.search(images[:0], labels[:0]).params.shape == (0, columns)
    assert_model_unchanged(model, before)

    # repr names the class; pickling round-trips and gives a working transform.
    assert type(transform).__name__ in repr(transform)
    clone = pickle.loads(pickle.dumps(transform))
    assert clone(images, labels).shape == images.shape

    # Model state is restored also when the call raises.
    try:
        transform.search(images, labels + 100)
    except ValueError:
        pass
    else:  # pragma: no cover - the check must fire
        raise AssertionError("labels out of range were accepted")
    assert_model_unchanged(model, before)
    model.zero_grad(set_to_none=True)
