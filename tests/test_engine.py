"""The search engine: batched equals brute force, model state untouched, early exit, errors."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from tests.checks import assert_model_unchanged, model_snapshot
from tests.conftest import TinyCNN
from torch import nn

from advspatial import (
    AdvSpatialError,
    GridSearchRotoTranslation,
    ScoringConfig,
    roto_translate,
    score_candidates,
)
from advspatial.engine import scoring_mode


def brute_force(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, candidates: torch.Tensor):
    """One forward pass per (image, candidate): the definition the engine must match."""
    model.eval()
    losses = torch.empty(images.shape[0], candidates.shape[-2])
    correct = torch.empty_like(losses, dtype=torch.bool)
    with torch.no_grad():
        for b in range(images.shape[0]):
            for k in range(candidates.shape[-2]):
                p = candidates[k] if candidates.ndim == 2 else candidates[b, k]
                logits = model(roto_translate(images[b : b + 1], p[None]))
                losses[b, k] = F.cross_entropy(logits, labels[b : b + 1])
                correct[b, k] = logits.argmax(1) == labels[b]
    return losses, correct


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
@pytest.mark.parametrize("shared", [True, False])
def test_batched_equals_brute_force(model, batch, chunk_size: int, shared: bool) -> None:
    images, labels = batch
    shape = (9, 3) if shared else (images.shape[0], 9, 3)
    candidates = (torch.rand(*shape, generator=torch.Generator().manual_seed(2)) * 2 - 1) * torch.tensor(
        [30, 3, 3]
    )
    scores = score_candidates(model, images, labels, candidates, ScoringConfig(chunk_size=chunk_size))
    losses, correct = brute_force(model, images, labels, candidates)
    torch.testing.assert_close(scores.losses, losses, atol=1e-5, rtol=1e-5)
    assert torch.equal(scores.correct, correct)
    assert bool(scores.scored.all()) and scores.evaluations == images.shape[0] * 9


def test_model_state_untouched(model, batch) -> None:
    images, labels = batch
    model(images).sum().backward()
    before = model_snapshot(model)
    score_candidates(model, images, labels, torch.zeros(4, 3))
    assert_model_unchanged(model, before)
    assert model.training and model.bn.training


def test_mixed_training_flags_restored(model, batch) -> None:
    model.train()
    model.bn.eval()
    score_candidates(model, batch[0], batch[1], torch.zeros(2, 3))
    assert model.training and not model.bn.training and model.drop.training


class Exploding(nn.Module):
    def __init__(self, inner: nn.Module, message: str) -> None:
        super().__init__()
        self.inner, self.message, self.calls = inner, message, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        raise RuntimeError(self.message)


def test_state_restored_when_the_model_raises(model, batch) -> None:
    wrapped = Exploding(model, "boom")
    wrapped.train()
    before = model_snapshot(wrapped)
    with pytest.raises(RuntimeError, match="boom"):
        score_candidates(wrapped, batch[0], batch[1], torch.zeros(3, 3))
    assert_model_unchanged(wrapped, before)


class FailsAboveBatch(nn.Module):
    """Simulates an out-of-memory error on chunks larger than ``limit``."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit = inner, limit
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.sizes.append(x.shape[0])
        return self.inner(x)


def test_out_of_memory_halves_the_chunk(model, batch) -> None:
    images, labels = batch
    candidates = torch.zeros(10, 3)
    flaky = FailsAboveBatch(model, limit=16)
    scores = score_candidates(flaky, images, labels, candidates, ScoringConfig(chunk_size=60))
    assert max(flaky.sizes) <= 16 and sum(flaky.sizes) == 60
    reference = score_candidates(model, images, labels, candidates)
    torch.testing.assert_close(scores.losses, reference.losses)


def test_nan_logits_raise(batch) -> None:
    class NaNModel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 10), float("nan"))

    with pytest.raises(AdvSpatialError, match="NaN"):
        score_candidates(NaNModel(), batch[0], batch[1], torch.zeros(2, 3))


def test_labels_out_of_range_raise(model, batch) -> None:
    with pytest.raises(
        AdvSpatialError, match=r"labels must be < the model's number of classes \(10\), got maximum 12"
    ):
        score_candidates(model, batch[0], torch.full((6,), 12), torch.zeros(2, 3))


def test_device_mismatch_raises(batch) -> None:
    meta_model = TinyCNN().to("meta")
    with pytest.raises(AdvSpatialError, match=r"images are on cpu but the model is on meta"):
        score_candidates(meta_model, batch[0], batch[1], torch.zeros(2, 3))


def test_early_exit_is_exact_and_saves_work(model, batch) -> None:
    images, labels = batch
    grid = GridSearchRotoTranslation(model, rotations=7, translations=3).candidates
    full = score_candidates(model, images, labels, grid)
    fast = score_candidates(model, images, labels, grid, early_exit=True)
    assert torch.equal(full.correct.all(dim=1), fast.correct.all(dim=1))
    assert fast.evaluations == int(fast.scored.sum()) < full.evaluations
    # Every scored pair has the same score as in the exhaustive run.
    torch.testing.assert_close(fast.losses[fast.scored], full.losses[fast.scored])
    # A robust image is scored on every candidate; a fooled one stops at a fooling candidate.
    robust = full.correct.all(dim=1)
    assert bool(fast.scored[robust].all())
    assert bool((~fast.correct[~robust]).any(dim=1).all())


def test_early_exit_on_a_constant_model_scores_everything() -> None:
    class Always(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.one_hot(torch.zeros(x.shape[0], dtype=torch.long), 3).float()

    images = torch.rand(5, 1, 6, 6)
    scores = score_candidates(
        Always(), images, torch.zeros(5, dtype=torch.long), torch.zeros(11, 3), early_exit=True
    )
    assert scores.evaluations == 55 and bool(scores.correct.all())


def test_without_labels_scores_divergence_from_clean_prediction(model, batch) -> None:
    images, _ = batch
    scores = score_candidates(model, images, None, torch.zeros(3, 3))
    # The identity cannot diverge from the clean prediction.
    torch.testing.assert_close(scores.losses, torch.zeros(6, 3), atol=1e-6, rtol=0)
    assert bool(scores.correct.all())
    assert scores.evaluations == 6 + 18


def test_scoring_mode_restores_flags_on_error(model) -> None:
    model.train()
    with pytest.raises(KeyError), scoring_mode(model) as net:
        assert not net.training
        raise KeyError("inside")
    assert model.training and model.bn.training


def _ddp_worker() -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29533", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = TinyCNN()
        ddp = nn.parallel.DistributedDataParallel(net)
        images, labels = torch.rand(4, 1, 12, 12), torch.randint(0, 10, (4,))
        ddp.train()
        via_ddp = score_candidates(ddp, images, labels, torch.zeros(3, 3))
        plain = score_candidates(net, images, labels, torch.zeros(3, 3))
        assert torch.equal(via_ddp.losses, plain.losses)
        assert ddp.training and net.training
    finally:
        dist.destroy_process_group()


def test_ddp_wrapped_model_is_scored_through_module() -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    process = ctx.Process(target=_ddp_worker)
    env = dict(os.environ)
    process.start()
    process.join(120)
    assert env is not None and process.exitcode == 0


class RecordsBatchSizes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.head = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        return self.head(x.mean(dim=(2, 3)))


def test_imagenet_size_grid_is_scored_in_bounded_chunks() -> None:
    """256 ImageNet-size images x 775 candidates are never warped at once: small, fixed chunks."""
    from advspatial.engine import default_chunk_size
    from advspatial.engine.tuning import chunk_tuner

    images = torch.rand(2, 3, 224, 224)
    chunk = default_chunk_size(images)
    assert chunk == 16  # the minimum: 1 MiB of input on CPU is less than two 3 x 224 x 224 images
    recorder = RecordsBatchSizes()
    grid = GridSearchRotoTranslation(recorder, max_translation=24).candidates
    scores = score_candidates(recorder, images, torch.zeros(2, dtype=torch.long), grid)
    # The tuner starts at the default and climbs, never past its memory bound.
    limit = chunk_tuner(recorder, images).limit
    assert recorder.sizes[0] == chunk and max(recorder.sizes) <= limit and max(recorder.sizes) < 2 * 775
    assert sum(recorder.sizes) == scores.evaluations == 2 * 775
