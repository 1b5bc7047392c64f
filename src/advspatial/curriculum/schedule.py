"""The CuSP stage schedule: (theta, eps) step up each time the learning rate drops.

A pure function of the stage and the configuration (:func:`curriculum_stage`), and a small
checkpointable object (:class:`CurriculumSchedule`) that decides when the stage advances: by
watching an optimizer's learning rate, by following a ``MultiStepLR``'s milestones, by epoch
milestones, or explicitly.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import torch

from advspatial.errors import AdvSpatialError, positive_int

__all__ = ["CurriculumSchedule", "curriculum_stage", "stage_at_epoch"]

_LR_DROP_TOLERANCE = 1e-9


def curriculum_stage(
    stage: int, rotations: Sequence[float], epsilons: Sequence[float]
) -> tuple[float, float]:
    """The ``(theta, eps)`` of a stage; stages past the end of a list stay at its last value.

    Args:
        stage: 0 for the first stage, +1 per learning-rate drop.
        rotations: rotation half-ranges in degrees, one per stage.
        epsilons: l-infinity bounds in pixel units, one per stage.

    Example:
        >>> thetas = [curriculum_stage(s, (120, 150, 180), (2 / 255, 4 / 255, 8 / 255))[0] for s in range(5)]
        >>> thetas
        [120.0, 150.0, 180.0, 180.0, 180.0]
    """
    positive_int(stage, "stage", minimum=0)
    theta = rotations[min(stage, len(rotations) - 1)]
    eps = epsilons[min(stage, len(epsilons) - 1)]
    return float(theta), float(eps)


def stage_at_epoch(epoch: int, milestones: Sequence[int]) -> int:
    """Number of distinct milestones ``<= epoch``: the stage under a ``MultiStepLR(milestones)``.

    ``MultiStepLR`` stepped once per epoch uses the decayed rate from epoch ``m`` on (0-based) for
    each milestone ``m``, so the stage of epoch ``e`` counts the milestones ``m <= e``.

    Example:
        >>> stages = [stage_at_epoch(e, [3, 5]) for e in range(7)]
        >>> stages
        [0, 0, 0, 1, 1, 2, 2]
    """
    positive_int(epoch, "epoch", minimum=0)
    return bisect.bisect_right(sorted(set(milestones)), epoch)


def _values(values: object, name: str, upper: float) -> tuple[float, ...]:
    if isinstance(values, int | float) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
        raise AdvSpatialError(f"{name} must be a non-empty sequence of numbers, got {values!r}")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AdvSpatialError(f"{name} must hold numbers, got {value!r} in {values!r}")
        if not math.isfinite(value) or not 0 <= value <= upper:
            raise AdvSpatialError(f"{name} must hold values in [0, {upper}], got {value!r} in {values!r}")
        out.append(float(value))
    return tuple(out)


def _milestones(milestones: object) -> tuple[int, ...]:
    if isinstance(milestones, str) or not isinstance(milestones, Sequence | set | dict):
        raise AdvSpatialError(f"milestones must be a sequence of epoch indices, got {milestones!r}")
    return tuple(sorted({positive_int(m, "milestones[i]", minimum=0) for m in milestones}))


class CurriculumSchedule:
    """Which stage of the curriculum is current, and when it advances.

    Kamath et al. 2021 (CuSP, Algorithm 1): each time the learning rate drops, the rotation range
    and the l-infinity bound move to their next values. Four ways to drive the stage:

    * ``watch(optimizer)``: :meth:`update` advances one stage whenever
      ``optimizer.param_groups[0]["lr"]`` is lower than at the previous call (rises are ignored).
    * ``follow(scheduler)``: a ``MultiStepLR``'s milestones and its ``last_epoch`` give the stage.
    * ``milestones=[...]``: :meth:`update(epoch) <update>` sets the stage of that epoch.
    * explicit: :meth:`step` and :meth:`set_stage`.

    Call :meth:`update` at the start of every epoch (the Lightning callback does it for you).

    Args:
        rotations: rotation half-ranges in degrees (``[0, 180]``), one per stage.
        epsilons: l-infinity bounds (pixel units), one per stage.
        milestones: epoch indices of the learning-rate drops, or ``None``.

    Example:
        >>> schedule = CurriculumSchedule((120, 150, 180), (2 / 255, 4 / 255, 8 / 255), milestones=[2, 4])
        >>> for epoch in range(6):
        ...     changed = schedule.update(epoch)
        ...     print(epoch, schedule.stage, schedule.rotation, round(schedule.epsilon * 255), changed)
        0 0 120.0 2 False
        1 0 120.0 2 False
        2 1 150.0 4 True
        3 1 150.0 4 False
        4 2 180.0 8 True
        5 2 180.0 8 False
        >>> schedule.state_dict()["stage"]
        2
    """

    def __init__(
        self,
        rotations: Sequence[float] = (120.0, 150.0, 180.0),
        epsilons: Sequence[float] = (2 / 255, 4 / 255, 8 / 255),
        *,
        milestones: Sequence[int] | None = None,
    ) -> None:
        self.rotations = _values(rotations, "rotations", 180.0)
        self.epsilons = _values(epsilons, "epsilons", math.inf)
        self.milestones = None if milestones is None else _milestones(milestones)
        self.stage = 0
        self.last_lr: float | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._scheduler: Any = None

    @property
    def rotation(self) -> float:
        """Current rotation half-range ``theta`` in degrees."""
        return curriculum_stage(self.stage, self.rotations, self.epsilons)[0]

    @property
    def epsilon(self) -> float:
        """Current l-infinity bound ``eps``."""
        return curriculum_stage(self.stage, self.rotations, self.epsilons)[1]

    @property
    def mode(self) -> str:
        """``"scheduler"``, ``"optimizer"``, ``"milestones"`` or ``"explicit"``."""
        if self._scheduler is not None:
            return "scheduler"
        if self._optimizer is not None:
            return "optimizer"
        return "milestones" if self.milestones is not None else "explicit"

    def watch(self, optimizer: torch.optim.Optimizer) -> CurriculumSchedule:
        """Advance one stage at each drop of ``optimizer.param_groups[0]["lr"]``; returns ``self``."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise AdvSpatialError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        self._optimizer = optimizer
        self.last_lr = float(optimizer.param_groups[0]["lr"])
        return self

    def follow(self, scheduler: torch.optim.lr_scheduler.MultiStepLR) -> CurriculumSchedule:
        """Take the stage from a ``MultiStepLR``: its milestones and ``last_epoch``; returns ``self``."""
        milestones = getattr(scheduler, "milestones", None)
        if milestones is None or not hasattr(scheduler, "last_epoch"):
            raise AdvSpatialError(
                "scheduler must be a MultiStepLR-like scheduler with .milestones and .last_epoch, "
                f"got {type(scheduler).__name__}"
            )
        self.milestones = _milestones(list(milestones))
        self._scheduler = scheduler
        self.stage = stage_at_epoch(int(scheduler.last_epoch), self.milestones)
        return self

    def update(self, epoch: int | None = None) -> bool:
        """Bring the stage up to date (call at the start of each epoch); ``True`` when it changed.

        Args:
            epoch: 0-based epoch index; needed with ``milestones=[...]``, ignored otherwise (a
                followed scheduler's ``last_epoch`` is the truth, a watched optimizer's rate is).
        """
        before = self.stage
        if self._scheduler is not None:
            assert self.milestones is not None
            self.stage = stage_at_epoch(int(self._scheduler.last_epoch), self.milestones)
        elif self._optimizer is not None:
            lr = float(self._optimizer.param_groups[0]["lr"])
            if self.last_lr is not None and lr < self.last_lr * (1.0 - _LR_DROP_TOLERANCE):
                self.stage += 1
            self.last_lr = lr
        elif self.milestones is not None:
            if epoch is None:
                raise AdvSpatialError("update() needs the epoch index when the schedule uses milestones")
            self.stage = stage_at_epoch(epoch, self.milestones)
        return self.stage != before

    def step(self) -> None:
        """Advance one stage explicitly."""
        self.stage += 1

    def set_stage(self, stage: int) -> None:
        """Jump to ``stage`` (0-based)."""
        self.stage = positive_int(stage, "stage", minimum=0)

    def state_dict(self) -> dict[str, Any]:
        """The stage and everything that decides the next one (not the optimizer or scheduler)."""
        return {
            "stage": self.stage,
            "last_lr": self.last_lr,
            "rotations": list(self.rotations),
            "epsilons": list(self.epsilons),
            "milestones": None if self.milestones is None else list(self.milestones),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the lists must match this schedule's configuration."""
        for key in ("rotations", "epsilons"):
            if tuple(float(v) for v in state[key]) != getattr(self, key):
                raise AdvSpatialError(
                    f"state_dict {key} {state[key]!r} do not match this schedule's {getattr(self, key)!r}"
                )
        self.stage = positive_int(state["stage"], "stage", minimum=0)
        self.last_lr = None if state["last_lr"] is None else float(state["last_lr"])
        if state["milestones"] is not None and self._scheduler is None:
            self.milestones = _milestones(state["milestones"])

    def __repr__(self) -> str:
        return (
            f"CurriculumSchedule(rotations={self.rotations!r}, epsilons={self.epsilons!r}, "
            f"milestones={self.milestones!r}, stage={self.stage}, mode={self.mode!r})"
        )
