"""Soil horizons -> organic carbon stocks (Mg C/ha) over standard depth intervals.

Per horizon, ``stock = SOC x BD x thickness x (1 - CF/100)``; with SOC in g/kg, BD in g/cm3,
thickness in cm and CF (coarse fragments) in volume %, ``g C/cm2 = SOC/1000 x BD x t`` and
1 g/cm2 = 100 Mg/ha, so ``stock_mg_ha = 0.1 x SOC x BD x t x (1 - CF/100)`` (the standard
stock equation, e.g. Poeplau et al. 2017, SOIL 3:61-66, with BD of the fine earth and CF by
volume). Stocks over standard depths (0-30, 30-100 cm, ...) come from harmonising each horizon's
*carbon density* (stock per cm, Mg C/ha/cm) with a mass-preserving method
(:mod:`sinks.pools.depth`): the density is what integrates to the stock, whereas harmonising SOC
and BD separately and multiplying would not preserve it (mean(SOC x BD) != mean(SOC) x mean(BD)).
The organic carbon concentration is harmonised too (``soc_g_kg_<interval>``), for data without
bulk density (Edgeroi).

Bulk density: measured on the horizon, else the thickness-weighted mean of bulk-density-only
sample rows of the same profile overlapping it (ISIS stores them so), else - only when asked
(``fill_bd``) - a pedotransfer function from ``soil_bulk_density_ptf.csv``; ``bd_source`` says
which for every horizon. Missing coarse fragments count as 0 (``cf_source = "assumed_zero"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sinks.errors import InputError
from sinks.pools.depth import (
    Interval,
    RowProblems,
    check_depth_intervals,
    harmonise,
    interval_label,
    parse_depths,
    uncovered_cm,
)
from sinks.io import first_per_id, locate_by_id, require_columns
from sinks.pools import plausibility
from sinks.pools.tables import load_table, scalar_parameter

HORIZON_COLUMNS = ("profile_id", "top_cm", "bottom_cm", "soc_g_kg")
DEFAULT_DEPTHS: tuple[Interval, ...] = ((0.0, 30.0), (30.0, 100.0))
#: g C/cm2 -> Mg C/ha (1e8 cm2/ha, 1e6 g/Mg), combined with g/kg -> g/g (1/1000): 100/1000.
MG_HA_PER_G_KG_G_CM3_CM = 0.1


def soil_parameter(name: str, table=None) -> float:
    """A scalar from ``soil_parameters.csv`` (or the user's table of the same columns)."""
    return scalar_parameter("soil_parameters.csv", name, table)


def soc_g_kg_from_organic_matter_pct(om_pct, conversion: str = "van_bemmelen", table=None) -> np.ndarray:
    """Organic carbon (g/kg) from organic matter (% by mass, e.g. loss on ignition).

    ``conversion`` names a row of ``soil_om_to_oc.csv``: ``"van_bemmelen"`` (OC = 0.58 x OM) or
    ``"pribyl_2010"`` (OC = 0.50 x OM, Pribyl 2010's better average). ``% x 10 = g/kg``.
    """
    factors = load_table(table if table is not None else "", default="soil_om_to_oc.csv",
                         required=("name", "oc_fraction_of_om"))
    row = factors[factors["name"] == conversion]
    if row.empty:
        raise InputError(f"unknown organic matter conversion {conversion!r}; use one of "
                         + ", ".join(factors["name"].astype(str)))
    om = np.asarray(om_pct, dtype=float)
    return om * float(row["oc_fraction_of_om"].iloc[0]) * 10.0


def bulk_density_from_ptf(soc_g_kg, ptf: str = "manrique_jones_1991", table=None) -> np.ndarray:
    """Bulk density (g/cm3) from organic carbon (g/kg) by a pedotransfer function.

    ``ptf`` names a row of ``soil_bulk_density_ptf.csv`` (``bd = a + b * OC%^c``). Values at or
    below 0 (organic-rich material outside the function's range) come back as NaN.
    """
    ptfs = load_table(table if table is not None else "", default="soil_bulk_density_ptf.csv",
                      required=("name", "a", "b", "c"))
    row = ptfs[ptfs["name"] == ptf]
    if row.empty:
        raise InputError(f"unknown bulk-density pedotransfer function {ptf!r}; use one of "
                         + ", ".join(ptfs["name"].astype(str)))
    a, b, c = (float(row[k].iloc[0]) for k in ("a", "b", "c"))
    oc_pct = np.asarray(soc_g_kg, dtype=float) / 10.0
    with np.errstate(invalid="ignore"):
        bd = a + b * oc_pct**c
    return np.where(bd > 0, bd, np.nan)


def horizon_stock_mg_ha(soc_g_kg, bulk_density_g_cm3, thickness_cm, coarse_fragments_pct=0.0) -> np.ndarray:
    """Organic carbon stock of horizons (Mg C/ha): ``0.1 x SOC x BD x t x (1 - CF/100)``.

    SOC in g/kg, BD in g/cm3 (fine earth), thickness in cm, CF in volume %.
    """
    return (MG_HA_PER_G_KG_G_CM3_CM * np.asarray(soc_g_kg, dtype=float)
            * np.asarray(bulk_density_g_cm3, dtype=float) * np.asarray(thickness_cm, dtype=float)
            * (1.0 - np.asarray(coarse_fragments_pct, dtype=float) / 100.0))


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)


def check_horizons(horizons: pd.DataFrame, *, source: str = "horizons", drop_invalid: bool = False,
                   parameters=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Find impossible horizon rows; raise an :class:`InputError` naming them, or drop them.

    Invalid: non-numeric values; SOC < 0 or above ``soc_g_kg_max``; BD <= 0 or above
    ``bulk_density_max_g_cm3``; CF outside 0-100 %; missing depths, zero or negative thickness,
    or overlap with another horizon of the profile (checked on rows carrying SOC or BD; a
    BD-only sample row may overlap carbon horizons). Returns (kept rows, dropped rows with their
    1-based ``row`` number and ``reason``).
    """
    require_columns(horizons, HORIZON_COLUMNS, source)
    problems = RowProblems()
    soc, bd, cf = (_numeric(horizons, c) for c in ("soc_g_kg", "bulk_density_g_cm3", "coarse_fragments_pct"))
    for column, values in (("soc_g_kg", soc), ("bulk_density_g_cm3", bd), ("coarse_fragments_pct", cf)):
        if column in horizons.columns:
            given = horizons[column].notna().to_numpy()
            problems.add(np.flatnonzero(given & ~np.isfinite(values)), f"non-numeric {column}")
    soc_max = soil_parameter("soc_g_kg_max", parameters)
    bd_max = soil_parameter("bulk_density_max_g_cm3", parameters)
    cf_max = soil_parameter("coarse_fragments_pct_max", parameters)
    problems.add(np.flatnonzero(soc < 0), "negative soc_g_kg")
    problems.add(np.flatnonzero(soc > soc_max), f"soc_g_kg above {soc_max:g} g/kg")
    problems.add(np.flatnonzero(bd <= 0), "bulk_density_g_cm3 not positive")
    problems.add(np.flatnonzero(bd > bd_max), f"bulk_density_g_cm3 above {bd_max:g} g/cm3")
    problems.add(np.flatnonzero((cf < 0) | (cf > cf_max)), f"coarse_fragments_pct outside 0-{cf_max:g} %")
    top, bottom = _numeric(horizons, "top_cm"), _numeric(horizons, "bottom_cm")
    carbon_rows = np.isfinite(soc) & ~np.isin(np.arange(len(horizons)), list(problems.reasons))
    check_depth_intervals(horizons["profile_id"], top, bottom, carbon_rows, problems)
    bd_rows = np.isfinite(bd) & ~np.isfinite(soc)
    finite = np.isfinite(top) & np.isfinite(bottom)
    problems.add(np.flatnonzero(bd_rows & ~finite), "missing or non-numeric top_cm/bottom_cm")
    problems.add(np.flatnonzero(bd_rows & finite & (bottom <= top)), "zero or negative thickness (bottom_cm <= top_cm)")
    return problems.resolve(horizons, source, drop_invalid)


def prepare_horizons(horizons: pd.DataFrame, *, fill_bd: bool = False, ptf: str = "manrique_jones_1991",
                     ptf_table=None) -> pd.DataFrame:
    """Per-horizon table of the carbon horizons (rows with ``soc_g_kg``) with what each used.

    Adds ``thickness_cm``, ``bd_used_g_cm3``, ``bd_source`` (``measured``, ``profile_sample``,
    ``ptf:<name>``, ``missing``), ``cf_used_pct``, ``cf_source`` (``measured``,
    ``assumed_zero``), ``carbon_mg_ha`` (horizon stock) and ``carbon_density_mg_ha_cm``.
    Expects rows already checked by :func:`check_horizons`.
    """
    soc = _numeric(horizons, "soc_g_kg")
    bd = _numeric(horizons, "bulk_density_g_cm3")
    samples = horizons[~np.isfinite(soc) & np.isfinite(bd)]
    sample_bd = _profile_sample_bd(horizons[np.isfinite(soc)], samples)
    out = horizons[np.isfinite(soc)].copy()
    soc, bd = soc[np.isfinite(soc)], _numeric(out, "bulk_density_g_cm3")
    out["thickness_cm"] = _numeric(out, "bottom_cm") - _numeric(out, "top_cm")
    source = np.where(np.isfinite(bd), "measured", "missing").astype(object)
    use_sample = ~np.isfinite(bd) & np.isfinite(sample_bd)
    bd = np.where(use_sample, sample_bd, bd)
    source[use_sample] = "profile_sample"
    if fill_bd:
        predicted = bulk_density_from_ptf(soc, ptf, ptf_table)
        use_ptf = ~np.isfinite(bd) & np.isfinite(predicted)
        bd = np.where(use_ptf, predicted, bd)
        source[use_ptf] = f"ptf:{ptf}"
        source[~np.isfinite(bd)] = f"missing (ptf:{ptf} out of range)"
    cf = _numeric(out, "coarse_fragments_pct")
    out["bd_used_g_cm3"] = bd
    out["bd_source"] = source
    out["cf_used_pct"] = np.where(np.isfinite(cf), cf, 0.0)
    out["cf_source"] = np.where(np.isfinite(cf), "measured", "assumed_zero")
    out["carbon_mg_ha"] = horizon_stock_mg_ha(soc, bd, out["thickness_cm"], out["cf_used_pct"])
    out["carbon_density_mg_ha_cm"] = out["carbon_mg_ha"] / out["thickness_cm"]
    return out


def _profile_sample_bd(carbon: pd.DataFrame, samples: pd.DataFrame) -> np.ndarray:
    """Thickness-weighted BD of same-profile BD-only sample rows overlapping each carbon row."""
    result = np.full(len(carbon), np.nan)
    if samples.empty:
        return result
    by_profile = {pid: g for pid, g in samples.groupby("profile_id", sort=False)}
    tops, bottoms = _numeric(carbon, "top_cm"), _numeric(carbon, "bottom_cm")
    for k, pid in enumerate(carbon["profile_id"].to_numpy()):
        group = by_profile.get(pid)
        if group is None:
            continue
        overlap = np.clip(np.minimum(_numeric(group, "bottom_cm"), bottoms[k])
                          - np.maximum(_numeric(group, "top_cm"), tops[k]), 0.0, None)
        if overlap.sum() > 0:
            result[k] = float(np.sum(overlap * _numeric(group, "bulk_density_g_cm3")) / overlap.sum())
    return result


@dataclass
class SoilResult:
    """Outputs of :func:`soil_stocks`: the plot table, the per-horizon table, dropped rows."""

    plots: pd.DataFrame
    horizons: pd.DataFrame
    dropped: pd.DataFrame


def soil_stocks(
    horizons: pd.DataFrame,
    *,
    depths: str | Sequence[Interval] = DEFAULT_DEPTHS,
    method: str = "spline",
    lam: float | None = None,
    fill_bd: bool = False,
    ptf: str = "manrique_jones_1991",
    crs: str | None = None,
    drop_invalid: bool = False,
    source: str = "horizons",
    allow_implausible: bool = False,
) -> SoilResult:
    """Soil horizons -> plot table of organic carbon stocks (Mg C/ha) per depth interval.

    One row per ``profile_id`` as given (first-appearance order), with ``carbon_mg_ha_<a>_<b>``
    and ``soc_g_kg_<a>_<b>`` for each interval, ``carbon_mg_ha`` = the first interval,
    ``carbon_sd_mg_ha`` (NaN: no replicate measurements to estimate it from), ``pool="soil"``,
    ``area_ha`` (NaN: profiles are points), ``year`` (from a ``year`` column, else NaN),
    ``bd_source`` (the profile's horizon sources joined by ``+``), ``uncovered_cm_<a>_<b>``
    (thickness of the interval between or beyond the horizons that have a stock: bridged by the
    spline, or NaN beyond the ends), ``n_horizons``, ``method``; geometry when ``x``/``y`` and
    ``crs`` are given (or the input is a GeoDataFrame).

    Plausibility guards (:mod:`sinks.pools.plausibility`): before the per-row checks, SOC in %,
    depths in m and bulk density in kg/m³ raise :class:`~sinks.errors.ImplausibleValueError`
    (the SOC-in-% heuristic is skipped with ``allow_implausible``); after, a stock below 0 or above
    the physical bound per cm times the interval's thickness raises unless ``allow_implausible``.
    """
    intervals = parse_depths(depths)
    lam = soil_parameter("spline_lambda") if lam is None else float(lam)
    plausibility.check_soil_units(horizons, source, allow_implausible=allow_implausible)
    kept, dropped = check_horizons(horizons, source=source, drop_invalid=drop_invalid)
    table = prepare_horizons(kept, fill_bd=fill_bd, ptf=ptf)
    profile_ids = pd.unique(horizons["profile_id"])
    records = []
    groups = {pid: g for pid, g in table.groupby("profile_id", sort=False)}
    for pid in profile_ids:
        group = groups.get(pid)
        record: dict = {"plot_id": pid}
        if group is None:
            record["n_horizons"] = 0
            record["bd_source"] = "no carbon horizons"
            records.append(record)
            continue
        top, bottom = group["top_cm"].to_numpy(float), group["bottom_cm"].to_numpy(float)
        density = group["carbon_density_mg_ha_cm"].to_numpy(float)
        stock_means = harmonise(top, bottom, density, intervals, method=method, lam=lam)
        soc_means = harmonise(top, bottom, group["soc_g_kg"].to_numpy(float), intervals, method=method, lam=lam)
        has_stock = np.isfinite(density)
        for (a, b), stock_mean, soc_mean in zip(intervals, stock_means, soc_means):
            label = interval_label((a, b))
            record[f"carbon_mg_ha_{label}"] = stock_mean * (b - a)
            record[f"soc_g_kg_{label}"] = soc_mean
            record[f"uncovered_cm_{label}"] = uncovered_cm(top[has_stock], bottom[has_stock], (a, b))
        record["n_horizons"] = len(group)
        record["bd_source"] = "+".join(sorted(set(group["bd_source"])))
        record["cf_source"] = "+".join(sorted(set(group["cf_source"])))
        records.append(record)
    plots = pd.DataFrame.from_records(records)
    first = interval_label(intervals[0])
    for a, b in intervals:
        label = interval_label((a, b))
        for column in (f"carbon_mg_ha_{label}", f"soc_g_kg_{label}", f"uncovered_cm_{label}"):
            if column not in plots.columns:
                plots[column] = np.nan
    for a, b in intervals:
        plausibility.check_stocks(plots[f"carbon_mg_ha_{interval_label((a, b))}"].to_numpy(float), "soil",
                                  source=source, column=f"carbon_mg_ha_{interval_label((a, b))}",
                                  ids=plots["plot_id"].to_numpy(), depth_cm=b - a,
                                  allow_implausible=allow_implausible)
    plots["carbon_mg_ha"] = plots[f"carbon_mg_ha_{first}"]
    plots["carbon_sd_mg_ha"] = np.nan
    plots["pool"] = "soil"
    plots["area_ha"] = np.nan
    plots["year"] = first_per_id(horizons, "year", profile_ids, "profile_id")
    depth_method = (f"equal-area spline (Bishop et al. 1999; lambda={lam:g}, Malone et al. 2009)"
                    if method == "spline" else "thickness-weighted overlap")
    plots["method"] = (f"SOC x BD x thickness x (1 - CF/100); carbon density harmonised to "
                       f"{', '.join(interval_label(i).replace('_', '-') for i in intervals)} cm by {depth_method}"
                       + (f"; missing BD by {ptf}" if fill_bd else ""))
    plots = locate_by_id(plots, horizons, profile_ids, key="profile_id", crs=crs, source=source)
    return SoilResult(plots=plots, horizons=table.reset_index(drop=True), dropped=dropped)
