"""Evaluation over a loader: sweeps, rotation profile, loss landscape, plots, search cost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from advspatial import AdvSpatialError, GridSearchRotoTranslation, WorstOfK, roto_translate, score_candidates
from advspatial.cli.benchmark_cost import measure_against_best_bare
from advspatial.evaluation import (
    first_order_accuracy,
    grid_accuracy,
    invariance_profile,
    loss_landscape,
    natural_accuracy,
    pgd_accuracy,
    random_accuracy,
    robustness_sweep,
    rotation_accuracy,
    rotation_profile,
    search_accuracy,
    worst_of_k_accuracy,
)
from advspatial.evaluation.plots import plot_accuracies
from checks import assert_model_unchanged, model_snapshot
from conftest import TinyCNN


@pytest.fixture
def data() -> tuple[TensorDataset, DataLoader[tuple[torch.Tensor, ...]]]:
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(20, 1, 12, 12, generator=generator)
    labels = torch.randint(0, 10, (20,), generator=generator)
    dataset = TensorDataset(images, labels)
    return dataset, DataLoader(dataset, batch_size=7, shuffle=False)


def logits_of(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    flag = model.training
    model.eval()
    with torch.no_grad():
        out = model(images)
    model.train(flag)
    return out


def test_natural_matches_direct_forward_on_a_loader_and_on_the_dataset(model, data) -> None:
    dataset, loader = data
    images, labels = dataset.tensors
    before = model_snapshot(model)
    result = natural_accuracy(model, loader)
    assert_model_unchanged(model, before)
    logits = logits_of(model, images)
    assert torch.equal(result.correct, logits.argmax(1) == labels)
    assert torch.allclose(result.loss, F.cross_entropy(logits, labels, reduction="none"), atol=1e-6)
    assert torch.equal(result.labels, labels)
    on_dataset = natural_accuracy(model, dataset, batch_size=3)
    assert on_dataset.accuracy == result.accuracy and torch.equal(on_dataset.loss, result.loss)
    assert result.evaluations == 20 and torch.equal(result.params, torch.zeros(20, 3))


def test_random_accuracy_replays_its_chosen_transforms(model, data) -> None:
    dataset, loader = data
    images, labels = dataset.tensors
    result = random_accuracy(
        model, loader, max_rotation=20, max_translation=2, generator=torch.Generator().manual_seed(0)
    )
    assert result.evaluations == 20
    assert bool((result.params[:, 0].abs() <= 20).all()) and bool((result.params[:, 1:].abs() <= 2).all())
    assert result.params.abs().sum() > 0
    logits = logits_of(model, roto_translate(images, result.params))
    assert torch.equal(result.correct, logits.argmax(1) == labels)
    assert torch.allclose(result.loss, F.cross_entropy(logits, labels, reduction="none"), atol=1e-5)


def test_grid_early_exit_is_exact_and_never_above_natural(model, data) -> None:
    _, loader = data
    natural = natural_accuracy(model, loader)
    early = grid_accuracy(model, loader, rotations=7, translations=3)
    full = grid_accuracy(model, loader, rotations=7, translations=3, early_exit=False)
    assert torch.equal(early.correct, full.correct)
    assert full.evaluations == full.exhaustive_evaluations == 20 * 63
    assert early.evaluations <= full.evaluations
    assert early.saved_evaluations == early.exhaustive_evaluations - early.evaluations > 0
    assert full.saved_evaluations == 0
    # The identity is a grid point: robust on the grid implies right on the clean image.
    assert not bool((early.correct & ~natural.correct).any())


def test_worst_of_k_and_first_order_are_at_most_natural(model, data) -> None:
    _, loader = data
    natural = natural_accuracy(model, loader)
    worst = worst_of_k_accuracy(model, loader, k=5, generator=torch.Generator().manual_seed(1))
    pgd = first_order_accuracy(model, loader, steps=2)
    assert worst.evaluations == 100 and pgd.evaluations == 60
    # S-PGD scores its start, the identity.
    assert not bool((pgd.correct & ~natural.correct).any())
    for result in (worst, pgd):
        assert result.params.shape == (20, 3)
        assert bool((result.params[:, 0].abs() <= 30 + 1e-5).all())
        assert bool((result.params[:, 1:].abs() <= 3 + 1e-5).all())


def test_sweep_leaves_the_model_alone_and_serialises(model, data) -> None:
    _, loader = data
    before = model_snapshot(model)
    results = robustness_sweep(model, loader, k=3, rotations=5, translations=3, pgd_steps=1)
    assert_model_unchanged(model, before)
    assert list(results) == ["natural", "random", "worst_of_3", "grid", "first_order"]
    for name, result in results.items():
        record = json.loads(json.dumps(result.to_dict()))
        assert record["name"] == name and record["samples"] == 20
        assert len(record["correct"]) == len(record["loss"]) == len(record["params"]) == 20
        assert record["accuracy"] == pytest.approx(sum(record["correct"]) / 20)


def test_search_accuracy_checks_its_arguments(model, data) -> None:
    _, loader = data
    with pytest.raises(AdvSpatialError, match="SpatialSearch"):
        search_accuracy(model, loader, "grid")  # type: ignore[arg-type]
    with pytest.raises(AdvSpatialError, match="same model"):
        search_accuracy(model, loader, WorstOfK(TinyCNN(), k=2))
    with pytest.raises(AdvSpatialError, match=r"\(images, targets\) pairs"):
        natural_accuracy(model, [torch.rand(2, 1, 12, 12)])
    with pytest.raises(AdvSpatialError, match="labels must have shape"):
        natural_accuracy(model, [(torch.rand(2, 1, 12, 12), torch.zeros(3, dtype=torch.long))])
    with pytest.raises(AdvSpatialError, match="batch_size applies to a Dataset"):
        natural_accuracy(model, loader, batch_size=4)
    with pytest.raises(AdvSpatialError, match="batch_size must be an integer"):
        natural_accuracy(model, loader.dataset, batch_size=0)
    empty = natural_accuracy(model, [])
    assert empty.correct.numel() == 0 and empty.accuracy != empty.accuracy  # nan
    assert empty.to_dict()["accuracy"] is None


class TupleModel(torch.nn.Module):
    """Returns (logits, features): not what an evaluation can score."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TinyCNN()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner(x), x


def test_every_metric_refuses_what_it_cannot_score(model, data) -> None:
    dataset, loader = data
    images = dataset.tensors[0]
    out_of_range = [(images[:4], torch.tensor([0, 1, 2, 10]))]  # TinyCNN has 10 classes
    generator = torch.Generator().manual_seed(0)
    for metric in (
        lambda d, m: natural_accuracy(m, d),
        lambda d, m: search_accuracy(m, d, WorstOfK(m, k=2)),
        lambda d, m: rotation_accuracy(m, d, generator=generator),
        lambda d, m: invariance_profile(m, d, [0, 30]),
        lambda d, m: pgd_accuracy(m, d, eps=0.1, steps=1),
        lambda d, m: rotation_profile(m, d, angles=3),
    ):
        with pytest.raises(AdvSpatialError, match=r"labels must be < the model's number of classes \(10\)"):
            metric(out_of_range, model)
        with pytest.raises(AdvSpatialError, match="model output must be a tensor of logits, got tuple"):
            metric(loader, TupleModel())


def test_rotation_profile_matches_a_loop_over_angles(model, data) -> None:
    dataset, loader = data
    images, labels = dataset.tensors
    before = model_snapshot(model)
    profile = rotation_profile(model, loader, max_rotation=30, angles=7)
    assert_model_unchanged(model, before)
    clean = logits_of(model, images).argmax(1)
    for k, angle in enumerate(profile.angles.tolist()):
        params = torch.tensor([[angle, 0.0, 0.0]]).expand(20, 3)
        predicted = logits_of(model, roto_translate(images, params)).argmax(1)
        assert torch.equal(profile.correct[:, k], predicted == labels)
        assert torch.equal(profile.consistent[:, k], predicted == clean)
    assert profile.ranges.tolist() == [0.0, 10.0, 20.0, 30.0]
    assert float(profile.invariance[0]) == 1.0
    assert float(profile.worst_case_accuracy[0]) == pytest.approx(float((clean == labels).float().mean()))
    assert bool((profile.worst_case_accuracy.diff() <= 0).all()) and bool(
        (profile.invariance.diff() <= 0).all()
    )
    assert float(profile.worst_case_accuracy[-1]) == pytest.approx(
        float(profile.correct.all(1).float().mean())
    )
    assert profile.evaluations == 20 * (7 + 1)  # every angle once, and the clean pass
    assert json.loads(json.dumps(profile.to_dict()))["ranges"] == [0.0, 10.0, 20.0, 30.0]


class ImageCounter(torch.nn.Module):
    """The wrapped model, counting the images its forward pass sees."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.inner(x)


def test_rotation_profile_scores_each_angle_once_with_the_numbers_of_two_scorings(data) -> None:
    _, loader = data
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 10))  # rotations change its mind
    counted = ImageCounter(model)
    profile = rotation_profile(counted, loader, max_rotation=180, angles=31)
    # 31 rotated candidates and the clean image per image; scoring twice would be 20 x 63.
    assert counted.images == profile.evaluations == 20 * 32
    # The former computation: every angle scored against the labels, then against the clean prediction.
    candidates = torch.stack([profile.angles, torch.zeros(31), torch.zeros(31)], dim=1)
    correct, consistent = [], []
    for images, labels in loader:
        correct.append(score_candidates(model, images, labels, candidates).correct)
        consistent.append(score_candidates(model, images, None, candidates).correct)
    assert torch.equal(profile.correct, torch.cat(correct))
    assert torch.equal(profile.consistent, torch.cat(consistent))
    for flags in (profile.correct, profile.consistent):  # both flags vary: the comparison means something
        assert bool(flags.any()) and not bool(flags.all())
    # An empty batch among the batches adds no row and costs nothing.
    nothing = (torch.zeros(0, 1, 12, 12), torch.zeros(0, dtype=torch.long))
    padded = rotation_profile(model, [nothing, *loader], max_rotation=180, angles=31)
    assert torch.equal(padded.correct, profile.correct) and padded.evaluations == profile.evaluations


def test_rotation_profile_follows_the_dtype_rule(data) -> None:
    """A float64 model scores float32 images in its own dtype, as the searches do (no dtype crash)."""
    _, loader = data
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 10)).double()
    profile = rotation_profile(model, loader, angles=5)
    reference = rotation_profile(model, [(images.double(), labels) for images, labels in loader], angles=5)
    assert torch.equal(profile.correct, reference.correct)
    assert torch.equal(profile.consistent, reference.consistent)


def test_loss_landscape_matches_brute_force(model) -> None:
    generator = torch.Generator().manual_seed(5)
    images, labels = torch.rand(2, 1, 12, 12, generator=generator), torch.tensor([3, 7])
    land = loss_landscape(
        model, images, labels, max_rotation=20, max_translation=2, rotations=5, translations=3, axis="y"
    )
    assert land.losses.shape == land.correct.shape == (2, 5, 3)
    assert land.angles.tolist() == [-20.0, -10.0, 0.0, 10.0, 20.0] and land.offsets.tolist() == [
        -2.0,
        0.0,
        2.0,
    ]
    for r, angle in enumerate(land.angles.tolist()):
        for t, offset in enumerate(land.offsets.tolist()):
            params = torch.tensor([[angle, 0.0, offset]]).expand(2, 3)
            logits = logits_of(model, roto_translate(images, params))
            loss = F.cross_entropy(logits, labels, reduction="none")
            assert torch.allclose(land.losses[:, r, t], loss, atol=1e-5)
    flat = land.losses.view(2, -1).argmax(1)
    assert torch.equal(land.worst_params[:, 0], land.angles[flat // 3])
    assert (
        torch.equal(land.worst_params[:, 2], land.offsets[flat % 3])
        and float(land.worst_params[:, 1].abs().sum()) == 0
    )
    assert torch.allclose(land.worst_images, roto_translate(images, land.worst_params))
    # the whole grid: the slice's angles x ty offsets x five tx offsets (axis="y"); brute force
    assert land.cross_offsets.tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    points = torch.tensor(
        [
            [a, x, y]
            for a in land.angles.tolist()
            for x in land.cross_offsets.tolist()
            for y in land.offsets.tolist()
        ]
    )
    losses = torch.stack(
        [
            F.cross_entropy(
                logits_of(model, roto_translate(images, p.expand(2, 3))), labels, reduction="none"
            )
            for p in points
        ]
    )  # (points, 2)
    torch.testing.assert_close(land.grid_worst_loss, losses.max(dim=0).values, atol=1e-5, rtol=0)
    for b in range(2):
        assert land.grid_worst_params[b].tolist() in points.tolist()
        assert float(land.grid_worst_loss[b]) >= float(land.losses[b].max()) - 1e-6
    single = loss_landscape(model, images, labels, rotations=5, translations=3, cross_translations=1)
    assert torch.equal(single.grid_worst_params, single.worst_params)
    with pytest.raises(AdvSpatialError, match="axis"):
        loss_landscape(model, images, labels, axis="z")
    with pytest.raises(AdvSpatialError, match="at least one image"):
        loss_landscape(model, images[:0], labels[:0])


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        pixels = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32))
    assert float(pixels.std()) > 5.0, f"{path} looks blank"
    return image.size


def test_plots_are_real_pngs_of_the_documented_size(model, data, tmp_path: Path) -> None:
    _, loader = data
    results = robustness_sweep(model, loader, k=2, rotations=3, translations=3, pgd_steps=1)
    profile = rotation_profile(model, loader, angles=5)
    images, labels = next(iter(loader))
    land = loss_landscape(model, images[:2], labels[:2], rotations=5, translations=3)
    table = {"a": {n: r.accuracy for n, r in results.items()}, "b": {"natural": 0.5}}
    assert png_size(plot_accuracies(table, tmp_path / "acc.png")) == (800, 400)
    assert png_size(results["grid"].save_plot(tmp_path / "grid.png", model="tiny")) == (640, 480)
    assert png_size(profile.save_plot(tmp_path / "sub" / "profile.png")) == (960, 400)
    names = [f"digit {i}" for i in range(10)]
    assert png_size(land.save_plot(tmp_path / "land.png", model="tiny", class_names=names)) == (900, 600)


def test_plot_titles_say_what_is_shown(model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    from advspatial.evaluation import plots

    titles: list[str] = []
    scatter_sizes: list[list[float]] = []
    original_save = plots._save

    def spy(figure: Figure, path: Path) -> Path:
        for axes in figure.axes:
            titles.append(axes.get_title())
            scatter_sizes.extend(list(c.get_sizes()) for c in axes.collections if hasattr(c, "get_sizes"))
        titles.append(figure.get_suptitle())
        return original_save(figure, path)

    monkeypatch.setattr(plots, "_save", spy)
    images, labels = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(1)), torch.tensor([4])
    land = loss_landscape(model, images, labels, rotations=5, translations=3)
    land.save_plot(tmp_path / "land.png", model="standard", class_names=[f"c{i}" for i in range(10)])
    text = "\n".join(titles)
    assert "worst of the ty = 0 slice" in text and "standard" in text and "label 'c4'" in text
    assert ("fooled on the" in text) or ("withstood on the" in text)
    assert "worst of the whole grid" in text
    titles.clear()
    params = torch.tensor([[30.0, 3.0, 0.0]] * 3 + [[-30.0, -3.0, 3.0]])
    plots.plot_chosen_transforms(
        params, torch.tensor([False, False, False, True]), tmp_path / "g.png", title="t"
    )
    # three images on one point: one marker of three times the area, not three hidden markers
    assert [16.0 * 3] in scatter_sizes and [16.0] in scatter_sizes


def test_search_cost_measures_the_same_pairs(model) -> None:
    images, labels = torch.rand(4, 1, 12, 12), torch.tensor([0, 1, 2, 3])
    cost = measure_against_best_bare(
        GridSearchRotoTranslation(model, rotations=3, translations=3),
        images,
        labels,
        rounds=1,
        sizes=(16, 64),
    )
    assert cost.evaluations == 4 * 27
    assert cost.search_seconds > 0 and all(seconds > 0 for seconds in cost.bare_seconds.values())
    assert cost.ratio == pytest.approx(cost.search_seconds / cost.bare_seconds[cost.best_batch])
    with pytest.raises(AdvSpatialError, match="exhaustive"):
        measure_against_best_bare(GridSearchRotoTranslation(model, early_exit=True), images, labels)


def test_worst_of_k_scores_the_candidates_it_is_given(model) -> None:
    images, labels = torch.rand(5, 1, 12, 12), torch.tensor([0, 1, 2, 3, 4])
    attack = WorstOfK(model, k=3, generator=torch.Generator().manual_seed(2))
    table = attack.sample(5, torch.device("cpu"), torch.Generator().manual_seed(7))
    state = attack.generator.get_state()  # type: ignore[union-attr]
    whole = attack.search(images, labels, candidates=table)
    assert torch.equal(attack.generator.get_state(), state)  # type: ignore[union-attr]  # nothing drawn
    drawn = WorstOfK(model, k=3).search(images, labels, generator=torch.Generator().manual_seed(7))
    assert torch.equal(whole.params, drawn.params) and torch.equal(whole.correct, drawn.correct)
    part = attack.search(images[2:], labels[2:], candidates=table[2:])
    assert torch.equal(part.params, whole.params[2:])
    assert bool((whole.candidate_losses is not None) and whole.candidate_losses.shape == (5, 3))
    for bad, match in (
        (table[:4], r"candidates must have shape \(5, K, 3\)"),
        (table[:, :, :2], r"candidates must have shape \(5, K, 3\)"),
        (table[:, :0], r"K >= 1"),
        (table.long(), "floating point"),
        (table * float("nan"), "finite"),
        ("grid", "torch.Tensor"),
    ):
        with pytest.raises(AdvSpatialError, match=match):
            attack.search(images, labels, candidates=bad)  # type: ignore[arg-type]
    with pytest.raises(AdvSpatialError, match="either candidates or generator"):
        attack.search(images, labels, candidates=table, generator=torch.Generator())


def test_search_cost_takes_affine_searches(model) -> None:
    from advspatial import AffineBox, GridSearch

    images, labels = torch.rand(4, 1, 12, 12), torch.tensor([0, 1, 2, 3])
    space = AffineBox(scale=(0.8, 1.2), shear=10)
    grid = GridSearch(model, space=space, steps=(3, 1, 1, 3, 1, 1))
    assert measure_against_best_bare(grid, images, labels, rounds=1, sizes=(16,)).evaluations == 4 * 9
    worst = WorstOfK(model, k=3, space=space)
    assert measure_against_best_bare(worst, images, labels, rounds=1, sizes=(16,)).evaluations == 4 * 3
