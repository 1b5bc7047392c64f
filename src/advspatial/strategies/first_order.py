"""First-order spatial attack: projected sign-gradient ascent on the parameter row (3 or 6 axes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advspatial.engine.model_state import scoring_mode
from advspatial.engine.search import prepare_targets
from advspatial.errors import flag, images_fit_model, optional_generator, positive_int, symmetric_range
from advspatial.geometry.warp import _warp
from advspatial.space.affine import Space
from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.result import SearchResult
from advspatial.tasks import Task

__all__ = ["SpatialPGD"]


class SpatialPGD(SpatialSearch):
    """Projected sign-gradient ascent on the transform parameters (S-PGD).

    Engstrom et al. 2019 (first-order attack) and Yang et al. 2019 (5 steps, clipped to the box):
    ``p <- clip(p + step_size * sign(grad_p loss(f(T_p x), y)))`` through the differentiable warp.
    Every iterate, the start included, is scored, and the worst per image (same selection rule as
    the other searches) is returned. The model is scored in eval mode; its weights, buffers and
    ``.grad`` are left untouched (gradients are taken with respect to the parameters only).

    Convention:
        Rows ``(angle, tx, ty)``: degrees counter-clockwise, then pixels right and down; bilinear,
        zero fill (see :func:`advspatial.roto_translate`). With ``space=AffineBox(...)`` all six axes
        ``(angle, tx, ty, scale, shear_x, shear_y)`` take sign-gradient steps and are projected back
        into the box axis by axis (scale in its own units).

    Args:
        model: the classifier to attack.
        steps: number of gradient steps.
        step_size: per-coordinate step ``(degrees, px, px)`` (six numbers for an affine space:
            ``(degrees, px, px, scale, degrees, degrees)``) or one number for all; default
            ``2.5 * half_width / steps`` per coordinate (Madry et al.'s rule; the half-width of the
            scale axis is ``(high - low) / 2``).
        max_rotation: largest angle in degrees, as for :class:`WorstOfK` (default 30).
        max_translation: largest shift in pixels, one number or ``(x, y)``, as for :class:`WorstOfK`
            (default 3).
        space: the parameter space instead of the two ranges, as for :class:`WorstOfK`.
        random_start: start from a draw in the box instead of the identity.
        generator: generator for the random start.
        selection: as for :class:`WorstOfK`.
        padding: as for :class:`WorstOfK` (interpolation is bilinear: nearest has no gradient with
            respect to the parameters).
        autocast: as for :class:`WorstOfK`.
        task: as for :class:`WorstOfK`; the targets move with every iterate (the gradient flows
            through the model's output only).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> attack = SpatialPGD(model, steps=5)
        >>> result = attack.search(torch.rand(3, 1, 8, 8), torch.tensor([1, 2, 3]))
        >>> bool(attack.box.contains(result.params).all()), result.evaluations
        (True, 18)
        >>> from advspatial import AffineBox
        >>> affine = SpatialPGD(model, space=AffineBox(scale=(0.8, 1.2), shear=10))
        >>> tuple(round(step, 4) for step in affine.step_size)
        (15.0, 1.5, 1.5, 0.1, 5.0, 5.0)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int = 5,
        step_size: float | Sequence[float] | None = None,
        max_rotation: float | None = None,
        max_translation: float | Sequence[float] | None = None,
        space: Space | None = None,
        random_start: bool = False,
        generator: torch.Generator | None = None,
        selection: str = "engstrom",
        padding: str = "zeros",
        autocast: torch.dtype | None = None,
        task: Task | None = None,
    ) -> None:
        super().__init__(
            model,
            max_rotation=max_rotation,
            max_translation=max_translation,
            space=space,
            selection=selection,
            interpolation="bilinear",
            padding=padding,
            autocast=autocast,
            task=task,
        )
        self.steps = positive_int(steps, "steps", minimum=0)
        if step_size is None:
            half_widths = [(high - low) / 2 for low, high in zip(*self.box.bounds, strict=True)]
            self.step_size = tuple(2.5 * h / max(self.steps, 1) for h in half_widths)
        else:
            self.step_size = symmetric_range(step_size, "step_size", self.box.columns)
        flag(random_start, "random_start")
        optional_generator(generator)
        self.random_start = random_start
        self.generator = generator

    def search(
        self, images: Tensor, targets: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> SearchResult:
        """Run the attack; returns the worst iterate per image (``targets`` as for :class:`WorstOfK`).

        Works also under ``torch.inference_mode``.
        """
        with torch.inference_mode(False):
            return self._search(images, targets, optional_generator(generator))

    def _search(
        self, images: Tensor, targets: Tensor | None, generator: torch.Generator | None
    ) -> SearchResult:
        images, targets = self._check_inputs(images, targets)
        # Tensors made under inference_mode cannot be saved for the gradient: plain copies.
        images = images.clone() if images.is_inference() else images.detach()
        targets = targets.clone() if targets is not None and targets.is_inference() else targets
        batch, device = images.shape[0], images.device
        size = (images.shape[-2], images.shape[-1])
        if self.random_start:
            params = self.box.sample((batch,), generator=generator or self.generator, device=device)
        else:
            params = self.box.identity((batch,), device=device)
        step = torch.tensor(self.step_size, device=device)
        best_params, best_loss = params.clone(), torch.full((batch,), -torch.inf, device=device)
        best_correct = torch.ones(batch, dtype=torch.bool, device=device)
        all_correct = torch.ones(batch, dtype=torch.bool, device=device)
        rows = torch.arange(batch, device=device)
        evaluations = 0 if targets is not None else batch
        if batch == 0:
            return self._pgd_result(best_params, best_loss, all_correct, best_correct, 0, None)
        with scoring_mode(self.model) as net, images_fit_model(images):
            prepared = prepare_targets(net, images, targets, self.config, self.task)
            for iteration in range(self.steps + 1):
                with torch.enable_grad():
                    current = params.detach().requires_grad_(True)
                    # Without a dtype, an enclosing autocast is switched off for the gradient.
                    autocast = (
                        self.config.autocast_context(device)
                        if self.config.autocast is not None
                        else torch.autocast(device_type=device.type, enabled=False)
                    )
                    with autocast:
                        outputs = net(_warp(images, current, "bilinear", self.config.padding))
                        outputs = self.task.check_outputs(outputs, batch, size)
                    loss, correct = prepared.score(outputs, rows, current.detach(), size)
                    gradient = None
                    if iteration < self.steps:
                        (gradient,) = torch.autograd.grad(loss.sum(), current)
                evaluations += batch
                loss, correct = loss.detach(), correct.detach()
                better = self._better(loss, correct, best_loss, best_correct)
                best_params = torch.where(better[:, None], current.detach(), best_params)
                best_loss = torch.where(better, loss, best_loss)
                best_correct = torch.where(better, correct, best_correct)
                all_correct &= correct
                if gradient is not None:
                    params = self.box.project(current.detach() + step * gradient.sign())
        moved = self._moved_targets(targets, best_params, images)
        return self._pgd_result(best_params, best_loss, all_correct, best_correct, evaluations, moved)

    def _better(self, loss: Tensor, correct: Tensor, best_loss: Tensor, best_correct: Tensor) -> Tensor:
        higher = loss > best_loss
        if self.selection == "max_loss":
            return higher
        newly_fooled = ~correct & best_correct
        return newly_fooled | ((correct == best_correct) & higher)

    def _pgd_result(
        self,
        params: Tensor,
        loss: Tensor,
        correct: Tensor,
        chosen_correct: Tensor,
        evaluations: int,
        targets: Tensor | None,
    ) -> SearchResult:
        return SearchResult(
            params=params,
            loss=loss,
            correct=correct,
            chosen_correct=chosen_correct,
            candidate_losses=None,
            candidate_correct=None,
            evaluations=evaluations,
            exhaustive_evaluations=evaluations,
            targets=targets,
        )

    def _extra_repr(self) -> dict[str, Any]:
        return {"steps": self.steps, "step_size": self.step_size, "random_start": self.random_start}
