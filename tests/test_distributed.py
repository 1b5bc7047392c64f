"""DDP with gloo on CPU: two spawned processes against one process (see ``distributed_workers.py``)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

import distributed_workers as workers
from advspatial import AdvSpatialError, GridSearchRotoTranslation, WorstOfK
from advspatial.data import load_digits_28
from advspatial.distributed import fit_distributed, rank_generator
from advspatial.evaluation import (
    grid_accuracy,
    invariance_profile,
    natural_accuracy,
    rotation_accuracy,
    rotation_profile,
    worst_of_k_accuracy,
)
from advspatial.models import SmallCNN
from advspatial.training import fit

EVAL_IMAGES = 101  # odd: DistributedSampler pads rank 1's shard with one repeated sample


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    train, test = load_digits_28(seed=0)
    torch.manual_seed(0)
    model = SmallCNN()
    fit(model, TensorDataset(*(t[:512] for t in train.tensors)), epochs=2, seed=0)
    return {
        "train_images": train.tensors[0][:64],
        "train_labels": train.tensors[1][:64],
        "eval_images": test.tensors[0][:EVAL_IMAGES],
        "eval_labels": test.tensors[1][:EVAL_IMAGES],
        "eval_state": model.state_dict(),
    }


@pytest.fixture(scope="module")
def ranks(setup: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("ddp")
    torch.save(setup, folder / "setup.pt")
    mp.spawn(workers.worker, args=(str(folder), free_port()), nprocs=workers.WORLD, join=True)
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(workers.WORLD)]


def test_context_read_from_torchrun_variables(ranks: list[dict[str, Any]]) -> None:
    assert [out["context"] for out in ranks] == [(0, 2, "gloo"), (1, 2, "gloo")]


def test_each_rank_draws_its_own_reproducible_candidates(ranks: list[dict[str, Any]]) -> None:
    draws = [out["seed_draw"] for out in ranks]
    assert not torch.isclose(draws[0], draws[1]).any()
    for rank, draw in enumerate(draws):
        assert torch.equal(draw, torch.rand(5, generator=rank_generator(7, rank=rank)))


def test_ddp_steps_match_one_process_on_the_concatenated_batch(
    setup: dict[str, Any], ranks: list[dict[str, Any]]
) -> None:
    torch.manual_seed(0)
    model = workers.NoBatchNormCNN()
    _, loss_fn = workers.matching_parts(model)
    step = 2 * workers.HALF
    batches = [
        (setup["train_images"][s * step : (s + 1) * step], setup["train_labels"][s * step : (s + 1) * step])
        for s in range(workers.STEPS)
    ]
    chosen = workers.train_steps(model, loss_fn, batches)
    for s in range(workers.STEPS):  # the same transforms were chosen, each rank for its half
        assert torch.equal(torch.cat([out["match_params"][s] for out in ranks]), chosen[s])
    initial = workers.NoBatchNormCNN()
    for key, value in model.state_dict().items():
        assert torch.equal(ranks[0]["match_state"][key], ranks[1]["match_state"][key]), key
        torch.testing.assert_close(ranks[0]["match_state"][key], value, rtol=1e-5, atol=1e-6)
    moved = sum(float((model.state_dict()[k] - v).abs().sum()) for k, v in initial.state_dict().items())
    assert moved > 0.0
    # One DDP forward per training step: the search's forwards went through the wrapped module.
    assert [out["match_ddp_forwards"] for out in ranks] == [workers.STEPS] * 2


def test_search_on_ddp_model_runs_no_ddp_forward_and_changes_nothing(ranks: list[dict[str, Any]]) -> None:
    for out in ranks:
        assert out["search_ddp_forwards"] == 0
        assert out["search_state_unchanged"]  # BatchNorm running statistics included
        assert all(out["search_training_flags"])
        assert all(grad is None for grad in out["search_grads"])
        assert (
            GridSearchRotoTranslation(SmallCNN(), rotations=3, translations=3)
            .box.contains(out["search_params"])
            .all()
        )


def test_sync_batchnorm_scores_like_batchnorm_on_cpu_and_training_is_refused(
    ranks: list[dict[str, Any]],
) -> None:
    for out in ranks:
        assert torch.equal(out["syncbn_search"].params, out["syncbn_reference"].params)
        torch.testing.assert_close(
            out["syncbn_search"].candidate_losses, out["syncbn_reference"].candidate_losses
        )
        assert all(out["syncbn_flags"])
        # torch 2.x: SyncBatchNorm synchronises only GPU/XPU/HPU tensors in training mode, and DDP
        # refuses CPU modules holding it; wrap_ddp says so before DDP does.
        assert "SyncBatchNorm layers but is on cpu" in out["syncbn_wrap"]
        assert "SyncBatchNorm expected input tensor to be on GPU" in out["syncbn_train_forward"]


def test_fit_distributed_with_worst_of_k_and_invariance_loss_keeps_ranks_identical(
    ranks: list[dict[str, Any]],
) -> None:
    first, second = (out["fit_weights"] for out in ranks)
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert ranks[0]["fit_history"] == ranks[1]["fit_history"]  # the mean loss is all-reduced
    assert not torch.equal(ranks[0]["fit_last_params"], ranks[1]["fit_last_params"])
    for out in ranks:
        assert "loss_fn holds the unwrapped SmallCNN" in out["fit_unwrapped_loss"]


def test_fit_distributed_calls_back_on_every_rank_stops_together_and_labels_the_bar_of_rank_0(
    ranks: list[dict[str, Any]],
) -> None:
    # rank 1's callback asks to stop after epoch 1, rank 0's never does: both stop there.
    for out in ranks:
        assert [epoch for epoch, _ in out["callback_seen"]] == [0, 1]
        assert [loss for _, loss in out["callback_seen"]] == out["callback_history"]
        assert [epoch for epoch, _ in out["callback_demo_seen"]] == [0]  # the demo's estimate is fed
    assert ranks[0]["callback_history"] == ranks[1]["callback_history"]  # the all-reduced mean loss
    assert ranks[0]["callback_bars"] == ["train shard", "train worst-of-10"]  # the demo's label
    assert ranks[1]["callback_bars"] == []  # bars on rank 0 only


def test_fit_distributed_in_one_process_takes_the_callback_of_fit() -> None:
    data = TensorDataset(torch.rand(8, 1, 28, 28), torch.arange(8) % 10)
    seen: list[int] = []
    history = fit_distributed(
        SmallCNN(),
        data,
        epochs=3,
        batch_size=4,
        on_epoch_end=lambda epoch, loss: seen.append(epoch) or epoch == 1,
    )
    assert seen == [0, 1] and len(history) == 2
    with pytest.raises(
        AdvSpatialError, match=r"on_epoch_end must be a callable on_epoch_end\(epoch, mean_loss\), got int"
    ):
        fit_distributed(SmallCNN(), data, epochs=1, on_epoch_end=3)  # type: ignore[arg-type]


def _eval_reference(setup: dict[str, Any]) -> tuple[SmallCNN, DataLoader[Any]]:
    model = SmallCNN()
    model.load_state_dict(setup["eval_state"])
    model.eval()
    loader = DataLoader(TensorDataset(setup["eval_images"], setup["eval_labels"]), batch_size=32)
    return model, loader


def test_sharded_grid_accuracy_equals_one_process_exactly(
    setup: dict[str, Any], ranks: list[dict[str, Any]]
) -> None:
    model, loader = _eval_reference(setup)
    space = {"rotations": 11, "translations": 3, "max_rotation": 30.0, "max_translation": 3.0}
    for key, early in (("eval_grid", True), ("eval_grid_full", False)):
        reference = grid_accuracy(model, loader, early_exit=early, **space)
        assert 0.0 < reference.accuracy < 1.0  # a discriminating model: some fooled, some robust
        for out in ranks:
            result = out[key]
            assert result.accuracy == reference.accuracy
            assert torch.equal(result.correct, reference.correct)
            assert torch.equal(result.labels, setup["eval_labels"])
            assert result.correct.numel() == EVAL_IMAGES
        if not early:
            for out in ranks:
                assert torch.equal(out[key].params, reference.params)
                torch.testing.assert_close(out[key].loss, reference.loss)
                # 102 sampler slots (one padding sample) each scored on the whole grid.
                assert out[key].evaluations == 102 * 99
    natural = natural_accuracy(model, loader)
    for out in ranks:
        assert out["eval_natural"].accuracy == natural.accuracy
        assert torch.equal(out["eval_natural"].correct, natural.correct)


def test_sharded_worst_of_k_equals_one_process_with_the_same_seed(
    setup: dict[str, Any], ranks: list[dict[str, Any]]
) -> None:
    model, loader = _eval_reference(setup)
    reference = worst_of_k_accuracy(model, loader, k=5, generator=torch.Generator().manual_seed(3))
    for out in ranks:
        assert out["eval_worst"].accuracy == reference.accuracy
        assert torch.equal(out["eval_worst"].correct, reference.correct)
        assert torch.equal(out["eval_worst"].params, reference.params)
    assert WorstOfK(model).box.contains(reference.params).all()


def test_sharded_rotation_metrics_equal_one_process(
    setup: dict[str, Any], ranks: list[dict[str, Any]]
) -> None:
    _, loader = _eval_reference(setup)
    model = workers.rotation_model()
    generator = torch.Generator().manual_seed(5)
    spatial = rotation_accuracy(model, loader, generator=generator)
    invariance = invariance_profile(model, loader, [0, 90, 180], generator=torch.Generator().manual_seed(6))
    profile = rotation_profile(model, loader, angles=5)
    assert 0.0 < spatial < 1.0 and 0.0 < invariance.agreement[2] < 1.0  # the draws matter
    for out in ranks:
        assert out["eval_rotation_accuracy"] == spatial
        # every rank consumed the whole stream, as one process does
        assert torch.equal(out["eval_generator_after"], generator.get_state())
        assert out["eval_invariance"] == invariance
        assert torch.equal(out["eval_rotation_profile"].correct, profile.correct)
        assert torch.equal(out["eval_rotation_profile"].consistent, profile.consistent)
        assert torch.equal(out["eval_rotation_profile"].worst_case_accuracy, profile.worst_case_accuracy)


def test_sharded_evaluation_refuses_what_it_cannot_shard_exactly(ranks: list[dict[str, Any]]) -> None:
    for out in ranks:
        assert "needs a generator seeded alike on every rank" in out["eval_no_generator"]
        assert "data must be a map-style Dataset or a DataLoader" in out["eval_list"]


def test_sharded_evaluation_refuses_ranks_holding_different_models(ranks: list[dict[str, Any]]) -> None:
    for out in ranks:
        assert "the ranks hold different models" in out["eval_different_models"]


def test_curriculum_checkpoint_from_rank_0_resumes_on_both_ranks(ranks: list[dict[str, Any]]) -> None:
    for out in ranks:
        assert out["cusp_stage_saved"] == out["cusp_stage_resumed"] == 1
        assert torch.equal(out["cusp_resumed_draw"], out["cusp_next_draw"])  # its own stream continues
        assert "different curriculum stages: {0: 1, 1: 2}" in out["cusp_mismatch"]
    assert not torch.equal(ranks[0]["cusp_next_draw"], ranks[1]["cusp_next_draw"])


def test_workers_folder_is_importable_for_spawn() -> None:
    assert Path(workers.__file__).parent == Path(__file__).parent
