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
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from advspatial.cli.demo_segmentation import run_from_args
from advspatial.cli.progress import RemainingWork, bar, format_seconds, say
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
from advspatial.errors import AdvSpatialError
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

__all__ = ["RECIPES", "DemoRow", "TrainingRecipe", "TrainingRun", "add_parser", "format_table", "run_demo"]


@dataclass(frozen=True)
class TrainingRun:
    """What a recipe's ``train`` function is given besides the model and the data.

    Attributes:
        epochs: passes over the training data.
        seed: seed of the shuffling and of the recipe's own draws.
        progress: show a progress bar.
        desc: the progress bar's label, e.g. ``"train worst-of-10"``.
        on_epoch_end: ``on_epoch_end(epoch, mean_loss)`` for :func:`advspatial.training.fit` and,
            under torchrun, :func:`advspatial.distributed.fit_distributed` (the demo's time estimate).
    """

    epochs: int
    seed: int
    progress: bool = False
    desc: str = "train"
    on_epoch_end: Callable[[int, float], object] | None = None


Train = Callable[[nn.Module, Dataset[Any], TrainingRun], object]


@dataclass(frozen=True)
class TrainingRecipe:
    """A named way to train the demo's model.

    Attributes:
        name: the row's name in the table.
        train: ``train(model, dataset, run)`` trains ``model`` in place (see :class:`TrainingRun`).
        cost: forward-pass equivalents per training image and epoch (a forward and a backward pass
            count 3); weighs the recipe in the estimate of the time left.
        grid_share: the share of the grid's candidates that the early exit is expected to score per
            test image (0 for a model fooled at once, 1 for a robust one); the same use.
    """

    name: str
    train: Train
    cost: float = 3.0
    grid_share: float = 0.5


def _sharded() -> bool:
    return get_world_size() > 1


def _generator(seed: int) -> torch.Generator:
    """One stream in one process; under torchrun each rank draws its own (reproducibly)."""
    return rank_generator(seed) if _sharded() else torch.Generator().manual_seed(seed)


def _fit(model: nn.Module, data: Dataset[Any], run: TrainingRun, **kw: Any) -> object:
    """``fit`` in one process; under torchrun DDP with the same global batch of 64 split over ranks.

    Both get the run's bar label and epoch callback (under torchrun the bar shows on rank 0).
    """
    kw.update(
        epochs=run.epochs, seed=run.seed, progress=run.progress, desc=run.desc, on_epoch_end=run.on_epoch_end
    )
    if _sharded():
        return fit_distributed(model, data, batch_size=max(1, 64 // get_world_size()), **kw)
    return fit(model, data, **kw)


def _standard(model: nn.Module, data: Dataset[Any], run: TrainingRun) -> object:
    return _fit(model, data, run)


def _worst_of_10(model: nn.Module, data: Dataset[Any], run: TrainingRun) -> object:
    augment = WorstOfK(model, k=10, generator=_generator(run.seed))
    return _fit(model, data, run, transform=augment)


def _worst_of_10_kl(model: nn.Module, data: Dataset[Any], run: TrainingRun) -> object:
    net = wrap_ddp(model)  # the loss calls the model: under torchrun it must call the DDP wrapper
    attack = WorstOfK(net, k=10, generator=_generator(run.seed))
    loss_fn = InvarianceRegularizedLoss(net, attack, regularizer="kl", task_on="nat")  # lambda = 8
    return _fit(net, data, run, loss_fn=loss_fn)


# cost: 10 scoring forwards + forward/backward (13); the KL loss adds a forward/backward of the
# transformed batch (16). grid_share: the reference run of the README (508, 144131 and 158348 of
# 278225 evaluations).
RECIPES: tuple[TrainingRecipe, ...] = (
    TrainingRecipe("standard", _standard, cost=3.0, grid_share=0.002),
    TrainingRecipe("worst-of-10", _worst_of_10, cost=13.0, grid_share=0.52),
    TrainingRecipe("worst-of-10 + KL regularizer", _worst_of_10_kl, cost=16.0, grid_share=0.57),
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
    log: Callable[[str], object] | None = None,
) -> list[DemoRow]:
    """Train a SmallCNN on digits with each recipe, evaluate it, and optionally write the plots.

    Attack space of Engstrom et al. for MNIST: +-30 degrees, +-3 px; grid 31 x 5 x 5.

    Args:
        epochs: training epochs per model.
        seed: seed of the split, the initialisation and the attacks.
        test_images: evaluate on the first this many test images (all 359 when ``None``).
        progress: show progress bars named after the recipe (``"train worst-of-10"``) and add an
            estimate of the time left to the lines given to ``log``.
        recipes: the trainings to compare.
        output: folder for ``accuracy.png``, ``rotation_profile.png`` and ``landscape_<recipe>.png``;
            ``None`` writes no plots.
        log: receives a line with the plan at the start, with ``progress`` one after the first
            epoch, and one per finished recipe with its accuracies as soon as it is evaluated
            (rank 0 only under torchrun); ``None`` for silence.
    """
    train, test = load_digits_28(seed=seed)
    if test_images is not None:
        test = TensorDataset(*(t[:test_images] for t in test.tensors))
    loader = DataLoader(test, batch_size=256, shuffle=False)
    count, plots = len(test), output is not None and is_main_process()
    tell: Callable[[str], object] = log if log is not None and is_main_process() else _silent
    stages = []
    for recipe in recipes:
        grid_guess = recipe.grid_share * 775 * count
        stages.append((f"train {recipe.name}", epochs * len(train) * recipe.cost))
        stages.append((f"evaluate {recipe.name}", _evaluation_units(count, grid_guess, plots)))
    work = RemainingWork(stages)
    tell(
        f"Training {len(recipes)} SmallCNNs for {epochs} epoch{'' if epochs == 1 else 's'} on "
        f"{len(train)} digits and evaluating each on {count} test digits: "
        f"{', '.join(recipe.name for recipe in recipes)}; a line follows each"
    )
    rows, profiles, table = [], {}, {}
    for number, recipe in enumerate(recipes, 1):
        torch.manual_seed(seed)
        model = SmallCNN()
        start = time.perf_counter()
        run = TrainingRun(
            epochs,
            seed,
            progress,
            desc=f"train {recipe.name}",
            on_epoch_end=partial(_epoch_done, work, epochs, tell if progress and number == 1 else _silent),
        )
        recipe.train(model, train, run)
        seconds = time.perf_counter() - start
        work.finish()
        # Under torchrun each sweep shards the test set and returns the one-process numbers; in one
        # process the bars are the demo's own, named after the recipe.
        shown = progress and _sharded()
        natural = natural_accuracy(model, _walked(loader, f"natural {recipe.name}", progress), progress=shown)
        rand = random_accuracy(
            model,
            _walked(loader, f"random {recipe.name}", progress),
            generator=torch.Generator().manual_seed(seed + 2),
            progress=shown,
        )
        worst = worst_of_k_accuracy(
            model,
            _walked(loader, f"worst-of-10 {recipe.name}", progress),
            k=10,
            generator=torch.Generator().manual_seed(seed + 1),
            progress=shown,
        )
        grid = grid_accuracy(
            model, _walked(loader, f"grid {recipe.name}", progress), early_exit=True, progress=shown
        )
        row = DemoRow(
            name=recipe.name,
            natural=natural.accuracy,
            random=rand.accuracy,
            worst_of_10=worst.accuracy,
            grid=grid.accuracy,
            train_seconds=seconds,
            grid_evaluations=grid.evaluations,
            grid_exhaustive_evaluations=grid.exhaustive_evaluations,
        )
        rows.append(row)
        if output is not None:  # every rank: it shards itself
            profile = rotation_profile(
                model, _walked(loader, f"rotation profile {recipe.name}", progress), progress=shown
            )
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
        evaluated = time.perf_counter() - start - seconds
        work.finish(units=_evaluation_units(count, grid.evaluations, plots))
        left = f"; {work.describe()}" if progress and number < len(recipes) else ""
        tell(f"[{number}/{len(recipes)}] {_summary(row)}, evaluation {format_seconds(evaluated)}{left}")
    if output is not None and is_main_process():
        _write_summary_plots(table, profiles, Path(output))
    return rows


def _walked(loader: DataLoader[Any], label: str, progress: bool) -> Any:
    """``loader`` under a progress bar named ``label``; under torchrun the plain loader (the sweeps
    shard a DataLoader, and show their own bars on rank 0)."""
    return loader if _sharded() else bar(loader, label, progress)


def _silent(line: str) -> None:
    """A ``log`` that drops the line."""


def _evaluation_units(images: int, grid_evaluations: float, plots: bool) -> float:
    """Forward evaluations of one recipe's evaluation: natural, random, worst-of-10, the grid's, and
    with plots the rotation profile (31 angles and the clean pass) and the landscapes (3 images x 31 x 13)."""
    return images * 12 + grid_evaluations + (images * 32 + 3 * 31 * 13 if plots else 0)


def _epoch_done(
    work: RemainingWork, epochs: int, tell: Callable[[str], object], epoch: int, loss: float
) -> None:
    """``fit``'s epoch callback: advance the estimate; after the first epoch say what it predicts."""
    work.advance((epoch + 1) / max(epochs, 1))
    if epoch == 0:
        stage = work.current.name if work.current else "train"
        tell(f"{stage}: first epoch done; {work.describe()} (a first guess, refined after each model)")


def _summary(row: DemoRow) -> str:
    """``"standard: natural 96.7 %, random 54.0 %, worst-of-10 4.7 %, grid 0.0 %, train 4.1 s"``."""
    return (
        f"{row.name}: natural {100 * row.natural:.1f} %, random {100 * row.random:.1f} %, "
        f"worst-of-10 {100 * row.worst_of_10:.1f} %, grid {100 * row.grid:.1f} %, "
        f"train {format_seconds(row.train_seconds)}"
    )


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
    if args.task == "segmentation":
        if launched_by_torchrun():
            raise AdvSpatialError("demo --task segmentation runs in one process; start it without torchrun")
        return run_from_args(args)
    if not launched_by_torchrun():
        return _run(args)
    # Under torchrun: DDP training and sharded evaluation on CPU (gloo); rank 0 prints and plots.
    with distributed_session(device="cpu"):
        code = _run(args)
        barrier()
    return code


def _run(args: argparse.Namespace) -> int:
    epochs, test_images = (4, 120) if args.quick else (8 if args.epochs is None else args.epochs, None)
    output = None if args.no_plots else Path(args.output)
    start = time.perf_counter()
    rows = run_demo(
        epochs=epochs,
        seed=args.seed,
        test_images=test_images,
        progress=not args.no_progress,
        output=output,
        log=say,
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
    parser.add_argument(
        "--task",
        choices=("classification", "segmentation"),
        default="classification",
        help="classification (default: three CNNs on 28 x 28 digits) or segmentation (three U-Nets on "
        "32 x 32 canvases of two digits; mIoU and robust fraction)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs per model (default 8; 20 for segmentation)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test: 4 epochs and 120 test images (segmentation: 4 epochs, 48 canvases)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the split, the models and the attacks (default 0)"
    )
    parser.add_argument(
        "--output", default="advspatial-demo", help="folder for the plots (default ./advspatial-demo)"
    )
    parser.add_argument("--no-plots", action="store_true", help="write no plots")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars and no time estimates (a line per trained model is still printed)",
    )
    parser.set_defaults(handler=_main)
