"""Forest inventory tree lists -> per-tree biomass and carbon -> plot carbon stocks (Mg C/ha).

The route here is the allometric one: above-ground biomass (AGB) per tree from diameter, height
and wood density with Chave et al. (2014) eq. 4, below-ground biomass by the species group's
root-to-shoot ratio, and carbon by the group's carbon fraction. Parameters come from
``sinks/pools/data/species_groups.csv`` and ``allometry.csv`` (each value with its source).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sinks.errors import InputError
from sinks.io import format_rows
from sinks.pools.tables import allometry_parameter, load_table

TREE_COLUMNS = ("plot_id", "tree_id", "dbh_cm")
PLOT_COLUMNS = ("plot_id", "area_ha")
#: Breast height (m): a tree shorter than this cannot have a diameter at breast height.
BREAST_HEIGHT_M = 1.3


def chave2014_eq4(dbh_cm, height_m, wood_density_g_cm3):
    """Above-ground biomass (Mg) by Chave et al. (2014) eq. 4: 0.0673 (rho D^2 H)^0.976 / 1000.

    ``dbh_cm`` in cm, ``height_m`` in m, ``wood_density_g_cm3`` in g/cm3; arrays broadcast.
    """
    a = allometry_parameter("chave2014_eq4", "a")
    b = allometry_parameter("chave2014_eq4", "b")
    rho_d2h = np.asarray(wood_density_g_cm3) * np.asarray(dbh_cm) ** 2 * np.asarray(height_m)
    return a * rho_d2h**b / 1000.0


def species_groups(table=None) -> pd.DataFrame:
    """The species-group parameter table (wood density, BEF, root:shoot, carbon fraction)."""
    return load_table(
        table if table is not None else "",
        default="species_groups.csv",
        required=("group", "taxa", "wood_density_g_cm3", "root_shoot", "carbon_fraction"),
    )


def match_species_group(species: pd.Series, table: pd.DataFrame) -> pd.Series:
    """Species group of each tree from its Latin or Chinese name (species, then genus level).

    Returns the ``group`` name, or missing where no group matches.
    """
    lookup: dict[str, str] = {}
    for row in table.itertuples(index=False):
        names = str(row.taxa).split(";") + str(getattr(row, "taxa_zh", "") or "").split(";")
        names += [str(row.group), str(getattr(row, "group_zh", "") or "")]
        for name in names:
            if name.strip() and name.strip().lower() != "nan":
                lookup[name.strip().lower()] = row.group
    clean = species.astype("string").str.strip().str.lower()
    exact = clean.map(lookup)
    genus = clean.str.split().str[0].map(lookup)
    return exact.fillna(genus)


def check_trees(trees: pd.DataFrame, source: str = "trees") -> None:
    """Raise :class:`InputError` for impossible tree records, naming the rows."""
    missing = [c for c in TREE_COLUMNS if c not in trees.columns]
    if missing:
        raise InputError(f"{source}: missing required column(s) {', '.join(missing)}")
    dbh = pd.to_numeric(trees["dbh_cm"], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(dbh) | (dbh <= 0) | (dbh > 1500))
    if bad.size:
        raise InputError(f"{source}: dbh_cm missing, non-positive or above 1500 cm in row(s) {format_rows(bad)}")
    if "height_m" in trees.columns:
        height = pd.to_numeric(trees["height_m"], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(np.isfinite(height) & ((height < BREAST_HEIGHT_M) | (height > 130)))
        if bad.size:
            raise InputError(
                f"{source}: height_m below breast height ({BREAST_HEIGHT_M} m) or above 130 m in "
                f"row(s) {format_rows(bad)}"
            )
    dup = trees.duplicated(subset=["plot_id", "tree_id"], keep=False).to_numpy()
    if dup.any():
        raise InputError(f"{source}: duplicate (plot_id, tree_id) in row(s) {format_rows(np.flatnonzero(dup))}")


def tree_carbon(trees: pd.DataFrame, *, species_table=None, source: str = "trees") -> pd.DataFrame:
    """Per-tree AGB, below-ground biomass and carbon (Mg) with the parameters each tree used.

    Needs ``height_m`` for every tree and a ``species`` that matches a species group (or a
    ``wood_density_g_cm3`` given per tree). Adds ``height_used_m``, ``height_source``,
    ``wood_density_used``, ``wood_density_level``, ``species_group``, ``agb_mg``, ``bgb_mg``,
    ``carbon_mg``.
    """
    check_trees(trees, source)
    table = species_groups(species_table)
    out = trees.copy()
    if "height_m" not in out.columns or out["height_m"].isna().any():
        rows = np.flatnonzero(out.get("height_m", pd.Series(np.nan, index=out.index)).isna().to_numpy())
        raise InputError(f"{source}: height_m missing in row(s) {format_rows(rows)}; measure it or fit a height-diameter model")
    group = match_species_group(out.get("species", pd.Series(pd.NA, index=out.index)), table)
    params = table.set_index("group")
    given_wd = pd.to_numeric(out.get("wood_density_g_cm3", pd.Series(np.nan, index=out.index)), errors="coerce")
    group_wd = group.map(params["wood_density_g_cm3"]).astype(float)
    wood_density = given_wd.fillna(group_wd)
    unmatched = np.flatnonzero(wood_density.isna().to_numpy())
    if unmatched.size:
        names = sorted(set(out["species"].astype(str).iloc[unmatched])) if "species" in out else []
        raise InputError(
            f"{source}: no wood density for row(s) {format_rows(unmatched)} (species not in the "
            f"species-group table: {', '.join(names[:10])}); give wood_density_g_cm3 or a table"
        )
    default_cf = allometry_parameter("default_carbon_fraction", "carbon_fraction")
    out["species_group"] = group
    out["height_used_m"] = out["height_m"].astype(float)
    out["height_source"] = "measured"
    out["wood_density_used"] = wood_density.to_numpy()
    out["wood_density_level"] = np.where(given_wd.notna(), "given", "species_group")
    out["agb_mg"] = chave2014_eq4(out["dbh_cm"].astype(float), out["height_used_m"], out["wood_density_used"])
    root_shoot = group.map(params["root_shoot"]).astype(float).fillna(0.0)
    out["bgb_mg"] = out["agb_mg"] * root_shoot
    carbon_fraction = group.map(params["carbon_fraction"]).astype(float).fillna(default_cf)
    out["carbon_mg"] = (out["agb_mg"] + out["bgb_mg"]) * carbon_fraction
    return out


def plot_stocks(tree_table: pd.DataFrame, plots: pd.DataFrame, *, source: str = "plots") -> pd.DataFrame:
    """Sum per-tree results to per-plot densities (Mg/ha) using each plot's ``area_ha``.

    Returns the plot table of DESIGN.md (``plot_id``, geometry when ``plots`` has it,
    ``area_ha``, ``pool``, ``agb_mg_ha``, ``carbon_mg_ha``, ``carbon_sd_mg_ha``, ``n_trees``,
    ``stems_ha``, ``method``). Plots without trees get zero stock.
    """
    missing = [c for c in PLOT_COLUMNS if c not in plots.columns]
    if missing:
        raise InputError(f"{source}: missing required column(s) {', '.join(missing)}")
    area = pd.to_numeric(plots["area_ha"], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(area) | (area <= 0))
    if bad.size:
        raise InputError(f"{source}: area_ha missing or not positive in row(s) {format_rows(bad)}")
    if plots["plot_id"].duplicated().any():
        raise InputError(f"{source}: duplicate plot_id in row(s) {format_rows(np.flatnonzero(plots['plot_id'].duplicated(keep=False)))}")
    orphans = sorted(set(tree_table["plot_id"]) - set(plots["plot_id"]))
    if orphans:
        raise InputError(f"trees: plot_id(s) not in the plot table: {', '.join(map(str, orphans[:10]))}")
    sums = tree_table.groupby("plot_id").agg(
        agb_mg=("agb_mg", "sum"), carbon_mg=("carbon_mg", "sum"), n_trees=("tree_id", "size")
    )
    out = plots.copy()
    joined = sums.reindex(out["plot_id"]).fillna(0.0)
    out["n_trees"] = joined["n_trees"].to_numpy().astype(int)
    out["stems_ha"] = out["n_trees"] / area
    out["agb_mg_ha"] = joined["agb_mg"].to_numpy() / area
    out["carbon_mg_ha"] = joined["carbon_mg"].to_numpy() / area
    out["carbon_sd_mg_ha"] = np.nan  # filled by Monte Carlo propagation when asked for
    out["pool"] = "forest"
    out["method"] = "Chave et al. 2014 eq. 4; species-group root:shoot and carbon fraction"
    return out


def forest_stocks(trees: pd.DataFrame, plots: pd.DataFrame, *, species_table=None):
    """Tree list + plot table -> (plot table with ``carbon_mg_ha``, per-tree table)."""
    tree_table = tree_carbon(trees, species_table=species_table)
    return plot_stocks(tree_table, plots), tree_table
