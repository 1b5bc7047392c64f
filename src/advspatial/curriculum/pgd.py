"""The l-infinity PGD attack in pixel space, and the TRADES loss (Madry et al. 2018, Zhang et al. 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advspatial.engine.model_state import check_model, check_same_device, scoring_mode
from advspatial.errors import (
    check_clip,
    check_epsilon,
    check_images,
    check_label_range,
    check_labels,
    check_logits,
    choice,
    flag,
    images_fit_model,
    images_in_model_dtype,
    optional_generator,
    positive_int,
)

__all__ = ["OBJECTIVES", "check_clip", "check_epsilon", "linf_pgd", "trades_loss"]

OBJECTIVES: tuple[str, ...] = ("ce", "kl")


def linf_pgd(
    model: nn.Module,
    images: Tensor,
    labels: Tensor | None = None,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    objective: str = "ce",
    clip: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected sign-gradient ascent in pixel space: the l-infinity PGD attack of Madry et al. 2018.

    ``x' <- clip(proj_eps(x' + step_size * sign(grad_x' loss)))``, from a uniform random start in
    the eps-ball (or from ``x``); the last iterate is returned. The model runs in eval mode (its
    training flags are restored afterwards); weights, buffers and parameter ``.grad`` are untouched
    (the gradient is taken with respect to the images only).

    Args:
        model: classifier returning ``(B, num_classes)`` logits.
        images: ``(B, C, H, W)`` float images on the model's device.
        labels: ``(B,)`` class indices; ``None`` attacks the model's clean predictions.
        eps: l-infinity bound, in the units of the pixels (``8 / 255`` for images in ``[0, 1]``).
        steps: number of gradient steps.
        step_size: size of each step; ``None`` uses ``2.5 * eps / steps`` (``2 / 255`` for
            ``eps = 8 / 255`` and 10 steps).
        random_start: start from a uniform draw in the eps-ball.
        objective: ``"ce"`` (cross-entropy against the labels) or ``"kl"``
            (``KL(p(x) || p(x'))``, the TRADES attack; labels are not used).
        clip: pixel range the result is clamped to, or ``None``.
        generator: generator of the random start (its device is used for the draw).

    Returns:
        The adversarial images ``x'`` (detached), same shape, dtype and device, with
        ``|x' - x| <= eps`` elementwise.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> images, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> adv = linf_pgd(model, images, labels, eps=8 / 255, generator=torch.Generator().manual_seed(0))
        >>> bool((adv - images).abs().max() <= 8 / 255 + 1e-6), bool(adv.min() >= 0), bool(adv.max() <= 1)
        (True, True, True)
    """
    check_model(model)
    dtype = check_images(images).dtype  # scored in the model's dtype, returned in the input's
    images = images_in_model_dtype(images, model)
    check_same_device(model, images)
    eps = check_epsilon(eps)
    steps = positive_int(steps, "steps", minimum=0)
    step = 2.5 * eps / max(steps, 1) if step_size is None else check_epsilon(step_size, "step_size")
    objective = choice(objective, "objective", OBJECTIVES)
    bounds = check_clip(clip)
    flag(random_start, "random_start")
    optional_generator(generator)
    batch = images.shape[0]
    if labels is not None:
        labels = check_labels(labels, batch, images.device)
    with torch.inference_mode(False):
        clean = images.detach().clone()
    if batch == 0 or eps == 0.0:
        return (clean if bounds is None else clean.clamp(*bounds)).to(dtype)
    with scoring_mode(model) as net, torch.inference_mode(False), images_fit_model(images):
        adv = clean.clone()
        if random_start:
            draw_device = generator.device if generator is not None else images.device
            noise = torch.rand(images.shape, generator=generator, device=draw_device, dtype=images.dtype)
            adv = adv + (noise.to(images.device) * 2.0 - 1.0) * eps
        adv = _project(adv, clean, eps, bounds)
        if steps == 0:
            return adv.to(dtype)
        # The clean prediction is needed only as the target (no labels) or as the KL reference.
        # A clone: labels made under inference_mode cannot enter the autograd graph.
        targets, reference = (None if labels is None else labels.clone()), None
        if labels is None or objective == "kl":
            with torch.no_grad():
                logits = check_logits(net(clean), batch).float()
            if labels is None:
                targets = logits.argmax(dim=1)
            reference = F.log_softmax(logits, dim=1)
        for index in range(steps):
            with torch.enable_grad():
                current = adv.detach().requires_grad_(True)
                out = check_logits(net(current), batch).float()
                if index == 0 and labels is not None:
                    check_label_range(labels, out.shape[1])
                if objective == "ce":
                    assert targets is not None
                    loss = F.cross_entropy(out, targets, reduction="sum")
                else:
                    assert reference is not None
                    loss = F.kl_div(F.log_softmax(out, dim=1), reference, log_target=True, reduction="sum")
                (gradient,) = torch.autograd.grad(loss, current)
            adv = _project(current.detach() + step * gradient.sign(), clean, eps, bounds)
    return adv.to(dtype)


def _project(adv: Tensor, clean: Tensor, eps: float, bounds: tuple[float, float] | None) -> Tensor:
    """Clamp into the eps-ball around ``clean``, then into the pixel range."""
    adv = torch.minimum(torch.maximum(adv, clean - eps), clean + eps)
    return adv if bounds is None else adv.clamp(*bounds)


def trades_loss(
    natural_logits: Tensor, adversarial_logits: Tensor, labels: Tensor, beta: float = 6.0
) -> Tensor:
    """TRADES objective: ``CE(f(x), y) + beta * KL(p(x) || p(x'))``, batch means (Zhang et al. 2019).

    Pair it with the ``"kl"`` attack (``CurriculumSpatial(..., adversarial="trades")``); ``x`` is the
    natural (here: rotated) image and ``x'`` its adversarial version.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> float(trades_loss(logits, logits, torch.tensor([0, 1]))) == float(
        ...     torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
        ... )
        True
    """
    natural = F.cross_entropy(natural_logits, labels)
    robust = F.kl_div(
        F.log_softmax(adversarial_logits, dim=1),
        F.log_softmax(natural_logits, dim=1),
        log_target=True,
        reduction="batchmean",
    )
    return natural + beta * robust
