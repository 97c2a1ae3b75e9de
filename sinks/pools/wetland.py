"""Wetland soil cores (depth intervals) -> organic carbon stock to a reference depth (Mg C/ha).

Per interval, carbon density (g C/cm3) = dry bulk density (g/cm3) x fraction carbon; where only
organic matter (loss on ignition) was measured, fraction carbon comes from a conversion in
``wetland_om_to_oc.csv`` (mangroves: Kauffman & Donato 2012, %OC = 0.415 %OM + 2.89). The stock
to the reference depth D (1 m by default) is ``100 x integral_0^D density dz`` (1 g/cm2 =
100 Mg/ha), with this explicit rule for what was not measured:

* a gap between measured intervals (also an interval lacking bulk density or carbon) is filled
  by linear interpolation of carbon density between the bottom of the interval above and the
  top of the interval below, i.e. it contributes ``gap x (d_above + d_below) / 2``;
* above the shallowest measured interval, its density is carried up to the surface;
* below the deepest measured interval, its density is carried down to D (the extrapolation
  the issue attributes to Sanderman et al. 2018), and the core is flagged ``extrapolated``.

Every core gets ``gap_filled_cm``, ``extrapolated_cm`` and a ``flag``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sinks.errors import InputError
from sinks.pools.depth import RowProblems, check_depth_intervals
from sinks.io import locate_by_id
from sinks.pools import plausibility
from sinks.pools.tables import load_table, scalar_parameter

INTERVAL_COLUMNS = ("core_id", "top_cm", "bottom_cm", "dry_bulk_density_g_cm3")
CARBON_COLUMNS = ("fraction_carbon", "fraction_organic_matter")
#: g C/cm2 -> Mg C/ha.
MG_HA_PER_G_CM2 = 100.0


def wetland_parameter(name: str, table=None) -> float:
    """A scalar from ``wetland_parameters.csv`` (or the user's table of the same columns)."""
    return scalar_parameter("wetland_parameters.csv", name, table)


def fraction_carbon_from_organic_matter(fraction_organic_matter, conversion: str = "kauffman_donato_2012",
                                        table=None) -> np.ndarray:
    """Fraction organic carbon (0-1) from fraction organic matter (0-1, loss on ignition).

    ``conversion`` names a row of ``wetland_om_to_oc.csv``: ``fc = a fom^2 + b fom + c``.
    """
    rows = load_table(table if table is not None else "", default="wetland_om_to_oc.csv",
                      required=("name", "a", "b", "c"))
    row = rows[rows["name"] == conversion]
    if row.empty:
        raise InputError(f"unknown organic matter conversion {conversion!r}; use one of "
                         + ", ".join(rows["name"].astype(str)))
    a, b, c = (float(row[k].iloc[0]) for k in ("a", "b", "c"))
    fom = np.asarray(fraction_organic_matter, dtype=float)
    return a * fom**2 + b * fom + c


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)


def converted_carbon(fraction_carbon, fraction_organic_matter, conversion: str) -> tuple[np.ndarray, np.ndarray]:
    """``(converted, outside)``: fraction carbon from organic matter where carbon was not measured,
    and where that conversion is outside its range.

    A conversion with an intercept (Kauffman & Donato's %OC = 0.415 %OM + 2.89) gives more carbon
    than there is organic matter below about 4.9 % OM, which cannot be (carbon is part of the
    organic matter): those intervals are ``outside``, carry no carbon, and count as not measured
    (gaps, filled by the module's rule from the core's other intervals). In the 1,453 Sanderman
    2018 mangrove cores, 184 of 717 converted intervals (59 cores) were so.
    """
    fc = np.asarray(fraction_carbon, dtype=float)
    fom = np.asarray(fraction_organic_matter, dtype=float)
    converted = fraction_carbon_from_organic_matter(fom, conversion)
    om_only = ~np.isfinite(fc) & np.isfinite(converted)
    outside = om_only & ((converted > fom) | (converted < 0))
    return np.where(om_only & ~outside, converted, np.nan), outside


def check_intervals(intervals: pd.DataFrame, *, source: str = "intervals", drop_invalid: bool = False,
                    conversion: str = "kauffman_donato_2012") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Find impossible interval rows; raise an :class:`InputError` naming them, or drop them.

    Invalid: non-numeric values; DBD <= 0 or above ``dry_bulk_density_max_g_cm3``; fractions
    outside 0-1; missing depths, zero or negative thickness, overlapping intervals of a core;
    and every row of a core with no carbon measure (no interval with both DBD and fraction
    carbon, or organic matter within the range of ``conversion``: :func:`converted_carbon`).
    Returns (kept rows, dropped rows with ``row`` and ``reason``).
    """
    missing = [c for c in INTERVAL_COLUMNS if c not in intervals.columns]
    if missing or not any(c in intervals.columns for c in CARBON_COLUMNS):
        need = missing + ([] if any(c in intervals.columns for c in CARBON_COLUMNS)
                          else ["fraction_carbon or fraction_organic_matter"])
        raise InputError(f"{source}: missing required column(s) {', '.join(need)}")
    problems = RowProblems()
    values = {c: _numeric(intervals, c) for c in ("dry_bulk_density_g_cm3", *CARBON_COLUMNS)}
    for column, v in values.items():
        if column in intervals.columns:
            problems.add(np.flatnonzero(intervals[column].notna().to_numpy() & ~np.isfinite(v)),
                         f"non-numeric {column}")
    dbd = values["dry_bulk_density_g_cm3"]
    dbd_max = wetland_parameter("dry_bulk_density_max_g_cm3")
    problems.add(np.flatnonzero(dbd <= 0), "dry_bulk_density_g_cm3 not positive")
    problems.add(np.flatnonzero(dbd > dbd_max), f"dry_bulk_density_g_cm3 above {dbd_max:g} g/cm3")
    for column in CARBON_COLUMNS:
        v = values[column]
        problems.add(np.flatnonzero((v < 0) | (v > 100)), f"{column} outside 0-1")
        problems.add(np.flatnonzero((v > 1) & (v <= 100)), f"{column} outside 0-1 (in %? divide by 100)")
    fc_max = wetland_parameter("fraction_carbon_max")
    fc = values["fraction_carbon"]
    problems.add(np.flatnonzero((fc > fc_max) & (fc <= 1)),
                 f"fraction_carbon above {fc_max:g}, more carbon than any organic matter holds (in %? divide by 100)")
    top, bottom = _numeric(intervals, "top_cm"), _numeric(intervals, "bottom_cm")
    valid_values = ~np.isin(np.arange(len(intervals)), list(problems.reasons))
    check_depth_intervals(intervals["core_id"], top, bottom, valid_values, problems)
    valid = ~np.isin(np.arange(len(intervals)), list(problems.reasons))
    carbon = (np.isfinite(values["fraction_carbon"]) | np.isfinite(values["fraction_organic_matter"])) & valid
    converted, outside = converted_carbon(values["fraction_carbon"], values["fraction_organic_matter"], conversion)
    usable = (np.isfinite(values["fraction_carbon"]) | np.isfinite(converted)) & valid
    cores = intervals["core_id"].to_numpy()

    def core_any(mask: np.ndarray) -> np.ndarray:
        return pd.Series(mask).groupby(cores).transform("any").to_numpy()

    no_carbon = ~core_any(carbon)  # rows already invalid keep their own reason (an overlap, say)
    problems.add(np.flatnonzero(no_carbon & valid),
                 "core has no carbon measure (no valid fraction_carbon or fraction_organic_matter)")
    unusable = ~no_carbon & ~core_any(usable & np.isfinite(dbd)) & valid
    below_range = unusable & core_any(outside & valid)
    problems.add(np.flatnonzero(below_range),
                 f"core's only carbon measures are organic matter below the range of the {conversion} "
                 "conversion (it gives more carbon than organic matter there): measure organic carbon or "
                 "choose a conversion through the origin (--conversion craft_1991)")
    problems.add(np.flatnonzero(unusable & ~below_range),
                 "core has no interval with both dry_bulk_density_g_cm3 and a carbon measure")
    return problems.resolve(intervals, source, drop_invalid)


def core_stock(top, bottom, density_g_cm3, reference_cm: float = 100.0) -> tuple[float, float, float]:
    """Stock (Mg C/ha) of one core from 0 to ``reference_cm`` by the module's gap rule.

    ``top``/``bottom`` in cm (non-overlapping), ``density_g_cm3`` carbon density per interval
    (NaN = not measured: treated as a gap). Returns ``(stock, gap_filled_cm,
    extrapolated_cm)``; the stock is NaN when no interval has a density.
    """
    u, v, d = (np.asarray(a, dtype=float) for a in (top, bottom, density_g_cm3))
    keep = np.isfinite(d) & np.isfinite(u) & np.isfinite(v)
    u, v, d = u[keep], v[keep], d[keep]
    if not len(d):
        return float("nan"), float("nan"), float("nan")
    order = np.argsort(u, kind="mergesort")
    u, v, d = u[order], v[order], d[order]
    total = 0.0
    gap_cm = 0.0
    # measured intervals, clipped to [0, reference]
    thick = np.clip(np.minimum(v, reference_cm) - np.maximum(u, 0.0), 0.0, None)
    total += float(np.sum(thick * d))
    # surface: carry the shallowest density up to 0
    surface = float(np.clip(min(u[0], reference_cm), 0.0, None))
    total += surface * d[0]
    gap_cm += surface
    # gaps between measured intervals: linear interpolation of density (trapezoid, clipped)
    for i in range(len(d) - 1):
        a, b = v[i], u[i + 1]
        lo, hi = max(a, 0.0), min(b, reference_cm)
        if hi <= lo:
            continue
        slope = (d[i + 1] - d[i]) / (b - a)
        at_lo, at_hi = d[i] + slope * (lo - a), d[i] + slope * (hi - a)
        total += (hi - lo) * (at_lo + at_hi) / 2
        gap_cm += hi - lo
    extrapolated = float(max(reference_cm - max(v[-1], 0.0), 0.0))
    total += extrapolated * d[-1]
    return total * MG_HA_PER_G_CM2, gap_cm, extrapolated


@dataclass
class WetlandResult:
    """Outputs of :func:`wetland_stocks`: the plot table, the per-interval table, dropped rows."""

    plots: pd.DataFrame
    intervals: pd.DataFrame
    dropped: pd.DataFrame


def wetland_stocks(
    intervals: pd.DataFrame,
    cores: pd.DataFrame | None = None,
    *,
    depth_cm: float | None = None,
    conversion: str = "kauffman_donato_2012",
    crs: str | None = None,
    drop_invalid: bool = False,
    source: str = "intervals",
    allow_implausible: bool = False,
) -> WetlandResult:
    """Core depth intervals (+ optional core table) -> plot table of stocks to ``depth_cm``.

    One row per ``core_id`` kept (first-appearance order) with ``carbon_mg_ha`` (to the
    reference depth), ``carbon_sd_mg_ha`` (NaN), ``pool="wetland"``, ``area_ha`` (NaN), ``year``
    and ``habitat`` (from ``cores`` or the intervals, where given), ``measured_depth_cm``,
    ``gap_filled_cm``, ``extrapolated_cm``, ``n_om_converted`` (intervals whose fraction carbon
    was converted from organic matter), ``n_om_below_range`` (organic-matter-only intervals below
    the conversion's range, :func:`converted_carbon`: treated as gaps), ``flag`` (``complete``, ``gaps_interpolated``,
    ``extrapolated`` or both joined by ``+``), ``method``; geometry from ``x``/``y`` + ``crs``.

    Plausibility guards (:mod:`sinks.pools.plausibility`): before the per-row checks, fractions
    in %, depths in m or mm (mm: unless ``allow_implausible``) and dry bulk density in kg/m³ raise
    :class:`~sinks.errors.ImplausibleValueError`; after, a stock below 0 or above the physical
    bound per cm times ``depth_cm`` raises unless ``allow_implausible``.
    """
    depth_cm = wetland_parameter("reference_depth_cm") if depth_cm is None else float(depth_cm)
    if not depth_cm > 0:
        raise InputError(f"reference depth must be positive, got {depth_cm:g} cm")
    plausibility.check_wetland_units(intervals, source, allow_implausible=allow_implausible)
    kept, dropped = check_intervals(intervals, source=source, drop_invalid=drop_invalid, conversion=conversion)
    table = kept.copy()
    fc = _numeric(table, "fraction_carbon")
    converted, outside = converted_carbon(fc, _numeric(table, "fraction_organic_matter"), conversion)
    use_om = np.isfinite(converted)
    table["fraction_carbon_used"] = np.where(use_om, converted, fc)
    table["carbon_source"] = np.where(use_om, f"om:{conversion}", np.where(
        np.isfinite(fc), "measured", np.where(outside, f"om_below_range:{conversion}", "missing")))
    table["carbon_density_g_cm3"] = _numeric(table, "dry_bulk_density_g_cm3") * table["fraction_carbon_used"]
    ids = pd.unique(table["core_id"])
    records = []
    for cid, group in table.groupby("core_id", sort=False):
        stock, gap, extra = core_stock(group["top_cm"].to_numpy(float), group["bottom_cm"].to_numpy(float),
                                       group["carbon_density_g_cm3"].to_numpy(float), depth_cm)
        measured = group.loc[group["carbon_density_g_cm3"].notna(), "bottom_cm"].astype(float).max()
        flags = [f for f, on in (("gaps_interpolated", gap > 0), ("extrapolated", extra > 0)) if on]
        records.append({"plot_id": cid, "carbon_mg_ha": stock, "measured_depth_cm": measured,
                        "gap_filled_cm": gap, "extrapolated_cm": extra,
                        "n_intervals": len(group),
                        "n_om_converted": int(group["carbon_source"].str.startswith("om:").sum()),
                        "n_om_below_range": int(group["carbon_source"].str.startswith("om_below_range:").sum()),
                        "flag": "+".join(flags) or "complete"})
    plots = pd.DataFrame.from_records(records, columns=["plot_id", "carbon_mg_ha", "measured_depth_cm",
                                                        "gap_filled_cm", "extrapolated_cm", "n_intervals",
                                                        "n_om_converted", "n_om_below_range", "flag"])
    plausibility.check_stocks(plots["carbon_mg_ha"].to_numpy(float), "wetland", source=source,
                              ids=plots["plot_id"].to_numpy(), depth_cm=depth_cm,
                              allow_implausible=allow_implausible)
    plots["carbon_sd_mg_ha"] = np.nan
    plots["pool"] = "wetland"
    plots["area_ha"] = np.nan
    plots["reference_depth_cm"] = depth_cm
    site = _core_attributes(table, cores, ids)
    for column in ("year", "habitat"):
        plots[column] = site[column].to_numpy() if column in site else np.nan
    plots["method"] = (f"DBD x fraction carbon (OM-only intervals by {conversion}) integrated 0-{depth_cm:g} cm; "
                       "gaps linearly interpolated; deepest density extrapolated to the reference depth")
    if {"x", "y"} <= set(site.columns):
        plots["x"], plots["y"] = site["x"].to_numpy(), site["y"].to_numpy()
        where = pd.DataFrame({"core_id": ids, "x": plots["x"], "y": plots["y"]})
        plots = locate_by_id(plots.drop(columns=["x", "y"]), where, ids, key="core_id", crs=crs, source=source)
    return WetlandResult(plots=plots, intervals=table.reset_index(drop=True), dropped=dropped)


def _core_attributes(intervals: pd.DataFrame, cores: pd.DataFrame | None, ids) -> pd.DataFrame:
    """x, y, year, habitat per core id: from the core table where given, else the intervals."""
    out = pd.DataFrame(index=pd.Index(ids, name="core_id"))
    for column in ("x", "y", "year", "habitat"):
        if cores is not None and column in cores.columns:
            out[column] = cores.drop_duplicates("core_id").set_index("core_id")[column].reindex(ids)
        elif column in intervals.columns:
            out[column] = intervals.dropna(subset=[column]).groupby("core_id", sort=False)[column].first().reindex(ids)
    return out
