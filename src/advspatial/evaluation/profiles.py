"""The metrics of Kamath et al. 2021: PGD accuracy, random-rotation accuracy and their profiles (layer 7).

* :func:`pgd_accuracy`: ``Pr(f(x + A_eps(x)) = y)`` under l-infinity PGD.
* :func:`rotation_accuracy`: ``Pr(f(T x) = y)`` for a random rotation ``T`` in ``[-theta, theta]``
  (the paper's spatial accuracy uses ``theta = 180``).
* :func:`invariance_profile`: the rate of invariance ``Pr(f(T x) = f(x))`` for theta over ``[0, 180]``.
* :func:`robustness_profile`: ``1 - fooling rate`` of PGD, ``Pr(f(x + A_eps(x)) = f(x))``, over eps.

Each walks the data with :func:`advspatial.evaluation.walk.walk` (sharded by itself under
``torchrun``). The random rotations are keyed by dataset index, so they are the single-process
draws under ``torchrun`` too; PGD's random start is drawn batch by batch on each rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from advspatial.curriculum.pgd import linf_pgd
from advspatial.engine.model_state import check_model
from advspatial.errors import AdvSpatialError, check_clip, check_epsilon, choice
from advspatial.evaluation.plots import plot_profiles
from advspatial.evaluation.walk import BatchRows, Data, KeyedDraws, model_logits, walk
from advspatial.geometry.warp import INTERPOLATIONS, PADDINGS, _warp
from advspatial.space.box import RotoTranslationBox

__all__ = ["Profile", "invariance_profile", "pgd_accuracy", "robustness_profile", "rotation_accuracy"]

_Perturb = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``perturb(images, labels, clean predictions, dataset index) -> perturbed images``."""


@dataclass(frozen=True)
class Profile:
    """A metric over a range of perturbation sizes.

    Attributes:
        levels: the sizes (theta in degrees, or eps), in the order given.
        agreement: ``Pr(f(x') = f(x))`` at each level: the rate of invariance for rotations,
            ``1 - fooling rate`` for PGD.
        accuracy: ``Pr(f(x') = y)`` at each level.
    """

    levels: tuple[float, ...]
    agreement: tuple[float, ...]
    accuracy: tuple[float, ...]

    def rows(self) -> Iterator[tuple[float, float, float]]:
        """``(level, agreement, accuracy)`` rows, e.g. for a table."""
        return zip(self.levels, self.agreement, self.accuracy, strict=True)

    def save_plot(self, path: str | Path, *, xlabel: str, label: str = "model") -> Path:
        """Draw agreement and accuracy over the levels to a 640 x 400 PNG (needs matplotlib)."""
        return plot_profiles({label: self}, path, xlabel=xlabel)


def _rates(
    model: nn.Module,
    data: Data,
    perturb: _Perturb,
    batch_size: int | None,
    draws: Sequence[KeyedDraws] = (),
) -> tuple[float, float]:
    """``(agreement, accuracy)`` of the model on ``perturb(images, labels, clean predictions, index)``."""

    def step(images: Tensor, labels: Tensor, index: Tensor) -> BatchRows:
        clean = model_logits(model, images, labels).argmax(dim=1)
        predicted = model_logits(model, perturb(images, labels, clean, index)).argmax(dim=1)
        return BatchRows({"agree": predicted == clean, "right": predicted == labels})

    walked = walk(model, data, step, batch_size=batch_size, draws=draws)
    seen = walked.samples
    if seen == 0:
        return float("nan"), float("nan")
    return int(walked.rows["agree"].sum()) / seen, int(walked.rows["right"].sum()) / seen


def _rotate(
    max_rotation: float, generator: torch.Generator | None, interpolation: str, padding: str
) -> tuple[_Perturb, KeyedDraws]:
    box = RotoTranslationBox.of(max_rotation, 0.0)
    choice(interpolation, "interpolation", INTERPOLATIONS)
    choice(padding, "padding", PADDINGS)
    draws = KeyedDraws(
        lambda count, device: box.sample((count,), generator=generator, device=device), generator
    )

    def perturb(images: Tensor, labels: Tensor, clean: Tensor, index: Tensor) -> Tensor:
        return _warp(images, draws(index, images.device), interpolation, padding)

    return perturb, draws


def _attack(
    model: nn.Module,
    eps: float,
    steps: int,
    step_size: float | None,
    random_start: bool,
    clip: tuple[float, float] | None,
    generator: torch.Generator | None,
    target: str,
) -> _Perturb:
    check_epsilon(eps)
    check_clip(clip)

    def perturb(images: Tensor, labels: Tensor, clean: Tensor, index: Tensor) -> Tensor:
        return linf_pgd(
            model,
            images,
            labels if target == "labels" else clean,
            eps=eps,
            steps=steps,
            step_size=step_size,
            random_start=random_start,
            clip=clip,
            generator=generator,
        )

    return perturb


def pgd_accuracy(
    model: nn.Module,
    data: Data,
    *,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    clip: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> float:
    """Accuracy under the l-infinity PGD attack against the labels, ``Pr(f(x + A_eps(x)) = y)``.

    Args:
        model: classifier (its state is left unchanged).
        data: a ``Dataset`` of ``(image, label)`` pairs (images in the range ``clip``), a
            ``DataLoader`` or an iterable of batches.
        eps: l-infinity bound, in pixel units.
        steps: PGD steps.
        step_size: PGD step; ``None`` is ``2.5 * eps / steps``.
        random_start: start from a uniform draw in the eps-ball.
        clip: pixel range, or ``None``.
        generator: generator of the random start.
        batch_size: images per attack batch for a ``Dataset`` (default 256).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> data = TensorDataset(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
        >>> 0.0 <= pgd_accuracy(model, data, eps=8 / 255) <= 1.0
        True
    """
    check_model(model)
    attack = _attack(model, eps, steps, step_size, random_start, clip, generator, "labels")
    return _rates(model, data, attack, batch_size)[1]


def rotation_accuracy(
    model: nn.Module,
    data: Data,
    *,
    max_rotation: float = 180.0,
    generator: torch.Generator | None = None,
    interpolation: str = "bilinear",
    padding: str = "zeros",
    batch_size: int | None = None,
) -> float:
    """Spatial accuracy ``Pr(f(T x) = y)``, one rotation per image uniform in ``[-theta, theta]``.

    Convention: rotation about the image centre, degrees counter-clockwise, zero fill (see
    :func:`advspatial.roto_translate`).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> data = TensorDataset(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
        >>> 0.0 <= rotation_accuracy(model, data, generator=torch.Generator().manual_seed(0)) <= 1.0
        True
    """
    check_model(model)
    rotate, draws = _rotate(max_rotation, generator, interpolation, padding)
    return _rates(model, data, rotate, batch_size, (draws,))[1]


def invariance_profile(
    model: nn.Module,
    data: Data,
    thetas: Sequence[float] = tuple(range(0, 181, 15)),
    *,
    generator: torch.Generator | None = None,
    interpolation: str = "bilinear",
    padding: str = "zeros",
    batch_size: int | None = None,
) -> Profile:
    """Rotation invariance profile: the rate of invariance ``Pr(f(T x) = f(x))`` for each theta.

    ``T`` is a random rotation in ``[-theta, theta]`` drawn per image (Kamath et al. 2021, Sec. 4);
    the profile also carries the accuracy ``Pr(f(T x) = y)``.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> data = TensorDataset(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
        >>> profile = invariance_profile(model, data, [0, 90, 180])
        >>> profile.levels, profile.agreement[0]
        ((0.0, 90.0, 180.0), 1.0)
    """
    check_model(model)
    levels = _levels(thetas, "thetas")
    rates = []
    for theta in levels:
        rotate, draws = _rotate(theta, generator, interpolation, padding)
        rates.append(_rates(model, data, rotate, batch_size, (draws,)))
    return Profile(levels, tuple(r[0] for r in rates), tuple(r[1] for r in rates))


def robustness_profile(
    model: nn.Module,
    data: Data,
    epsilons: Sequence[float] = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255),
    *,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    clip: tuple[float, float] | None = (0.0, 1.0),
    target: str = "predictions",
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Profile:
    """PGD robustness profile: ``1 - fooling rate``, ``Pr(f(x + A_eps(x)) = f(x))``, for each eps.

    Kamath et al. 2021 (Sec. 4) plot it for eps in ``[0, 1]``. By default PGD attacks the model's
    clean predictions (the fooling rate counts prediction changes); ``target="labels"`` attacks the
    labels. The profile also carries the accuracy ``Pr(f(x + A_eps(x)) = y)``.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> data = TensorDataset(torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2]))
        >>> robustness_profile(model, data, [0.0, 0.1]).agreement[0]
        1.0
    """
    check_model(model)
    choice(target, "target", ("predictions", "labels"))
    levels = _levels(epsilons, "epsilons")
    rates = [
        _rates(
            model,
            data,
            _attack(model, eps, steps, step_size, random_start, clip, generator, target),
            batch_size,
        )
        for eps in levels
    ]
    return Profile(levels, tuple(r[0] for r in rates), tuple(r[1] for r in rates))


def _levels(values: object, name: str) -> tuple[float, ...]:
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
        raise AdvSpatialError(f"{name} must be a non-empty sequence of numbers, got {values!r}")
    return tuple(check_epsilon(v, f"{name}[i]") for v in values)
