"""The advspatial command, driven as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from tests.processes import run_cli as run


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("advspatial ")
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "evaluate", "benchmark"):
        assert command in result.stdout


def test_unknown_command_fails() -> None:
    result = run("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.slow
def test_quick_demo_prints_the_table_and_writes_the_plots(tmp_path: Path) -> None:
    result = run("demo", "--quick", "--no-progress", "--output", "plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("| standard") or line.startswith("| worst")
    ]
    assert len(lines) == 3
    streamed = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split(":")[0] for line in streamed] == [
        "[1/3] standard",
        "[2/3] worst-of-10",
        "[3/3] worst-of-10 + KL regularizer",
    ]
    assert result.stdout.index(streamed[-1]) < result.stdout.index("| training |")
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        natural, random, worst, grid = (float(c) for c in cells[1:5])
        assert 0.0 <= grid <= worst <= 100.0 and 0.0 <= natural <= 100.0 and 0.0 <= random <= 100.0
        used, exhaustive = (int(n) for n in cells[6].split(" of "))
        assert exhaustive == 120 * 775 and 0 < used <= exhaustive
    standard_natural = float(lines[0].split("|")[2])
    assert standard_natural > 50.0, "4 epochs should give a working digits classifier"
    sizes = {
        "accuracy.png": (800, 400),
        "rotation_profile.png": (960, 400),
        "landscape_standard.png": (900, 900),
        "landscape_worst_of_10.png": (900, 900),
        "landscape_worst_of_10_kl_regularizer.png": (900, 900),
    }
    for name, size in sizes.items():
        with Image.open(tmp_path / "plots" / name) as image:
            assert image.format == "PNG" and image.size == size
