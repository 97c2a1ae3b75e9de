"""Plausibility guards with units: catch unit slips in field data and impossible stocks.

Two kinds of guard, both driven by the data table ``plausible_ranges.csv`` (every bound with its
source and a confidence note; pass your own file with the same columns as ``table`` to override):

* **Input unit slips**, checked on the whole table before any long work (Monte Carlo, depth
  splines): a diameter in mm, heights in cm or dm, plot areas in m² or in 亩 (mu) given as ha,
  SOC in %, depths in m, fractions in %, bulk density in kg/m³. Each raises
  :class:`~sinks.errors.ImplausibleValueError` naming the file, the column, the rows, the values
  and the likely slip. They are table-level signals (a median, a maximum), so they never replace
  the per-row validity checks of the pools (and ``--drop-invalid`` does not drop a unit slip).
  The heuristic ones (medians) can be passed with ``allow_implausible=True``
  (``--allow-implausible``) for genuine extreme data; impossible values (beyond the physical
  maxima) cannot.
* **Output stocks** outside ``[0, maximum]``, with the maximum the pool's documented highest
  carbon density (:func:`max_stock_mg_ha`): an allometry off by x1000 or by its sign, a bad ``--e``.
  An error unless ``allow_implausible=True``.

Unit conversions used in the messages and checked by the property tests are here too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from sinks.errors import ImplausibleValueError, InputError
from sinks.io import HA_PER_MU, format_rows
from sinks.pools.tables import load_table

DEFAULT_TABLE = "plausible_ranges.csv"
RANGE_COLUMNS = ("quantity", "pool", "minimum", "maximum", "units", "likely_slip", "source", "confidence")
#: Pools whose stock bound is the one of another pool (GEDI footprints hold forest biomass).
POOL_ALIASES = {"gedi": "forest"}
#: Depth over which a soil or wetland stock is bounded when no depth is given (cm).
REFERENCE_DEPTH_CM = 100.0
#: t CO2e per t C: the ratio of molar masses 44/12.
CO2_PER_C = 44.0 / 12.0
OVERRIDE_HINT = "pass --allow-implausible (allow_implausible=True) if the values are real"


# ---- unit conversions -------------------------------------------------------------------------

def ha_from_mu(mu):
    """亩 (mu) -> ha (1 mu = 1/15 ha)."""
    return np.asarray(mu, dtype=float) * HA_PER_MU if np.ndim(mu) else float(mu) * HA_PER_MU


def mu_from_ha(ha):
    """ha -> 亩 (mu)."""
    return np.asarray(ha, dtype=float) / HA_PER_MU if np.ndim(ha) else float(ha) / HA_PER_MU


def co2e_from_carbon(carbon):
    """Mg C -> t CO2e (x 44/12)."""
    return np.asarray(carbon, dtype=float) * CO2_PER_C if np.ndim(carbon) else float(carbon) * CO2_PER_C


def carbon_from_co2e(co2e):
    """t CO2e -> Mg C (x 12/44)."""
    return np.asarray(co2e, dtype=float) / CO2_PER_C if np.ndim(co2e) else float(co2e) / CO2_PER_C


def g_kg_from_pct(pct):
    """mass % -> g/kg (x 10)."""
    return np.asarray(pct, dtype=float) * 10.0 if np.ndim(pct) else float(pct) * 10.0


def pct_from_g_kg(g_kg):
    """g/kg -> mass % (/ 10)."""
    return np.asarray(g_kg, dtype=float) / 10.0 if np.ndim(g_kg) else float(g_kg) / 10.0


def cm_from_m(m):
    """m -> cm (x 100)."""
    return np.asarray(m, dtype=float) * 100.0 if np.ndim(m) else float(m) * 100.0


def m_from_cm(cm):
    """cm -> m (/ 100)."""
    return np.asarray(cm, dtype=float) / 100.0 if np.ndim(cm) else float(cm) / 100.0


def cm_from_mm(mm):
    """mm -> cm (/ 10)."""
    return np.asarray(mm, dtype=float) / 10.0 if np.ndim(mm) else float(mm) / 10.0


# ---- the table ------------------------------------------------------------------------------------

def plausible_ranges(table: str | os.PathLike | pd.DataFrame | None = None) -> pd.DataFrame:
    """The plausible-range table: the shipped ``plausible_ranges.csv`` or the user's file/frame."""
    return load_table(table if table is not None else "", default=DEFAULT_TABLE, required=RANGE_COLUMNS)


def bound(quantity: str, pool: str, table=None) -> dict:
    """The row of ``quantity`` for ``pool`` as a dict (``minimum``/``maximum`` NaN when open)."""
    pool = POOL_ALIASES.get(pool, pool)
    ranges = plausible_ranges(table)
    row = ranges[(ranges["quantity"] == quantity) & (ranges["pool"] == pool)]
    if row.empty:
        where = DEFAULT_TABLE if table is None or isinstance(table, pd.DataFrame) else str(table)
        raise InputError(f"{where}: plausible-range table has no row for {quantity!r} of pool {pool!r}")
    out = row.iloc[0].to_dict()
    for key in ("minimum", "maximum"):
        out[key] = float(out[key]) if pd.notna(out[key]) else float("nan")
    return out


def max_stock_mg_ha(pool: str, table=None, *, depth_cm: float | None = None) -> tuple[float, str]:
    """Documented maximum carbon stock density (Mg C/ha) of ``pool`` and its source text.

    ``pool``: ``"forest"`` (and ``"gedi"``, which maps to forest), ``"soil"`` or ``"wetland"``.
    Soil and wetland bounds are per cm of depth, multiplied by ``depth_cm`` (default: the 100 cm
    reference depth).
    """
    name = POOL_ALIASES.get(pool, pool)
    if name == "forest":
        row = bound("carbon_stock", name, table)
        return row["maximum"], str(row["source"])
    if name in ("soil", "wetland"):
        row = bound("carbon_stock_per_cm", name, table)
        depth = REFERENCE_DEPTH_CM if depth_cm is None else float(depth_cm)
        return row["maximum"] * depth, f"{row['maximum']:g} Mg C/ha per cm x {depth:g} cm: {row['source']}"
    raise InputError(f"no plausible stock bound for pool {pool!r}; use forest, gedi, soil or wetland")


# ---- helpers --------------------------------------------------------------------------------------

def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)


def _values(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _short(source: str, limit: int = 140) -> str:
    """The citation part of a source text (before its first parenthesis), at most ``limit`` characters."""
    text = str(source).split(" (")[0]
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _fail(source, column: str, rows, values, problem: str, slip: str, *, hint: str = "",
          overridable: bool = True) -> None:
    rows = np.asarray(rows)
    where = f"row(s) {format_rows(rows)}" if rows.size else "all rows"
    message = (f"{source}: column {column}, {where}: {problem} (values {_values(np.asarray(values, float))}); "
               f"likely {slip}")
    if hint:
        message += f"; {hint}"
    if overridable:
        message += f"; or {OVERRIDE_HINT}"
    raise ImplausibleValueError(message)


#: Column-name hints of a unit or quantity other than the standard one, per standard column:
#: (pattern of the old name, likely slip) pairs.
_NAME_SLIPS = {
    "dbh_cm": [(r"mm\b|_mm|毫米", "dbh in mm (rename to dbh_mm, which sinks converts)"),
               (r"gbh|girth|circ|cbh|perim|胸围|周长", "girth (circumference) for diameter: dbh = girth / π")],
    "height_m": [(r"cm\b|_cm|dm\b|_dm|厘米|分米", "heights in cm or dm (convert to m)")],
    "area_ha": [(r"m2|m²|sqm|sq_m|平方米|mu\b|_mu|亩", "plot area in m² or 亩 (mu) (convert to ha: m² / 10,000; mu / 15)")],
    "soc_g_kg": [(r"pct|percent|perc\b|%|百分", "SOC in % (g/kg = % x 10)")],
    "top_cm": [(r"_m\b|\bm$|(?<![厘毫分])米$", "depths in m (cm = m x 100)")],
    "bottom_cm": [(r"_m\b|\bm$|(?<![厘毫分])米$", "depths in m (cm = m x 100)")],
    "fraction_carbon": [(r"pct|percent|%", "fraction_carbon in % (fraction = % / 100)")],
    "fraction_organic_matter": [(r"pct|percent|%|loi", "fraction_organic_matter in % (fraction = % / 100)")],
    "bulk_density_g_cm3": [(r"kg|t_m3|mg_m3", "bulk density in kg/m³ (g/cm3 = kg/m³ / 1000)")],
    "dry_bulk_density_g_cm3": [(r"kg", "dry bulk density in kg/m³ (g/cm3 = kg/m³ / 1000)")],
}


def check_rename_units(mapping: Mapping[str, str], source: str = "--rename") -> None:
    """Refuse ``--rename OLD=NEW`` that gives a unit-bearing name to a column of another unit
    (``SOC_pct=soc_g_kg``, ``DBH_mm=dbh_cm``, ``area_m2=area_ha``, ``depth_m=bottom_cm``)."""
    for old, new in mapping.items():
        for pattern, slip in _NAME_SLIPS.get(new, ()):
            if re.search(pattern, str(old).lower()):
                raise ImplausibleValueError(
                    f"{source}: --rename {old}={new}: the name {old!r} says another unit or quantity than {new}; "
                    f"likely {slip}. Convert the values (or rename the column so its name states what it really holds)")


# ---- forest ---------------------------------------------------------------------------------------

def check_tree_units(trees: pd.DataFrame, source: str = "trees", *, allow_implausible: bool = False,
                     table=None, dead=None) -> None:
    """Diameters in mm, heights in cm or dm: whole-table signals, before the per-row checks.

    dbh: any value above the maximum (1,500 cm) *and* a median above 100 cm, or a median above
    100 cm alone (heuristic, passable with ``allow_implausible``). Heights: a median above 60 m, or
    (impossible) most values above 130 m.
    """
    def median_slip(column: str, unit: str, describe, slip_and_hint) -> None:
        values = _numeric(trees, column)
        ok = np.isfinite(values) & (values > 0)
        if not ok.any():
            return
        limit = bound(column, "forest", table)["maximum"]
        median_limit = bound(f"{column}_median", "forest", table)["maximum"]
        median = float(np.median(values[ok]))
        if median <= median_limit:
            return
        over = np.flatnonzero(ok & (values > limit))
        impossible = over.size > 0
        if allow_implausible and not impossible:
            return
        rows = over if impossible else np.flatnonzero(ok & (values > median_limit))
        slip, hint = slip_and_hint(median)
        _fail(source, column, rows, values[rows],
              f"median {describe} {median:.4g} {unit} is above {median_limit:g} {unit}"
              + (f" and {over.size} value(s) exceed the largest known ({limit:g} {unit})" if impossible else ""),
              slip, hint=hint, overridable=not impossible)

    if "dbh_cm" in trees.columns:
        median_slip("dbh_cm", "cm", "diameter",
                    lambda median: ("dbh in mm", "divide by 10, or name the column dbh_mm (sinks converts it)"))
    if "height_m" in trees.columns:
        median_slip("height_m", "m", "height (the tallest tree known is ~116 m)",
                    lambda median: ("heights in cm", "divide by 100") if median > 500
                    else ("heights in dm", "divide by 10"))
    if {"dbh_cm", "height_m"} <= set(trees.columns) and not allow_implausible:
        # young plantations' 6-11 cm stems in mm read 60-110 "cm", under the median bound above,
        # but 7 m tall: a slenderness no stand has
        dbh, height = _numeric(trees, "dbh_cm"), _numeric(trees, "height_m")
        both = np.isfinite(dbh) & np.isfinite(height) & (dbh > 0) & (height > 0)
        if dead is not None:  # snags and broken tops are short for their diameter
            both &= ~np.asarray(dead, dtype=bool)
        minimum = bound("slenderness_median", "forest", table)["minimum"]
        if both.sum() >= 3:
            slenderness = 100 * height[both] / dbh[both]
            median = float(np.median(slenderness))
            if median < minimum:
                rows = np.flatnonzero(both)[slenderness < minimum]
                _fail(source, "dbh_cm", rows, dbh[rows],
                      f"the median height-to-diameter ratio of the {int(both.sum())} trees with both is {median:.3g} "
                      f"(height and diameter in one unit), below {minimum:g}: trees far stouter than any stand",
                      "dbh in mm", hint="divide by 10, or name the column dbh_mm (sinks converts it)")


def check_predicted_heights(height_m: np.ndarray, dbh_cm: np.ndarray, rows: np.ndarray, model, source: str,
                            table=None) -> None:
    """Refuse heights a height-diameter model predicts above the tallest tree known (the ``height_m``
    maximum, 130 m), or not at all: a height sample in another unit (heights in dm) or a model used
    far beyond its sample. Always refused, as measured heights above it are. (Below breast height
    a model extrapolating to saplings is only crude, and is not refused.)"""
    limit = bound("height_m", "forest", table)
    bad = ~np.isfinite(height_m) | (height_m > limit["maximum"])
    if bad.any():
        at = np.flatnonzero(bad)
        _fail(source, "height_m", np.asarray(rows)[at], height_m[at],
              f"the height model ({model.method}, {model.source}) predicts heights above {limit['maximum']:g} m "
              f"(or none) for trees of dbh {_values(dbh_cm[at])} cm",
              "a height sample in another unit (heights in dm or cm, diameters in mm) or a model used far beyond "
              "its sample's diameters", hint="check the height sample's units", overridable=False)


def check_plot_area(plots: pd.DataFrame, source: str = "plots", *, n_trees=None,
                    allow_implausible: bool = False, table=None) -> None:
    """Plot areas in m² or in 亩 (mu) given as ha.

    Refused: any ``area_ha`` above the largest forest plots (150 ha) - likely m²; and, with
    ``n_trees`` (trees per plot, aligned with ``plots``), a median below 1 stem/ha over plots with
    trees (m²), or areas that are all whole numbers 1-15 with a median below 100 stems/ha (mu).
    The stem-density signals are heuristics (passable with ``allow_implausible``).
    """
    if "area_ha" not in plots.columns:
        return
    area = _numeric(plots, "area_ha")
    ok = np.isfinite(area) & (area > 0)
    limit = bound("area_ha", "forest", table)
    over = np.flatnonzero(ok & (area > limit["maximum"]))
    if over.size:
        _fail(source, "area_ha", over, area[over],
              f"plot area above {limit['maximum']:g} ha, larger than the largest forest plots", "plot area in m²",
              hint="divide m² by 10,000 to get ha", overridable=False)
    if n_trees is None or allow_implausible:
        return
    n = np.asarray(n_trees, dtype=float)
    with_trees = ok & (n > 0)
    if not with_trees.any():
        return
    stems = n[with_trees] / area[with_trees]
    median = float(np.median(stems))
    m2_limit = bound("stems_ha_median", "forest", table)["minimum"]
    rows = np.flatnonzero(with_trees)
    if median < m2_limit:
        _fail(source, "area_ha", rows, area[rows],
              f"median stem density {median:.3g} stems/ha is below {m2_limit:g} stems/ha", "plot area in m²",
              hint="divide m² by 10,000 to get ha")
    large_limit = bound("stems_ha_median_large_area", "forest", table)["minimum"]
    if area[with_trees].min() >= 100 and median < large_limit:
        _fail(source, "area_ha", rows, area[rows],
              f"every plot is 100 ha or larger, with a median of {median:.3g} stems/ha (below {large_limit:g})",
              "plot area in m²", hint="divide m² by 10,000 to get ha")
    mu_limit = bound("stems_ha_median_integer_area", "forest", table)["minimum"]
    whole = area[with_trees]
    if (np.all(np.isclose(whole, np.round(whole))) and whole.min() >= 1 and whole.max() <= 15
            and median < mu_limit):
        _fail(source, "area_ha", rows, area[rows],
              f"areas are whole numbers with a median of {median:.3g} stems/ha (below {mu_limit:g})",
              "areas in 亩 (mu) given as ha", hint=f"1 mu = 1/15 ha = {HA_PER_MU:.4f} ha: multiply by 1/15")


def check_tree_biomass(dbh_cm, agb_mg, source: str = "trees", *, tree_ids=None, allow_implausible: bool = False,
                       table=None) -> None:
    """Refuse per-tree AGB that most live trees could not have: less than the wood of the trunk
    below breast height (a cylinder of diameter D and 1.3 m at the lightest wood density).

    Catches an allometry or a stress index E off by a large factor towards zero (a bad ``--e``);
    stocks too high or negative are caught on the plot stocks (:func:`check_stocks`).
    """
    if allow_implausible:
        return
    dbh = np.asarray(dbh_cm, dtype=float)
    agb = np.asarray(agb_mg, dtype=float)
    live = np.isfinite(dbh) & (dbh > 0) & np.isfinite(agb) & (agb > 0)
    if not live.any():
        return
    rho = bound("tree_agb_trunk_base", "forest", table)["minimum"]
    # pi/4 D^2 (m2) x 1.3 m x rho (g/cm3 = Mg/m3) -> Mg
    floor = np.pi / 4.0 * (dbh / 100.0) ** 2 * 1.3 * rho
    low = live & (agb < floor)
    if low.sum() > 0.5 * live.sum():
        rows = np.flatnonzero(low)
        names = (", ".join(map(str, np.asarray(tree_ids, dtype=object)[rows][:10])) if tree_ids is not None
                 else format_rows(rows))
        raise ImplausibleValueError(
            f"{source}: agb_mg: {rows.size} of {int(live.sum())} live trees get less above-ground biomass than "
            f"the trunk below breast height could hold (a 1.3 m cylinder of diameter D at {rho:g} g/cm3), e.g. "
            f"tree(s) {names} (values {_values(agb[rows])} Mg); likely "
            f"{bound('tree_agb_trunk_base', 'forest', table)['likely_slip']}; check the equation, E and units, "
            f"or {OVERRIDE_HINT}")


# ---- soil and wetland ---------------------------------------------------------------------------

def _check_depth_units(frame: pd.DataFrame, source: str, pool: str, table) -> None:
    if "bottom_cm" not in frame.columns:
        return
    bottom = _numeric(frame, "bottom_cm")
    ok = np.isfinite(bottom)
    if not ok.any():
        return
    limit = bound("bottom_cm_max", pool, table)["minimum"]
    deepest = float(bottom[ok].max())
    if 0 < deepest <= limit:
        rows = np.flatnonzero(ok)
        _fail(source, "bottom_cm", rows, bottom[rows],
              f"the deepest bottom is {deepest:.4g} cm (at most {limit:g} cm in the whole table)",
              "depths in m", hint="multiply top_cm and bottom_cm by 100", overridable=False)


def _check_density_units(frame: pd.DataFrame, column: str, source: str, pool: str, table) -> None:
    if column not in frame.columns:
        return
    values = _numeric(frame, column)
    limit = bound(column, pool, table)
    ok = np.isfinite(values)
    # kg/m3 reads 10-2,650; only values far beyond the physical maximum name the slip (the per-row
    # checks refuse the rest as above the maximum)
    over = np.flatnonzero(ok & (values > 10 * limit["maximum"]))
    if over.size:
        _fail(source, column, over, values[over], f"above {limit['maximum']:g} g/cm3, the density of quartz",
              f"{column.replace('_g_cm3', '')} in kg/m³", hint="divide kg/m³ by 1000 to get g/cm3",
              overridable=False)


def check_soil_units(horizons: pd.DataFrame, source: str = "horizons", *, allow_implausible: bool = False,
                     table=None) -> None:
    """SOC in %, depths in m, bulk density in kg/m³ (whole-table signals, before the per-row checks).

    SOC in %: nine in ten values and the topsoils' median at most 10 g/kg in two or more profiles
    (or every value in one profile whose topsoil is below 3 g/kg) (heuristic, passable with
    ``allow_implausible``: carbon-poor dryland soils exist);
    SOC above 600 g/kg with a median above 100 is refused per row already (g/kg x 10 is not a
    slip users make). Depths in m: the deepest bottom of the table at most 5 cm; in mm: at 1,000 cm
    (10 m) or deeper (heuristic, passable with ``allow_implausible``). Coarse fragments as a
    fraction of 1: every value at most 1 %, three or more above 0, one of them between 0 and 1
    (heuristic, passable with ``allow_implausible``).
    """
    _check_depth_units(horizons, source, "soil", table)
    _check_density_units(horizons, "bulk_density_g_cm3", source, "soil", table)
    if allow_implausible:
        return
    _check_mm_depths(horizons, source, "soil", table)
    _check_fraction_coarse_fragments(horizons, source, table)
    if {"soc_g_kg", "bulk_density_g_cm3"} <= set(horizons.columns):
        soc = _numeric(horizons, "soc_g_kg")
        if not (soc > bound("soc_g_kg", "soil", table)["maximum"]).any():  # refused per row, as such
            _check_carbon_at_mineral_density(source, "soc_g_kg", soc, soc / 1000,
                                             _numeric(horizons, "bulk_density_g_cm3"), "soil", table,
                                             rows_are="horizon(s)", slip="SOC 10 x too high (a unit slip)",
                                             hint="SOC in g/kg = % x 10")
    if "soc_g_kg" not in horizons.columns or "profile_id" not in horizons.columns:
        return
    soc = _numeric(horizons, "soc_g_kg")
    ok = np.isfinite(soc)
    table_max = bound("soc_g_kg_table_max", "soil", table)["maximum"]
    # nine in ten values at most 10 g/kg: one organic topsoil of 15 % must not hide a table in % (it did)
    if not ok.any() or np.mean(soc[ok] <= table_max) < 0.9:
        return
    frame = pd.DataFrame({"id": horizons["profile_id"].to_numpy(), "soc": soc,
                          "top": _numeric(horizons, "top_cm") if "top_cm" in horizons else 0.0})[ok]
    top = frame.sort_values("top", kind="stable").groupby("id", sort=False).head(1)
    limit = bound("soc_g_kg_topsoil_median", "soil", table)["minimum"]
    median = float(top["soc"].median())
    if (top["id"].nunique() >= 2 and median <= table_max) or (soc[ok].max() <= table_max and median < limit):
        rows = np.flatnonzero(ok)
        _fail(source, "soc_g_kg", rows, soc[rows],
              f"{np.mean(soc[ok] <= table_max):.0%} of the SOC values of {top['id'].nunique()} profile(s) are at "
              f"most {table_max:g} g/kg, and so is the topsoils' median ({median:.3g})",
              "SOC in %", hint="multiply % by 10 to get g/kg")


def _check_mm_depths(frame: pd.DataFrame, source: str, pool: str, table) -> None:
    """Depths in mm: the table's deepest bottom at ``bottom_cm_deepest`` or below (heuristic,
    plausible_ranges.csv; passable with ``allow_implausible``)."""
    bottom = _numeric(frame, "bottom_cm") if "bottom_cm" in frame.columns else np.zeros(0)
    deepest_limit = bound("bottom_cm_deepest", pool, table)["maximum"]
    if np.isfinite(bottom).any() and np.nanmax(bottom) >= deepest_limit:
        rows = np.flatnonzero(bottom >= deepest_limit)
        _fail(source, "bottom_cm", rows, bottom[rows], f"the deepest bottom is {np.nanmax(bottom):.4g} cm, "
              f"{deepest_limit:g} cm or more", "depths in mm", hint="divide top_cm and bottom_cm (mm) by 10")


def _check_fraction_coarse_fragments(horizons: pd.DataFrame, source: str, table) -> None:
    """Coarse fragments given as a fraction of 1 (0.25 for 25 %): every value at most 1, three or more
    non-zero, one of them strictly between 0 and 1 (plausible_ranges.csv coarse_fragments_pct_table_max)."""
    if "coarse_fragments_pct" not in horizons.columns:
        return
    cf = _numeric(horizons, "coarse_fragments_pct")
    limit = bound("coarse_fragments_pct_table_max", "soil", table)["maximum"]
    # the table, and each profile of it: one profile entered as fractions among others in % (its
    # 0.5 for 50 % counted as 0.5 %) is the same slip
    groups = [np.arange(len(cf))]
    if "profile_id" in horizons.columns:
        groups += list(horizons.groupby("profile_id", sort=False).indices.values())  # row positions
    for members in groups:
        part = cf[members]
        given = part[np.isfinite(part)]
        nonzero = given[given > 0]
        if given.size and given.max() <= limit and nonzero.size >= 3 and (nonzero < 1).any():
            rows = members[np.isfinite(part) & (part > 0)]
            whole = len(members) == len(cf)
            _fail(source, "coarse_fragments_pct", rows, cf[rows],
                  f"every coarse-fragment value {'' if whole else 'of profile ' + str(horizons['profile_id'].iloc[members[0]]) + ' '}"
                  f"is at most {limit:g} % ({nonzero.size} of them above 0)",
                  "coarse fragments as a fraction of 1", hint="multiply the fractions by 100 to get volume %")


def check_wetland_units(intervals: pd.DataFrame, source: str = "intervals", *, allow_implausible: bool = False,
                        table=None) -> None:
    """Fractions in % (half or more of the values above 1), depths in m, dry bulk density in
    kg/m³ (before the per-row checks, which still refuse a single fraction above 1); depths in mm,
    a deepest bottom of 1,000 cm or more (heuristic, passable with ``allow_implausible``)."""
    _check_depth_units(intervals, source, "wetland", table)
    _check_density_units(intervals, "dry_bulk_density_g_cm3", source, "wetland", table)
    if not allow_implausible:
        _check_mm_depths(intervals, source, "wetland", table)
    for column in ("fraction_carbon", "fraction_organic_matter"):
        if column not in intervals.columns:
            continue
        values = _numeric(intervals, column)
        given = np.isfinite(values)
        over = np.flatnonzero(given & (values > 1) & (values <= 100))
        # a table-level signal: most values above 1 (a single one is a per-row error)
        if over.size and over.size >= 0.5 * given.sum():
            _fail(source, column, over, values[over], f"{over.size} of {int(given.sum())} fractions are above 1",
                  f"{column} in %", hint="divide % by 100", overridable=False)
    if {"fraction_carbon", "dry_bulk_density_g_cm3"} <= set(intervals.columns) and not allow_implausible:
        fc = _numeric(intervals, "fraction_carbon")
        if not (fc > 1).any():  # fractions above 1 are refused per row, as such
            _check_carbon_at_mineral_density(source, "fraction_carbon", fc, fc, _numeric(intervals, "dry_bulk_density_g_cm3"),
                                             "wetland", table, rows_are="interval(s)", slip="fraction_carbon in %",
                                             hint="divide % by 100")


#: Dense rows a table needs before its share of carbon-rich dense rows reads as a unit (a heuristic:
#: one or two such rows, a peat-mineral transition or an andic topsoil, are samples of their own).
MIN_DENSE_ROWS = 3


def _check_carbon_at_mineral_density(source: str, column: str, values: np.ndarray, carbon: np.ndarray,
                                     density: np.ndarray, pool: str, table, *, rows_are: str, slip: str,
                                     hint: str) -> None:
    """Carbon of organic material at a mineral soil's or sediment's density, which none has: organic
    matter is light (plausible_ranges.csv ``fraction_carbon_at_mineral_density``, the ideal mixing
    model). ``carbon`` is the mass fraction of carbon of each row, ``values`` the column as given.
    A table-level signal (a unit shifts every row, so most dense rows read high, and at least
    :data:`MIN_DENSE_ROWS` of them: one such row among many may be a sample of its own, a
    peat-mineral transition), and a per-row one for a row far off the mixing curve
    (``fraction_carbon_at_mineral_density_row``)."""
    limit = bound("fraction_carbon_at_mineral_density", pool, table)["maximum"]
    row_limit = bound("fraction_carbon_at_mineral_density_row", pool, table)["maximum"]
    density_limit = bound("dry_bulk_density_mineral", pool, table)["minimum"]
    dense = np.isfinite(carbon) & (density > density_limit)
    odd = np.flatnonzero(dense & (carbon > limit))
    far = np.flatnonzero(dense & (carbon > row_limit))
    if odd.size >= MIN_DENSE_ROWS and odd.size >= 0.5 * dense.sum():
        _fail(source, column, odd, values[odd],
              f"{odd.size} of the {int(dense.sum())} {rows_are} denser than {density_limit:g} g/cm3 hold more than "
              f"{limit:g} carbon, as no mineral soil or sediment does (organic-rich material is light)", slip, hint=hint)
    if far.size:
        _fail(source, column, far, values[far],
              f"carbon above {row_limit:g} of the mass, organic material, at a bulk density above "
              f"{density_limit:g} g/cm3, which organic material never has", f"{slip}, or a wrong bulk density",
              hint=hint)


# ---- output stocks --------------------------------------------------------------------------------

def check_stocks(values, pool: str, *, source: str = "stocks", column: str = "carbon_mg_ha", ids=None,
                 depth_cm: float | None = None, allow_implausible: bool = False, table=None,
                 what: str = "") -> None:
    """Refuse stock densities below 0 or above the pool's documented maximum (:func:`max_stock_mg_ha`).

    ``ids`` (plot, profile or core ids, aligned with ``values``) name the culprits; ``depth_cm``
    scales a soil or wetland bound (per cm) to the stock's depth; ``what`` adds the likely causes.
    Missing values are not checked here.
    """
    if allow_implausible:
        return
    values = np.asarray(values, dtype=float)
    maximum, cite = max_stock_mg_ha(pool, table, depth_cm=depth_cm)
    negative = np.flatnonzero(np.isfinite(values) & (values < 0))
    high = np.flatnonzero(np.isfinite(values) & (values > maximum))
    if not (negative.size or high.size):
        return
    bad = negative if negative.size else high
    names = (", ".join(map(str, np.asarray(ids, dtype=object)[bad][:10])) + (" ..." if bad.size > 10 else "")
             if ids is not None else format_rows(bad))
    label = "id(s)" if ids is not None else "row(s)"
    if negative.size:
        problem = f"negative stock in {label} {names}"
    else:
        problem = f"stock above the documented maximum of {maximum:g} Mg C/ha ({_short(cite)}) in {label} {names}"
    causes = what or bound("carbon_stock" if POOL_ALIASES.get(pool, pool) == "forest" else "carbon_stock_per_cm",
                           pool, table)["likely_slip"]
    raise ImplausibleValueError(
        f"{source}: {column}: {problem} (values {_values(values[bad])}); likely {causes}; "
        f"check the units and equations, or {OVERRIDE_HINT}")


def describe_bounds(pools: Sequence[str] = ("forest", "soil", "wetland"), table=None) -> str:
    """One line per pool: its maximum stock and source (for docs and provenance)."""
    return "\n".join(f"{p}: {m:g} Mg C/ha ({s})" for p in pools for m, s in [max_stock_mg_ha(p, table)])
