"""Running this checkout's code in a fresh Python process, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def run_python(
    args: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python args`` with this checkout's sources first on ``PYTHONPATH`` (also when a relative
    ``PYTHONPATH`` would not resolve from ``cwd``), plus ``env``; output captured, never raises."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=cwd,
        env=environment,
    )


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The ``advspatial`` command with ``args``."""
    return run_python(["-m", "advspatial.cli.main", *args], cwd=cwd)
