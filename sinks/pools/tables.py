"""Parameter tables: data files with a source for every value, overridable by the user.

Every shipped table lives in ``sinks/pools/data`` and has a ``source`` and a ``confidence``
column. A user passes their own file with the same columns to override a table.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from sinks.errors import InputError

DATA_PACKAGE = "sinks.pools.data"


def table_path(name: str) -> Path:
    """Path of a shipped parameter table by file name (e.g. ``"species_groups.csv"``)."""
    return Path(str(resources.files(DATA_PACKAGE).joinpath(name)))


def load_table(table: str | os.PathLike | pd.DataFrame, *, default: str, required=()) -> pd.DataFrame:
    """Load a parameter table: a DataFrame as given, a user's CSV path, or the shipped default.

    ``table`` may be ``None``-like (``""``) to take the shipped ``default``. The ``source``
    column is required, so that every value carries its citation.
    """
    if isinstance(table, pd.DataFrame):
        frame, where = table.copy(), "parameter table"
    else:
        path = Path(table) if table else table_path(default)
        if not path.exists():
            raise InputError(f"{path}: parameter table not found")
        frame, where = _read_csv(str(path)).copy(), str(path)
    missing = [c for c in ("source", *required) if c not in frame.columns]
    if missing:
        raise InputError(f"{where}: parameter table lacks column(s) {', '.join(missing)}")
    return frame


@lru_cache(maxsize=32)
def _read_csv(path: str) -> pd.DataFrame:
    return pd.read_csv(path, comment=None)


def scalar_parameter(default: str, name: str, table=None) -> float:
    """The ``value`` of row ``name`` in a name/value parameter table (``soil_parameters.csv``,
    ``wetland_parameters.csv``, ``gedi_parameters.csv``), or in the user's table of that layout."""
    params = load_table(table if table is not None else "", default=default, required=("name", "value"))
    row = params[params["name"] == name]
    if row.empty:
        raise InputError(f"{default if table is None else table}: parameter table has no {name!r} row")
    return float(row["value"].iloc[0])


def allometry_parameter(name: str, parameter: str) -> float:
    """A parameter of a shipped allometry (``allometry.csv``), e.g. ``("chave2014_eq4", "a")``."""
    table = load_table("", default="allometry.csv", required=("name", "parameter", "value"))
    row = table[(table["name"] == name) & (table["parameter"] == parameter)]
    if row.empty:
        raise InputError(f"allometry.csv has no parameter {parameter!r} for {name!r}")
    return float(row["value"].iloc[0])
