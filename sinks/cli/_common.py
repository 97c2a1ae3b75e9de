"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse

from sinks.io import parse_rename


def add_rename(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rename",
        action="append",
        metavar="OLD=NEW",
        default=[],
        help="rename an input column to its standard name (repeatable), e.g. --rename DBH=dbh_cm",
    )


def add_crs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--crs", metavar="CRS", help="CRS of x/y columns in a CSV input, e.g. EPSG:32648"
    )


def renames(args: argparse.Namespace) -> dict[str, str]:
    return parse_rename(args.rename)


def echo(message: str = "") -> None:
    """Print a line of a command's summary (stdout)."""
    print(message, flush=True)
