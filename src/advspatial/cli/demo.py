"""``advspatial demo``: train on the bundled digits and measure spatial robustness, offline.

The models trained are a list of :class:`TrainingRecipe`; adding a row to the table (say worst-of-10
plus an invariance regularizer) is one more recipe appended to :data:`RECIPES`.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from advspatial.data import load_digits_28
from advspatial.distributed import (
    barrier,
    distributed_session,
    fit_distributed,
    get_world_size,
    is_main_process,
    launched_by_torchrun,
    rank_generator,
    wrap_ddp,
)
from advspatial.evaluation.landscape import loss_landscape
from advspatial.evaluation.plots import plot_accuracies, plot_rotation_profiles
from advspatial.evaluation.rotation_profile import RotationProfile, rotation_profile
from advspatial.evaluation.sweeps import (
    grid_accuracy,
    natural_accuracy,
    random_accuracy,
    worst_of_k_accuracy,
)
from advspatial.losses import InvarianceRegularizedLoss
from advspatial.models import SmallCNN
from advspatial.strategies import WorstOfK
from advspatial.training import fit

__all__ = ["RECIPES", "DemoRow", "TrainingRecipe", "add_parser", "format_table", "run_demo"]

Train = Callable[[nn.Module, Dataset[Any], int, int, bool], object]


@dataclass(frozen=True)
class TrainingRecipe:
    """A named way to train the demo's model.

    Attributes:
        name: the row's name in the table.
        train: ``train(model, dataset, epochs, seed, progress)`` trains ``model`` in place.
    """

    name: str
    train: Train


def _sharded() -> bool:
    return get_world_size() > 1


def _generator(seed: int) -> torch.Generator:
    """One stream in one process; under torchrun each rank draws its own (reproducibly)."""
    return rank_generator(seed) if _sharded() else torch.Generator().manual_seed(seed)


def _fit(model: nn.Module, data: Dataset[Any], epochs: int, seed: int, progress: bool, **kw: Any) -> object:
    """``fit`` in one process; under torchrun DDP with the same global batch of 64 split over ranks."""
    if _sharded():
        batch = max(1, 64 // get_world_size())
        return fit_distributed(
            model, data, epochs=epochs, batch_size=batch, seed=seed, progress=progress, **kw
        )
    return fit(model, data, epochs=epochs, seed=seed, progress=progress, **kw)


def _standard(model: nn.Module, data: Dataset[Any], epochs: int, seed: int, progress: bool) -> object:
    return _fit(model, data, epochs, seed, progress)


def _worst_of_10(model: nn.Module, data: Dataset[Any], epochs: int, seed: int, progress: bool) -> object:
    augment = WorstOfK(model, k=10, generator=_generator(seed))
    return _fit(model, data, epochs, seed, progress, transform=augment)


def _worst_of_10_kl(model: nn.Module, data: Dataset[Any], epochs: int, seed: int, progress: bool) -> object:
    net = wrap_ddp(model)  # the loss calls the model: under torchrun it must call the DDP wrapper
    attack = WorstOfK(net, k=10, generator=_generator(seed))
    loss_fn = InvarianceRegularizedLoss(net, attack, regularizer="kl", task_on="nat")  # lambda = 8
    return _fit(net, data, epochs, seed, progress, loss_fn=loss_fn)


RECIPES: tuple[TrainingRecipe, ...] = (
    TrainingRecipe("standard", _standard),
    TrainingRecipe("worst-of-10", _worst_of_10),
    TrainingRecipe("worst-of-10 + KL regularizer", _worst_of_10_kl),
)


@dataclass(frozen=True)
class DemoRow:
    """Accuracies (fractions) of one trained model and the time its training took."""

    name: str
    natural: float
    random: float
    worst_of_10: float
    grid: float
    train_seconds: float
    grid_evaluations: int
    grid_exhaustive_evaluations: int


def run_demo(
    *,
    epochs: int = 8,
    seed: int = 0,
    test_images: int | None = None,
    progress: bool = True,
    recipes: Sequence[TrainingRecipe] = RECIPES,
    output: str | Path | None = None,
) -> list[DemoRow]:
    """Train a SmallCNN on digits with each recipe, evaluate it, and optionally write the plots.

    Attack space of Engstrom et al. for MNIST: +-30 degrees, +-3 px; grid 31 x 5 x 5.

    Args:
        epochs: training epochs per model.
        seed: seed of the split, the initialisation and the attacks.
        test_images: evaluate on the first this many test images (all 359 when ``None``).
        progress: show progress bars.
        recipes: the trainings to compare.
        output: folder for ``accuracy.png``, ``rotation_profile.png`` and ``landscape_<recipe>.png``;
            ``None`` writes no plots.
    """
    train, test = load_digits_28(seed=seed)
    if test_images is not None:
        test = TensorDataset(*(t[:test_images] for t in test.tensors))
    loader = DataLoader(test, batch_size=256, shuffle=False)
    rows, profiles, table = [], {}, {}
    for recipe in recipes:
        torch.manual_seed(seed)
        model = SmallCNN()
        start = time.perf_counter()
        recipe.train(model, train, epochs, seed, progress)
        seconds = time.perf_counter() - start
        # Under torchrun each sweep shards the test set and returns the one-process numbers.
        natural = natural_accuracy(model, loader, progress=progress)
        rand = random_accuracy(
            model, loader, generator=torch.Generator().manual_seed(seed + 2), progress=progress
        )
        worst = worst_of_k_accuracy(
            model, loader, k=10, generator=torch.Generator().manual_seed(seed + 1), progress=progress
        )
        grid = grid_accuracy(model, loader, early_exit=True, progress=progress)
        rows.append(
            DemoRow(
                name=recipe.name,
                natural=natural.accuracy,
                random=rand.accuracy,
                worst_of_10=worst.accuracy,
                grid=grid.accuracy,
                train_seconds=seconds,
                grid_evaluations=grid.evaluations,
                grid_exhaustive_evaluations=grid.exhaustive_evaluations,
            )
        )
        if output is not None:
            profile = rotation_profile(model, loader, progress=progress)  # every rank: it shards itself
        if output is not None and is_main_process():
            table[recipe.name] = {
                "natural": natural.accuracy,
                "random": rand.accuracy,
                "worst-of-10": worst.accuracy,
                "grid": grid.accuracy,
            }
            profiles[recipe.name] = profile
            images, labels = test.tensors[0][:3], test.tensors[1][:3]
            landscape = loss_landscape(model, images, labels)
            landscape.save_plot(Path(output) / f"landscape_{_slug(recipe.name)}.png", model=recipe.name)
    if output is not None and is_main_process():
        _write_summary_plots(table, profiles, Path(output))
    return rows


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _write_summary_plots(
    table: dict[str, dict[str, float]], profiles: dict[str, RotationProfile], output: Path
) -> None:
    title = "Digits, +-30 degrees, +-3 px"
    plot_accuracies(table, output / "accuracy.png", title=title)
    plot_rotation_profiles(profiles, output / "rotation_profile.png")


def format_table(rows: list[DemoRow]) -> str:
    """Markdown table of the demo's results (accuracies in percent)."""
    lines = [
        "| training | natural | random | worst-of-10 | grid (775) | train time | grid forward evaluations |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {100 * row.natural:.1f} | {100 * row.random:.1f} | {100 * row.worst_of_10:.1f} "
            f"| {100 * row.grid:.1f} | {row.train_seconds:.1f} s "
            f"| {row.grid_evaluations} of {row.grid_exhaustive_evaluations} |"
        )
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    if not launched_by_torchrun():
        return _run(args)
    # Under torchrun: DDP training and sharded evaluation on CPU (gloo); rank 0 prints and plots.
    with distributed_session(device="cpu"):
        code = _run(args)
        barrier()
    return code


def _run(args: argparse.Namespace) -> int:
    epochs, test_images = (4, 120) if args.quick else (args.epochs, None)
    output = None if args.no_plots else Path(args.output)
    start = time.perf_counter()
    rows = run_demo(
        epochs=epochs, seed=args.seed, test_images=test_images, progress=not args.no_progress, output=output
    )
    if not is_main_process():
        return 0
    count = test_images or 359
    if _sharded():
        print(f"DDP over {get_world_size()} processes (gloo), global batch 64")
    print(
        f"Spatial robustness on scikit-learn digits (28 x 28), {epochs} epochs, {count} test images, "
        "+-30 degrees, +-3 px"
    )
    print(format_table(rows))
    if output is not None:
        print(f"Plots written to {output}/ (accuracy.png, rotation_profile.png, landscape_*.png)")
    print(f"Total time {time.perf_counter() - start:.1f} s")
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``advspatial demo``."""
    parser = subparsers.add_parser("demo", help="train and evaluate on the bundled digits (offline)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per model (default 8)")
    parser.add_argument("--quick", action="store_true", help="4 epochs and 120 test images: a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", default="advspatial-demo", help="folder for the plots (default ./advspatial-demo)"
    )
    parser.add_argument("--no-plots", action="store_true", help="write no plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_main)
