"""``sinks stocks wetland``: registered by its pool module (being written)."""

from __future__ import annotations


def register(pools) -> None:
    pools.add_parser("wetland", help="(not yet available)")
