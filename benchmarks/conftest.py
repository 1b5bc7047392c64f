"""Benchmark helpers: timing of the bare forward passes, metadata, the printed ratio table."""

from __future__ import annotations

import json
import os
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


def paired_best_seconds(
    first: Callable[[], object], second: Callable[[], object], device: torch.device, rounds: int = 5
) -> tuple[float, float]:
    """Fastest wall times of ``first`` and ``second``, timed alternately (after one warm-up each) so
    that a change in the machine's speed during the run affects both sides alike."""
    first()
    second()
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for side, fn in enumerate((first, second)):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            best[side] = min(best[side], time.perf_counter() - start)
    return best[0], best[1]


def record(name: str, measured: str, value: str) -> None:
    """Add a row to the table printed at the end of the session."""
    ROWS.append((name, measured, value))


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_configure(config: pytest.Config) -> None:
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    ).stdout.strip()
    config._advspatial_meta = {  # type: ignore[attr-defined]
        "commit": commit or "unknown",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
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
    write_results(meta, Path(os.environ.get("ADVSPATIAL_BENCH_OUT", Path(__file__).parent / "results")))


def markdown_table(meta: dict[str, object]) -> str:
    """The recorded rows as a Markdown table headed by the run's metadata."""
    lines = [
        f"advspatial benchmarks (commit {meta['commit']}, torch {meta['torch']}, "
        f"{meta['threads']} threads, {meta['device']})",
        "",
        "| benchmark | measured | value |",
        "|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in ROWS]
    return "\n".join(lines) + "\n"


def write_results(meta: dict[str, object], folder: Path) -> None:
    """Write ``latest.json`` (metadata and rows) and ``latest.md`` (the table) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"benchmark": name, "measured": measured, "value": value} for name, measured, value in ROWS]
    (folder / "latest.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (folder / "latest.md").write_text(markdown_table(meta))


@pytest.fixture(scope="session")
def digits_models() -> dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor]]:
    """(a) a SmallCNN trained 8 epochs the standard way and (b) 12 epochs with uniform random
    roto-translations in +-30 degrees, +-3 px; each with the 359 digits test images and labels."""
    from advspatial import RotoTranslationBox, roto_translate
    from advspatial.data import load_digits_28
    from advspatial.models import SmallCNN
    from advspatial.training import fit

    train, test = load_digits_28()
    images, labels = test.tensors
    box = RotoTranslationBox.of(30.0, 3.0)
    draws = torch.Generator().manual_seed(1)

    def augment(batch: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return roto_translate(batch, box.sample((batch.shape[0],), generator=draws))

    torch.manual_seed(0)
    standard = SmallCNN()
    fit(standard, train, epochs=8, seed=0)
    torch.manual_seed(0)
    augmented = SmallCNN()
    fit(augmented, train, epochs=12, seed=0, transform=augment)
    return {
        "standard": (standard.eval(), images, labels),
        "augmented": (augmented.eval(), images, labels),
    }


@pytest.fixture(scope="session")
def early_exit_models(
    request: pytest.FixtureRequest,
) -> dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor]]:
    """The trained digits CNNs of :func:`digits_models`; with ``ADVSPATIAL_BENCH_QUICK=1`` two untrained
    SmallCNNs on 16 random images instead (a smoke run: no training, meaningless accuracies)."""
    if os.environ.get("ADVSPATIAL_BENCH_QUICK") != "1":
        models: dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = request.getfixturevalue(
            "digits_models"
        )
        return models
    from advspatial.models import SmallCNN

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(16, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (16,), generator=generator)
    torch.manual_seed(0)
    return {name: (SmallCNN().eval(), images, labels) for name in ("standard", "augmented")}
