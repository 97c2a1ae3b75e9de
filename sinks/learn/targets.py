"""Targets derived from another column, named in a recipe's ``[target] derive``.

Each derivation lives with its science in :mod:`sinks.pools` (conversion factors in the pools'
parameter tables); this is only the registry a recipe can name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sinks.errors import InputError, SpecError


def _soc_from_om(values: pd.Series) -> np.ndarray:
    from sinks.pools.soil import soc_g_kg_from_organic_matter_pct

    return soc_g_kg_from_organic_matter_pct(values.to_numpy(dtype=float))


DERIVATIONS = {"soc_g_kg_from_organic_matter_pct": _soc_from_om}


def derive_target(table: pd.DataFrame, name: str, source_column: str) -> np.ndarray:
    if name not in DERIVATIONS:
        raise SpecError(f"unknown target derivation {name!r}; available: {', '.join(DERIVATIONS)}")
    if source_column not in table.columns:
        raise InputError(f"feature table has no column {source_column!r} to derive the target from")
    return DERIVATIONS[name](pd.to_numeric(table[source_column], errors="coerce"))


# ---- what a target is, and the values it can plausibly take -------------------------------------

#: Units (lower case, spaces removed) of a carbon stock density, and of a carbon concentration.
STOCK_UNITS = frozenset({"mgc/ha", "tc/ha", "mgcha-1", "tcha-1", "mgc·ha-1", "tc·ha-1", "mgcha⁻¹", "tcha⁻¹"})
CONCENTRATION_UNITS = frozenset({"gc/kg", "g/kg", "gckg-1", "gkg-1", "%", "percent", "%c", "mgc/g"})
#: Target columns whose name says they are a stock density when the recipe gives no units.
STOCK_COLUMNS = frozenset({"carbon_mg_ha"})


def target_quantity(units: str, column: str) -> str | None:
    """``"stock"`` (Mg C/ha), ``"concentration"`` (g C/kg, %) or ``None`` (anything else)."""
    u = (units or "").lower().replace(" ", "")
    if u in STOCK_UNITS or (not u and column in STOCK_COLUMNS):
        return "stock"
    if u in CONCENTRATION_UNITS:
        return "concentration"
    return None


def plausible_maximum(pool: str) -> tuple[float, str] | None:
    """The pool's documented maximum stock density (Mg C/ha) and its source, or ``None``."""
    try:
        from sinks.pools.plausibility import max_stock_mg_ha
    except ImportError:  # pragma: no cover - the bounds table ships with sinks.pools
        return None
    try:
        return max_stock_mg_ha(pool)
    except (KeyError, ValueError):
        return None


def check_target_values(y: np.ndarray, rows: np.ndarray, *, what: str, source: str, units: str,
                        quantity: str | None, pools: np.ndarray | None) -> None:
    """Refuse negative carbon stocks or concentrations, and stocks above their pool's maximum.

    ``y`` are the finite target values, ``rows`` their 0-based row positions in the table, ``pools``
    the pool of each (the recipe's ``[target] pool`` or the table's ``pool`` column), or ``None``.
    """
    from sinks.errors import ImplausibleValueError
    from sinks.io import format_rows

    shown = f" {units}" if units else ""
    if quantity is not None:
        negative = y < 0
        if negative.any():
            raise ImplausibleValueError(
                f"{source}: {what}: row(s) {format_rows(rows[negative])} are negative (lowest "
                f"{y[negative].min():g}{shown}); a carbon {quantity} cannot be below 0: check the "
                "column, its sign or its conversion"
            )
    if quantity != "stock" or pools is None:
        return
    for pool in dict.fromkeys(pools):
        bound = plausible_maximum(pool) if isinstance(pool, str) else None
        if bound is None:
            continue
        value, reference = bound
        reference = reference.split(" (")[0]
        reference = reference if len(reference) <= 120 else reference[:117] + "..."
        high = (pools == pool) & (y > value)
        if high.any():
            raise ImplausibleValueError(
                f"{source}: {what}: row(s) {format_rows(rows[high])} exceed the plausible maximum "
                f"for {pool} carbon, {value:g} Mg C/ha ({reference}; highest {y[high].max():g}{shown}); "
                "a unit slip? kg C/ha given as Mg C/ha is x1000, g C/m2 is x100"
            )
