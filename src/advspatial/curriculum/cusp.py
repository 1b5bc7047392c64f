"""CuSP: a random (or worst-of-k) rotation, then an l-infinity PGD perturbation, on a curriculum."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advspatial.curriculum.pgd import linf_pgd
from advspatial.curriculum.schedule import CurriculumSchedule
from advspatial.engine.model_state import check_model, check_same_device
from advspatial.errors import (
    AdvSpatialError,
    candidate_count,
    check_clip,
    check_epsilon,
    check_images,
    check_labels,
    choice,
    flag,
    optional_generator,
    positive_int,
)
from advspatial.geometry.warp import INTERPOLATIONS, PADDINGS, _warp
from advspatial.space.box import RotoTranslationBox
from advspatial.strategies.worst_of_k import WorstOfK

__all__ = ["ADVERSARIAL", "SPATIAL", "CurriculumSpatial"]

SPATIAL: tuple[str, ...] = ("random", "worst_of_k")
ADVERSARIAL: tuple[str, ...] = ("pgd", "trades", "none")


class CurriculumSpatial:
    """CuSP training transform: ``x' = T_theta(x) + A_eps(T_theta(x))`` with (theta, eps) on a curriculum.

    Kamath et al. 2021, "Can we have it all? On the trade-off between spatial and adversarial
    robustness" (Algorithm 1): ``T_theta`` is a random rotation in ``[-theta, theta]``, ``A_eps`` an
    l-infinity PGD perturbation of size ``eps`` computed on the rotated image (10 steps of 2/255 with
    a random start, model in eval mode), and (theta, eps) move to their next values each time the
    learning rate drops (see :class:`CurriculumSchedule`; stages past the end of the lists stay at
    the last values). The paper's CIFAR-10 setting is the default: theta 120 -> 150 -> 180 and eps
    2/255 -> 4/255 -> 8/255.

    The model is held by reference (not as a submodule); its weights, buffers, ``.grad`` and
    training flags are left as they were.

    Convention:
        Rotation about the image centre, degrees counter-clockwise positive, zero fill, bilinear by
        default (see :func:`advspatial.roto_translate`); the perturbation is added *after* the
        rotation and the result is clamped to ``clip``.

    Args:
        model: the classifier being trained.
        rotations: rotation half-ranges (degrees, ``[0, 180]``), one per stage.
        epsilons: l-infinity bounds (pixel units), one per stage.
        max_translation: optional random translation (pixels) drawn with the rotation; the paper
            uses 0.
        steps: PGD steps.
        step_size: PGD step size; ``None`` uses ``2.5 * eps / steps``.
        random_start: PGD starts from a uniform draw in the eps-ball.
        spatial: ``"random"`` (the paper) or ``"worst_of_k"`` (the worst of ``k`` random draws).
        k: candidates for ``spatial="worst_of_k"``.
        adversarial: ``"pgd"`` (cross-entropy PGD), ``"trades"`` (the KL attack of TRADES; train
            with :func:`advspatial.curriculum.trades_loss` on :meth:`pair`), or ``"none"``.
        clip: pixel range, or ``None``.
        milestones: epoch indices of the learning-rate drops (see :class:`CurriculumSchedule`);
            alternatively call :meth:`watch` or :meth:`follow`.
        generator: generator of every random draw (rotations and PGD start); saved in
            :meth:`state_dict`. ``None`` uses torch's global generator.
        interpolation: of the rotation, ``"bilinear"`` or ``"nearest"``.
        padding: of the rotation, ``"zeros"``, ``"border"`` or ``"reflection"``.

    Shape:
        images ``(B, C, H, W)`` float, labels ``(B,)`` integer; output ``(B, C, H, W)``, detached.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> cusp = CurriculumSpatial(model, milestones=[1, 2], generator=torch.Generator().manual_seed(0))
        >>> images, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
        >>> for epoch in range(3):
        ...     _ = cusp.update(epoch)
        ...     print(epoch, cusp.rotation, round(cusp.epsilon * 255), cusp(images, labels).shape)
        0 120.0 2 torch.Size([4, 1, 8, 8])
        1 150.0 4 torch.Size([4, 1, 8, 8])
        2 180.0 8 torch.Size([4, 1, 8, 8])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        rotations: Sequence[float] = (120.0, 150.0, 180.0),
        epsilons: Sequence[float] = (2 / 255, 4 / 255, 8 / 255),
        max_translation: float | Sequence[float] = 0.0,
        steps: int = 10,
        step_size: float | None = 2 / 255,
        random_start: bool = True,
        spatial: str = "random",
        k: int = 10,
        adversarial: str = "pgd",
        clip: tuple[float, float] | None = (0.0, 1.0),
        milestones: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        interpolation: str = "bilinear",
        padding: str = "zeros",
    ) -> None:
        self.model = check_model(model)
        self.schedule = CurriculumSchedule(rotations, epsilons, milestones=milestones)
        self.translation = RotoTranslationBox.of(0.0, max_translation).max_translation
        self.steps = positive_int(steps, "steps", minimum=0)
        self.step_size = None if step_size is None else check_epsilon(step_size, "step_size")
        flag(random_start, "random_start")
        self.random_start = random_start
        self.spatial = choice(spatial, "spatial", SPATIAL)
        self.k = candidate_count(k, "k")
        self.adversarial = choice(adversarial, "adversarial", ADVERSARIAL)
        self.clip = check_clip(clip)
        optional_generator(generator)
        self.generator = generator
        self.interpolation = choice(interpolation, "interpolation", INTERPOLATIONS)
        self.padding = choice(padding, "padding", PADDINGS)
        # Built once; each call scores the candidates drawn from the current stage's box.
        self._worst_of_k = WorstOfK(
            self.model,
            k=self.k,
            max_translation=self.translation,
            interpolation=interpolation,
            padding=padding,
        )

    # -- the curriculum -------------------------------------------------------------------------

    @property
    def stage(self) -> int:
        """Current stage (0-based)."""
        return self.schedule.stage

    @property
    def rotation(self) -> float:
        """Current rotation half-range theta, degrees."""
        return self.schedule.rotation

    @property
    def epsilon(self) -> float:
        """Current l-infinity bound eps."""
        return self.schedule.epsilon

    @property
    def box(self) -> RotoTranslationBox:
        """The current box of spatial parameters."""
        return RotoTranslationBox(self.rotation, self.translation)

    def watch(self, optimizer: torch.optim.Optimizer) -> CurriculumSpatial:
        """Advance at each drop of the optimizer's learning rate (see :meth:`update`); returns ``self``."""
        self.schedule.watch(optimizer)
        return self

    def follow(self, scheduler: torch.optim.lr_scheduler.MultiStepLR) -> CurriculumSpatial:
        """Take the stage from a ``MultiStepLR``'s milestones; returns ``self``."""
        self.schedule.follow(scheduler)
        return self

    def update(self, epoch: int | None = None) -> bool:
        """Bring the stage up to date; call at the start of every epoch. ``True`` when it changed."""
        return self.schedule.update(epoch)

    def step(self) -> None:
        """Advance one stage explicitly."""
        self.schedule.step()

    def state_dict(self) -> dict[str, Any]:
        """Stage, learning-rate memory and the generator's state (when a generator is held)."""
        state: dict[str, Any] = {"schedule": self.schedule.state_dict(), "generator": None}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: the same stage and the same continuation of random draws."""
        self.schedule.load_state_dict(state["schedule"])
        if state.get("generator") is not None:
            if self.generator is None:
                raise AdvSpatialError(
                    "state_dict holds a generator state but this CurriculumSpatial has no generator; "
                    "pass generator=torch.Generator() to restore it"
                )
            self.generator.set_state(state["generator"])

    # -- the transform --------------------------------------------------------------------------

    def sample(self, images: Tensor, labels: Tensor) -> Tensor:
        """Choose the ``(B, 3)`` spatial parameters of the current stage (random or worst-of-k)."""
        batch = images.shape[0]
        if self.spatial == "random":
            return self.box.sample((batch,), generator=self.generator, device=images.device)
        candidates = self.box.sample((batch, self.k), generator=self.generator, device=images.device)
        return self._worst_of_k.search(images, labels, candidates=candidates).params

    def pair(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(T_theta(x), T_theta(x) + A_eps(T_theta(x)))``, both detached; for a TRADES loss."""
        images = check_images(images)
        check_same_device(self.model, images)
        if not isinstance(labels, Tensor) or images.shape[0] == 0 or self._labels_unchecked_downstream:
            labels = check_labels(labels, images.shape[0], images.device)
        # Otherwise the worst-of-k search and the PGD attack check the labels before using them; a
        # label check is a device sync, so CuSP does not add one of its own.
        if images.shape[0] == 0:
            return images.detach().clone(), images.detach().clone()
        with torch.no_grad():
            params = self.sample(images, labels)
            rotated = _warp(images.detach(), params, self.interpolation, self.padding)
        if self.adversarial == "none":
            return rotated, rotated if self.clip is None else rotated.clamp(*self.clip)
        adversarial = linf_pgd(
            self.model,
            rotated,
            labels,
            eps=self.epsilon,
            steps=self.steps,
            step_size=self.step_size,
            random_start=self.random_start,
            objective="ce" if self.adversarial == "pgd" else "kl",
            clip=self.clip,
            generator=self.generator,
        )
        return rotated, adversarial

    @property
    def _labels_unchecked_downstream(self) -> bool:
        return self.spatial == "random" and self.adversarial == "none"

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        """Return ``T_theta(x) + A_eps(T_theta(x))`` for the current stage (same shape, dtype, device)."""
        return self.pair(images, labels)[1]

    def __repr__(self) -> str:
        return (
            f"CurriculumSpatial(model={type(self.model).__name__}, rotations={self.schedule.rotations!r}, "
            f"epsilons={self.schedule.epsilons!r}, stage={self.stage}, spatial={self.spatial!r}, "
            f"adversarial={self.adversarial!r}, steps={self.steps}, step_size={self.step_size!r})"
        )
