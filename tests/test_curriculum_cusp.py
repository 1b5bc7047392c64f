"""CurriculumSpatial: T_theta(x) + A_eps(T_theta(x)) on a curriculum, and its checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from advspatial import AdvSpatialError, CurriculumSpatial, RotoTranslationBox, WorstOfK, roto_translate
from advspatial.curriculum import trades_loss
from advspatial.models import SmallCNN


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(width=4)


def _batch(seed: int = 0, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(size, 1, 28, 28, generator=generator), torch.randint(
        0, 10, (size,), generator=generator
    )


def test_output_is_a_rotation_in_range_plus_a_bounded_perturbation() -> None:
    model = _model()
    images, labels = _batch()
    for stage, (theta, eps) in enumerate([(120.0, 2 / 255), (150.0, 4 / 255), (180.0, 8 / 255)]):
        cusp = CurriculumSpatial(model, generator=torch.Generator().manual_seed(stage))
        cusp.schedule.set_stage(stage)
        # the rotation is the first draw of the generator: replay it
        params = RotoTranslationBox.of(theta, 0.0).sample(
            (6,), generator=torch.Generator().manual_seed(stage)
        )
        assert bool((params[:, 0].abs() <= theta).all())
        assert bool((params[:, 1:] == 0).all())
        rotated, adversarial = cusp.pair(images, labels)
        torch.testing.assert_close(rotated, roto_translate(images, params))
        delta = adversarial - rotated
        assert float(delta.abs().max()) <= eps + 1e-6
        assert float(delta.abs().max()) >= 0.99 * eps  # the budget is used
        assert float(adversarial.min()) >= 0.0
        assert float(adversarial.max()) <= 1.0
        assert adversarial.shape == images.shape
        assert adversarial.dtype == images.dtype
        assert not adversarial.requires_grad


def test_call_equals_the_adversarial_half_of_pair_and_is_reproducible() -> None:
    model, (images, labels) = _model(), _batch(1)
    first = CurriculumSpatial(model, generator=torch.Generator().manual_seed(5))
    second = CurriculumSpatial(model, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(first(images, labels), second.pair(images, labels)[1], rtol=0, atol=0)


def test_stages_follow_milestones_and_stay_at_the_last_values() -> None:
    cusp = CurriculumSpatial(_model(), rotations=(0, 90), epsilons=(0.0, 0.1, 0.2), milestones=[1, 2, 3])
    seen = []
    for epoch in range(6):
        cusp.update(epoch)
        seen.append((cusp.stage, cusp.rotation, cusp.epsilon))
    assert seen == [
        (0, 0.0, 0.0),
        (1, 90.0, 0.1),
        (2, 90.0, 0.2),
        (3, 90.0, 0.2),
        (3, 90.0, 0.2),
        (3, 90.0, 0.2),
    ]


def test_stage_zero_with_theta_and_eps_zero_is_the_identity() -> None:
    images, labels = _batch(2)
    cusp = CurriculumSpatial(_model(), rotations=(0.0,), epsilons=(0.0,))
    torch.testing.assert_close(cusp(images, labels), images)


def test_worst_of_k_spatial_part_replays_worst_of_k() -> None:
    model, (images, labels) = _model(), _batch(3)
    cusp = CurriculumSpatial(
        model, rotations=(45.0,), spatial="worst_of_k", k=7, adversarial="none", generator=torch.Generator()
    )
    cusp.generator.manual_seed(11)  # type: ignore[union-attr]
    reference = WorstOfK(model, k=7, max_rotation=45.0, max_translation=0.0)
    result = reference.search(images, labels, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(cusp(images, labels), reference.apply(images, result.params))


def test_trades_variant_stays_in_the_ball_and_trains_with_trades_loss() -> None:
    model, (images, labels) = _model(), _batch(4)
    cusp = CurriculumSpatial(model, adversarial="trades", generator=torch.Generator().manual_seed(0))
    cusp.schedule.set_stage(2)
    rotated, adversarial = cusp.pair(images, labels)
    assert float((adversarial - rotated).abs().max()) <= 8 / 255 + 1e-6
    loss = trades_loss(model(rotated), model(adversarial), labels)
    loss.backward()
    assert model.head.weight.grad is not None


def test_model_state_is_left_untouched() -> None:
    model = _model()
    model.train()
    before = copy.deepcopy(model.state_dict())
    cusp = CurriculumSpatial(model, spatial="worst_of_k", k=3, generator=torch.Generator())
    cusp(*_batch(5))
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def _train(
    model: torch.nn.Module,
    cusp: CurriculumSpatial,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.MultiStepLR,
    epochs: range,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> list[tuple[int, torch.Tensor]]:
    seen = []
    for epoch in epochs:
        cusp.update(epoch)
        model.train()
        for images, labels in batches:
            inputs = cusp(images, labels)
            seen.append((cusp.stage, inputs))
            loss = F.cross_entropy(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    return seen


def _setup(seed: int = 0) -> tuple[torch.nn.Module, CurriculumSpatial, torch.optim.Optimizer, object]:
    model = _model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 3], gamma=0.1)
    cusp = CurriculumSpatial(model, steps=2, generator=torch.Generator().manual_seed(seed)).follow(scheduler)
    return model, cusp, optimizer, scheduler


def test_checkpoint_round_trip_mid_training_continues_identically() -> None:
    batches = [_batch(s, size=4) for s in range(2)]
    model, cusp, optimizer, scheduler = _setup()
    _train(model, cusp, optimizer, scheduler, range(2), batches)  # type: ignore[arg-type]
    checkpoint = copy.deepcopy(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),  # type: ignore[attr-defined]
            "cusp": cusp.state_dict(),
        }
    )
    straight = _train(model, cusp, optimizer, scheduler, range(2, 5), batches)  # type: ignore[arg-type]

    model2, cusp2, optimizer2, scheduler2 = _setup(seed=1)  # different seed: everything comes from the file
    model2.load_state_dict(checkpoint["model"])
    optimizer2.load_state_dict(checkpoint["optimizer"])
    scheduler2.load_state_dict(checkpoint["scheduler"])  # type: ignore[attr-defined]
    cusp2.load_state_dict(checkpoint["cusp"])
    assert cusp2.stage == 0  # taken after epoch 1; the first drop is seen at the start of epoch 2
    resumed = _train(model2, cusp2, optimizer2, scheduler2, range(2, 5), batches)  # type: ignore[arg-type]

    assert [stage for stage, _ in straight] == [1, 1, 2, 2, 2, 2]
    assert [stage for stage, _ in resumed] == [stage for stage, _ in straight]
    for (_, a), (_, b) in zip(straight, resumed, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(model2.state_dict()[key], value, rtol=0, atol=0)


def test_generator_state_needs_a_generator_to_load_into() -> None:
    state = CurriculumSpatial(_model(), generator=torch.Generator()).state_dict()
    with pytest.raises(AdvSpatialError, match="no generator"):
        CurriculumSpatial(_model()).load_state_dict(state)
    assert CurriculumSpatial(_model()).state_dict()["generator"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spatial": "grid"}, "spatial must be one of 'random', 'worst_of_k', got 'grid'"),
        ({"adversarial": "fgsm"}, "adversarial must be one of"),
        ({"k": 0}, "k must be an integer >= 1"),
        ({"steps": 1.5}, "steps must be an integer"),
        ({"step_size": -1}, "step_size must be"),
        ({"clip": (0, 0)}, "clip must be"),
        ({"max_translation": -1}, "max_translation must be finite and >= 0"),
        ({"rotations": (200,)}, "rotations must hold values"),
        ({"generator": 0}, "generator must be a torch.Generator"),
        ({"interpolation": "cubic"}, "interpolation must be one of"),
    ],
)
def test_bad_configuration_is_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        CurriculumSpatial(_model(), **kwargs)  # type: ignore[arg-type]


def test_bad_inputs_are_rejected_and_empty_batch_works() -> None:
    cusp = CurriculumSpatial(_model())
    with pytest.raises(AdvSpatialError, match=r"labels must be a torch\.Tensor"):
        cusp(torch.rand(2, 1, 28, 28), None)  # type: ignore[arg-type]
    with pytest.raises(AdvSpatialError, match="images must be a floating point tensor"):
        cusp(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1]))
    assert cusp(torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)).shape == (0, 1, 28, 28)
    assert "CurriculumSpatial(model=SmallCNN" in repr(cusp)


def test_each_step_checks_the_labels_once_and_reuses_one_worst_of_k(monkeypatch: pytest.MonkeyPatch) -> None:
    import advspatial.curriculum.cusp as cusp_module
    import advspatial.curriculum.pgd as pgd_module
    import advspatial.tasks.classification as classification_module

    calls: list[str] = []
    for module in (cusp_module, pgd_module, classification_module):
        original = module.check_labels

        def counted(*args, _original=original, _name=module.__name__, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "check_labels", counted)
    model, (images, labels) = _model(), _batch(2)
    for spatial, adversarial, expected in (
        ("random", "pgd", 1),  # PGD checks them; CuSP adds no check (each is a device sync)
        ("random", "none", 1),  # nobody else looks at the labels: CuSP checks them itself
        ("worst_of_k", "none", 1),  # the worst-of-k search checks them
    ):
        calls.clear()
        cusp = CurriculumSpatial(model, spatial=spatial, adversarial=adversarial, k=3, steps=1)
        cusp(images, labels)
        assert len(calls) == expected, (spatial, adversarial, calls)
    cusp = CurriculumSpatial(model, spatial="worst_of_k", k=3, generator=torch.Generator().manual_seed(0))
    search = cusp._worst_of_k
    cusp(images, labels)
    cusp.step()
    cusp(images, labels)
    assert cusp._worst_of_k is search  # built once, not per step or stage
