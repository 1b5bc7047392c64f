"""DataLoader forms: batch and collate equal the core; workers score with live weights or refuse."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from adapter_helpers import grid_search, tiny_model
from advspatial import AdvSpatialError, WorstOfK, roto_translate
from advspatial.adapters import SpatialSearchBatch, SpatialSearchCollate, SpatialSearchDataset
from advspatial.adapters._workers import check_worker_model
from advspatial.adapters.torchvision_v2 import SpatialSearchV2

SIZE = 12


def _data(n: int = 8) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 1, SIZE, SIZE, generator=g), torch.arange(n) % 5)


def test_batch_form_equals_the_core_and_keeps_the_rest() -> None:
    search = grid_search(tiny_model())
    images, labels = _data().tensors
    extra = ["a"] * len(labels)
    out, out_labels, out_extra = SpatialSearchBatch(search)((images, labels, extra))
    rows = search.search(images, labels).params
    assert torch.equal(out, roto_translate(images, rows))
    assert torch.equal(out_labels, labels)
    assert out_extra is extra
    with pytest.raises(AdvSpatialError, match=r"expects a batch \(images, labels"):
        SpatialSearchBatch(search)(images)


def test_collate_form_equals_the_batch_form() -> None:
    search = grid_search(tiny_model())
    loader = DataLoader(_data(), batch_size=4, collate_fn=SpatialSearchCollate(search))
    batches = list(loader)
    images, labels = _data().tensors
    expected = roto_translate(images, search.search(images, labels).params)
    assert torch.equal(torch.cat([b[0] for b in batches]), expected)


def _epoch_outputs(loader: DataLoader, dataset: SpatialSearchDataset, epoch: int) -> torch.Tensor:
    dataset.set_epoch(epoch)
    return torch.cat([images for images, _ in loader])


def test_dataset_form_is_reproducible_across_worker_counts() -> None:
    model = tiny_model()
    model.share_memory()
    dataset = SpatialSearchDataset(_data(), WorstOfK(model, k=3), seed=7)
    runs = {}
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=3, num_workers=workers)
        runs[workers] = [_epoch_outputs(loader, dataset, epoch) for epoch in (0, 1)]
    assert torch.equal(runs[0][0], runs[2][0])
    assert torch.equal(runs[0][1], runs[2][1])
    assert not torch.equal(runs[0][0], runs[0][1])  # new draws each epoch
    images = runs[0][0]
    assert len({tuple(x.flatten().tolist()) for x in images}) == len(images)


def test_collate_workers_draw_distinct_candidates() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 5))
    model.share_memory()
    same = torch.rand(1, 1, SIZE, SIZE).repeat(8, 1, 1, 1)
    data = TensorDataset(same, torch.zeros(8, dtype=torch.long))
    search = WorstOfK(model, k=2, generator=torch.Generator().manual_seed(0))
    outputs = []
    for _ in range(2):
        loader = DataLoader(
            data,
            batch_size=4,
            num_workers=2,
            collate_fn=SpatialSearchCollate(search),
            generator=torch.Generator().manual_seed(1),
        )
        outputs.append([images for images, _ in loader])
    first, second = outputs[0]
    assert not torch.equal(first, second)  # the two workers drew differently
    assert all(torch.equal(a, b) for a, b in zip(outputs[0], outputs[1], strict=True))  # seeded loader: same


def test_persistent_workers_score_with_the_current_weights() -> None:
    """The weights change between epochs; the workers' choices follow them."""
    model = tiny_model(seed=1)
    model.share_memory()
    search = grid_search(model)
    dataset = SpatialSearchDataset(_data(), search)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True)
    images, labels = _data().tensors
    seen = []
    for epoch, seed in enumerate((1, 2)):
        with torch.no_grad():  # an optimizer step updates the shared storage in place, as this does
            for p, q in zip(model.parameters(), tiny_model(seed=seed).parameters(), strict=True):
                p.copy_(q)
        expected = roto_translate(images, search.search(images, labels).params)
        got = _epoch_outputs(loader, dataset, epoch)
        assert torch.equal(got, expected)
        seen.append(got)
    assert not torch.equal(seen[0], seen[1])


def test_workers_refuse_a_model_without_shared_weights() -> None:
    dataset = SpatialSearchDataset(_data(), grid_search(tiny_model()))
    with pytest.raises(AdvSpatialError, match=r"not in shared memory.*share_memory\(\)"):
        list(DataLoader(dataset, batch_size=4, num_workers=1))
    collate = SpatialSearchCollate(grid_search(tiny_model()))
    with pytest.raises(AdvSpatialError, match="batch form"):
        list(DataLoader(_data(), batch_size=4, num_workers=1, collate_fn=collate))


def _fake_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    class Info:
        id = 0
        seed = 0

    monkeypatch.setattr("advspatial.adapters._workers.get_worker_info", lambda: Info())


def test_a_model_off_the_cpu_gets_a_clear_error_in_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for a CUDA model in a forked worker: no device is touched before the error."""
    model = tiny_model().to("meta")
    _fake_worker(monkeypatch)
    with pytest.raises(AdvSpatialError, match=r"model is on meta.*batch form"):
        check_worker_model(grid_search(model), "SpatialSearchV2")
    transform = SpatialSearchV2(grid_search(model))
    with pytest.raises(AdvSpatialError, match="model is on meta"):
        transform(torch.rand(1, SIZE, SIZE, device="meta"), 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_in_a_forked_worker() -> None:
    dataset = SpatialSearchDataset(_data(), grid_search(tiny_model().cuda()))
    with pytest.raises(AdvSpatialError, match="model is on cuda"):
        list(DataLoader(dataset, batch_size=4, num_workers=1))


def test_bad_arguments() -> None:
    with pytest.raises(AdvSpatialError, match="search must be"):
        SpatialSearchCollate(tiny_model())  # type: ignore[arg-type]
    with pytest.raises(AdvSpatialError, match="epoch must be"):
        SpatialSearchDataset(_data(), grid_search(tiny_model())).set_epoch(-1)
    with pytest.raises(AdvSpatialError, match=r"must be an image tensor \(C, H, W\)"):
        SpatialSearchDataset(
            TensorDataset(torch.rand(2, SIZE, SIZE), torch.zeros(2)), grid_search(tiny_model())
        )[0]


@pytest.mark.parametrize(
    ("image_dtype", "model_dtype"),
    [(torch.float64, torch.float32), (torch.float16, torch.float32), (torch.float32, torch.float64)],
)
def test_every_form_scores_in_the_models_dtype_and_keeps_the_images(
    image_dtype: torch.dtype, model_dtype: torch.dtype
) -> None:
    """Issue 15: float16/float64 with a float32 model (and the reverse) does not crash in the model."""
    search = grid_search(tiny_model().to(model_dtype))
    images, labels = _data(4).tensors
    images = images.to(image_dtype)
    expected = roto_translate(images, search.search(images.to(model_dtype), labels).params.to(image_dtype))
    out, _ = SpatialSearchBatch(search)((images, labels))
    assert out.dtype == image_dtype and torch.equal(out, expected)
    out, _ = SpatialSearchCollate(search)(list(zip(images, labels, strict=True)))
    assert out.dtype == image_dtype and torch.equal(out, expected)
    data = SpatialSearchDataset(TensorDataset(images, labels), search)
    singles = torch.stack([data[i][0] for i in range(4)])
    assert singles.dtype == image_dtype and torch.equal(singles, expected)
