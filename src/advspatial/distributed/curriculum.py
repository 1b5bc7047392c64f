"""Keeping a CuSP curriculum in step across ranks, and checkpointing it from rank 0 (layer 7).

Every rank holds its own :class:`advspatial.CurriculumSpatial` with its own generator (see
:func:`~advspatial.distributed.rank_generator`). The stage must be the same everywhere; the random
draws must not. :func:`curriculum_state_dict` therefore gathers every rank's generator state into
one checkpoint that rank 0 saves, and :func:`load_curriculum_state_dict` gives each rank back its
own stream on resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from advspatial.curriculum.cusp import CurriculumSpatial
from advspatial.distributed.context import barrier, current_context
from advspatial.errors import AdvSpatialError

__all__ = [
    "broadcast_object",
    "check_same_stage",
    "curriculum_state_dict",
    "load_curriculum_state_dict",
    "save_on_main",
    "sync_stage",
]


def _check_curriculum(curriculum: object) -> CurriculumSpatial:
    if not isinstance(curriculum, CurriculumSpatial):
        raise AdvSpatialError(
            f"curriculum must be an advspatial.CurriculumSpatial, got {type(curriculum).__name__}"
        )
    return curriculum


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects); ``obj`` itself without a process group."""
    if current_context().world_size == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def _gather_objects(obj: Any) -> list[Any]:
    context = current_context()
    if context.world_size == 1:
        return [obj]
    out: list[Any] = [None] * context.world_size
    dist.all_gather_object(out, obj)
    return out


def check_same_stage(curriculum: CurriculumSpatial) -> int:
    """The common stage of every rank's curriculum; raises when the ranks disagree (collective).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> check_same_stage(CurriculumSpatial(model))
        0
    """
    stages = _gather_objects(_check_curriculum(curriculum).stage)
    if len(set(stages)) != 1:
        raise AdvSpatialError(
            f"the ranks are at different curriculum stages: {dict(enumerate(stages))}; drive the stage "
            "from the learning rate or the epoch (the same on every rank), or call sync_stage"
        )
    return int(stages[0])


def sync_stage(curriculum: CurriculumSpatial, src: int = 0) -> int:
    """Set every rank's curriculum to rank ``src``'s schedule state (stage and LR memory); collective."""
    state = broadcast_object(_check_curriculum(curriculum).schedule.state_dict(), src)
    curriculum.schedule.load_state_dict(state)
    return curriculum.stage


def curriculum_state_dict(curriculum: CurriculumSpatial) -> dict[str, Any]:
    """A checkpoint of the curriculum of every rank: the common stage, one generator state per rank.

    Collective: call it on every rank (then save the result on rank 0 with :func:`save_on_main`).
    Raises when the ranks are at different stages.

    Returns:
        ``{"schedule": ..., "generators": [state of rank 0, rank 1, ...] or None, "world_size": W}``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> state = curriculum_state_dict(CurriculumSpatial(model, generator=torch.Generator()))
        >>> state["world_size"], len(state["generators"])
        (1, 1)
    """
    check_same_stage(curriculum)
    own = curriculum.state_dict()
    generators = _gather_objects(own["generator"])
    held = [g is not None for g in generators]
    if any(held) and not all(held):
        raise AdvSpatialError(
            f"some ranks hold a generator and some do not (ranks with one: {held}); give every rank one"
        )
    return {
        "schedule": own["schedule"],
        "generators": generators if all(held) else None,
        "world_size": len(generators),
    }


def load_curriculum_state_dict(curriculum: CurriculumSpatial, state: dict[str, Any]) -> None:
    """Restore :func:`curriculum_state_dict` on this rank: the common stage and this rank's own draws.

    Raises when the checkpoint was written by a different number of ranks and holds generator
    states (each rank's stream could not be continued); re-seed instead in that case.
    """
    _check_curriculum(curriculum)
    context = current_context()
    generators = state.get("generators")
    if generators is not None and len(generators) != context.world_size:
        raise AdvSpatialError(
            f"the checkpoint holds the generators of {len(generators)} ranks but {context.world_size} are "
            "running; resume with the same number of ranks, or load only state['schedule'] and re-seed"
        )
    own = None if generators is None else generators[context.rank]
    curriculum.load_state_dict({"schedule": state["schedule"], "generator": own})


def save_on_main(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` on rank 0, then wait for every rank (so all may load it next)."""
    file = Path(path)
    if current_context().is_main:
        file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, file)
    barrier()
    return file
