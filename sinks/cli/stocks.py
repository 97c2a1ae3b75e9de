"""``sinks stocks forest|soil|wetland|gedi``: field data -> plot carbon stocks (Mg C/ha)."""

from __future__ import annotations

import importlib

POOLS = ("forest", "soil", "wetland", "gedi")


def add_allow_implausible(parser) -> None:
    """``--allow-implausible``: keep stocks outside the documented bounds (and heuristic unit checks)."""
    parser.add_argument("--allow-implausible", action="store_true",
                        help="accept stocks below 0 or above the pool's documented maximum, and values the "
                        "unit-slip heuristics flag (see docs: plausible_ranges.csv); impossible values are "
                        "still refused")


def register(sub) -> None:
    parser = sub.add_parser(
        "stocks",
        help="field data -> plot carbon stocks (Mg C/ha) with uncertainty",
        description="Turn field data into the plot table of carbon stocks (Mg C/ha): forest tree "
        "lists or stand volumes, soil horizons, wetland cores, or GEDI L4A footprints.",
    )
    pools = parser.add_subparsers(dest="pool", metavar="POOL", title="pools", required=True)
    for pool in POOLS:
        module = importlib.import_module(f"sinks.cli.stocks_{pool}")
        module.register(pools)
