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
