"""Early exit against the exhaustive grid at small and large batches: never slower, exact.

For B = 1, 2, 4, 8, 16, 128 digits test images, the exact grid accuracy with early exit and the
exhaustive grid search are timed in alternating rounds (after the chunk tuner has settled on
exhaustive searches), on (a) the standard and (b) the roto-translation-augmented digits CNN. The
robust sets must be equal; the ratio early / exhaustive should stay at or below about 1.05 at every B
(:class:`advspatial.engine.tuning.RoundBudget`).
"""

from __future__ import annotations

import pytest
import torch

from advspatial import GridSearchRotoTranslation
from advspatial.engine.tuning import chunk_tuner, forget_chunk_tunings
from benchmarks.conftest import paired_best_seconds, record
from benchmarks.test_search_cost import QUICK, ROUNDS

BATCHES = (1, 2) if QUICK else (1, 2, 4, 8, 16, 128)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("which", ["standard", "augmented"])
def test_early_exit_against_exhaustive(benchmark, device, early_exit_models, which: str, batch: int) -> None:  # type: ignore[no-untyped-def]
    model, images, labels = early_exit_models[which]
    model.to(device)
    images, labels = images[:batch].to(device), labels[:batch].to(device)
    exhaustive = GridSearchRotoTranslation(model)
    early = GridSearchRotoTranslation(model, early_exit=True)
    forget_chunk_tunings(model)
    tuner = chunk_tuner(model, images)
    for _ in range(50):
        if tuner.settled:
            break
        full = exhaustive.search(images, labels)
    result = benchmark.pedantic(lambda: early.search(images, labels), rounds=1, warmup_rounds=1)
    full = exhaustive.search(images, labels)
    assert torch.equal(result.correct, full.correct)
    early_s, exhaustive_s = paired_best_seconds(
        lambda: early.search(images, labels), lambda: exhaustive.search(images, labels), device, rounds=ROUNDS
    )
    benchmark.extra_info.update(
        {"early_s": early_s, "exhaustive_s": exhaustive_s, "evaluations": result.evaluations}
    )
    record(
        f"grid early exit / exhaustive, {which} digits CNN, B={batch}",
        "time",
        f"{early_s / exhaustive_s:.3f} ({early_s:.4f} s / {exhaustive_s:.4f} s; evaluations "
        f"{result.evaluations} of {full.evaluations}; chunk {tuner.size()})",
    )
