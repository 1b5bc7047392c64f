"""Cost of the searches against the bare forward passes at their fastest batch size.

Run with ``python -m pytest benchmarks --benchmark-enable`` (``ADVSPATIAL_BENCH_QUICK=1`` for a
smoke run: the digits CNN only, small batches, one round). Each case is the one of
``advspatial benchmark`` (:func:`advspatial.cli.benchmark.cases`) and is measured by
:func:`advspatial.cli.benchmark_cost.measure_against_best_bare`: the chunk tuner is cleared and
searches run until it settles (the tuning cost), then the search and the bare forward passes over
the same pre-warped pairs at every batch size of 16-512 are timed in alternating rounds, and the
fastest time of each side counts. The baseline is the fastest bare batch size, not the search's chunk.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from advspatial import AffineBox, GridSearchRotoTranslation, WorstOfK
from advspatial.cli.benchmark import BenchmarkCase, cases
from advspatial.cli.benchmark_cost import BestBareCost, measure_against_best_bare
from advspatial.models import resnet18_cifar
from benchmarks.conftest import paired_best_seconds, record

QUICK = os.environ.get("ADVSPATIAL_BENCH_QUICK") == "1"
ROUNDS = 1 if QUICK else 5


def bare_forward(
    model: nn.Module, warped: torch.Tensor, chunk: int, autocast: torch.dtype | None = None
) -> None:
    """Forward passes over ``warped`` in chunks, under ``torch.autocast(autocast)`` when given."""
    mixed = torch.autocast(warped.device.type, dtype=autocast, enabled=autocast is not None)
    with torch.inference_mode(), mixed:
        for start in range(0, warped.shape[0], chunk):
            model(warped[start : start + chunk])


def inputs(case: BenchmarkCase, device: torch.device) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = case.model().to(device).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(case.shape, generator=generator).to(device)
    labels = torch.randint(0, 10, (case.shape[0],), generator=generator).to(device)
    return model, images, labels


def record_cost(name: str, cost: BestBareCost) -> None:
    bare = cost.bare_seconds[cost.best_batch]
    record(
        name,
        "search / best bare forward (time)",
        f"{cost.ratio:.3f} ({cost.search_seconds:.3f} s / {bare:.3f} s at batch {cost.best_batch}; "
        f"{cost.evaluations / cost.search_seconds:.0f} pairs/s)",
    )
    record(
        name,
        "tuned chunk; tuning cost",
        f"{cost.chunk_size}{'' if cost.settled else ' (unsettled)'}; {cost.tuning_searches} searches, "
        f"+{cost.tuning_seconds:.3f} s",
    )


@pytest.mark.parametrize("case", cases(QUICK), ids=lambda case: case.name)
def test_search_against_best_bare(benchmark, device, case: BenchmarkCase) -> None:  # type: ignore[no-untyped-def]
    model, images, labels = inputs(case, device)
    search = case.search(model)
    cost = measure_against_best_bare(search, images, labels, rounds=ROUNDS, sizes=case.sizes)
    benchmark.pedantic(lambda: search.search(images, labels), rounds=1, warmup_rounds=0)
    benchmark.extra_info.update(
        {
            "search_s": cost.search_seconds,
            "bare_s": {str(size): seconds for size, seconds in cost.bare_seconds.items()},
            "best_batch": cost.best_batch,
            "ratio": cost.ratio,
            "chunk_size": cost.chunk_size,
            "settled": cost.settled,
            "tuning_searches": cost.tuning_searches,
            "tuning_s": cost.tuning_seconds,
        }
    )
    record_cost(case.name, cost)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        search.search(images, labels)
        peak = torch.cuda.max_memory_allocated(device) - before
        record(case.name, "max_memory_allocated during a search", f"{peak / 2**20:.0f} MiB")


@pytest.mark.parametrize("variant", ["bfloat16 autocast", "channels_last"])
def test_resnet18_variants_against_best_bare(benchmark, device, variant: str) -> None:  # type: ignore[no-untyped-def]
    """ResNet-18 32x32 worst-of-10 under bfloat16 autocast or with channels_last weights."""
    batch = 8 if QUICK else 32
    torch.manual_seed(0)
    model = resnet18_cifar().to(device).eval()
    images = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    autocast = torch.bfloat16 if variant == "bfloat16 autocast" else None
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    search = WorstOfK(model, k=10, generator=torch.Generator().manual_seed(0), autocast=autocast)
    sizes = (16, 64) if QUICK else (16, 32, 64, 128, 256, 512)
    cost = measure_against_best_bare(search, images, labels, rounds=ROUNDS, sizes=sizes)
    benchmark.pedantic(lambda: search.search(images, labels), rounds=1, warmup_rounds=0)
    name = f"worst-of-10, ResNet-18 32x32, B={batch}, {variant}"
    record_cost(name, cost)
    if autocast is not None:
        warped = torch.rand(cost.evaluations, 3, 32, 32, device=device)
        full, mixed = paired_best_seconds(
            lambda: bare_forward(model, warped, cost.best_batch),
            lambda: bare_forward(model, warped, cost.best_batch, autocast),
            device,
            rounds=ROUNDS,
        )
        record(name, "bare forward, float32 / bfloat16", f"{full / mixed:.2f}")


def test_worst_of_10_affine_resnet18_against_best_bare(benchmark, device) -> None:  # type: ignore[no-untyped-def]
    """ResNet-18 32x32 worst-of-10 over ``AffineBox(30, 3, scale=(0.8, 1.2), shear=10)`` (issue 13: <= 1.10).

    Six-column rows cost the same warp as three-column ones; the ratio should match the
    roto-translation case of ``test_search_against_best_bare``.
    """
    batch = 8 if QUICK else 32
    torch.manual_seed(0)
    model = resnet18_cifar().to(device).eval()
    images = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    space = AffineBox(max_rotation=30, max_translation=3, scale=(0.8, 1.2), shear=10)
    search = WorstOfK(model, k=10, space=space, generator=torch.Generator().manual_seed(0))
    sizes = (16, 64) if QUICK else (16, 32, 64, 128, 256, 512)
    cost = measure_against_best_bare(search, images, labels, rounds=ROUNDS, sizes=sizes)
    benchmark.pedantic(lambda: search.search(images, labels), rounds=1, warmup_rounds=0)
    benchmark.extra_info.update({"search_s": cost.search_seconds, "ratio": cost.ratio})
    record_cost(f"worst-of-10 affine (scale 0.8-1.2, shear 10), ResNet-18 32x32, B={batch}", cost)


def test_grid_early_exit_saving(benchmark, device, early_exit_models) -> None:  # type: ignore[no-untyped-def]
    model, images, labels = early_exit_models["standard"]
    model.to(device)
    images, labels = images.to(device), labels.to(device)
    exhaustive = GridSearchRotoTranslation(model).search(images, labels)
    early = GridSearchRotoTranslation(model, early_exit=True)
    result = benchmark.pedantic(lambda: early.search(images, labels), rounds=3, warmup_rounds=1)
    assert torch.equal(result.correct, exhaustive.correct)
    fraction = result.evaluations / exhaustive.evaluations
    benchmark.extra_info.update({"evaluations": result.evaluations, "exhaustive": exhaustive.evaluations})
    record(
        f"grid early exit, standard digits CNN, {images.shape[0]} test images",
        "forward evaluations / exhaustive",
        f"{fraction:.4f} ({result.evaluations} of {exhaustive.evaluations}; grid accuracy "
        f"{result.accuracy:.3f} both ways)",
    )
    if not QUICK:
        assert fraction <= 1 / 3
