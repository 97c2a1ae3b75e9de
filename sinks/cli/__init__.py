"""The ``sinks`` command: a thin layer over the Python API.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to the function that runs it. Errors of the
:class:`sinks.errors.SinksError` family become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import sinks
from sinks.errors import SinksError

#: Subcommand modules in the order ``sinks --help`` lists them (the order of the workflow).
COMMANDS = ("demo", "stocks", "extract", "stack", "train", "map", "eligibility")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sinks",
        description=(
            "Machine-learning carbon-sink estimation: field plots -> carbon stocks -> covariates "
            "-> spatially validated model -> Cloud-Optimized GeoTIFF carbon map -> per-parcel "
            "eligibility report."
        ),
        epilog="Run 'sinks COMMAND --help' for the options of one step. Units: Mg C/ha, t CO2e, ha.",
    )
    parser.add_argument("--version", action="version", version=f"sinks {sinks.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        importlib.import_module(f"sinks.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 1
    try:
        args.func(args)
    except SinksError as exc:
        print(f"sinks {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"sinks {args.command}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
