"""``sinks stocks gedi``: registered by its pool module (being written)."""

from __future__ import annotations


def register(pools) -> None:
    pools.add_parser("gedi", help="(not yet available)")
