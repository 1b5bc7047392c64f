"""The affine box: ranges, log-uniform scale sampling, grids with a count per axis, bad input."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from advspatial import AdvSpatialError, AffineBox, RotoTranslationBox
from advspatial.space import check_space


def test_ranges_are_normalised() -> None:
    box = AffineBox(max_rotation=20, max_translation=(3, 2), scale=(0.8, 1.2), shear=(10, 5))
    assert box.bounds == ((-20.0, -3.0, -2.0, 0.8, -10.0, -5.0), (20.0, 3.0, 2.0, 1.2, 10.0, 5.0))
    assert AffineBox(shear=7).shear == (7.0, 7.0)
    assert AffineBox() == AffineBox(30, 3, (1, 1), 0)
    assert pickle.loads(pickle.dumps(box)) == box
    assert "scale=(0.8, 1.2)" in repr(box)
    assert box.roto_translation == RotoTranslationBox(20, (3, 2))


def test_roto_translation_box_constructor_normalises_like_of() -> None:
    assert RotoTranslationBox(30, 3) == RotoTranslationBox.of(30, 3)
    assert RotoTranslationBox().half_widths == (30.0, 3.0, 3.0)
    with pytest.raises(AdvSpatialError, match="max_translation"):
        RotoTranslationBox(30, -1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": (0.0, 1.2)}, "scale"),
        ({"scale": (-0.5, 1.2)}, "scale"),
        ({"scale": (1.2, 0.8)}, "scale"),
        ({"scale": (1.1, 1.3)}, "scale"),
        ({"scale": 1.2}, "scale"),
        ({"scale": (0.8, float("inf"))}, "scale"),
        ({"shear": 61}, "shear"),
        ({"shear": (10, 75)}, "shear"),
        ({"shear": -5}, "shear"),
        ({"max_rotation": -1}, "max_rotation"),
        ({"max_translation": (1, 2, 3)}, "max_translation"),
    ],
)
def test_bad_ranges_name_the_argument(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        AffineBox(**kwargs)  # type: ignore[arg-type]


def test_samples_stay_in_range_and_scale_is_log_uniform() -> None:
    box = AffineBox(30, (3, 1), scale=(0.5, 2.0), shear=(10, 20))
    for seed in range(20):
        draws = box.sample((16, 10), generator=torch.Generator().manual_seed(seed))
        assert draws.shape == (16, 10, 6) and draws.dtype == torch.float32
        assert bool(box.contains(draws).all())
    many = box.sample((40000,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lows, highs = (torch.tensor(b, dtype=torch.float64) for b in box.bounds)
    assert torch.allclose(many.amin(dim=0), lows, rtol=1e-2) and torch.allclose(
        many.amax(dim=0), highs, rtol=1e-2
    )
    # log(scale) is uniform on [log 0.5, log 2]: half the draws zoom out, its mean is 0, a quarter lie
    # below 2 ** -0.5.
    log_scale = many[:, 3].log()
    assert abs(float((many[:, 3] < 1).double().mean()) - 0.5) < 0.01
    assert abs(float(log_scale.mean())) < 0.01
    assert abs(float((log_scale < -math.log(2) / 2).double().mean()) - 0.25) < 0.01


def test_same_generator_same_draws_whatever_the_batching() -> None:
    box = AffineBox(30, 3, scale=(0.9, 1.1), shear=5)
    a = box.sample((5, 4), generator=torch.Generator().manual_seed(7))
    b = box.sample((5, 4), generator=torch.Generator().manual_seed(7))
    c = box.sample((5, 4), generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    generator = torch.Generator().manual_seed(7)
    split = torch.cat([box.sample((2, 4), generator=generator), box.sample((3, 4), generator=generator)])
    assert torch.equal(split, a)
    flat = AffineBox(30, 3).sample((5, 4), generator=torch.Generator().manual_seed(7))
    assert torch.equal(flat[..., 3:], torch.tensor([1.0, 0.0, 0.0]).expand(5, 4, 3))


def test_grid_has_a_count_per_axis_and_the_identity_for_odd_counts() -> None:
    box = AffineBox(30, 3, scale=(0.8, 1.25), shear=10)
    grid = box.grid((31, 5, 5, 3, 3, 3))
    assert grid.shape == (31 * 5 * 5 * 27, 6)
    assert grid.unique(dim=0).shape[0] == grid.shape[0]
    identity = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert bool((grid == identity).all(dim=1).any())
    assert torch.equal(grid[:, 0].unique(), torch.linspace(-30, 30, 31))
    assert torch.allclose(grid[:, 3].unique(), torch.tensor([0.8, 1.0, 1.25]))
    assert torch.equal(grid[:, 4].unique(), torch.tensor([-10.0, 0.0, 10.0]))
    assert bool(box.contains(grid).all())
    # The roto-translation grid is the special case: single points sit on the identity.
    flat = box.grid((31, 5, 5, 1, 1, 1))
    assert torch.equal(flat[:, :3], RotoTranslationBox(30, 3).grid(31, 5))
    assert torch.equal(flat[:, 3:], torch.tensor([1.0, 0.0, 0.0]).expand(775, 3))
    # Scale is evenly spaced in log on each side of 1 (odd), or over the whole range (even).
    scales = AffineBox(scale=(0.5, 2.0)).grid((1, 1, 1, 5, 1, 1), dtype=torch.float64)[:, 3]
    torch.testing.assert_close(scales, torch.tensor([0.5, 2**-0.5, 1.0, 2**0.5, 2.0], dtype=torch.float64))
    even = AffineBox(scale=(0.5, 2.0)).grid((1, 1, 1, 2, 1, 1), dtype=torch.float64)[:, 3]
    torch.testing.assert_close(even, torch.tensor([0.5, 2.0], dtype=torch.float64))


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ((31, 5, 5, 3, 3), "steps"),
        ((31, 5, 5, 3, 3, 0), r"steps\[5\]"),
        ((31, 5, 5, 2.0, 3, 3), r"steps\[3\]"),
        ((31, 5, 5, True, 3, 3), r"steps\[3\]"),
        (31, "steps"),
    ],
)
def test_bad_steps_name_the_argument(steps: object, match: str) -> None:
    with pytest.raises(AdvSpatialError, match=match):
        AffineBox().grid(steps)  # type: ignore[arg-type]


def test_project_and_contains() -> None:
    box = AffineBox(30, 3, scale=(0.8, 1.2), shear=10)
    rows = torch.tensor([[45.0, -4.0, 1.0, 1.5, -20.0, 5.0], [0.0, 0.0, 0.0, 0.5, 0.0, 11.0]])
    clipped = box.project(rows)
    expected = torch.tensor([[30.0, -3.0, 1.0, 1.2, -10.0, 5.0], [0.0, 0.0, 0.0, 0.8, 0.0, 10.0]])
    torch.testing.assert_close(clipped, expected)
    assert box.contains(rows).tolist() == [False, False]
    assert bool(box.contains(clipped).all())
    assert bool(box.contains(box.identity((3,))).all())
    assert box.identity((2, 1)).shape == (2, 1, 6)


def test_rows_of_the_wrong_width_name_the_argument() -> None:
    with pytest.raises(AdvSpatialError, match=r"params must be a tensor of shape \(\.\.\., 6\)"):
        AffineBox().contains(torch.zeros(4, 3))
    with pytest.raises(AdvSpatialError, match=r"params must be a tensor of shape \(\.\.\., 6\)"):
        AffineBox().project(torch.zeros(4, 5))
    with pytest.raises(AdvSpatialError, match=r"params must be a tensor of shape \(\.\.\., 3\)"):
        RotoTranslationBox().contains(torch.zeros(4, 6))


def test_check_space() -> None:
    box = AffineBox()
    assert check_space(box) is box
    with pytest.raises(AdvSpatialError, match=r"space must be an advspatial\.RotoTranslationBox or"):
        check_space((30, 3))
