"""Work done by each rank of the 2-process gloo tests (spawned by ``tests/test_distributed.py``).

Every scenario runs in the same two processes (one start-up for all of them); each rank saves what
it saw to ``<folder>/rank<r>.pt`` and the tests compare the ranks with each other and with a
single-process reference computed in the test process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from advspatial import AdvSpatialError, CurriculumSpatial, GridSearchRotoTranslation, WorstOfK
from advspatial.distributed import (
    check_same_stage,
    curriculum_state_dict,
    destroy_distributed,
    fit_distributed,
    init_distributed,
    load_curriculum_state_dict,
    rank_generator,
    save_on_main,
    wrap_ddp,
)
from advspatial.evaluation import (
    grid_accuracy,
    invariance_profile,
    natural_accuracy,
    random_accuracy,
    rotation_accuracy,
    rotation_profile,
    worst_of_k_accuracy,
)
from advspatial.losses import InvarianceRegularizedLoss
from advspatial.models import SmallCNN

WORLD = 2
STEPS = 3
HALF = 8  # images per rank and step; the single-process reference takes 2 * HALF


class NoBatchNormCNN(nn.Module):
    """Conv + ReLU + linear: no running statistics, so DDP equals one process on the whole batch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.head = nn.Linear(4 * 14 * 14, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def matching_parts(model: nn.Module) -> tuple[GridSearchRotoTranslation, InvarianceRegularizedLoss]:
    """The deterministic attack and the loss used by the DDP-vs-one-process comparison."""
    grid = GridSearchRotoTranslation(model, rotations=5, translations=3, max_rotation=30, max_translation=3)
    return grid, InvarianceRegularizedLoss(model, grid, regularizer="kl", task_on="nat")


def train_steps(model: nn.Module, loss_fn: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """SGD steps with the invariance loss; the chosen params of each step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    chosen = []
    for images, labels in batches:
        model.train()
        loss = loss_fn(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        chosen.append(loss_fn.last.params.detach().clone())
    return chosen


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _match_single_process(setup: dict[str, Any], rank: int, out: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = NoBatchNormCNN()
    ddp = wrap_ddp(model)
    forwards = []
    ddp.register_forward_pre_hook(lambda module, args: forwards.append(1))
    _, loss_fn = matching_parts(ddp)
    images, labels = setup["train_images"], setup["train_labels"]
    batches = []
    for step in range(STEPS):
        start = step * 2 * HALF + rank * HALF
        batches.append((images[start : start + HALF], labels[start : start + HALF]))
    out["match_params"] = train_steps(ddp, loss_fn, batches)
    out["match_state"] = _state(model)
    out["match_ddp_forwards"] = len(forwards)


def _no_hooks_or_broadcasts(setup: dict[str, Any], out: dict[str, Any]) -> None:
    """A search on a DDP-wrapped BatchNorm model: no DDP forward, buffers, flags and grads untouched."""
    torch.manual_seed(0)
    model = SmallCNN()
    ddp = wrap_ddp(model)
    forwards = []
    ddp.register_forward_pre_hook(lambda module, args: forwards.append(1))
    ddp.train()
    before = _state(model)
    grid = GridSearchRotoTranslation(ddp, rotations=3, translations=3)
    result = grid.search(setup["train_images"][:6], setup["train_labels"][:6])
    out["search_ddp_forwards"] = len(forwards)
    out["search_state_unchanged"] = all(torch.equal(before[k], v) for k, v in _state(model).items())
    out["search_training_flags"] = [m.training for m in ddp.modules()]
    out["search_grads"] = [p.grad for p in model.parameters()]
    out["search_params"] = result.params


def _sync_batchnorm(setup: dict[str, Any], out: dict[str, Any]) -> None:
    """SyncBatchNorm on CPU: the search (eval mode) works in a process group; DDP and training do not."""
    torch.manual_seed(0)
    plain = SmallCNN()
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(SmallCNN())
    synced.load_state_dict(plain.state_dict())
    synced.train()
    images, labels = setup["train_images"][:6], setup["train_labels"][:6]
    out["syncbn_search"] = WorstOfK(synced, k=4, generator=torch.Generator().manual_seed(1)).search(
        images, labels
    )
    out["syncbn_reference"] = WorstOfK(plain, k=4, generator=torch.Generator().manual_seed(1)).search(
        images, labels
    )
    out["syncbn_flags"] = [m.training for m in synced.modules()]
    try:
        wrap_ddp(synced)
        out["syncbn_wrap"] = "ok"
    except AdvSpatialError as error:
        out["syncbn_wrap"] = str(error)
    try:
        synced(images)
        out["syncbn_train_forward"] = "ok"
    except ValueError as error:
        out["syncbn_train_forward"] = str(error)


def _fit_worst_of_k_with_loss(setup: dict[str, Any], out: dict[str, Any]) -> None:
    """fit_distributed with a per-rank WorstOfK inside InvarianceRegularizedLoss."""
    torch.manual_seed(0)
    model = SmallCNN()
    ddp = wrap_ddp(model)
    attack = WorstOfK(ddp, k=4, generator=rank_generator(0))
    loss_fn = InvarianceRegularizedLoss(ddp, attack, regularizer="kl")
    data = TensorDataset(setup["train_images"][:64], setup["train_labels"][:64])
    out["fit_history"] = fit_distributed(ddp, data, epochs=1, batch_size=16, loss_fn=loss_fn, seed=0)
    out["fit_weights"] = _state(model)  # parameters and BatchNorm buffers
    out["fit_last_params"] = loss_fn.last.params.clone() if loss_fn.last is not None else None
    try:
        fit_distributed(
            ddp, data, epochs=1, batch_size=16, loss_fn=InvarianceRegularizedLoss(model, attack), seed=0
        )
        out["fit_unwrapped_loss"] = "accepted"
    except AdvSpatialError as error:
        out["fit_unwrapped_loss"] = str(error)


def _fit_callbacks_and_bars(setup: dict[str, Any], rank: int, out: dict[str, Any]) -> None:
    """fit_distributed's epoch callback and bar label, directly and through the demo's ``_fit``."""
    import tqdm.auto

    from advspatial.cli.demo import TrainingRun, _fit

    bars: list[str] = []
    original = tqdm.auto.tqdm

    def recorded(iterable: Any, **options: Any) -> Any:  # the label of each bar opened, no drawing
        bars.append(options["desc"])
        return iterable

    data = TensorDataset(setup["train_images"][:32], setup["train_labels"][:32])
    seen: list[tuple[int, float]] = []

    def stop_on_rank_1(epoch: int, loss: float) -> bool | None:
        seen.append((epoch, loss))
        return True if rank == 1 and epoch == 1 else None

    demo_seen: list[tuple[int, float]] = []
    tqdm.auto.tqdm = recorded
    try:
        torch.manual_seed(0)
        history = fit_distributed(
            SmallCNN(),
            data,
            epochs=4,
            batch_size=8,
            on_epoch_end=stop_on_rank_1,
            progress=True,
            desc="train shard",
        )
        torch.manual_seed(0)
        run = TrainingRun(
            1,
            0,
            True,
            desc="train worst-of-10",
            on_epoch_end=lambda epoch, loss: demo_seen.append((epoch, loss)),
        )
        _fit(SmallCNN(), data, run)
    finally:
        tqdm.auto.tqdm = original
    out["callback_history"], out["callback_seen"], out["callback_demo_seen"] = history, seen, demo_seen
    out["callback_bars"] = bars


def rotation_model() -> nn.Module:
    """A fixed random linear classifier: its predictions change with the rotation (unlike a weak CNN's)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))


def _evaluation(setup: dict[str, Any], rank: int, out: dict[str, Any]) -> None:
    model = SmallCNN()
    model.load_state_dict(setup["eval_state"])
    model.eval()
    data = TensorDataset(setup["eval_images"], setup["eval_labels"])
    space = {"max_rotation": 30.0, "max_translation": 3.0}
    # The same public functions as in one process: each shards the data by itself.
    out["eval_natural"] = natural_accuracy(model, data, batch_size=16)
    out["eval_grid"] = grid_accuracy(model, data, rotations=11, translations=3, batch_size=16, **space)
    out["eval_grid_full"] = grid_accuracy(
        model, data, rotations=11, translations=3, early_exit=False, batch_size=16, **space
    )
    loader = DataLoader(data, batch_size=16)
    out["eval_worst"] = worst_of_k_accuracy(
        model, loader, k=5, generator=torch.Generator().manual_seed(3), **space
    )
    linear = rotation_model()
    generator = torch.Generator().manual_seed(5)
    out["eval_rotation_accuracy"] = rotation_accuracy(linear, data, generator=generator, batch_size=16)
    out["eval_generator_after"] = generator.get_state()
    out["eval_invariance"] = invariance_profile(
        linear, loader, [0, 90, 180], generator=torch.Generator().manual_seed(6)
    )
    out["eval_rotation_profile"] = rotation_profile(linear, loader, angles=5)
    for key, call in (
        ("eval_no_generator", lambda: random_accuracy(model, data)),
        ("eval_list", lambda: natural_accuracy(model, [(data.tensors[0][:2], data.tensors[1][:2])])),
    ):
        try:
            call()
            out[key] = "not refused"
        except AdvSpatialError as error:
            out[key] = str(error)
    if rank == 1:
        model.features[1].running_mean.add_(0.5)  # rank 1 now holds another model
    try:
        natural_accuracy(model, data, batch_size=16)
        out["eval_different_models"] = "not detected"
    except AdvSpatialError as error:
        out["eval_different_models"] = str(error)


def _curriculum(folder: Path, rank: int, out: dict[str, Any]) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    cusp = CurriculumSpatial(model, milestones=[1, 2], generator=rank_generator(5))
    images, labels = torch.rand(4, 1, 8, 8), torch.arange(4)
    for epoch in range(2):
        cusp.update(epoch)
        cusp(images, labels)
    state = curriculum_state_dict(cusp)
    path = save_on_main(state, folder / "curriculum.pt")
    out["cusp_stage_saved"] = cusp.stage
    out["cusp_next_draw"] = cusp.sample(images, labels)
    resumed = CurriculumSpatial(model, milestones=[1, 2], generator=torch.Generator().manual_seed(99))
    load_curriculum_state_dict(resumed, torch.load(path, weights_only=True))
    out["cusp_stage_resumed"] = resumed.stage
    out["cusp_resumed_draw"] = resumed.sample(images, labels)
    if rank == 1:
        resumed.step()
    try:
        check_same_stage(resumed)
        out["cusp_mismatch"] = "not detected"
    except AdvSpatialError as error:
        out["cusp_mismatch"] = str(error)


def worker(rank: int, folder: str, port: int) -> None:
    """Entry point of ``torch.multiprocessing.spawn``: the environment ``torchrun`` would set."""
    torch.set_num_threads(1)
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
        }
    )
    root = Path(folder)
    context = init_distributed(device="cpu", timeout_seconds=300)
    setup = torch.load(root / "setup.pt", weights_only=True)
    out: dict[str, Any] = {"context": (context.rank, context.world_size, context.backend)}
    out["seed_draw"] = torch.rand(5, generator=rank_generator(7))
    _match_single_process(setup, rank, out)
    _no_hooks_or_broadcasts(setup, out)
    _sync_batchnorm(setup, out)
    _fit_worst_of_k_with_loss(setup, out)
    _fit_callbacks_and_bars(setup, rank, out)
    _evaluation(setup, rank, out)
    _curriculum(root, rank, out)
    torch.save(out, root / f"rank{rank}.pt")
    destroy_distributed()
