"""The l-infinity PGD attack in pixel space and the TRADES loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advspatial import AdvSpatialError
from advspatial.curriculum import linf_pgd, trades_loss
from advspatial.models import SmallCNN


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallCNN(width=4)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("eps", [1 / 255, 8 / 255, 0.3])
def test_perturbation_stays_in_the_ball_and_the_pixel_range(seed: int, eps: float) -> None:
    model = _model()
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(6, 1, 28, 28, generator=generator)
    images[:, :, :5] = 0.0  # pixels at both ends of the range
    images[:, :, -5:] = 1.0
    labels = torch.randint(0, 10, (6,), generator=generator)
    adv = linf_pgd(model, images, labels, eps=eps, steps=5, step_size=eps / 2, generator=generator)
    assert adv.shape == images.shape
    assert adv.dtype == images.dtype
    assert not adv.requires_grad
    assert float((adv - images).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0
    assert float(adv.max()) <= 1.0
    # sign steps of eps / 2 from a random start reach the boundary of the ball somewhere
    assert float((adv - images).abs().max()) >= eps * 0.99


def test_without_clip_the_ball_still_holds_and_the_range_may_be_left() -> None:
    images = torch.ones(4, 1, 28, 28)
    adv = linf_pgd(_model(), images, torch.arange(4), eps=0.1, clip=None, generator=torch.Generator())
    assert float((adv - images).abs().max()) <= 0.1 + 1e-6
    assert float(adv.max()) > 1.0


def test_one_full_step_on_a_linear_binary_model_is_the_optimal_attack() -> None:
    # For logits W x + b with two classes, CE grows fastest along sign(w_other - w_label):
    # one step of size eps from x is the exact l-inf optimum.
    torch.manual_seed(1)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    images, labels = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 1, 0, 1])
    adv = linf_pgd(linear, images, labels, eps=0.05, steps=1, step_size=0.05, random_start=False, clip=None)
    weight = linear[1].weight.detach()
    direction = (weight[1 - labels] - weight[labels]).sign().view(5, 1, 4, 4)
    torch.testing.assert_close(adv, images + 0.05 * direction)


def test_zero_eps_returns_the_input_and_empty_batch_works() -> None:
    model, images = _model(), torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(linf_pgd(model, images, torch.arange(3), eps=0.0), images, rtol=0, atol=0)
    assert linf_pgd(model, images[:0], torch.arange(0), eps=0.1).shape == (0, 1, 28, 28)


def test_model_state_is_left_untouched() -> None:
    model = _model()
    model.train()
    model.head.weight.grad = torch.full_like(model.head.weight, 3.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(8, 1, 28, 28)
    linf_pgd(model, images, torch.arange(8) % 10, eps=0.1)
    assert all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)  # BN running stats too
    assert model.features[0].weight.grad is None
    torch.testing.assert_close(model.head.weight.grad, torch.full_like(model.head.weight, 3.0))


def test_attack_raises_the_loss_and_kl_objective_raises_the_divergence() -> None:
    model = _model().eval()
    images, labels = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    adv = linf_pgd(model, images, labels, eps=0.1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert F.cross_entropy(model(adv), labels) > F.cross_entropy(model(images), labels)
        kl_adv = linf_pgd(model, images, eps=0.1, objective="kl", generator=torch.Generator().manual_seed(0))
        clean = F.log_softmax(model(images), 1)
        kl = F.kl_div(F.log_softmax(model(kl_adv), 1), clean, log_target=True, reduction="batchmean")
        noise = images + (torch.rand_like(images) * 2 - 1) * 0.1
        kl_noise = F.kl_div(F.log_softmax(model(noise), 1), clean, log_target=True, reduction="batchmean")
    assert float(kl) > float(kl_noise)


def test_works_when_called_under_inference_mode_and_no_grad() -> None:
    model, images = _model(), torch.rand(2, 1, 28, 28)
    with torch.inference_mode():
        inside = linf_pgd(model, images, torch.tensor([1, 2]), eps=0.1, generator=torch.Generator())
    with torch.no_grad():
        again = linf_pgd(model, images, torch.tensor([1, 2]), eps=0.1, generator=torch.Generator())
    torch.testing.assert_close(inside, again)


def test_trades_loss_is_cross_entropy_plus_beta_kl() -> None:
    natural, adversarial = torch.randn(5, 3), torch.randn(5, 3)
    labels = torch.tensor([0, 1, 2, 0, 1])
    kl = (F.softmax(natural, 1) * (F.log_softmax(natural, 1) - F.log_softmax(adversarial, 1))).sum(1).mean()
    expected = F.cross_entropy(natural, labels) + 6.0 * kl
    torch.testing.assert_close(trades_loss(natural, adversarial, labels), expected)
    torch.testing.assert_close(trades_loss(natural, natural, labels), F.cross_entropy(natural, labels))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": -0.1}, "eps must be a finite number >= 0, got -0.1"),
        ({"eps": float("inf")}, "eps must be"),
        ({"eps": 0.1, "steps": -1}, "steps must be an integer >= 0"),
        ({"eps": 0.1, "step_size": -1.0}, "step_size must be"),
        ({"eps": 0.1, "objective": "l2"}, "objective must be one of"),
        ({"eps": 0.1, "clip": (1.0, 0.0)}, "clip must be None or a pixel range"),
        ({"eps": 0.1, "random_start": 1}, "random_start must be a bool"),
        ({"eps": 0.1, "generator": 3}, "generator must be a torch.Generator"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        linf_pgd(_model(), torch.rand(2, 1, 28, 28), torch.tensor([0, 1]), **kwargs)  # type: ignore[arg-type]


def test_bad_inputs_are_rejected() -> None:
    model = _model()
    with pytest.raises(AdvSpatialError, match="images must have shape"):
        linf_pgd(model, torch.rand(1, 28, 28), eps=0.1)
    with pytest.raises(AdvSpatialError, match="labels must have shape"):
        linf_pgd(model, torch.rand(2, 1, 28, 28), torch.tensor([0]), eps=0.1)
    with pytest.raises(AdvSpatialError, match="number of classes"):
        linf_pgd(model, torch.rand(2, 1, 28, 28), torch.tensor([0, 10]), eps=0.1)
    with pytest.raises(AdvSpatialError, match="model must be"):
        linf_pgd("model", torch.rand(2, 1, 28, 28), eps=0.1)  # type: ignore[arg-type]
