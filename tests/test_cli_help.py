"""What the commands tell a new user: help texts, ``--limit``'s subset, time estimates, round counts."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advspatial.cli.evaluate import open_dataset, stratified_indices
from advspatial.cli.main import build_parser, main


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width


def test_evaluate_help_is_plain_text_with_its_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help("evaluate", capsys)
    assert "``" not in text
    assert "(default 128)" in text and "(default ./advspatial-report)" in text
    assert "no arguments" in text  # how the --model factory is called
    assert "class-stratified" in text


@pytest.mark.parametrize("command", ["demo", "benchmark"])
def test_other_help_texts_are_plain_text(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "``" not in _help(command, capsys)


def test_stratified_indices_keep_every_class_in_proportion() -> None:
    labels = [0] * 50 + [1] * 30 + [2] * 20  # sorted, as an ImageFolder is
    picked = stratified_indices(labels, 10)
    assert picked == sorted(set(picked)) and len(picked) == 10
    assert [sum(labels[i] == c for i in picked) for c in range(3)] == [5, 3, 2]
    assert stratified_indices(labels, 10) == picked  # the same on every run
    assert stratified_indices(labels, 1000) == list(range(100))
    shuffled = np.random.default_rng(0).integers(0, 4, 200).tolist()
    counts = np.bincount([shuffled[i] for i in stratified_indices(shuffled, 40)], minlength=4)
    expected = np.bincount(shuffled, minlength=4) * 40 / 200
    assert np.all(np.abs(counts - expected) <= 1)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three classes of 4 tiny images each, in ImageFolder layout."""
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(4):
            pixels = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{index}.png")
    (tmp_path / "user_models.py").write_text(
        "import torch\n\n\ndef make():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))\n"
    )
    return tmp_path


def test_limit_takes_every_class(folder: Path) -> None:
    args = argparse.Namespace(
        image_folder=str(folder / "images"), dataset=None, resize=None, grayscale=False, limit=3
    )
    dataset, info = open_dataset(args)
    assert info["images"] == 3
    assert sorted(dataset[i][1] for i in range(3)) == [0, 1, 2]


def test_evaluate_prints_the_plan_and_a_time_estimate_after_each_pass(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    code = main(
        [
            "evaluate", "--model", "user_models:make", "--random-weights",
            "--image-folder", "images", "--grayscale",
            "--grid-rotations", "3", "--grid-translations", "3", "--pgd-steps", "1",
            "--landscape-images", "0", "--device", "cpu", "--output", "report",
        ]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "12 images, 6 passes" in err and "forward evaluations" in err
    for stage in ("natural", "random", "worst-of-10", "grid 3 x 3 x 3", "first-order (1 steps)"):
        assert f"{stage} done in " in err, err
    assert "rotation profile done in " in err and "; done" in err
    assert " left" in err
