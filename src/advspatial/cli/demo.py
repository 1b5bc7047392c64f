"""``advspatial demo``: train on the bundled digits and measure spatial robustness, offline."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch.utils.data import TensorDataset

from advspatial.data import load_digits_28
from advspatial.evaluation import evaluate_accuracy
from advspatial.models import SmallCNN
from advspatial.strategies import GridSearchRotoTranslation, WorstOfK
from advspatial.training import fit

__all__ = ["DemoRow", "add_parser", "run_demo"]


@dataclass(frozen=True)
class DemoRow:
    """Accuracies (fractions) of one trained model and the time its training took."""

    name: str
    natural: float
    worst_of_10: float
    grid: float
    train_seconds: float
    grid_evaluations: int
    grid_exhaustive_evaluations: int


def run_demo(
    *, epochs: int = 8, seed: int = 0, test_images: int | None = None, progress: bool = True
) -> list[DemoRow]:
    """Train a SmallCNN on digits the standard way and with worst-of-10, and evaluate both.

    Attack space of Engstrom et al. for MNIST: +-30 degrees, +-3 px; grid 31 x 5 x 5.

    Args:
        epochs: training epochs per model.
        seed: seed of the split, the initialisation and the attacks.
        test_images: evaluate on the first this many test images (all 359 when ``None``).
        progress: show progress bars.
    """
    train, test = load_digits_28(seed=seed)
    if test_images is not None:
        test = TensorDataset(*(t[:test_images] for t in test.tensors))
    rows = []
    for name, adversarial in (("standard", False), ("worst-of-10", True)):
        torch.manual_seed(seed)
        model = SmallCNN()
        augment = (
            WorstOfK(model, k=10, generator=torch.Generator().manual_seed(seed)) if adversarial else None
        )
        start = time.perf_counter()
        fit(model, train, epochs=epochs, transform=augment, seed=seed, progress=progress)
        seconds = time.perf_counter() - start
        natural = evaluate_accuracy(model, test, progress=progress, desc=f"{name}: natural")
        worst = evaluate_accuracy(
            model,
            test,
            WorstOfK(model, k=10, generator=torch.Generator().manual_seed(seed + 1)),
            progress=progress,
            desc=f"{name}: worst-of-10",
        )
        grid = evaluate_accuracy(
            model,
            test,
            GridSearchRotoTranslation(model, early_exit=True),
            progress=progress,
            desc=f"{name}: grid",
        )
        rows.append(
            DemoRow(
                name,
                natural.accuracy,
                worst.accuracy,
                grid.accuracy,
                seconds,
                grid.evaluations,
                grid.exhaustive_evaluations,
            )
        )
    return rows


def format_table(rows: list[DemoRow]) -> str:
    """Markdown table of the demo's results (accuracies in percent)."""
    lines = [
        "| training | natural | worst-of-10 | grid (775) | train time | grid forward evaluations |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {100 * row.natural:.1f} | {100 * row.worst_of_10:.1f} | {100 * row.grid:.1f} "
            f"| {row.train_seconds:.1f} s | {row.grid_evaluations} of {row.grid_exhaustive_evaluations} |"
        )
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    epochs, test_images = (1, 120) if args.quick else (args.epochs, None)
    rows = run_demo(epochs=epochs, seed=args.seed, test_images=test_images, progress=not args.no_progress)
    print("Spatial robustness on scikit-learn digits (28 x 28), +-30 degrees, +-3 px")
    print(format_table(rows))
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``advspatial demo``."""
    parser = subparsers.add_parser("demo", help="train and evaluate on the bundled digits (offline)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per model (default 8)")
    parser.add_argument("--quick", action="store_true", help="1 epoch and 120 test images: a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_main)
