"""``advspatial evaluate --scale LOW HIGH --shear S``: the sweeps search the affine box; bad ranges exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.processes import run_cli as advspatial
from tests.test_cli_commands import workspace  # noqa: F401  (the fixture)

from advspatial.cli.main import main

BASE = ["--model", "user_models:make", "--weights", "weights.pt", "--image-folder", "images"]
IMAGES = ["--grayscale", "--resize", "28", "--batch-size", "4", "--landscape-images", "0", "--device", "cpu"]
SMALL = ["--grid-rotations", "3", "--grid-translations", "1", "--pgd-steps", "1", "--k", "3", "--no-progress"]


def test_evaluate_searches_the_affine_box(workspace: Path) -> None:  # noqa: F811
    result = advspatial(
        "evaluate",
        *BASE,
        *IMAGES,
        "--scale",
        "0.8",
        "1.2",
        "--shear",
        "10",
        "--output",
        "report",
        *SMALL,
        cwd=workspace,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((workspace / "report" / "report.json").read_text())
    space = report["attack_space"]
    assert space["scale"] == [0.8, 1.2] and space["shear"] == 10.0
    assert space["grid"] == [3, 1, 1, 3, 3, 3]
    assert report["results"]["grid"]["exhaustive_evaluations"] == 6 * 3 * 27
    for name in ("random", "worst_of_3", "grid", "first_order"):
        params = report["results"][name]["params"]
        assert all(len(p) == 6 for p in params), name
        assert all(0.8 - 1e-6 <= p[3] <= 1.2 + 1e-6 and abs(p[4]) <= 10 + 1e-4 for p in params), name
    assert all(len(p) == 3 for p in report["results"]["natural"]["params"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", "1.2", "0.8"], "--scale must be a (low, high) pair with low <= 1 <= high"),
        (["--scale", "0", "1.2"], "--scale must have finite positive bounds"),
        (["--shear", "70"], "--shear must be at most 60 degrees"),
        (["--shear", "-5"], "--shear must be finite and >= 0"),
        (["--shear", "5", "--grid-rotations", "3000", "--grid-translations", "11"], "11^2 x 1 x 3 x 3 ="),
    ],
)
def test_evaluate_rejects_bad_affine_ranges(
    workspace: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    """Checked before the model loads: exit status 2 and one line naming the option (in-process)."""
    monkeypatch.chdir(workspace)
    code = main(["evaluate", *BASE, *args, "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert len(captured.err.splitlines()) == 1 and message in captured.err, captured.err
    assert not (workspace / "advspatial-report").exists()
