"""Entry point of the ``advspatial`` console script."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from advspatial import __version__
from advspatial.cli import benchmark, demo, evaluate
from advspatial.errors import AdvSpatialError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """A usage mistake ends with exit status 2 and one line on stderr (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand (their parsers are of the same class)."""
    parser: argparse.ArgumentParser = _Parser(
        prog="advspatial", description="Model-aware spatial robustness."
    )
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


def _drop_working_folder() -> None:
    """Undo ``python -m``'s working folder at the front of ``sys.path`` (the console script never adds it).

    A user's file named like a module the library imports later (``matplotlib.py``) must not replace it;
    ``advspatial evaluate`` still finds the factory's module there, searched last, during its import.
    """
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]


if __name__ == "__main__":
    _drop_working_folder()
    sys.exit(main())
