"""The task protocol: what a candidate transform is scored against (between layers 1 and 3).

A task tells the engine, for the (image, candidate) pairs of one chunk, how the targets move with the
candidate rows, how bad each pair is for the model (the objective, higher = worse) and whether the
model is still right on it. The engine, the strategies, the loss wrapper, the evaluation and the
adapters are the same code for every task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from advspatial.errors import AdvSpatialError, choice
from advspatial.tasks.penalties import PAPER_WEIGHTS, REGULARIZERS

__all__ = ["RegularizationDefaults", "Task", "check_task"]


@dataclass(frozen=True)
class RegularizationDefaults:
    """What :class:`advspatial.InvarianceRegularizedLoss` uses for a task where an argument is ``None``.

    Attributes:
        regularizer: ``"kl"`` or ``"l2"``.
        weight: ``lambda`` for that regularizer.
        task_on: ``"nat"``, ``"adv"`` or ``"both"``: the images the task loss is taken on.
    """

    regularizer: str
    weight: float
    task_on: str


class Task(ABC):
    """How targets move with a transform and how a transformed pair is scored.

    Every method works on a whole chunk of ``N`` (image, candidate) pairs at once: ``targets[i]``
    belongs to the pair whose image was warped by ``params[i]``. Subclass it for a model of your own
    (see the "Tasks" guide for a detection-loss example): implement the five abstract methods; the
    label-free mode (no targets: the model's clean prediction is the reference) works once
    :meth:`reference` is implemented.

    Convention:
        ``params`` are the library's rows ``(angle, tx, ty[, scale, shear_x, shear_y])`` (see
        :func:`advspatial.roto_translate`); ``size`` is the ``(H, W)`` of the images.
    """

    #: Short name used in reports and on the command line.
    name: str = "task"

    @abstractmethod
    def check_targets(self, targets: object, images: Tensor, name: str = "targets") -> Tensor:
        """Validate the targets of a batch of ``images``; return them on the images' device.

        The dtype returned is the one ``result.targets`` comes back in (the built-in dense tasks keep
        the caller's: ``uint8`` masks stay ``uint8``, ``float64`` boxes stay ``float64``); the engine
        scores :meth:`scoring_targets` of them.
        """

    def scoring_targets(self, targets: Tensor) -> Tensor:
        """Checked targets in the form the objective computes with (default: unchanged).

        :class:`~advspatial.tasks.Segmentation` scores ``int64`` masks,
        :class:`~advspatial.tasks.BoxRegression` and :class:`~advspatial.tasks.KeypointRegression`
        ``float32`` coordinates, whatever dtype the caller's targets have.
        """
        return targets

    @abstractmethod
    def check_outputs(self, outputs: object, rows: int, size: tuple[int, int]) -> Tensor:
        """Validate the model's output for ``rows`` pairs; return it as a float tensor."""

    @abstractmethod
    def move_targets(self, targets: Tensor, params: Tensor, size: tuple[int, int]) -> Tensor:
        """Targets of ``N`` pairs moved by their rows ``params`` ``(N, D)`` (no gradient needed)."""

    @abstractmethod
    def objective(self, outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Per-pair ``(loss (N,) float32, correct (N,) bool)`` against moved targets."""

    @abstractmethod
    def reference(self, outputs: Tensor) -> Tensor:
        """Label-free mode: the per-image reference built from the clean outputs."""

    def move_reference(self, reference: Tensor, params: Tensor, size: tuple[int, int]) -> Tensor:
        """Move a label-free reference with the pairs' rows (default: as targets move)."""
        return self.move_targets(reference, params, size)

    def reference_objective(self, outputs: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
        """Per-pair ``(loss, correct)`` against a moved reference (default: :meth:`objective`)."""
        return self.objective(outputs, reference)

    def groups(self, targets: Tensor) -> Tensor:
        """``(B,)`` long group of each image: images of one group share early-exit evidence.

        The default puts every image in one group; classification groups by class.
        """
        return torch.zeros(targets.shape[0], dtype=torch.long, device=targets.device)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Scalar training loss of a batch against (moved) targets: the mean objective."""
        return self.objective(outputs, targets)[0].mean()

    def penalty(
        self, clean: Tensor, transformed: Tensor, params: Tensor, size: tuple[int, int], regularizer: str
    ) -> Tensor:
        """Per-sample ``D(T f(x), f(T x))`` for the loss wrapper (differentiable in both outputs).

        ``regularizer`` is ``"kl"`` or ``"l2"``. Tasks that cannot compare outputs raise.
        """
        raise AdvSpatialError(f"the {self.name} task has no {regularizer!r} regularizer")

    def regularization_defaults(self, regularizer: str | None = None) -> RegularizationDefaults:
        """The invariance loss's defaults for this task, for ``regularizer`` (``None``: the task's own).

        The default (classification, and a task of your own unless it overrides this) is Yang et al.
        2019's: ``"kl"`` with weight 8 (``"l2"``: weight 1), the task loss on the natural images.
        The dense built-ins use weight 1 with the task loss on both views.

        Example:
            >>> from advspatial.tasks import BoxRegression, Classification, Segmentation
            >>> Classification().regularization_defaults()
            RegularizationDefaults(regularizer='kl', weight=8.0, task_on='nat')
            >>> Classification().regularization_defaults("l2").weight
            1.0
            >>> Segmentation().regularization_defaults()
            RegularizationDefaults(regularizer='kl', weight=1.0, task_on='both')
            >>> BoxRegression().regularization_defaults().regularizer
            'l2'
        """
        chosen = choice("kl" if regularizer is None else regularizer, "regularizer", tuple(REGULARIZERS))
        return RegularizationDefaults(chosen, PAPER_WEIGHTS[chosen], "nat")

    def statistics(self, outputs: Tensor, targets: Tensor) -> Tensor | None:
        """Per-sample rows ``(N, S)`` that :meth:`summarize` turns into dataset-level metrics.

        The evaluation sums them over the whole dataset (all ranks under ``torchrun``), e.g. the
        per-class intersections and unions behind a mean IoU. ``None`` (the default): no metric
        beyond accuracy, and the evaluation spends no forward pass on it.
        """
        return None

    def summarize(self, statistics: Tensor) -> dict[str, float]:
        """Dataset-level metrics from the stacked rows of :meth:`statistics` (default: none)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_task(task: object, name: str = "task") -> Task:
    """Check that ``task`` is a :class:`Task` instance (e.g. ``Segmentation()``, not the class)."""
    if isinstance(task, type) and issubclass(task, Task):
        raise AdvSpatialError(
            f"{name} must be a Task instance, got the class {task.__name__}; call it: {task.__name__}()"
        )
    if not isinstance(task, Task):
        raise AdvSpatialError(
            f"{name} must be an advspatial.tasks.Task (Classification(), Segmentation(), BoxRegression(), "
            f"KeypointRegression() or a subclass), got {type(task).__name__}"
        )
    return task
