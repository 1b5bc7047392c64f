"""Parameter space: ranges, sampling with a caller's generator, grids."""

from __future__ import annotations

import pytest
import torch

from advspatial import AdvSpatialError, RotoTranslationBox


def test_scalar_and_pair_ranges() -> None:
    assert RotoTranslationBox.of(30, 3).half_widths == (30.0, 3.0, 3.0)
    assert RotoTranslationBox.of(10.5, (4, 2)).half_widths == (10.5, 4.0, 2.0)


@pytest.mark.parametrize(
    ("rotation", "translation", "match"),
    [
        (-1, 3, "max_rotation"),
        (30, -3, "max_translation"),
        (30, (1, 2, 3), "max_translation"),
        (float("nan"), 3, "max_rotation"),
        (True, 3, "max_rotation"),
        ("30", 3, "max_rotation"),
    ],
)
def test_bad_ranges(rotation: object, translation: object, match: str) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        RotoTranslationBox.of(rotation, translation)  # type: ignore[arg-type]


def test_samples_stay_in_range_over_many_seeds() -> None:
    box = RotoTranslationBox.of(30, (3, 1))
    limits = torch.tensor([30.0, 3.0, 1.0])
    for seed in range(50):
        draws = box.sample((64, 10), generator=torch.Generator().manual_seed(seed))
        assert draws.shape == (64, 10, 3)
        assert bool((draws.abs() <= limits).all())
    # The draws fill the box (not a degenerate corner of it).
    many = box.sample((20000,), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(many.abs().amax(dim=0), limits, rtol=1e-2)
    assert torch.allclose((many / limits).mean(dim=0), torch.zeros(3), atol=0.03)  # 7 standard errors


def test_same_generator_same_draws() -> None:
    box = RotoTranslationBox.of(30, 3)
    a = box.sample((5, 4), generator=torch.Generator().manual_seed(7))
    b = box.sample((5, 4), generator=torch.Generator().manual_seed(7))
    c = box.sample((5, 4), generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_grid_matches_the_paper() -> None:
    grid = RotoTranslationBox.of(30, 3).grid(31, 5)
    assert grid.shape == (775, 3)
    assert bool((grid == 0).all(dim=1).any()), "the identity is on the grid"
    assert torch.equal(grid[:, 0].unique(), torch.linspace(-30, 30, 31))
    assert torch.equal(grid[:, 1].unique(), torch.tensor([-3.0, -1.5, 0.0, 1.5, 3.0]))
    assert grid.unique(dim=0).shape[0] == 775


def test_grid_with_pair_counts_and_single_points() -> None:
    grid = RotoTranslationBox.of(10, (2, 4)).grid(1, (3, 1))
    assert grid.tolist() == [[0.0, -2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    with pytest.raises(AdvSpatialError, match="rotations"):
        RotoTranslationBox.of(10, 2).grid(0, 3)
    with pytest.raises(AdvSpatialError, match="translations"):
        RotoTranslationBox.of(10, 2).grid(3, (3, 3, 3))  # type: ignore[arg-type]


def test_project_clips_into_the_box() -> None:
    box = RotoTranslationBox.of(30, 3)
    clipped = box.project(torch.tensor([[45.0, -4.0, 1.0]]))
    assert clipped.tolist() == [[30.0, -3.0, 1.0]]
    assert bool(box.contains(clipped).all())
