"""InvarianceRegularizedLoss under autocast, DDP and torch.compile; the engine's custom objective."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from advspatial import AdvSpatialError, InvarianceRegularizedLoss, ScoringConfig, WorstOfK, score_candidates
from advspatial.geometry import roto_translate


def bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    )


def batch(n: int = 6) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=generator), torch.randint(0, 5, (n,), generator=generator)


def loss_and_grads(
    model: nn.Module, attack_model: nn.Module, images: Tensor, labels: Tensor, **kwargs: object
) -> tuple[Tensor, list[Tensor], Tensor]:
    attack = WorstOfK(attack_model, k=5, generator=torch.Generator().manual_seed(2))
    loss_fn = InvarianceRegularizedLoss(model, attack, **kwargs)  # type: ignore[arg-type]
    loss = loss_fn(images, labels)
    loss.backward()
    assert loss_fn.last is not None
    grads = [p.grad.clone() for p in attack_model.parameters()]
    return loss.detach(), grads, loss_fn.last.params


def assert_same_step(
    got: tuple[Tensor, list[Tensor], Tensor], expected: tuple[Tensor, list[Tensor], Tensor]
) -> None:
    """Two :func:`loss_and_grads` results: same chosen transforms exactly, loss and gradients close."""
    (loss, grads, params), (expected_loss, expected_grads, expected_params) = got, expected
    assert torch.equal(params, expected_params)
    torch.testing.assert_close(loss, expected_loss)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


# --- autocast -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("regularizer", ["kl", "l2"])
def test_autocast_close_to_float32(dtype: torch.dtype, regularizer: str) -> None:
    images, labels = batch()
    reference = bn_model().train()
    model = copy.deepcopy(reference)
    params = torch.tensor([[10.0, 1.0, 0.0]]).repeat(6, 1)
    attack = WorstOfK(reference)
    expected = InvarianceRegularizedLoss(reference, attack, regularizer=regularizer)(
        images, labels, params=params
    )
    loss_fn = InvarianceRegularizedLoss(model, WorstOfK(model), regularizer=regularizer)
    with torch.autocast("cpu", dtype=dtype):
        loss = loss_fn(images, labels, params=params)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=5e-2, atol=5e-3)
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())


@pytest.mark.parametrize("attack_objective", ["task", "regularizer"])
def test_half_precision_with_huge_logits_stays_finite(attack_objective: str) -> None:
    # Logits of magnitude ~1e4: softmax in half precision saturates, the loss must not become nan/inf.
    model = bn_model().train()
    with torch.no_grad():
        model[-1].weight.mul_(2000.0)
    images, labels = batch()
    attack = WorstOfK(model, k=4, autocast=torch.bfloat16, generator=torch.Generator().manual_seed(0))
    loss_fn = InvarianceRegularizedLoss(model, attack, regularizer="kl", attack_objective=attack_objective)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(images, labels)
    assert bool(torch.isfinite(loss))
    assert loss_fn.last is not None
    assert float(loss_fn.last.regularizer) >= 0
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())


# --- DDP and torch.compile ------------------------------------------------------------------------


def test_ddp_wrapped_model_matches_plain_model(tmp_path: Path) -> None:
    images, labels = batch()
    plain = bn_model().train()
    wrapped = copy.deepcopy(plain)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(wrapped)
        step = loss_and_grads(ddp, ddp, images, labels, task_on="both")
    finally:
        dist.destroy_process_group()
    assert_same_step(step, loss_and_grads(plain, plain, images, labels, task_on="both"))
    torch.testing.assert_close(wrapped[1].running_mean, plain[1].running_mean)


def test_attack_on_inner_module_of_ddp_is_accepted(tmp_path: Path) -> None:
    model = bn_model()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        loss_fn = InvarianceRegularizedLoss(ddp, WorstOfK(model))
        assert loss_fn.model is ddp
    finally:
        dist.destroy_process_group()


def test_torch_compiled_model_matches_eager() -> None:
    images, labels = batch()
    eager = bn_model().train()
    compiled_inner = copy.deepcopy(eager)
    compiled = torch.compile(compiled_inner, backend="eager")
    step = loss_and_grads(compiled, compiled, images, labels, regularizer="l2")
    assert_same_step(step, loss_and_grads(eager, eager, images, labels, regularizer="l2"))
    # An attack holding the uncompiled module is the same model.
    InvarianceRegularizedLoss(compiled, WorstOfK(compiled_inner))


# --- the engine's custom objective ----------------------------------------------------------------


def test_score_candidates_custom_objective_matches_brute_force() -> None:
    model = bn_model().eval()
    images, labels = batch(4)
    candidates = torch.tensor([[0.0, 0.0, 0.0], [15.0, 1.0, -1.0], [-30.0, 2.0, 0.5]])
    weights = torch.linspace(-1.0, 1.0, 5)
    seen_rows: list[Tensor] = []

    def objective(logits: Tensor, rows: Tensor) -> Tensor:
        seen_rows.append(rows)
        assert logits.dtype == torch.float32
        return (logits * weights).sum(dim=1) + rows.float()

    scores = score_candidates(
        model, images, labels, candidates, ScoringConfig(chunk_size=5), objective=objective
    )
    with torch.no_grad():
        logits = torch.stack([model(roto_translate(images, c.expand(4, 3))) for c in candidates], dim=1)
    expected = (logits * weights).sum(dim=2) + torch.arange(4.0)[:, None]
    torch.testing.assert_close(scores.losses, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(scores.correct, logits.argmax(dim=2) == labels[:, None])  # judged against labels
    assert len(seen_rows) == 3  # 12 pairs in chunks of 5
    default = score_candidates(model, images, labels, candidates)
    ce = F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(3), reduction="none").view(4, 3)
    torch.testing.assert_close(default.losses, ce, rtol=1e-5, atol=1e-5)


def test_score_candidates_custom_objective_bad_shape_raises() -> None:
    model = bn_model().eval()
    images, labels = batch(2)
    with pytest.raises(
        AdvSpatialError, match=r"objective must return a tensor of shape \(6,\), got \(6, 5\)"
    ):
        score_candidates(model, images, labels, torch.zeros(3, 3), objective=lambda logits, rows: logits)
