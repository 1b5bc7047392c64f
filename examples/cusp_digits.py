"""CuSP against natural, PGD, rotation-augmented and sequential training on the bundled digits.

Every method trains a SmallCNN for the same number of epochs with the same optimizer (Adam, lr 3e-3,
batch 64) and the same MultiStepLR schedule (x0.1 at 62.5%, 75% and 83% of the epochs: the paper's
75/90/100 of 120); training PGD is 10 steps of 2/255 with a random start. The sequential
baselines spend the first half of the epochs on one method and the second half on the other.
Reported on the 360 held-out digits (Kamath et al. 2021, Table 1 metrics):

* natural accuracy,
* PGD accuracy at the final eps (10 steps of 2/255, random start, against the labels),
* spatial accuracy under one random rotation in [-180, 180] per image.

Run: ``python examples/cusp_digits.py --epochs 12 --seeds 0``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from advspatial import CurriculumSpatial
from advspatial.data import load_digits_28
from advspatial.evaluation import natural_accuracy, pgd_accuracy, rotation_accuracy
from advspatial.models import SmallCNN

Phase = Callable[[torch.nn.Module, torch.Generator], CurriculumSpatial | None]


def natural(model: torch.nn.Module, generator: torch.Generator) -> CurriculumSpatial | None:
    return None


def rotation_180(model: torch.nn.Module, generator: torch.Generator) -> CurriculumSpatial:
    return CurriculumSpatial(
        model, rotations=(180,), epsilons=(0.0,), adversarial="none", generator=generator
    )


def pgd(eps: float, theta: float = 0.0) -> Phase:
    def make(model: torch.nn.Module, generator: torch.Generator) -> CurriculumSpatial:
        return CurriculumSpatial(model, rotations=(theta,), epsilons=(eps,), generator=generator)

    return make


def cusp(rotations: tuple[float, ...], epsilons: tuple[float, ...]) -> Phase:
    def make(model: torch.nn.Module, generator: torch.Generator) -> CurriculumSpatial:
        return CurriculumSpatial(model, rotations=rotations, epsilons=epsilons, generator=generator)

    return make


def train(phases: list[Phase], epochs: int, seed: int, train_set: object) -> tuple[torch.nn.Module, float]:
    """Train a SmallCNN; the epochs are split evenly between the phases (one phase = one method)."""
    torch.manual_seed(seed)
    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    milestones = [round(epochs * f) for f in (75 / 120, 90 / 120, 100 / 120)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_set, batch_size=64, shuffle=True, generator=generator)  # type: ignore[arg-type]
    transforms = [make(model, generator) for make in phases]
    for transform in transforms:
        if transform is not None:
            transform.follow(scheduler)
    start = time.perf_counter()
    for epoch in range(epochs):
        transform = transforms[min(epoch * len(phases) // epochs, len(phases) - 1)]
        if transform is not None:
            transform.update(epoch)
        model.train()
        for images, labels in loader:
            inputs: Tensor = images if transform is None else transform(images, labels)
            loss = F.cross_entropy(model(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    model.eval()
    return model, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--eps", type=float, nargs=3, default=[2 / 255, 4 / 255, 8 / 255])
    args = parser.parse_args()
    torch.set_num_threads(1)  # a 28 x 28 SmallCNN gains nothing from more threads on a busy CPU
    train_set, test_set = load_digits_28()
    eps = tuple(args.eps)
    final = eps[-1]
    methods: dict[str, list[Phase]] = {
        "Natural (Aug 0)": [natural],
        "Natural (Aug 180)": [rotation_180],
        "PGD (Aug 0)": [pgd(final)],
        "PGD (Aug 180)": [pgd(final, 180.0)],
        "PGD (Aug 0) -> Aug 180": [pgd(final), rotation_180],
        "Aug 180 -> PGD (Aug 0)": [rotation_180, pgd(final)],
        "CuSP (PGD, 120-150-180)": [cusp((120.0, 150.0, 180.0), eps)],
    }
    print(f"epochs={args.epochs} seeds={args.seeds} eps={[round(e * 255, 2) for e in eps]}/255")
    print("| method | PGD acc @ final eps (%) | natural acc (%) | spatial acc [-180, 180] (%) | train s |")
    print("|---|---|---|---|---|")
    for name, phases in methods.items():
        rows = []
        for seed in args.seeds:
            model, seconds = train(phases, args.epochs, seed, train_set)
            evaluation = torch.Generator().manual_seed(1000 + seed)
            rows.append(
                (
                    100 * pgd_accuracy(model, test_set, eps=final, step_size=2 / 255, generator=evaluation),
                    100 * natural_accuracy(model, test_set).accuracy,
                    100 * rotation_accuracy(model, test_set, max_rotation=180.0, generator=evaluation),
                    seconds,
                )
            )
        cells = []
        for column in zip(*rows, strict=True):
            mean = statistics.fmean(column)
            spread = statistics.stdev(column) if len(column) > 1 else 0.0
            cells.append(f"{mean:.1f} ± {spread:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
