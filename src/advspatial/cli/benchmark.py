"""``advspatial benchmark``: the cost of each search as a ratio to its bare forward passes, here.

The same measurement as ``benchmarks/`` (pytest-benchmark), without pytest: for each case the search
and the forward passes over the same pre-warped (image, candidate) pairs are timed in one process,
and the ratio table is printed in Markdown.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from advspatial.cli.benchmark_suite import add_arguments, run_suite
from advspatial.cli.evaluate import _count, _device
from advspatial.evaluation.throughput import SearchCost, measure_search_cost
from advspatial.models import SmallCNN, resnet18_cifar
from advspatial.strategies import GridSearchRotoTranslation, WorstOfK

__all__ = ["BenchmarkCase", "add_parser", "cases", "format_costs", "run_benchmark"]


@dataclass(frozen=True)
class BenchmarkCase:
    """One row of the table: a model, a batch shape and the search to time."""

    name: str
    model: Callable[[], nn.Module]
    shape: tuple[int, int, int, int]
    search: Callable[[nn.Module], WorstOfK | GridSearchRotoTranslation]


def _worst_of_10(model: nn.Module) -> WorstOfK:
    return WorstOfK(model, k=10, generator=torch.Generator().manual_seed(0))


def cases(quick: bool) -> list[BenchmarkCase]:
    """The benchmark cases; ``quick`` uses small batches and skips ResNet-18 (seconds on a CPU)."""
    if quick:
        return [
            BenchmarkCase("worst-of-10, digits CNN, B=32", SmallCNN, (32, 1, 28, 28), _worst_of_10),
            BenchmarkCase("grid 775, digits CNN, B=2", SmallCNN, (2, 1, 28, 28), GridSearchRotoTranslation),
        ]
    return [
        BenchmarkCase("worst-of-10, digits CNN, B=256", SmallCNN, (256, 1, 28, 28), _worst_of_10),
        BenchmarkCase("grid 775, digits CNN, B=32", SmallCNN, (32, 1, 28, 28), GridSearchRotoTranslation),
        BenchmarkCase("worst-of-10, ResNet-18 CIFAR, B=16", resnet18_cifar, (16, 3, 32, 32), _worst_of_10),
    ]


def run_benchmark(
    selected: list[BenchmarkCase], device: torch.device, *, rounds: int = 3
) -> list[tuple[BenchmarkCase, SearchCost]]:
    """Measure every case on ``device``."""
    rows = []
    for case in selected:
        torch.manual_seed(0)
        model = case.model().to(device).eval()
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(case.shape, generator=generator).to(device)
        labels = torch.randint(0, 10, (case.shape[0],), generator=generator).to(device)
        rows.append((case, measure_search_cost(case.search(model), images, labels, rounds=rounds)))
    return rows


def format_costs(rows: list[tuple[BenchmarkCase, SearchCost]]) -> str:
    """Markdown table: search time, bare forward time and their ratio."""
    lines = [
        "| benchmark | forward evaluations | search | bare forward | search / bare forward |",
        "|---|---|---|---|---|",
    ]
    for case, cost in rows:
        lines.append(
            f"| {case.name} | {cost.evaluations} | {cost.search_seconds:.3f} s | {cost.bare_seconds:.3f} s "
            f"| {cost.ratio:.3f} |"
        )
    return "\n".join(lines)


def _main(args: argparse.Namespace) -> int:
    if args.suite:
        return run_suite(args)
    device = _device(args.device)
    start = time.perf_counter()
    rounds = 1 if args.quick else args.rounds
    rows = run_benchmark(cases(args.quick), device, rounds=rounds)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    timing = "one round" if rounds == 1 else f"median of {rounds} rounds"
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
    parser.add_argument("--rounds", type=_count(1), default=3, help="timed rounds per case (default 3)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    add_arguments(parser)
    parser.set_defaults(handler=_main)
