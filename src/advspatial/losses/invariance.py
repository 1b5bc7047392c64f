"""The invariance-regularized loss of Yang, Wang and Heinze-Deml 2019 (layer 5)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from advspatial.engine.model_state import check_model, check_same_device, unwrap_model
from advspatial.engine.search import model_outputs, score_candidates
from advspatial.errors import (
    AdvSpatialError,
    check_images,
    check_params,
    choice,
    images_in_model_dtype,
)
from advspatial.geometry.warp import roto_translate
from advspatial.strategies.grid import GridSearch
from advspatial.strategies.result import SearchResult
from advspatial.strategies.worst_of_k import WorstOfK
from advspatial.tasks import Classification, Task, check_task
from advspatial.tasks.penalties import REGULARIZERS, _wide

__all__ = ["InvarianceLossComponents", "InvarianceRegularizedLoss"]

TASK_ON: tuple[str, ...] = ("nat", "adv", "both")
ATTACK_OBJECTIVES: tuple[str, ...] = ("task", "regularizer")
TaskLoss = Callable[[Tensor, Tensor], Tensor]


class _Attack(Protocol):
    def search(self, images: Tensor, labels: Tensor | None = None) -> Any: ...


@dataclass(frozen=True)
class InvarianceLossComponents:
    """The parts of the last loss value, detached, for logging (no extra forward pass).

    Attributes:
        loss: the returned scalar ``task + weight * regularizer``.
        task: the task-loss term (mean of the natural and adversarial terms for ``task_on="both"``).
        regularizer: the batch mean of the penalty ``D(z(x), z(x'))`` (before weighting).
        weight: ``lambda``.
        attack_success_rate: fraction of images whose transform ``x'`` the model misclassified in the
            training forward pass.
        params: ``(B, 3)`` transforms ``(angle, tx, ty)`` used for ``x'``.
        search: the attack's result, or ``None`` when ``params`` were given.
    """

    loss: Tensor
    task: Tensor
    regularizer: Tensor
    weight: float
    attack_success_rate: Tensor
    params: Tensor
    search: SearchResult | Any | None

    def as_dict(self) -> dict[str, float]:
        """Python floats for a logger: ``loss``, ``task``, ``regularizer``, ``attack_success_rate``."""
        return {
            "loss": float(self.loss),
            "task": float(self.task),
            "regularizer": float(self.regularizer),
            "attack_success_rate": float(self.attack_success_rate),
        }


class InvarianceRegularizedLoss(nn.Module):
    """Task loss plus ``weight * D(z(x), z(x'))`` with ``x'`` the attack's worst transform of ``x``.

    Yang, Wang and Heinze-Deml 2019, "Invariance-inducing regularization using worst-case
    transformations suffices to boost accuracy and spatial robustness". Per batch:

    1. the attack chooses a transform per image, in eval mode, leaving the model untouched, either
       against the task (``attack_objective="task"``: the attack's own cross-entropy search) or against
       the regularizer itself (``attack_objective="regularizer"``: candidates ranked by
       ``D(z(x), z(x'))`` with the eval-mode clean logits);
    2. one forward pass over ``cat([x, x'])`` in the model's current mode (training mode during
       training: BatchNorm sees the clean and the transformed images together, as in the paper);
    3. ``loss = task + weight * mean_i D(z(x_i), z(x'_i))``, computed in float32 outside autocast.

    Regularizers on logits ``z``: ``"l2"`` (ALP style) ``||z(x) - z(x')||^2 / 4``, paper weight 1;
    ``"kl"`` (TRADES style) ``KL(softmax z(x) || softmax z(x'))``, paper weight 8. Gradients flow
    through both sides. The task loss is taken on the natural images (``"nat"``, the paper's "nat"),
    the transformed ones (``"adv"``, the paper's "rob") or the mean of both (``"both"``, "mix").

    Defaults depend on the task (:meth:`advspatial.tasks.Task.regularization_defaults`); an
    argument given explicitly always wins:

    | task | ``regularizer`` | ``weight`` | ``task_on`` |
    |---|---|---|---|
    | classification (the paper's) | ``"kl"`` | 8 (``"l2"``: 1) | ``"nat"`` |
    | segmentation | ``"kl"`` | 1 | ``"both"`` |
    | boxes, keypoints | ``"l2"`` | 1 | ``"both"`` |

    Convention:
        Transforms are rows ``(angle, tx, ty)``: degrees counter-clockwise, then pixels right and
        down; bilinear, zero fill (see :func:`advspatial.roto_translate`).

    Args:
        model: the classifier being trained (held by reference, not registered as a submodule); a
            DDP or ``torch.compile`` wrapper is fine. It must be the model the attack holds.
        attack: a :class:`advspatial.WorstOfK`, :class:`advspatial.GridSearch` (e.g.
            :class:`advspatial.GridSearchRotoTranslation`), :class:`advspatial.SpatialPGD` or any
            object with ``search(images, labels)`` returning ``.params`` ``(B, 3)`` (``(B, 6)`` over
            an affine space). ``x'`` is built with ``attack.apply`` when it has one.
        regularizer: ``"kl"`` or ``"l2"``; ``None`` takes the task's default (``"kl"``; ``"l2"``,
            the only one they have, for boxes and keypoints).
        weight: ``lambda >= 0``; ``None`` takes the task's default: the paper's value for
            classification (8 for ``"kl"``, 1 for ``"l2"``), 1 for the dense tasks.
        task_on: ``"nat"``, ``"adv"`` or ``"both"``; ``None`` takes the task's default: ``"nat"``
            for classification, ``"both"`` for the dense tasks.
        attack_objective: ``"task"`` or ``"regularizer"``. Ranking by the regularizer needs a
            candidate set (WorstOfK, grid) for ``"l2"``; for ``"kl"`` any attack works (it is then
            searched without labels, i.e. against ``KL(p_clean || p')``, which is the regularizer).
        task_loss: ``task_loss(outputs, targets) -> scalar``, default ``task.loss`` (cross-entropy for
            classification, cross-entropy over valid pixels for segmentation).
        task: what the model predicts (:mod:`advspatial.tasks`); default the attack's task, else
            :class:`~advspatial.tasks.Classification`. With a dense task the regularizer compares
            ``f(T x)`` with ``T`` applied to ``f(x)`` (equivariance): for segmentation the clean
            logits warped by the same rows (bilinear), pixels outside the frame excluded, then
            ``"kl"`` or ``"l2"`` per pixel, averaged; for boxes and points (``"l2"`` only) the clean
            prediction moved with the same matrices. The adversarial task term uses the moved
            targets. ``attack_objective="regularizer"`` with a dense task ranks candidates by the
            task's label-free objective (the ``"kl"`` equivariance for segmentation).

    Shape:
        images ``(B, C, H, W)`` float on the model's device, targets as the task expects (labels
        ``(B,)`` integer for classification); returns a scalar.
        After each call, :attr:`last` holds the :class:`InvarianceLossComponents`.

    Example:
        >>> from advspatial import WorstOfK
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> attack = WorstOfK(model, k=10, generator=torch.Generator().manual_seed(0))
        >>> loss_fn = InvarianceRegularizedLoss(model, attack)
        >>> loss = loss_fn(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
        >>> loss.shape, loss_fn.regularizer, loss_fn.weight, loss_fn.task_on
        (torch.Size([]), 'kl', 8.0, 'nat')
        >>> sorted(loss_fn.last.as_dict())
        ['attack_success_rate', 'loss', 'regularizer', 'task']
        >>> loss.backward()
    """

    def __init__(
        self,
        model: nn.Module,
        attack: _Attack,
        *,
        regularizer: str | None = None,
        weight: float | None = None,
        task_on: str | None = None,
        attack_objective: str = "task",
        task_loss: TaskLoss | None = None,
        task: Task | None = None,
    ) -> None:
        super().__init__()
        self._held = (check_model(model),)
        if not callable(getattr(attack, "search", None)):
            raise AdvSpatialError(
                f"attack must have a search(images, labels) method (e.g. advspatial.WorstOfK), "
                f"got {type(attack).__name__}"
            )
        attack_model = getattr(attack, "model", None)
        if isinstance(attack_model, nn.Module) and _root(attack_model) is not _root(model):
            raise AdvSpatialError(
                "attack.model must be the model being trained (or a DDP / torch.compile wrapper of it), "
                f"got a different {type(attack_model).__name__}; build the attack with the same model"
            )
        self.attack = attack
        self.task = _task_of(attack, task)
        if regularizer is not None:
            regularizer = choice(regularizer, "regularizer", tuple(REGULARIZERS))
        defaults = self.task.regularization_defaults(regularizer)
        self.regularizer = choice(defaults.regularizer, "regularizer", tuple(REGULARIZERS))
        if weight is None:
            weight = defaults.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise AdvSpatialError(f"weight must be a finite number >= 0 or None, got {weight!r}")
        if weight < 0:
            raise AdvSpatialError(f"weight must be >= 0, got {weight!r}")
        self.weight = float(weight)
        self.task_on = choice(defaults.task_on if task_on is None else task_on, "task_on", TASK_ON)
        self.attack_objective = choice(attack_objective, "attack_objective", ATTACK_OBJECTIVES)
        if (
            self.attack_objective == "regularizer"
            and self.regularizer == "l2"
            and not (_has_candidates(attack) and isinstance(self.task, Classification))
        ):
            raise AdvSpatialError(
                "attack_objective='regularizer' with regularizer='l2' needs a classification attack with a "
                f"candidate set (WorstOfK or a GridSearch), got {type(attack).__name__} with "
                f"{self.task!r}; use attack_objective='task' or regularizer='kl'"
            )
        if task_loss is not None and not callable(task_loss):
            raise AdvSpatialError(f"task_loss must be callable or None, got {type(task_loss).__name__}")
        self.task_loss: TaskLoss = task_loss if task_loss is not None else self.task.loss
        self.last: InvarianceLossComponents | None = None

    @property
    def model(self) -> nn.Module:
        """The model being trained."""
        return self._held[0]

    def forward(self, images: Tensor, targets: Tensor, *, params: Tensor | None = None) -> Tensor:
        """The regularized loss of a batch.

        Args:
            images: ``(B, C, H, W)`` float, ``B >= 1``, on the model's device.
            targets: the task's targets: ``(B,)`` class indices for classification, ``(B, H, W)``
                masks for segmentation, ``(B, 4)`` boxes, ``(B, P, 2)`` points.
            params: optional ``(B, 3)`` or ``(B, 6)`` transforms to use instead of searching (replay).

        Returns:
            A scalar tensor; :attr:`last` holds its components.
        """
        images = images_in_model_dtype(check_images(images), self.model)
        check_same_device(self.model, images)
        if images.shape[0] == 0:
            raise AdvSpatialError("images must hold at least one image to compute a mean loss, got 0")
        batch, size = images.shape[0], (images.shape[-2], images.shape[-1])
        given = self.task.check_targets(targets, images)
        targets = self.task.scoring_targets(given)  # int64 masks, float32 boxes: as the search scores
        search: Any = None
        if params is None:
            search = self._search(images.detach(), given)
            params = check_params(search.params, batch, name="attack's chosen params")
        else:
            params = check_params(params, batch)
        params = params.detach().to(images.device)
        transformed = self._transform(images, params)
        outputs = self.task.check_outputs(self.model(torch.cat([images, transformed])), 2 * batch, size)
        moved = self.task.move_targets(targets, params, size)
        with torch.autocast(device_type=images.device.type, enabled=False):
            wide = _wide(outputs)
            clean, adversarial = wide[:batch], wide[batch:]
            fooled = ~self.task.objective(adversarial.detach(), moved)[1]
            task = self._task_term(clean, adversarial, targets, moved)
            penalty = self.task.penalty(clean, adversarial, params, size, self.regularizer).mean()
            loss = task + self.weight * penalty
        self.last = InvarianceLossComponents(
            loss=loss.detach(),
            task=task.detach(),
            regularizer=penalty.detach(),
            weight=self.weight,
            attack_success_rate=fooled.float().mean(),
            params=params,
            search=search,
        )
        return loss

    def _task_term(self, clean: Tensor, adversarial: Tensor, targets: Tensor, moved: Tensor) -> Tensor:
        if self.task_on == "nat":
            return self.task_loss(clean, targets)
        if self.task_on == "adv":
            return self.task_loss(adversarial, moved)
        return 0.5 * (self.task_loss(clean, targets) + self.task_loss(adversarial, moved))

    def _transform(self, images: Tensor, params: Tensor) -> Tensor:
        apply = getattr(self.attack, "apply", None)
        if callable(apply):
            return apply(images, params)
        return roto_translate(images, params)

    def _search(self, images: Tensor, targets: Tensor) -> Any:
        if self.attack_objective == "task":
            return self.attack.search(images, targets)
        if not (_has_candidates(self.attack) and isinstance(self.task, Classification)):
            # The label-free objective (KL from the clean prediction, moved with each candidate for
            # dense outputs) is the engine's: for "kl" it is the regularizer itself.
            return self.attack.search(images, None)
        return self._search_regularizer(images, targets)

    def _search_regularizer(self, images: Tensor, labels: Tensor) -> SearchResult:
        """Rank the attack's candidates by the regularizer against the eval-mode clean logits."""
        attack = self.attack
        assert isinstance(attack, WorstOfK | GridSearch)
        if isinstance(attack, WorstOfK):
            candidates = attack.sample(images.shape[0], images.device)
        else:
            candidates = attack.candidates.to(images.device)
        clean = model_outputs(self.model, images, self.task, attack.config).float()
        penalty = REGULARIZERS[self.regularizer]

        def objective(logits: Tensor, rows: Tensor) -> Tensor:
            return penalty(clean[rows], logits)

        scores = score_candidates(self.model, images, labels, candidates, attack.config, objective=objective)
        result = attack._result(scores, candidates, images, labels)
        return dataclasses.replace(
            result,
            evaluations=result.evaluations + images.shape[0],
            exhaustive_evaluations=result.exhaustive_evaluations + images.shape[0],
        )

    def extra_repr(self) -> str:
        return (
            f"model={type(self.model).__name__}, attack={type(self.attack).__name__}, "
            f"regularizer={self.regularizer!r}, weight={self.weight}, task_on={self.task_on!r}, "
            f"attack_objective={self.attack_objective!r}"
        )


def _task_of(attack: object, task: object) -> Task:
    """The loss's task: ``task`` if given (it must match the attack's), else the attack's own."""
    attack_task = getattr(attack, "task", None)
    if task is None:
        return attack_task if isinstance(attack_task, Task) else Classification()
    task = check_task(task)
    if isinstance(attack_task, Task) and type(attack_task) is not type(task):
        raise AdvSpatialError(
            f"task must be the attack's task, got {task!r} for an attack built with {attack_task!r}; "
            "pass the same task to both"
        )
    return task


def _has_candidates(attack: object) -> bool:
    return isinstance(attack, WorstOfK | GridSearch)


def _root(model: nn.Module) -> nn.Module:
    """The module under DDP / DataParallel and ``torch.compile`` wrappers."""
    while True:
        inner = unwrap_model(model)
        inner = getattr(inner, "_orig_mod", inner)
        if inner is model:
            return model
        model = inner
