"""Worst-of-10 over an affine box vs kornia's RandomAffine over the same box, on the bundled digits.

The box: +-30 degrees, +-3 px, scale in [0.8, 1.2], shear +-10 degrees on both axes. Both trainings
use the same SmallCNN initialisation, the same batches, epochs and optimiser (the loop of
``advspatial.training.fit``: Adam 3e-3, cosine schedule, batch 64); they differ only in the transform
applied to each batch:

- ``kornia RandomAffine``: ``kornia.augmentation.RandomAffine(degrees=30, translate=3/28,
  scale=(0.8, 1.2), shear=(-10, 10, -10, 10))``, one random draw per image;
- ``worst-of-10``: ``advspatial.WorstOfK(model, k=10, space=AffineBox(30, 3, scale=(0.8, 1.2),
  shear=10))``, the worst of 10 draws per image (10 extra inference forwards per image).

Each model is then scored on the 359 test images: natural accuracy, worst-of-10 over the box (fresh
draws), the first-order attack (``SpatialPGD``, 5 sign-gradient steps on all six axes), and the
box's worst case on a 6-axis grid (``--grid``, default 5 x 3 x 3 x 3 x 3 x 3 = 1215
points) with early exit, whose forward evaluations are printed against the exhaustive count and
against the least possible work (every grid point for a robust image, one for a fooled one). With
``--count-images N`` the same count is made on the issue's 31 x 5 x 5 x 3 x 3 x 3 = 20925-point grid
for the first N test images.

Run:  python examples/affine_digits.py --epochs 10 --seeds 0 1 --count-images 120
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from advspatial import AffineBox, GridSearch, WorstOfK
from advspatial.data import load_digits_28
from advspatial.evaluation import first_order_accuracy, natural_accuracy, search_accuracy, worst_of_k_accuracy
from advspatial.models import SmallCNN
from advspatial.training import fit

BOX = AffineBox(max_rotation=30, max_translation=3, scale=(0.8, 1.2), shear=10)

Transform = Callable[[Tensor, Tensor], Tensor]


def random_affine(model: nn.Module, seed: int) -> Transform:
    import kornia.augmentation as K

    augment = K.RandomAffine(
        degrees=BOX.max_rotation,
        translate=(BOX.max_translation[0] / 28, BOX.max_translation[1] / 28),
        scale=BOX.scale,
        shear=(-BOX.shear[0], BOX.shear[0], -BOX.shear[1], BOX.shear[1]),
        p=1.0,
    )
    torch.manual_seed(seed + 1000)  # kornia draws from torch's global generator

    return lambda images, labels: augment(images)


def worst_of_10(model: nn.Module, seed: int) -> Transform:
    return WorstOfK(model, k=10, space=BOX, generator=torch.Generator().manual_seed(seed + 1000))


RUNS: dict[str, Callable[[nn.Module, int], Transform]] = {
    "kornia RandomAffine": random_affine,
    "worst-of-10 (affine box)": worst_of_10,
}


def count_large_grid(model: nn.Module, test_set: Dataset[Any], images: int) -> str:
    """Early-exit evaluations on the 31 x 5 x 5 x 3 x 3 x 3 grid for the first ``images`` test images."""
    subset = Subset(test_set, range(min(images, len(test_set))))  # type: ignore[arg-type]
    search = GridSearch(model, space=BOX, steps=(31, 5, 5, 3, 3, 3), early_exit=True)
    start = time.perf_counter()
    result = search_accuracy(model, subset, search, name="grid")
    robust, count = int(result.correct.sum()), search.candidates.shape[0]
    minimum = robust * count + (len(subset) - robust)
    return (
        f"{len(subset)} images, {robust} robust, {result.evaluations} evaluations "
        f"(exhaustive {result.exhaustive_evaluations}, minimum {minimum}, "
        f"{result.evaluations / minimum:.3f} x minimum) in {time.perf_counter() - start:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--grid", type=int, nargs=6, default=[5, 3, 3, 3, 3, 3], metavar="N")
    parser.add_argument("--count-images", type=int, default=0, help="images for the 20925-point count")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_set, test_set = load_digits_28()
    results: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in RUNS}
    work = {"evaluations": 0, "exhaustive": 0, "minimum": 0}
    for seed in args.seeds:
        for name, factory in RUNS.items():
            torch.manual_seed(seed)
            model = SmallCNN()
            start = time.perf_counter()
            fit(
                model,
                train_set,
                epochs=args.epochs,
                batch_size=64,
                lr=3e-3,
                transform=factory(model, seed),
                seed=seed,
            )
            train_s = time.perf_counter() - start
            natural = natural_accuracy(model, test_set).accuracy
            generator = torch.Generator().manual_seed(12345)
            worst = worst_of_k_accuracy(model, test_set, k=10, space=BOX, generator=generator).accuracy
            pgd = first_order_accuracy(model, test_set, steps=5, space=BOX).accuracy
            grid_search = GridSearch(model, space=BOX, steps=tuple(args.grid), early_exit=True)
            grid = search_accuracy(model, test_set, grid_search, name="grid")
            count = grid_search.candidates.shape[0]
            robust = int(grid.correct.sum())
            minimum = robust * count + (len(test_set) - robust)
            work["evaluations"] += grid.evaluations
            work["exhaustive"] += grid.exhaustive_evaluations
            work["minimum"] += minimum
            results[name].append((natural, worst, pgd, grid.accuracy))
            print(
                f"seed {seed} | {name:26s} | natural {100 * natural:5.1f} | worst-of-10 {100 * worst:5.1f} "
                f"| first-order {100 * pgd:5.1f} "
                f"| grid {100 * grid.accuracy:5.1f} | grid evaluations {grid.evaluations} "
                f"(exhaustive {grid.exhaustive_evaluations}, minimum {minimum}) "
                f"| train {train_s:5.1f} s | total {time.perf_counter() - start:5.1f} s",
                flush=True,
            )
            if args.count_images:
                print(
                    "  20925-point grid: " + count_large_grid(model, test_set, args.count_images), flush=True
                )
    grid_text = " x ".join(map(str, args.grid))
    print(
        f"\nmean over seeds {args.seeds}, {args.epochs} epochs, {len(test_set)} test images, grid {grid_text}"
    )
    print("| training | natural % | worst-of-10 % | first-order (5 steps) % | grid (box worst case) % |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        cells = [statistics.mean(row[i] for row in rows) * 100 for i in range(4)]
        print(f"| {name} | {cells[0]:.1f} | {cells[1]:.1f} | {cells[2]:.1f} | {cells[3]:.1f} |")
    print(
        f"\nearly exit over all models: {work['evaluations']} forward evaluations, "
        f"{work['evaluations'] / work['exhaustive']:.3f} of exhaustive ({work['exhaustive']}), "
        f"{work['evaluations'] / work['minimum']:.3f} x the minimum ({work['minimum']})"
    )


if __name__ == "__main__":
    main()
