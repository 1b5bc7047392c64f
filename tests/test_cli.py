"""The advspatial command, driven as a user would."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "advspatial.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("advspatial ")
    result = run("--help")
    assert result.returncode == 0 and "demo" in result.stdout


def test_unknown_command_fails() -> None:
    result = run("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.slow
def test_quick_demo_prints_the_table() -> None:
    result = run("demo", "--quick", "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("| standard") or line.startswith("| worst")
    ]
    assert len(lines) == 2
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        natural, worst, grid = (float(c) for c in cells[1:4])
        assert 0.0 <= grid <= worst <= 100.0 and 0.0 <= natural <= 100.0
