"""``advspatial benchmark --suite``: run the pytest-benchmark suite of a source checkout."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["add_arguments", "benchmark_command", "run_suite"]


def benchmark_command(folder: Path, out: Path | None = None, select: str | None = None) -> list[str]:
    """The pytest command line that runs the benchmarks in ``folder``.

    Example:
        >>> benchmark_command(Path("benchmarks"), select="worst")[-2:]
        ['-k', 'worst']
    """
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(folder),
        "--benchmark-enable",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    if out is not None:
        command.append(f"--benchmark-json={out / 'pytest-benchmark.json'}")
    if select:
        command += ["-k", select]
    return command


def run_suite(args: argparse.Namespace) -> int:
    """Run ``benchmarks/`` (peers, the minimum, memory, training step) and write latest.json / latest.md."""
    folder = Path(args.benchmarks)
    if not (folder / "conftest.py").is_file():
        print(f"advspatial benchmark: no benchmarks found in {folder} (run it from a source checkout)")
        return 2
    env = dict(os.environ)
    if args.out is not None:
        env["ADVSPATIAL_BENCH_OUT"] = str(args.out)
        Path(args.out).mkdir(parents=True, exist_ok=True)
    root = folder.resolve().parent
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root / "src"), str(root), env.get("PYTHONPATH")]))
    out = Path(args.out) if args.out is not None else None
    return subprocess.run(benchmark_command(folder, out, args.select), env=env, check=False).returncode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--suite`` options of ``advspatial benchmark``."""
    parser.add_argument(
        "--suite",
        action="store_true",
        help="run the full benchmarks/ suite of a source checkout with pytest-benchmark (peers, the "
        "minimum of the exact grid, memory, training step); writes latest.json and latest.md",
    )
    parser.add_argument("--benchmarks", default="benchmarks", help="with --suite: folder of the suite")
    parser.add_argument("--out", default=None, help="with --suite: folder for latest.json and latest.md")
    parser.add_argument(
        "-k",
        dest="select",
        default=None,
        help="with --suite: pytest -k expression; without: cases whose name contains it",
    )
