"""Standard vs worst-of-10 adversarial vs worst-of-10 + invariance regularizer on the bundled digits.

Reproduces the comparison of Yang, Wang and Heinze-Deml 2019 at small scale: SmallCNN on
scikit-learn's digits (28 x 28), attack box +-30 degrees / +-3 px, evaluation by the 775-point grid.
Every run uses the same initialisation seed, the same batch order and the same number of epochs
(Adam 3e-3, cosine schedule, batch 64: the loop of ``advspatial.training.fit``).

Run:  python examples/invariance_regularization_digits.py --epochs 8 --seeds 0 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from advspatial import GridSearchRotoTranslation, InvarianceRegularizedLoss, WorstOfK
from advspatial.data import load_digits_28
from advspatial.evaluation import natural_accuracy, search_accuracy
from advspatial.models import SmallCNN
from advspatial.training import fit

LossFactory = Callable[[nn.Module, int], Callable[[Tensor, Tensor], Tensor]]


def standard(model: nn.Module, seed: int) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda images, labels: F.cross_entropy(model(images), labels)


def worst_of_10(model: nn.Module, seed: int) -> Callable[[Tensor, Tensor], Tensor]:
    attack = WorstOfK(model, k=10, generator=torch.Generator().manual_seed(seed + 1000))
    return lambda images, labels: F.cross_entropy(model(attack(images, labels)), labels)


def regularized(regularizer: str, task_on: str, attack_objective: str = "task") -> LossFactory:
    def factory(model: nn.Module, seed: int) -> Callable[[Tensor, Tensor], Tensor]:
        attack = WorstOfK(model, k=10, generator=torch.Generator().manual_seed(seed + 1000))
        return InvarianceRegularizedLoss(
            model, attack, regularizer=regularizer, task_on=task_on, attack_objective=attack_objective
        )

    return factory


RUNS: dict[str, LossFactory] = {
    "(a) standard": standard,
    "(b) worst-of-10": worst_of_10,
    "(c) worst-of-10 + KL (lambda 8, task nat)": regularized("kl", "nat"),
    "(c') worst-of-10 + l2 (lambda 1, task both)": regularized("l2", "both"),
}


def train(
    model: nn.Module,
    dataset: Dataset[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    epochs: int,
    seed: int,
) -> None:
    """``advspatial.training.fit`` (Adam 3e-3, cosine, batch 64) with a given loss."""
    fit(model, dataset, epochs=epochs, batch_size=64, lr=3e-3, loss_fn=loss_fn, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    torch.set_num_threads(2)
    train_set, test_set = load_digits_28()
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in RUNS}
    for seed in args.seeds:
        for name, factory in RUNS.items():
            torch.manual_seed(seed)
            model = SmallCNN()
            start = time.perf_counter()
            train(model, train_set, factory(model, seed), epochs=args.epochs, seed=seed)
            train_s = time.perf_counter() - start
            natural = natural_accuracy(model, test_set).accuracy
            wo10 = WorstOfK(model, k=10, generator=torch.Generator().manual_seed(12345))
            worst = search_accuracy(model, test_set, wo10).accuracy
            grid = search_accuracy(
                model, test_set, GridSearchRotoTranslation(model, early_exit=True)
            ).accuracy
            results[name].append((natural, worst, grid))
            total_s = time.perf_counter() - start
            print(
                f"seed {seed} | {name:45s} | natural {100 * natural:5.1f} | worst-of-10 {100 * worst:5.1f} "
                f"| grid {100 * grid:5.1f} | train {train_s:5.1f} s | total {total_s:5.1f} s",
                flush=True,
            )
    print(
        f"\nmean over seeds {args.seeds}, {args.epochs} epochs, {len(test_set)} test images, 775-point grid"
    )
    print("| training | natural % | worst-of-10 % | grid % |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        cells = [statistics.mean(row[i] for row in rows) * 100 for i in range(3)]
        print(f"| {name} | {cells[0]:.1f} | {cells[1]:.1f} | {cells[2]:.1f} |")


if __name__ == "__main__":
    main()
