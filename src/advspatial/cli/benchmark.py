"""``advspatial benchmark``: the cost of each search against its bare forward passes at their best batch.

The same measurement as ``benchmarks/`` (pytest-benchmark), without pytest: for each case the search
and the forward passes over the same pre-warped (image, candidate) pairs, at several batch sizes, are
timed in alternating rounds in one process (:mod:`advspatial.cli.benchmark_cost`); the table gives the
search's time over the fastest bare batch size's, the chunk the tuner chose and what tuning cost.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from advspatial.cli.benchmark_cost import BARE_BATCH_SIZES, BestBareCost, measure_against_best_bare
from advspatial.cli.benchmark_suite import add_arguments, run_suite
from advspatial.cli.evaluate import _count, _device
from advspatial.errors import AdvSpatialError
from advspatial.models import SmallCNN, UNet, resnet18_cifar
from advspatial.strategies import GridSearchRotoTranslation, WorstOfK
from advspatial.tasks import Segmentation

__all__ = ["BenchmarkCase", "add_parser", "cases", "format_costs", "run_benchmark"]


@dataclass(frozen=True)
class BenchmarkCase:
    """One row of the table: a model, a batch shape, the search to time and the bare batch sizes."""

    name: str
    model: Callable[[], nn.Module]
    shape: tuple[int, int, int, int]
    search: Callable[[nn.Module], WorstOfK | GridSearchRotoTranslation]
    sizes: tuple[int, ...] = BARE_BATCH_SIZES
    classes: int = 10
    dense: bool = False  # per-pixel targets (B, H, W) instead of labels (B,)


def _worst_of_10(model: nn.Module) -> WorstOfK:
    return WorstOfK(model, k=10, generator=torch.Generator().manual_seed(0))


def _segmentation_worst_of_10(model: nn.Module) -> WorstOfK:
    return WorstOfK(model, k=10, generator=torch.Generator().manual_seed(0), task=Segmentation())


def _segmentation_grid(model: nn.Module) -> GridSearchRotoTranslation:
    return GridSearchRotoTranslation(model, task=Segmentation())


def _unet() -> nn.Module:
    return UNet(in_channels=1, num_classes=11)


def _torchvision(name: str) -> Callable[[], nn.Module]:
    """A torchvision ResNet with 10 classes and random weights (needs the ``torchvision`` extra)."""

    def build() -> nn.Module:
        try:
            from torchvision import models
        except ImportError as error:  # pragma: no cover - depends on the installed extras
            raise AdvSpatialError(
                f"the {name} benchmark needs torchvision: pip install 'advspatial[torchvision]'"
            ) from error
        model: nn.Module = getattr(models, name)(num_classes=10)
        return model

    return build


def cases(quick: bool) -> list[BenchmarkCase]:
    """The benchmark cases: the digits CNN (28 x 28), ResNet-18 (32 x 32), ResNet-50 (64 x 64),
    ResNet-18 (224 x 224) and a segmentation U-Net (64 x 64, masks moved with every candidate), each
    with worst-of-10 and the exhaustive 775-point grid; ``quick``: the digits CNN only, small batches
    (seconds on a CPU)."""
    grid = GridSearchRotoTranslation
    if quick:
        return [
            BenchmarkCase(
                "worst-of-10, digits CNN 28x28, B=32", SmallCNN, (32, 1, 28, 28), _worst_of_10, (16, 64)
            ),
            BenchmarkCase("grid 775, digits CNN 28x28, B=2", SmallCNN, (2, 1, 28, 28), grid, (64, 256)),
        ]
    resnet50, resnet18 = _torchvision("resnet50"), _torchvision("resnet18")
    small = (16, 32, 64)
    return [
        BenchmarkCase("worst-of-10, digits CNN 28x28, B=128", SmallCNN, (128, 1, 28, 28), _worst_of_10),
        BenchmarkCase("grid 775, digits CNN 28x28, B=1", SmallCNN, (1, 1, 28, 28), grid),
        BenchmarkCase("worst-of-10, ResNet-18 32x32, B=32", resnet18_cifar, (32, 3, 32, 32), _worst_of_10),
        BenchmarkCase("grid 775, ResNet-18 32x32, B=1", resnet18_cifar, (1, 3, 32, 32), grid),
        BenchmarkCase("worst-of-10, ResNet-50 64x64, B=12", resnet50, (12, 3, 64, 64), _worst_of_10),
        BenchmarkCase("grid 775, ResNet-50 64x64, B=1", resnet50, (1, 3, 64, 64), grid),
        BenchmarkCase("worst-of-10, ResNet-18 224x224, B=4", resnet18, (4, 3, 224, 224), _worst_of_10, small),
        BenchmarkCase("grid 775, ResNet-18 224x224, B=1", resnet18, (1, 3, 224, 224), grid, small),
        BenchmarkCase(
            "segmentation worst-of-10, U-Net 64x64, B=16",
            _unet,
            (16, 1, 64, 64),
            _segmentation_worst_of_10,
            classes=11,
            dense=True,
        ),
        BenchmarkCase(
            "segmentation grid 775, U-Net 64x64, B=1",
            _unet,
            (1, 1, 64, 64),
            _segmentation_grid,
            classes=11,
            dense=True,
        ),
    ]


def run_benchmark(
    selected: list[BenchmarkCase], device: torch.device, *, rounds: int = 3
) -> list[tuple[BenchmarkCase, BestBareCost]]:
    """Measure every case on ``device``."""
    rows = []
    for case in selected:
        torch.manual_seed(0)
        model = case.model().to(device).eval()
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(case.shape, generator=generator).to(device)
        target_shape = (case.shape[0], *case.shape[2:]) if case.dense else (case.shape[0],)
        targets = torch.randint(0, case.classes, target_shape, generator=generator).to(device)
        cost = measure_against_best_bare(case.search(model), images, targets, rounds=rounds, sizes=case.sizes)
        rows.append((case, cost))
    return rows


def format_costs(rows: list[tuple[BenchmarkCase, BestBareCost]]) -> str:
    """Markdown table: the search, the fastest bare batch, their ratio, the tuned chunk and tuning cost."""
    lines = [
        "| benchmark | forward evaluations | search | best bare forward | search / best bare "
        "| best bare batch | tuned chunk | tuning |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, cost in rows:
        bare = cost.bare_seconds[cost.best_batch]
        chunk = f"{cost.chunk_size}{'' if cost.settled else ' (unsettled)'}"
        lines.append(
            f"| {case.name} | {cost.evaluations} | {cost.search_seconds:.3f} s | {bare:.3f} s "
            f"| {cost.ratio:.3f} | {cost.best_batch} | {chunk} "
            f"| {cost.tuning_searches} searches, +{cost.tuning_seconds:.3f} s |"
        )
    return "\n".join(lines)


def _selected(quick: bool, select: str | None) -> list[BenchmarkCase]:
    chosen = [case for case in cases(quick) if not select or select.lower() in case.name.lower()]
    if not chosen:
        raise AdvSpatialError(f"-k {select!r} matches no benchmark case")
    return chosen


def _main(args: argparse.Namespace) -> int:
    if args.suite:
        return run_suite(args)
    device = _device(args.device)
    start = time.perf_counter()
    rounds = 1 if args.quick else args.rounds
    rows = run_benchmark(_selected(args.quick, args.select), device, rounds=rounds)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    timing = "one round" if rounds == 1 else f"fastest of {rounds} alternating rounds"
    print(
        f"advspatial benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, {where}; "
        f"{timing} after a warm-up"
    )
    print(format_costs(rows))
    print(f"Total time {time.perf_counter() - start:.1f} s")
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``advspatial benchmark``."""
    parser = subparsers.add_parser("benchmark", help="time each search against its bare forward passes")
    parser.add_argument("--quick", action="store_true", help="small batches, one round: a smoke test")
    parser.add_argument(
        "--rounds",
        type=_count(1),
        default=3,
        help="alternating timed rounds per case, the fastest counts (default 3)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    add_arguments(parser)
    parser.set_defaults(handler=_main)
