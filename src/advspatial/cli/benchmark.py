"""``advspatial benchmark``: run the benchmark suite of a source checkout and write its tables."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["add_parser", "benchmark_command"]


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


def _run(args: argparse.Namespace) -> int:
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


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``advspatial benchmark``."""
    parser = subparsers.add_parser(
        "benchmark",
        help="run the benchmarks (search cost vs bare forward, the minimum and the peers)",
        description="Runs benchmarks/ with pytest-benchmark; writes latest.json (with commit, torch, "
        "device, threads) and latest.md into benchmarks/results or --out.",
    )
    parser.add_argument("--benchmarks", default="benchmarks", help="folder of the benchmark suite")
    parser.add_argument("--out", default=None, help="folder for latest.json and latest.md")
    parser.add_argument("-k", dest="select", default=None, help="pytest -k expression to run a subset")
    parser.set_defaults(handler=_run)
