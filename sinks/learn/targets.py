"""Targets derived from another column, named in a recipe's ``[target] derive``, and the checks
of a feature table's values that training and external validation share.

Each derivation lives with its science in :mod:`sinks.pools` (conversion factors in the pools'
parameter tables); this is only the registry a recipe can name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sinks.constants import NODATA_LIKE
from sinks.errors import InputError, ModelMismatchError, SpecError
from sinks.io import format_rows



def numeric_column(table: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """A column as floats; text that is not a number is an error naming the rows."""
    raw = table[column]
    values = pd.to_numeric(raw, errors="coerce")
    text = raw.notna() & values.isna()
    if text.any():
        bad = np.flatnonzero(text.to_numpy())
        examples = ", ".join(repr(v) for v in raw[text].astype(str).unique()[:3])
        raise InputError(f"{source}: column {column!r}: row(s) {format_rows(bad)} are not numbers "
                         f"({examples}); fix them or leave them empty to drop those rows")
    return values.to_numpy(dtype=np.float64)


def check_not_infinite(values: np.ndarray, what: str, source: str) -> None:
    """Refuse infinite target values, naming the rows (a missing one is dropped; inf is an error)."""
    if np.isinf(values).any():
        raise InputError(f"{source}: {what}: row(s) {format_rows(np.flatnonzero(np.isinf(values)))} "
                         "are infinite; fix them or leave them empty to drop those rows")


def feature_matrix(table: pd.DataFrame, names: list[str], source: str) -> np.ndarray:
    """The feature columns as a float matrix (rows x ``names``; NaN where empty). Refused, naming the
    rows and columns: text, infinite values, and values equal to a raster nodata value
    (:data:`NODATA_LIKE`), which a model would take as real covariates."""
    X = np.column_stack([numeric_column(table, c, source) for c in names]) if names else np.zeros((len(table), 0))
    infinite = np.isinf(X)
    if infinite.any():
        columns = [c for c, bad in zip(names, infinite.any(axis=0)) if bad]
        raise InputError(f"{source}: {int(infinite.any(axis=1).sum())} row(s) ({format_rows(np.flatnonzero(infinite.any(axis=1)))}) "
                         f"have infinite values in feature column(s) {', '.join(columns)}; "
                         "check the feature spec's expressions (a division by zero?)")
    nodata = np.isin(X, NODATA_LIKE)
    if nodata.any():
        j = int(np.flatnonzero(nodata.any(axis=0))[0])
        rows = np.flatnonzero(nodata[:, j])
        raise InputError(f"{source}: feature column {names[j]!r}: row(s) {format_rows(rows)} hold {X[rows[0], j]:g}, "
                         "a raster nodata value that was not masked; leave those cells empty (the rows are then "
                         "dropped and counted) or extract again with the source's nodata set in the feature spec")
    return X


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


def observed_target(table: pd.DataFrame, column: str, derive: str | None, origin: str | None, source: str,
                    of: str) -> tuple[np.ndarray, str]:
    """The observed target of each row and how it was found, one rule for training and external
    validation: derived from ``origin`` by ``derive`` when the recipe says so and the column is
    there, else the ``column`` itself. A table holding both the target column and the column it
    is derived from, with values that disagree, is refused (which would a model be scored on?).
    ``of`` names the recipe or bundle in messages."""
    has_column = column in table.columns
    if derive and origin and origin in table.columns:
        numeric_column(table, origin, source)
        values = np.asarray(derive_target(table, derive, origin), dtype=np.float64)
        if has_column:
            given = numeric_column(table, column, source)
            both = np.isfinite(given) & np.isfinite(values)
            differ = both & ~np.isclose(given, values, rtol=1e-6, atol=1e-9)
            if differ.any():
                i = int(np.flatnonzero(differ)[0])
                raise InputError(
                    f"{source}: has both the target column {column!r} and {origin!r}, which {of} derives it from "
                    f"({derive}), and they disagree in {int(differ.sum())} row(s) ({format_rows(np.flatnonzero(differ))}; "
                    f"row {i}: {given[i]:g} given, {values[i]:g} derived); drop one of the two columns")
        return values, f"target {column!r} (derived from column {origin!r})"
    if has_column:
        return numeric_column(table, column, source), f"target column {column!r}"
    from sinks.validate import did_you_mean

    alternative = f" (or {origin!r} to derive it from)" if derive and origin else ""
    raise InputError(f"{source}: no target column {column!r}{alternative} ([target] column of {of})"
                     f"{did_you_mean(column, map(str, table.columns))}; found {', '.join(map(str, table.columns))}; "
                     f"use --rename OLD={column} if it has another name")


# ---- what a target is, and the values it can plausibly take -------------------------------------

#: Units (lower case, spaces removed) of a carbon stock density, and of a carbon concentration.
STOCK_UNITS = frozenset({"mgc/ha", "tc/ha", "mgcha-1", "tcha-1", "mgc·ha-1", "tc·ha-1", "mgcha⁻¹", "tcha⁻¹"})
CONCENTRATION_UNITS = frozenset({"gc/kg", "g/kg", "gckg-1", "gkg-1", "%", "percent", "%c", "mgc/g"})
#: Concentration units that name carbon (a bare % or g/kg may be anything: clay, cover, organic matter).
CARBON_CONCENTRATION_UNITS = frozenset({"gc/kg", "gckg-1", "%c", "mgc/g"})
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
    unit = (units or "").lower().replace(" ", "")
    if quantity == "concentration" and (unit in CARBON_CONCENTRATION_UNITS or pools is not None):  # not 85 % cover
        from sinks.pools.soil import soil_parameter

        # soil_parameters.csv soc_g_kg_max: pure organic matter at the van Bemmelen factor, rounded up
        per_g_kg = 0.1 if unit in ("%", "percent", "%c") else 1.0
        limit = soil_parameter("soc_g_kg_max") * per_g_kg
        high = y > limit
        if high.any():
            raise ImplausibleValueError(
                f"{source}: {what}: row(s) {format_rows(rows[high])} exceed {limit:g}{shown} (highest "
                f"{y[high].max():g}), more carbon than pure organic matter holds (soil_parameters.csv "
                "soc_g_kg_max); a unit slip (mg/kg for g/kg, g/kg for %)?")
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


def check_extracted_with(table: pd.DataFrame, fingerprint: str, spec_name: str, source: str, of: str) -> None:
    """Refuse a feature table that ``sinks extract`` made with another spec than the one ``of`` (a
    recipe, a bundle) uses: ``table.attrs["spec_fingerprint"]`` (CSV comments or Parquet metadata)
    differs from ``fingerprint``. Same names, other definitions: a model of other features."""
    got = table.attrs.get("spec_fingerprint")
    if got and got != fingerprint:
        raise ModelMismatchError(
            f"{source}: was extracted with spec {table.attrs.get('spec', '?')!r} (fingerprint {got[:12]}), "
            f"which defines the features differently from spec {spec_name!r} of {of} "
            f"(fingerprint {fingerprint[:12]}); extract the plots again with that spec")
