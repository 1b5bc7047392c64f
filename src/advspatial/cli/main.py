"""Entry point of the ``advspatial`` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from advspatial import __version__
from advspatial.cli import benchmark, demo, evaluate
from advspatial.errors import AdvSpatialError

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="advspatial", description="Model-aware spatial robustness.")
    parser.add_argument("--version", action="version", version=f"advspatial {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    benchmark.add_parser(subparsers)
    demo.add_parser(subparsers)
    evaluate.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, with a message on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except AdvSpatialError as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"advspatial {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
