"""Lightning callback that advances a CuSP curriculum at the start of every training epoch.

Needs the ``lightning`` extra (``pip install 'advspatial[lightning]'``); the rest of
:mod:`advspatial.curriculum` works without it.
"""

from __future__ import annotations

from typing import Any

from advspatial.curriculum.cusp import CurriculumSpatial
from advspatial.curriculum.schedule import CurriculumSchedule
from advspatial.errors import AdvSpatialError

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("CurriculumCallback needs Lightning: pip install 'advspatial[lightning]'") from error

__all__ = ["CurriculumCallback"]


class CurriculumCallback(Callback):
    """Call ``curriculum.update(trainer.current_epoch)`` at the start of every training epoch.

    This is exactly what a plain loop does by calling ``curriculum.update(epoch)`` before each epoch,
    so the stages are the same with and without Lightning. With an epoch-interval ``MultiStepLR``,
    Lightning steps the scheduler at the end of each epoch, so at the start of epoch ``e`` the
    scheduler's ``last_epoch`` is ``e``, as in a plain loop. The curriculum's :meth:`state_dict`
    is saved in Lightning checkpoints and restored on resume.

    Args:
        curriculum: a :class:`~advspatial.CurriculumSpatial` or a :class:`CurriculumSchedule`,
            configured with milestones, ``watch(optimizer)`` or ``follow(scheduler)`` (the latter two
            can also be attached in ``LightningModule.configure_optimizers``).

    Example:
        >>> from advspatial.curriculum import CurriculumSchedule
        >>> callback = CurriculumCallback(CurriculumSchedule(milestones=[5, 8]))
        >>> callback.state_dict()["schedule"].get("stage")
        0
    """

    def __init__(self, curriculum: CurriculumSpatial | CurriculumSchedule) -> None:
        if not isinstance(curriculum, CurriculumSpatial | CurriculumSchedule):
            raise AdvSpatialError(
                "curriculum must be a CurriculumSpatial or a CurriculumSchedule, "
                f"got {type(curriculum).__name__}"
            )
        self.curriculum = curriculum
        self.stages: list[int] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Advance the curriculum to the stage of ``trainer.current_epoch``."""
        self.curriculum.update(int(trainer.current_epoch))
        self.stages.append(self.curriculum.stage)

    def state_dict(self) -> dict[str, Any]:
        """The curriculum's state, saved by Lightning in checkpoints."""
        state = self.curriculum.state_dict()
        return state if isinstance(self.curriculum, CurriculumSpatial) else {"schedule": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the curriculum's state from a checkpoint."""
        if isinstance(self.curriculum, CurriculumSpatial):
            self.curriculum.load_state_dict(state_dict)
        else:
            self.curriculum.load_state_dict(state_dict["schedule"])
