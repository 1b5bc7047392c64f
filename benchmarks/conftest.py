"""Benchmark helpers: timing of the bare forward passes, metadata, the printed ratio table."""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

ROWS: list[tuple[str, str, str]] = []


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, rounds: int = 5, warmup: int = 1) -> float:
    """Fastest wall time of ``fn`` over ``rounds`` runs, CUDA-synchronised (robust to a loaded machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def record(name: str, measured: str, value: str) -> None:
    """Add a row to the table printed at the end of the session."""
    ROWS.append((name, measured, value))


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_configure(config: pytest.Config) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    ).stdout.strip()
    config._advspatial_meta = {  # type: ignore[attr-defined]
        "commit": commit or "unknown",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
    }


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, object]) -> None:
    machine_info["advspatial"] = config._advspatial_meta  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if not ROWS:
        return
    meta = config._advspatial_meta
    terminalreporter.write_line("")
    terminalreporter.write_line(
        f"advspatial benchmarks (commit {meta['commit']}, torch {meta['torch']}, "
        f"{meta['threads']} threads, {meta['device']})"
    )
    terminalreporter.write_line("| benchmark | measured | value |")
    terminalreporter.write_line("|---|---|---|")
    for row in ROWS:
        terminalreporter.write_line("| " + " | ".join(row) + " |")
