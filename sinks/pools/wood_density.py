"""Wood density (g/cm3) of each tree with its standard deviation and the level it was matched at.

The lookup runs, for each tree, down this list and stops at the first hit (as BIOMASS's
``getWoodDensity``, Rejou-Mechain et al. 2017, with the species-group table added for the
region's inventories):

1. ``given``: the tree's own ``wood_density_g_cm3`` (sd from ``wood_density_sd_g_cm3`` or 0);
2. ``species`` / ``genus`` / ``family``: a wood-density table (BIOMASS v3 ``wsg_estimates``
   layout, Global Wood Density Database records, or your own table, see :func:`read_wood_density_table`);
3. ``species_group``: the basic wood density of the tree's species group
   (``species_groups.csv``: 杉木, 马尾松, ...), sd 0 (the table gives none);
4. ``plot``: the mean and sd of the trees already matched in the same plot;
5. ``dataset``: the mean and sd of all trees already matched.

Names match case-insensitively. A tree's binomial is ``species`` when it has two words, else
``genus species``; its genus is ``genus`` or the first word of ``species``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sinks.errors import InputError

LEVELS = ("given", "species", "genus", "family", "species_group", "plot", "dataset")


def clean_names(series: pd.Series) -> pd.Series:
    """Taxon names compared as text: trimmed, inner spaces collapsed, lower case."""
    return series.astype("string").str.strip().str.replace(r"\s+", " ", regex=True).str.lower()


def read_wood_density_table(table: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """A wood-density table as ``level, key, wd_g_cm3, wd_sd_g_cm3`` (one row per taxon).

    Accepts three layouts (CSV, gzip allowed):

    - BIOMASS v3 ``wsg_estimates``: ``family, genus, species, wsg, sd, level_tax`` (species is
      the binomial); used as given.
    - your own: ``family, genus, species, wood_density_g_cm3`` [, ``wood_density_sd_g_cm3``],
      one row per taxon; the level is the most specific name present.
    - Global Wood Density Database records (Zanne et al. 2009): ``family, genus, species, wd``
      (species = epithet), many records per taxon: averaged to species, genus and family means,
      each level's sd being the mean within-taxon sd of the taxa at that level with two or more
      records (the approach of BIOMASS v2's sdWD; a taxon with one record gets that level's sd).
    """
    if isinstance(table, pd.DataFrame):
        frame, where = table.copy(), "wood-density table"
    else:
        if not os.path.exists(table):
            raise InputError(f"{table}: wood-density table not found")
        frame, where = pd.read_csv(table), str(table)
    cols = set(frame.columns)
    if {"wsg", "sd", "level_tax"} <= cols:
        out = pd.DataFrame({"level": frame["level_tax"].astype(str), "wd": frame["wsg"], "sd": frame["sd"],
                            "family": frame["family"], "genus": frame["genus"], "species": frame["species"]})
    elif "wood_density_g_cm3" in cols:
        out = pd.DataFrame({"wd": frame["wood_density_g_cm3"],
                            "sd": frame.get("wood_density_sd_g_cm3", pd.Series(0.0, index=frame.index))})
        for col in ("family", "genus", "species"):
            out[col] = frame[col] if col in cols else pd.NA
        out["level"] = np.where(out["species"].notna(), "species", np.where(out["genus"].notna(), "genus", "family"))
    elif {"wd", "genus", "species"} <= cols:
        return _aggregate_records(frame, where)
    else:
        raise InputError(f"{where}: not a wood-density table (needs wsg/sd/level_tax, "
                         "wood_density_g_cm3, or GWDD records with wd)")
    binomial = out["species"].astype("string")
    epithet_only = binomial.notna() & ~binomial.str.contains(" ", regex=False).fillna(False)
    binomial = binomial.where(~epithet_only, out["genus"].astype("string") + " " + binomial)
    key = np.select([out["level"] == "species", out["level"] == "genus"],
                    [binomial, out["genus"].astype("string")], out["family"].astype("string"))
    result = pd.DataFrame({"level": out["level"].to_numpy(), "key": clean_names(pd.Series(key)).to_numpy(),
                           "wd_g_cm3": pd.to_numeric(out["wd"], errors="coerce").to_numpy(),
                           "wd_sd_g_cm3": pd.to_numeric(out["sd"], errors="coerce").fillna(0.0).to_numpy()})
    result = result[result["wd_g_cm3"].notna() & result["key"].notna()]
    return result.drop_duplicates(["level", "key"]).reset_index(drop=True)


def _aggregate_records(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    wd = pd.to_numeric(frame["wd"], errors="coerce")
    records = pd.DataFrame({
        "species": clean_names(frame["genus"].astype("string") + " " + frame["species"].astype("string")),
        "genus": clean_names(frame["genus"]),
        "family": clean_names(frame["family"]) if "family" in frame else pd.Series(pd.NA, index=frame.index),
        "wd": wd,
    }).dropna(subset=["wd"])
    if records.empty:
        raise InputError(f"{where}: no wood-density record has a value")
    parts = []
    for level in ("species", "genus", "family"):
        grouped = records.dropna(subset=[level]).groupby(level)["wd"]
        stats = grouped.agg(["mean", "std", "size"])
        level_sd = stats.loc[stats["size"] >= 2, "std"].mean()
        parts.append(pd.DataFrame({"level": level, "key": stats.index.to_numpy(), "wd_g_cm3": stats["mean"].to_numpy(),
                                   "wd_sd_g_cm3": np.where(stats["size"] >= 2, stats["std"], level_sd)}))
    return pd.concat(parts, ignore_index=True)


@dataclass
class WoodDensityResult:
    """Per-tree ``wd_g_cm3``, ``wd_sd_g_cm3``, ``level`` (aligned with the trees) and the names
    that matched no taxon or group (those trees took a plot or dataset mean)."""

    wd_g_cm3: np.ndarray
    wd_sd_g_cm3: np.ndarray
    level: np.ndarray
    unmatched_names: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        values, counts = np.unique(self.level, return_counts=True)
        return {lvl: int(counts[values == lvl][0]) for lvl in LEVELS if lvl in values}


def tree_names(trees: pd.DataFrame) -> pd.DataFrame:
    """Binomial, genus and family of each tree from ``species``, ``genus``, ``family`` columns."""
    def column(name: str) -> pd.Series:
        if name in trees:
            return clean_names(trees[name])
        return pd.Series(pd.NA, index=trees.index, dtype="string")

    species, family, given_genus = column("species"), column("family"), column("genus")
    words = species.str.split(" ")
    genus = given_genus.fillna(words.str[0].astype("string"))
    two_words = species.str.contains(" ", regex=False).fillna(False).astype(bool)
    # a one-word species is an epithet beside its own genus column, else a genus alone; "L." and
    # other authors after the binomial are dropped
    binomial = words.str[:2].str.join(" ").astype("string").where(
        two_words | given_genus.isna(), given_genus + " " + species)
    return pd.DataFrame({"binomial": binomial, "genus": genus, "family": family})


def lookup_wood_density(trees: pd.DataFrame, *, table=None, group_wd: pd.Series | None = None,
                        stand: str | None = "plot_id") -> WoodDensityResult:
    """Wood density of each tree by the cascade of the module docstring.

    ``table``: a wood-density table (path or frame, see :func:`read_wood_density_table`) or None;
    ``group_wd``: each tree's species-group wood density (NaN where no group), or None;
    ``stand``: the column whose mean fills unmatched trees (None to skip that level).
    """
    n = len(trees)
    wd = np.full(n, np.nan)
    sd = np.full(n, np.nan)
    level = np.full(n, "", dtype=object)

    def fill(values, sds, name):
        values = np.asarray(values, dtype=float)
        hit = np.isnan(wd) & np.isfinite(values)
        wd[hit], sd[hit], level[hit] = values[hit], np.asarray(sds, dtype=float)[hit], name

    if "wood_density_g_cm3" in trees:
        given = pd.to_numeric(trees["wood_density_g_cm3"], errors="coerce").to_numpy(dtype=float)
        given_sd = (pd.to_numeric(trees["wood_density_sd_g_cm3"], errors="coerce").fillna(0.0).to_numpy(dtype=float)
                    if "wood_density_sd_g_cm3" in trees else np.zeros(n))
        fill(given, given_sd, "given")
    names = tree_names(trees)
    if table is not None:
        ref = read_wood_density_table(table)
        for lvl, column in (("species", "binomial"), ("genus", "genus"), ("family", "family")):
            sub = ref[ref["level"] == lvl].set_index("key")
            keys = names[column]
            fill(keys.map(sub["wd_g_cm3"]).astype(float).to_numpy(),
                 keys.map(sub["wd_sd_g_cm3"]).astype(float).to_numpy(), lvl)
    if group_wd is not None:
        fill(np.asarray(group_wd, dtype=float), np.zeros(n), "species_group")
    unmatched = np.isnan(wd)
    unmatched_names = sorted({str(v) for v in names.loc[unmatched, "binomial"].fillna("(no name)")})
    if unmatched.all():
        named = [str(c) for c in trees.columns if "species" in str(c).lower() and c != "species"]
        hint = f"; is {named[0]!r} the species? --rename {named[0]}=species" if named and "species" not in trees else ""
        raise InputError("no tree has a wood density: give wood_density_g_cm3, a wood-density table "
                         f"(--wood-density) or species that match the species-group table{hint}")
    if unmatched.any() and stand is not None and stand in trees:
        matched = pd.DataFrame({"stand": trees[stand].to_numpy(), "wd": wd}).dropna()
        stats = matched.groupby("stand")["wd"].agg(["mean", "std"])
        keys = pd.Series(trees[stand].to_numpy())
        fill(keys.map(stats["mean"]).to_numpy(), keys.map(stats["std"]).fillna(0.0).to_numpy(), "plot")
    if np.isnan(wd).any():
        matched = wd[np.isfinite(wd)]  # plot means included, as BIOMASS getWoodDensity
        fill(np.full(n, matched.mean()), np.full(n, matched.std(ddof=1) if matched.size > 1 else 0.0), "dataset")
    return WoodDensityResult(wd, sd, level.astype(str), unmatched_names)
