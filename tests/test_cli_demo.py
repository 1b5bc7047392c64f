"""``advspatial demo``'s feedback: a line per finished recipe as soon as it is done, named bars, estimates."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn
from torch.utils.data import Dataset

from advspatial.cli.demo import RECIPES, TrainingRecipe, TrainingRun, run_demo


def test_the_demo_streams_a_line_per_recipe_and_names_its_bars(capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[str] = []
    standard = RECIPES[0]

    def second(model: nn.Module, data: Dataset[Any], run: TrainingRun) -> object:
        lines.append(f"training second ({run.desc})")
        return standard.train(model, data, run)

    recipes = (standard, TrainingRecipe("second", second, cost=3.0, grid_share=0.002))
    rows = run_demo(epochs=1, test_images=8, recipes=recipes, progress=True, log=lines.append)
    assert [row.name for row in rows] == ["standard", "second"]
    assert lines[0].startswith("Training 2 SmallCNNs for 1 epoch on 1438 digits")
    assert lines[1].startswith("train standard: first epoch done; about ") and " left" in lines[1]
    assert lines[2].startswith("[1/2] standard: natural ") and "grid " in lines[2] and "left" in lines[2]
    assert lines[3] == "training second (train second)"  # the first line came before the second model
    assert lines[4].startswith("[2/2] second: natural ") and "left" not in lines[4]
    assert len(lines) == 5
    bars = capsys.readouterr().err
    for name in ("train standard", "natural standard", "grid standard", "worst-of-10 second"):
        assert name in bars


def test_without_progress_the_lines_still_stream_without_estimates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines: list[str] = []
    run_demo(epochs=1, test_images=4, recipes=RECIPES[:1], progress=False, log=lines.append)
    assert len(lines) == 2 and lines[1].startswith("[1/1] standard: natural ") and "left" not in lines[1]
    assert capsys.readouterr().err == ""
