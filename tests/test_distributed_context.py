"""The distributed helpers in one process: torchrun's environment, seeds, shards, checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from advspatial import AdvSpatialError, CurriculumSpatial, WorstOfK
from advspatial.distributed import (
    all_gather_tensor,
    all_reduce_sum,
    check_same_model,
    current_context,
    curriculum_state_dict,
    default_backend,
    init_distributed,
    launched_by_torchrun,
    load_curriculum_state_dict,
    rank_seed,
    shard_sampler,
    wrap_ddp,
)
from advspatial.evaluation import worst_of_k_accuracy
from advspatial.evaluation.walk import KeyedDraws

TORCHRUN = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


@pytest.fixture
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)


def test_without_torchrun_nothing_is_started(no_torchrun: None) -> None:
    assert not launched_by_torchrun()
    context = init_distributed(device="cpu")
    assert (context.rank, context.world_size, context.backend, context.is_main) == (0, 1, None, True)
    assert not torch.distributed.is_initialized()
    assert current_context().world_size == 1


def test_backend_follows_the_device() -> None:
    assert default_backend(torch.device("cpu")) == "gloo"
    assert default_backend("cuda:3") == "nccl"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RANK", "two", "RANK must be a non-negative integer, got 'two'"),
        ("RANK", "5", "RANK must be smaller"),
    ],
)
def test_bad_torchrun_environment_is_named(
    no_torchrun: None, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", variable: value}
    for name, text in env.items():
        monkeypatch.setenv(name, text)
    with pytest.raises(AdvSpatialError, match=message):
        init_distributed(device="cpu")
    assert not torch.distributed.is_initialized()


def test_nccl_on_cpu_and_unknown_backend_are_refused(
    no_torchrun: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, text in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }.items():
        monkeypatch.setenv(name, text)
    with pytest.raises(AdvSpatialError, match="'nccl' needs a CUDA device"):
        init_distributed("nccl", device="cpu")
    with pytest.raises(AdvSpatialError, match="backend"):
        init_distributed("mpi-ish", device="cpu")


def test_rank_seeds_are_distinct_and_stable() -> None:
    seeds = {rank_seed(seed, rank) for seed in range(20) for rank in range(64)}
    assert len(seeds) == 20 * 64
    assert rank_seed(3, 1) == rank_seed(3, 1)
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(AdvSpatialError, match="rank"):
        rank_seed(0, -1)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_keyed_draws_equal_sequential_worst_of_k_draws(batch_size: int) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    attack = WorstOfK(model, k=4, generator=torch.Generator().manual_seed(11))
    draws = [attack.sample(n, torch.device("cpu")) for n in _split(50, batch_size)]
    keyed = WorstOfK(model, k=4, generator=torch.Generator().manual_seed(11))
    table = KeyedDraws(lambda n, device: keyed.sample(n, device), keyed.generator)
    # a rank of 2 asks for its own samples only (and a padding repeat of sample 0)
    own = torch.tensor([1, 3, 5, 49, 0])
    assert torch.equal(table(own, torch.device("cpu")), torch.cat(draws)[own])
    assert table.drawn == 50


def _split(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def test_worst_of_k_accuracy_does_not_depend_on_the_batches() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    data = TensorDataset(torch.rand(23, 1, 8, 8), torch.randint(0, 10, (23,)))
    by_five = worst_of_k_accuracy(model, data, k=6, generator=torch.Generator().manual_seed(4), batch_size=5)
    reference = worst_of_k_accuracy(
        model, DataLoader(data, batch_size=8), k=6, generator=torch.Generator().manual_seed(4)
    )
    assert by_five.accuracy == reference.accuracy
    assert torch.equal(by_five.params, reference.params)
    assert torch.equal(by_five.loss, reference.loss)
    assert by_five.evaluations == 23 * 6


def test_one_process_plumbing_is_the_identity() -> None:
    data = TensorDataset(torch.rand(7, 1, 4, 4), torch.arange(7))
    sampler, owned = shard_sampler(data)
    assert list(sampler) == list(range(7)) and bool(owned.all())
    assert all_gather_tensor(torch.arange(3)).tolist() == [[0, 1, 2]]
    assert all_reduce_sum([1, 2]) == [1, 2]
    check_same_model(torch.nn.Linear(2, 2))  # nothing to compare against


def test_curriculum_checkpoint_of_another_world_size_is_refused() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    cusp = CurriculumSpatial(model, generator=torch.Generator().manual_seed(0))
    cusp.step()
    state = curriculum_state_dict(cusp)
    resumed = CurriculumSpatial(model, generator=torch.Generator().manual_seed(1))
    load_curriculum_state_dict(resumed, state)
    assert resumed.stage == 1
    images, labels = torch.rand(2, 1, 8, 8), torch.arange(2)
    assert torch.equal(resumed.sample(images, labels), cusp.sample(images, labels))
    with pytest.raises(AdvSpatialError, match="generators of 2 ranks but 1 are running"):
        load_curriculum_state_dict(resumed, {**state, "generators": state["generators"] * 2})


def test_wrap_ddp_and_loss_checks_in_one_process() -> None:
    model = torch.nn.Linear(3, 2)
    assert wrap_ddp(model) is model
    with pytest.raises(AdvSpatialError, match=r"torch\.nn\.Module"):
        wrap_ddp("model")  # type: ignore[arg-type]
