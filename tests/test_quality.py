"""Project checks that run with the tests: lint, format, types, and the documentation build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", name, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **env},
    )


def test_ruff_lint() -> None:
    result = tool("ruff", "check", "src", "tests", "benchmarks", "examples")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = tool("ruff", "format", "--check", "src", "tests", "benchmarks", "examples")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    result = tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    if shutil.which("mkdocs") is None and tool("mkdocs", "--version").returncode != 0:
        pytest.fail("mkdocs is not installed: install the test extra, pip install -e '.[dev]'")
    # No -q: quiet mode hides warnings from --strict, which then passes whatever they say.
    result = tool("mkdocs", "build", "--strict", "-d", str(tmp_path / "site"), NO_MKDOCS_2_WARNING="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "strategies" / "index.html").read_text().count("WorstOfK") > 3
