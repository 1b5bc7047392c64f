"""The paper's metrics on a model trained on the bundled digits: PGD accuracy and the profiles."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from advspatial import AdvSpatialError, RotoTranslationBox, roto_translate
from advspatial.data import load_digits_28
from advspatial.evaluation import (
    invariance_profile,
    natural_accuracy,
    pgd_accuracy,
    robustness_profile,
    rotation_accuracy,
)
from advspatial.models import SmallCNN
from advspatial.training import fit


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, Subset[tuple[torch.Tensor, torch.Tensor]]]:
    train, test = load_digits_28()
    torch.manual_seed(0)
    model = SmallCNN()
    fit(model, train, epochs=4, seed=0)
    return model, Subset(test, range(160))


@pytest.mark.slow
def test_pgd_accuracy_decreases_with_more_steps(trained: tuple[torch.nn.Module, Subset]) -> None:  # type: ignore[type-arg]
    model, test = trained
    natural = natural_accuracy(model, test).accuracy
    accuracies = [
        pgd_accuracy(
            model, test, eps=0.05, steps=steps, step_size=0.01, generator=torch.Generator().manual_seed(0)
        )
        for steps in (0, 1, 3, 10)
    ]
    assert natural > 0.8
    assert accuracies == sorted(accuracies, reverse=True), accuracies
    assert accuracies[-1] < accuracies[1] < natural, accuracies


@pytest.mark.slow
def test_pgd_accuracy_decreases_with_eps_and_eps_zero_is_natural(
    trained: tuple[torch.nn.Module, Subset],
) -> None:  # type: ignore[type-arg]
    model, test = trained
    profile = robustness_profile(model, test, [0.0, 2 / 255, 8 / 255, 32 / 255], steps=5, target="labels")
    natural = natural_accuracy(model, test).accuracy
    assert profile.agreement[0] == 1.0
    assert profile.accuracy[0] == pytest.approx(natural)
    assert list(profile.accuracy) == sorted(profile.accuracy, reverse=True), profile
    assert profile.accuracy[-1] < natural
    at_eight = pgd_accuracy(model, test, eps=8 / 255, generator=None)
    assert 0.0 <= at_eight <= natural


def test_profile_plot_is_a_png_of_the_stated_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from advspatial.evaluation.profiles import Profile

    profile = Profile(levels=(0.0, 0.1, 0.2), agreement=(1.0, 0.6, 0.2), accuracy=(0.9, 0.5, 0.1))
    path = profile.save_plot(tmp_path / "plots" / "pgd.png", xlabel="eps")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (640, 400)
        assert len(image.convert("L").getcolors(maxcolors=65536) or ()) > 10, "the plot is blank"


@pytest.mark.slow
def test_rotation_metrics_match_a_brute_force_loop(trained: tuple[torch.nn.Module, Subset]) -> None:  # type: ignore[type-arg]
    model, test = trained
    images = torch.stack([test[i][0] for i in range(len(test))])
    labels = torch.stack([test[i][1] for i in range(len(test))])
    profile = invariance_profile(
        model, test, [0, 45, 180], generator=torch.Generator().manual_seed(3), batch_size=64
    )
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        clean = model.eval()(images).argmax(1)
        for theta, agreement, accuracy in profile.rows():
            params = torch.cat(
                [
                    RotoTranslationBox.of(theta, 0).sample((len(chunk),), generator=generator)
                    for chunk in labels.split(64)
                ]
            )
            predicted = model(roto_translate(images, params)).argmax(1)
            assert agreement == pytest.approx(float((predicted == clean).float().mean()))
            assert accuracy == pytest.approx(float((predicted == labels).float().mean()))
    assert profile.agreement[0] == 1.0
    assert profile.agreement[2] < profile.agreement[1] < 1.0  # a standard model is not rotation invariant
    spatial = rotation_accuracy(
        model, test, max_rotation=180, generator=torch.Generator().manual_seed(3), batch_size=64
    )
    generator = torch.Generator().manual_seed(3)
    params = torch.cat(
        [RotoTranslationBox.of(180, 0).sample((len(c),), generator=generator) for c in labels.split(64)]
    )
    with torch.no_grad():
        expected = (model(roto_translate(images, params)).argmax(1) == labels).float().mean()
    assert spatial == pytest.approx(float(expected))
    assert rotation_accuracy(model, test, max_rotation=0.0) == pytest.approx(
        natural_accuracy(model, test).accuracy
    )


@pytest.mark.slow
def test_metrics_leave_the_model_untouched(trained: tuple[torch.nn.Module, Subset]) -> None:  # type: ignore[type-arg]
    model, test = trained
    model.train()
    before = copy.deepcopy(model.state_dict())
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    small = Subset(test, range(8))
    pgd_accuracy(model, small, eps=0.1)
    invariance_profile(model, small, [90])
    robustness_profile(model, small, [0.1])
    assert all(m.training for m in model.modules())
    for parameter, grad in zip(model.parameters(), grads, strict=True):
        assert (parameter.grad is None) == (grad is None)
        if grad is not None:
            torch.testing.assert_close(parameter.grad, grad, rtol=0, atol=0)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    model.eval()


def test_bad_arguments_are_rejected() -> None:
    model = SmallCNN(width=4)
    data = TensorDataset(torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))
    with pytest.raises(AdvSpatialError, match="thetas must be a non-empty sequence"):
        invariance_profile(model, data, [])
    with pytest.raises(AdvSpatialError, match=r"epsilons\[i\] must be a finite number >= 0"):
        robustness_profile(model, data, [0.1, -0.1])
    with pytest.raises(AdvSpatialError, match="target must be one of"):
        robustness_profile(model, data, target="class")
    with pytest.raises(AdvSpatialError, match="max_rotation must be finite and >= 0"):
        rotation_accuracy(model, data, max_rotation=-5)
    with pytest.raises(AdvSpatialError, match="eps must be"):
        pgd_accuracy(model, data, eps=-1)
    with pytest.raises(AdvSpatialError, match="batch_size must be an integer"):
        pgd_accuracy(model, data, eps=0.1, batch_size=0)
