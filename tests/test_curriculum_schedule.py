"""The CuSP stage schedule: pure stage function, LR-drop triggers, checkpoints."""

from __future__ import annotations

import pytest
import torch

from advspatial import AdvSpatialError, CurriculumSchedule
from advspatial.curriculum import curriculum_stage, stage_at_epoch

ROTATIONS = (120.0, 150.0, 180.0)
EPSILONS = (2 / 255, 4 / 255, 8 / 255)


def _optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_stage_function_is_pure_and_clamps_past_the_end() -> None:
    assert [curriculum_stage(s, ROTATIONS, EPSILONS) for s in range(5)] == [
        (120.0, 2 / 255),
        (150.0, 4 / 255),
        (180.0, 8 / 255),
        (180.0, 8 / 255),
        (180.0, 8 / 255),
    ]
    # lists of different lengths clamp independently
    assert curriculum_stage(1, (30.0,), (0.1, 0.2)) == (30.0, 0.2)


def test_stage_at_epoch_counts_distinct_milestones() -> None:
    assert [stage_at_epoch(e, [3, 5]) for e in range(7)] == [0, 0, 0, 1, 1, 2, 2]
    assert [stage_at_epoch(e, [4, 2, 2]) for e in range(5)] == [0, 0, 1, 1, 2]
    assert stage_at_epoch(0, []) == 0


def _multistep_run(milestones: list[int], epochs: int, mode: str) -> tuple[list[float], list[int]]:
    """Plain loop with a MultiStepLR: the lr and the stage seen at the start of every epoch."""
    optimizer = _optimizer()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    schedule = CurriculumSchedule(
        ROTATIONS, EPSILONS, milestones=milestones if mode == "milestones" else None
    )
    if mode == "scheduler":
        schedule.follow(scheduler)
    elif mode == "optimizer":
        schedule.watch(optimizer)
    lrs, stages = [], []
    for epoch in range(epochs):
        schedule.update(epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
        stages.append(schedule.stage)
        for _ in range(3):  # batches
            optimizer.step()
        scheduler.step()
    return lrs, stages


@pytest.mark.parametrize("mode", ["scheduler", "optimizer", "milestones"])
@pytest.mark.parametrize("milestones", [[3, 5, 6], [1], [4, 9]])
def test_stage_changes_exactly_at_the_lr_drops(mode: str, milestones: list[int]) -> None:
    lrs, stages = _multistep_run(milestones, 10, mode)
    for epoch in range(1, 10):
        dropped = lrs[epoch] < lrs[epoch - 1]
        assert (stages[epoch] != stages[epoch - 1]) == dropped, (epoch, lrs, stages)
    assert stages[0] == 0
    assert stages == [stage_at_epoch(e, milestones) for e in range(10)]


def test_watch_ignores_rises_and_steady_rates() -> None:
    optimizer = _optimizer(0.01)
    schedule = CurriculumSchedule(ROTATIONS, EPSILONS).watch(optimizer)
    stages = []
    for lr in [0.01, 0.05, 0.1, 0.1, 0.01, 0.01, 0.02, 0.001]:  # warm-up, then two drops
        optimizer.param_groups[0]["lr"] = lr
        schedule.update()
        stages.append(schedule.stage)
    assert stages == [0, 0, 0, 0, 1, 1, 1, 2]
    assert schedule.rotation == 180.0
    assert schedule.epsilon == 8 / 255


def test_explicit_stepping_and_set_stage() -> None:
    schedule = CurriculumSchedule(ROTATIONS, EPSILONS)
    assert schedule.mode == "explicit"
    assert schedule.update(7) is False
    assert schedule.stage == 0
    schedule.step()
    assert (schedule.rotation, schedule.epsilon) == (150.0, 4 / 255)
    schedule.set_stage(10)
    assert (schedule.rotation, schedule.epsilon) == (180.0, 8 / 255)


def test_state_dict_round_trip_restores_stage_and_lr_memory() -> None:
    optimizer = _optimizer()
    schedule = CurriculumSchedule(ROTATIONS, EPSILONS).watch(optimizer)
    optimizer.param_groups[0]["lr"] = 0.01
    schedule.update()
    state = schedule.state_dict()
    restored = CurriculumSchedule(ROTATIONS, EPSILONS)
    restored.load_state_dict(state)
    assert restored.stage == 1
    assert restored.last_lr == pytest.approx(0.01)
    # a restored schedule keeps watching the same rate: the next drop advances it once
    restored._optimizer = optimizer
    optimizer.param_groups[0]["lr"] = 0.001
    assert restored.update() is True
    assert restored.stage == 2


def test_state_dict_of_another_configuration_is_refused() -> None:
    state = CurriculumSchedule((30.0,), EPSILONS).state_dict()
    with pytest.raises(AdvSpatialError, match="rotations"):
        CurriculumSchedule(ROTATIONS, EPSILONS).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rotations": (190.0,)}, r"rotations must hold values in \[0, 180"),
        ({"rotations": ()}, "rotations must be a non-empty sequence"),
        ({"epsilons": (-0.1,)}, "epsilons must hold values"),
        ({"epsilons": (float("nan"),)}, "epsilons must hold values"),
        ({"epsilons": ("a",)}, "epsilons must hold numbers"),
        ({"milestones": [2, -1]}, "milestones"),
        ({"milestones": "3"}, "milestones must be a sequence"),
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        CurriculumSchedule(**kwargs)  # type: ignore[arg-type]


def test_bad_triggers_are_rejected() -> None:
    schedule = CurriculumSchedule(milestones=[2])
    with pytest.raises(AdvSpatialError, match="needs the epoch"):
        schedule.update()
    with pytest.raises(AdvSpatialError, match="optimizer must be"):
        schedule.watch("sgd")  # type: ignore[arg-type]
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(_optimizer(), T_max=3)
    with pytest.raises(AdvSpatialError, match="MultiStepLR-like"):
        schedule.follow(cosine)  # type: ignore[arg-type]
    with pytest.raises(AdvSpatialError, match="stage must be"):
        schedule.set_stage(-1)
