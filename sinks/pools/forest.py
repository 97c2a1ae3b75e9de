"""Forest inventory -> per-tree biomass and carbon -> plot carbon stocks (Mg C/ha), two routes.

**Tree route** (:func:`tree_biomass`, :func:`plot_stocks`, :func:`forest_stocks`): for each tree a
height (measured, or from a height-diameter model, :mod:`sinks.pools.height`), a wood density
(:mod:`sinks.pools.wood_density`), above-ground biomass by Chave et al. 2014 eq. 4 with height, or
eq. 7 with the stress index E where no height is known, or a user's equation
(:mod:`sinks.pools.allometry`); below-ground biomass by the species group's root:shoot ratio and
carbon by its carbon fraction (``species_groups.csv``; IPCC 2006 default 0.47 and no roots for
trees outside the groups). Sums per plot divided by the plot's area give Mg/ha, and the Monte
Carlo of :mod:`sinks.pools.montecarlo` gives their uncertainty.

**Stand-volume route** (:func:`volume_stocks`), used by Chinese inventories and the CCER
methodologies: C = V x SVD x BEF x (1 + R) x CF (Mg C/ha), CO2e = C x 44/12, with the species
group's basic wood density SVD, biomass expansion factor BEF, root:shoot R and carbon fraction CF.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sinks.errors import InputError
from sinks.io import format_rows, matching_ids, require_columns
from sinks.pools import montecarlo, plausibility
from sinks.pools.allometry import ExpressionAllometry, chave2014_eq4, chave2014_eq7
from sinks.pools.height import HeightModel
from sinks.pools.tables import allometry_parameter, load_table
from sinks.pools.wood_density import clean_names, lookup_wood_density

TREE_COLUMNS = ("plot_id", "tree_id", "dbh_cm")
PLOT_COLUMNS = ("plot_id", "area_ha")
STAND_COLUMNS = ("plot_id", "species_group", "volume_m3_ha")
#: Breast height (m): a tree shorter than this cannot have a diameter at breast height.
BREAST_HEIGHT_M = 1.3
#: Largest plausible values, to catch unit slips (a diameter in mm read as cm, a height in dm):
#: the largest measured trees are ~ 1,400 cm in diameter (Sequoiadendron / Taxodium) and ~ 116 m tall
#: (Sequoia sempervirens, Hyperion).
MAX_DBH_CM = 1500.0
MAX_HEIGHT_M = 130.0
#: Column names that carry a diameter or height in another unit, and their factor to cm / m.
UNIT_COLUMNS = {"dbh_mm": ("dbh_cm", 0.1), "dbh_m": ("dbh_cm", 100.0), "dbh_in": ("dbh_cm", 2.54),
                "height_ft": ("height_m", 0.3048), "height_dm": ("height_m", 0.1)}
UNITLESS = ("dbh", "diameter", "d", "height", "h")
DEAD = {"dead", "d", "standing dead", "snag", "死", "枯死", "枯立木"}
#: ``status`` values of a live tree (an empty status is live too); any other value is refused.
LIVE = {"live", "alive", "l", "a", "活", "活立木"}


#: What each species-group factor can be, by its definition (a value outside is a slip, e.g. a BEF
#: of 16.34 for 1.634, or a carbon fraction of 52 for 0.52), as (minimum, maximum, open minimum):
#: BEF = above-ground biomass / stem biomass >= 1 (the stem is part of it); root:shoot >= 0; a
#: carbon fraction of dry matter in (0, 1); wood density (dry mass / green volume, g/cm3) above 0
#: and below the density of wood substance, 1.5 g/cm3 (the cell-wall density, about 1.50-1.53;
#: Kellogg & Wangaard 1969, as recalled).
SPECIES_FACTOR_RANGES = {"bef": (1.0, None, False), "root_shoot": (0.0, None, False),
                         "carbon_fraction": (0.0, 1.0, True), "wood_density_g_cm3": (0.0, 1.5, True)}


def species_groups(table=None) -> pd.DataFrame:
    """The species-group parameter table (wood density, BEF, root:shoot, carbon fraction), each
    factor within what its definition allows (:data:`SPECIES_FACTOR_RANGES`)."""
    frame = load_table(
        table if table is not None else "",
        default="species_groups.csv",
        required=("group", "taxa", "wood_density_g_cm3", "root_shoot", "carbon_fraction"),
    )
    for column, (low, high, open_low) in SPECIES_FACTOR_RANGES.items():
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        given = values.notna().to_numpy()
        v = values.to_numpy(dtype=float)
        bad = given & (((v <= low) if open_low else (v < low)) | ((v > high) if high is not None else False))
        if bad.any():
            span = f"{'above' if open_low else 'at least'} {low:g}" + (f" and at most {high:g}" if high is not None else "")
            shown = ", ".join(f"{frame['group'].iloc[i]} {v[i]:g}" for i in np.flatnonzero(bad)[:5])
            name = table if isinstance(table, (str, os.PathLike)) and str(table) else "species_groups.csv"
            raise InputError(f"{name}: {column} must be {span} by its definition; found "
                             f"{shown} (a decimal slip?)")
    return frame


def match_species_group(species: pd.Series, table: pd.DataFrame) -> pd.Series:
    """Species group of each name (Latin or Chinese; exact, then the binomial = first two words,
    which drops an author such as "L.", then the genus = first word; spaces collapsed, any case).

    Group names (``chinese_fir``, ``杉木``) match too. Returns the ``group`` or missing.
    """
    lookup: dict[str, str] = {}
    for row in table.itertuples(index=False):
        names = str(row.taxa).split(";") + str(getattr(row, "taxa_zh", "") or "").split(";")
        names += [str(row.group), str(getattr(row, "group_zh", "") or "")]
        for name in names:
            if name.strip() and name.strip().lower() != "nan":
                lookup[name.strip().lower()] = row.group
    clean = clean_names(species)
    words = clean.str.split(" ")
    binomial = words.str[:2].str.join(" ").map(lookup)
    return clean.map(lookup).fillna(binomial).fillna(words.str[0].map(lookup))


# ------------------------------------------------------------------------------------------------
# Checking tree lists
# ------------------------------------------------------------------------------------------------


@dataclass
class Dropped:
    """Rows removed by ``drop_invalid``: their 1-based row numbers and why."""

    rows: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, rows: np.ndarray, reason: str) -> None:
        self.rows += [int(r) + 1 for r in rows]
        self.reasons += [reason] * len(rows)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"row": self.rows, "reason": self.reasons}).sort_values("row", ignore_index=True)


def normalise_units(trees: pd.DataFrame, source: str = "trees") -> pd.DataFrame:
    """Convert ``dbh_mm`` / ``dbh_in`` / ``height_ft`` ... columns to ``dbh_cm`` / ``height_m``.

    A diameter or height column without a unit in its name is refused (units are in the names).
    """
    out = trees.copy()
    for column, (target, factor) in UNIT_COLUMNS.items():
        if column in out.columns:
            if target in out.columns:
                raise InputError(f"{source}: both {column} and {target}; keep one")
            out[target] = pd.to_numeric(out.pop(column), errors="coerce") * factor
    unitless = [c for c in out.columns if str(c).lower() in UNITLESS]
    if unitless:
        raise InputError(f"{source}: unknown units for column(s) {', '.join(map(str, unitless))}; rename to "
                         "dbh_cm, dbh_mm, dbh_in, height_m or height_ft (--rename OLD=NEW)")
    return out


def check_trees(trees: pd.DataFrame, source: str = "trees", *, drop_invalid: bool = False,
                allow_implausible: bool = False):
    """Refuse impossible tree records naming their rows, or drop and list them.

    Checks: missing columns, diameters missing / non-positive / above 1,500 cm, heights below
    breast height (1.3 m) or above 130 m, duplicate (plot_id, tree_id). Returns
    ``(trees, Dropped)``; with ``drop_invalid=False`` any problem raises :class:`InputError`.
    Before them, whole-table unit slips (diameters in mm, heights in cm or dm) raise
    :class:`~sinks.errors.ImplausibleValueError` even with ``drop_invalid``
    (:func:`sinks.pools.plausibility.check_tree_units`).
    """
    trees = normalise_units(trees, source)
    require_columns(trees, TREE_COLUMNS, source)
    plausibility.check_tree_units(trees, source, allow_implausible=allow_implausible, dead=_dead(trees, source))
    problems: list[tuple[np.ndarray, str]] = []

    def numbers(column: str) -> np.ndarray:
        """The column as numbers; text that is not one (``abc``) is a problem of its own, not a gap."""
        raw = trees[column]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        text = raw.notna().to_numpy() & (raw.astype("string").str.strip() != "").fillna(False).to_numpy()
        problems.append((text & ~np.isfinite(values), f"non-numeric {column}"))
        return values

    dbh = numbers("dbh_cm")
    problems.append((~np.isfinite(dbh) | (dbh <= 0) | (dbh > MAX_DBH_CM),
                     f"dbh_cm missing, non-positive or above {MAX_DBH_CM:g} cm"))
    if "height_m" in trees.columns:
        height = numbers("height_m")
        problems.append((np.isfinite(height) & ((height < BREAST_HEIGHT_M) | (height > MAX_HEIGHT_M)),
                         f"height_m below breast height ({BREAST_HEIGHT_M} m) or above {MAX_HEIGHT_M:g} m"))
    if "wood_density_g_cm3" in trees.columns:
        wd = numbers("wood_density_g_cm3")
        problems.append((np.isfinite(wd) & ((wd <= 0) | (wd > 1.5)), "wood_density_g_cm3 not in (0; 1.5]"))
    problems.append((trees.duplicated(subset=["plot_id", "tree_id"], keep=False).to_numpy(),
                     "duplicate (plot_id, tree_id)"))
    dropped = Dropped()
    bad_any = np.zeros(len(trees), dtype=bool)
    for bad, reason in problems:
        rows = np.flatnonzero(bad & ~bad_any)
        if rows.size and not drop_invalid:
            raise InputError(f"{source}: {reason} in row(s) {format_rows(rows)}"
                             " (fix them, or --drop-invalid to drop and list them)")
        dropped.add(rows, reason)
        bad_any |= bad
    return trees.loc[~bad_any].copy(), dropped


# ------------------------------------------------------------------------------------------------
# Tree route
# ------------------------------------------------------------------------------------------------


@dataclass
class TreeOptions:
    """How the tree route fills what a tree list lacks.

    ``height_model``: an H-D model (or a dict plot_id -> model) for trees without ``height_m``;
    ``e``: Chave 2014 stress index for eq. 7 where heights are unknown (or a column name holding
    it per tree); ``allometry``: None (Chave 2014), an :class:`ExpressionAllometry`, or a dict
    species_group -> ExpressionAllometry (other groups keep Chave 2014);
    ``wood_density_table``: path or frame (:func:`sinks.pools.wood_density.read_wood_density_table`);
    ``species_table``: species-group table; ``height_sd_m``: sd of measured heights (m) for the
    Monte Carlo (0 = exact); ``eq7``: ``"biomass_eq7"`` or ``"chave2014_eq7"``.
    """

    height_model: HeightModel | dict | None = None
    e: float | str | None = None
    allometry: ExpressionAllometry | dict | None = None
    wood_density_table: object = None
    species_table: object = None
    height_sd_m: float = 0.0
    eq7: str = "biomass_eq7"


def _heights(trees: pd.DataFrame, options: TreeOptions, source: str):
    n = len(trees)
    measured = (pd.to_numeric(trees["height_m"], errors="coerce").to_numpy(dtype=float)
                if "height_m" in trees else np.full(n, np.nan))
    height = measured.copy()
    height_source = np.where(np.isfinite(measured), "measured", "").astype(object)
    models: list[HeightModel] = []
    model_index = np.full(n, -1)
    model = options.height_model
    if model is not None:
        todo = np.flatnonzero(~np.isfinite(measured))
        plot_of = trees["plot_id"].to_numpy()
        pairs = [(None, model)]
        if isinstance(model, dict):  # the sample's plot ids matched to the trees' (text against numbers)
            tree_ids, keys = matching_ids(pd.Series(plot_of), pd.Series(list(model)))
            plot_of = tree_ids.to_numpy()
            pairs = list(zip(keys, model.values()))
            lacking = sorted(set(map(str, plot_of[todo])) - set(map(str, keys)))
            if lacking:
                raise InputError(f"{source}: no height model for plot(s) {', '.join(lacking[:10])}"
                                 f"{' ...' if len(lacking) > 10 else ''}, whose trees lack heights: one is fitted per "
                                 f"plot of the height sample, which has plot(s) {', '.join(map(str, list(model)[:10]))}; "
                                 "give their heights or drop --hd-per-plot")
        dbh = trees["dbh_cm"].to_numpy(dtype=float)
        for key, chosen in pairs:
            rows = todo if key is None else todo[plot_of[todo] == key]
            if not rows.size:
                continue
            models.append(chosen)
            height[rows] = chosen.predict(dbh[rows])
            height_source[rows] = chosen.method
            model_index[rows] = len(models) - 1
            plausibility.check_predicted_heights(height[rows], dbh[rows], rows, chosen, source)
    return height, height_source, models, model_index


def _dead(trees: pd.DataFrame, source: str) -> np.ndarray:
    """Which trees are dead by their ``status``; a value neither dead nor live is refused (a "cut"
    or "missing" tree must not be counted live by default)."""
    if "status" not in trees:
        return np.zeros(len(trees), bool)
    status = trees["status"].astype("string").str.strip().str.lower().fillna("")
    unknown = ~status.isin(DEAD | LIVE | {""})
    if unknown.any():
        values = ", ".join(repr(v) for v in pd.unique(trees["status"][unknown.to_numpy()])[:8])
        raise InputError(f"{source}: status {values} in row(s) {format_rows(np.flatnonzero(unknown.to_numpy()))} "
                         f"is neither dead ({', '.join(sorted(DEAD))}) nor live ({', '.join(sorted(LIVE))}, or "
                         "empty); recode it, and leave out trees that were cut or are missing")
    return status.isin(DEAD).to_numpy()


def tree_biomass(trees: pd.DataFrame, options: TreeOptions | None = None, *, source: str = "trees",
                 drop_invalid: bool = False, allow_implausible: bool = False) -> tuple[pd.DataFrame, Dropped, dict]:
    """Per-tree AGB, below-ground biomass and carbon (Mg) with what each tree used.

    Returns ``(tree_table, dropped, info)``: the checked trees with ``height_used_m``,
    ``height_source``, ``wood_density_used``, ``wood_density_sd``, ``wood_density_level``,
    ``species_group``, ``allometry``, ``agb_mg``, ``bgb_mg``, ``carbon_mg``, ``co2e_mg``; the
    rows dropped (``drop_invalid``); and ``info`` (height models, allometry route, unmatched
    wood-density names) for the Monte Carlo and the summary. Dead trees (``status`` dead / 枯死)
    are kept in the table with zero live biomass.
    """
    options = options or TreeOptions()
    trees, dropped = check_trees(trees, source, drop_invalid=drop_invalid, allow_implausible=allow_implausible)
    if trees.empty:
        raise InputError(f"{source}: no valid tree left")
    out = trees.reset_index(drop=True)
    table = species_groups(options.species_table)
    params = table.set_index("group")
    names = out["species"] if "species" in out else pd.Series(pd.NA, index=out.index)
    group = match_species_group(names, table)
    if "genus" in out:
        group = group.fillna(match_species_group(out["genus"], table))
    wood = lookup_wood_density(out, table=options.wood_density_table,
                               group_wd=group.map(params["wood_density_g_cm3"]).astype(float))
    height, height_source, models, model_index = _heights(out, options, source)
    dbh = out["dbh_cm"].to_numpy(dtype=float)
    e = _e_values(out, options.e, source)
    user = _user_allometries(options.allometry, group)
    no_height = ~np.isfinite(height)
    dead = _dead(out, source)
    # a dead tree counts 0 whatever its height (and stays out of the Monte Carlo): none is needed
    needs_height = np.array([a is None or a.needs_height for a in user]) & ~dead
    height_source[no_height & dead] = "none"
    if (no_height & needs_height).any():
        if e is None:
            raise InputError(
                f"{source}: height_m missing in row(s) {format_rows(np.flatnonzero(no_height & needs_height))}; "
                "measure it, give a height-diameter model (--height-sample or --feldpausch), or the stress "
                "index E (--e) for Chave 2014 eq. 7")
        route = "eq7"
    else:
        route = "eq4"
    agb = np.empty(len(out))
    label = np.empty(len(out), dtype=object)
    default_rows = np.array([a is None for a in user])
    if route == "eq4":
        agb[default_rows] = chave2014_eq4(dbh[default_rows], height[default_rows], wood.wd_g_cm3[default_rows])
        label[default_rows] = "chave2014_eq4"
    else:
        agb[default_rows] = chave2014_eq7(dbh[default_rows], wood.wd_g_cm3[default_rows], e[default_rows],
                                          name=options.eq7)
        label[default_rows] = options.eq7
        height_source[default_rows & no_height] = "none"
    for allom in {id(a): a for a in user if a is not None}.values():
        rows = np.array([a is allom for a in user])
        agb[rows] = allom.agb_mg(dbh[rows], height[rows], wood.wd_g_cm3[rows], None if e is None else e[rows])
        label[rows] = allom.expression
    agb[dead] = 0.0
    root_shoot = group.map(params["root_shoot"]).astype(float).fillna(0.0).to_numpy()
    default_cf = allometry_parameter("default_carbon_fraction", "carbon_fraction")
    carbon_fraction = group.map(params["carbon_fraction"]).astype(float).fillna(default_cf).to_numpy()
    out["species_group"] = group.to_numpy()
    out["height_used_m"] = height
    out["height_source"] = height_source
    out["wood_density_used"] = wood.wd_g_cm3
    out["wood_density_sd"] = wood.wd_sd_g_cm3
    out["wood_density_level"] = wood.level
    out["allometry"] = label
    out["root_shoot"] = root_shoot
    out["carbon_fraction"] = carbon_fraction
    out["agb_mg"] = agb
    with np.errstate(invalid="ignore"):  # inf x 0 of a runaway user allometry: refused by name below
        out["bgb_mg"] = agb * root_shoot
    out["carbon_mg"] = (agb + out["bgb_mg"].to_numpy()) * carbon_fraction
    out["co2e_mg"] = out["carbon_mg"] * allometry_parameter("co2_per_c", "ratio")
    info = {"route": route, "height_models": models, "height_model_index": model_index, "e": e,
            "allometry": options.allometry, "user_rows": ~default_rows, "dead": dead,
            "wood_density_counts": wood.counts(), "unmatched_names": wood.unmatched_names,
            "height_sd_m": options.height_sd_m, "eq7": options.eq7}
    return out, dropped, info


def _e_values(trees: pd.DataFrame, e, source: str) -> np.ndarray | None:
    if e is None:
        return None
    if isinstance(e, str):
        if e not in trees:
            raise InputError(f"{source}: no column {e!r} for the stress index E")
        values = pd.to_numeric(trees[e], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(values).all():
            raise InputError(f"{source}: E missing in row(s) {format_rows(np.flatnonzero(~np.isfinite(values)))}")
        return values
    return np.full(len(trees), float(e))


def _user_allometries(allometry, group: pd.Series) -> list:
    if allometry is None:
        return [None] * len(group)
    if isinstance(allometry, ExpressionAllometry):
        return [allometry] * len(group)
    return [allometry.get(g) if isinstance(g, str) else None for g in group]


def monte_carlo(tree_table: pd.DataFrame, info: dict, plot_ids, *, n_draws: int = 1000,
                diameter_error="chave2004", seed: int | None = 1, n_jobs: int = 1,
                progress: bool = False) -> montecarlo.MonteCarloResult:
    """Monte Carlo draws of each plot's AGB and carbon (Mg), plots in the order of ``plot_ids``.

    Wood density sd, height-model (or measured-height) error, diameter error and allometry
    uncertainty are propagated (:mod:`sinks.pools.montecarlo`); root:shoot and carbon fraction
    are taken as exact. A mix of user equations and Chave 2014 in one run is refused.
    """
    user_rows = info["user_rows"]
    if user_rows.any() and not user_rows.all():
        raise InputError("Monte Carlo: some trees use your equation and some Chave 2014; run them separately")
    if user_rows.any():
        allometry = info["allometry"]
        if isinstance(allometry, dict):
            if len({id(a) for a in allometry.values()}) > 1:
                raise InputError("Monte Carlo: one user equation per run (several species-group equations given)")
            allometry = next(iter(allometry.values()))
    else:
        allometry = info["route"]
    codes = pd.Index(list(plot_ids)).get_indexer(tree_table["plot_id"])
    source = tree_table["height_source"].to_numpy()
    measured = source == "measured"
    fixed_model = np.array([m.error_scale == "fixed_height" for m in info["height_models"]] + [False])
    index = info["height_model_index"]
    fixed = measured | ((index >= 0) & fixed_model[index])
    height_sd = np.where(measured, info["height_sd_m"], 0.0)
    for k, model in enumerate(info["height_models"]):
        height_sd[(index == k) & fixed] = model.rse_m
    mode = np.where(fixed, 2, np.where(index >= 0, 1, 0))
    if allometry == "eq7":
        mode[:] = 0
    keep = ~info["dead"]
    factor = ((1.0 + tree_table["root_shoot"]) * tree_table["carbon_fraction"]).to_numpy()
    draws = montecarlo.TreeDraws(
        plot_code=codes[keep], dbh_cm=tree_table["dbh_cm"].to_numpy(float)[keep],
        wd_g_cm3=tree_table["wood_density_used"].to_numpy(float)[keep],
        wd_sd_g_cm3=tree_table["wood_density_sd"].to_numpy(float)[keep],
        height_m=tree_table["height_used_m"].to_numpy(float)[keep], height_sd_m=height_sd[keep],
        height_mode=mode[keep], height_model_index=index[keep], carbon_factor=factor[keep],
        e=None if info["e"] is None else info["e"][keep])
    if isinstance(diameter_error, np.ndarray):
        diameter_error = diameter_error[keep]
    return montecarlo.propagate(draws, len(plot_ids), allometry=allometry, height_models=info["height_models"],
                                n_draws=n_draws, diameter_error=diameter_error, seed=seed, n_jobs=n_jobs,
                                eq7_name=info["eq7"], progress=progress)


def _check_plots(plots: pd.DataFrame, source: str) -> np.ndarray:
    require_columns(plots, PLOT_COLUMNS, source)
    area = pd.to_numeric(plots["area_ha"], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(area) | (area <= 0))
    if bad.size:
        raise InputError(f"{source}: area_ha missing or not positive in row(s) {format_rows(bad)}")
    if plots["plot_id"].duplicated().any():
        raise InputError(f"{source}: duplicate plot_id in row(s) "
                         f"{format_rows(np.flatnonzero(plots['plot_id'].duplicated(keep=False)))}")
    return area


def plot_stocks(tree_table: pd.DataFrame, plots: pd.DataFrame, *, mc: montecarlo.MonteCarloResult | None = None,
                method: str = "", source: str = "plots") -> pd.DataFrame:
    """Sum per-tree results to per-plot densities (Mg/ha) using each plot's ``area_ha``.

    Returns the plot table of DESIGN.md (``plot_id``, geometry when ``plots`` has it, ``area_ha``,
    ``pool``, ``agb_mg_ha``, ``carbon_mg_ha``, ``co2e_mg_ha``, ``n_trees``, ``stems_ha``,
    ``roots_counted_share`` (the share of the plot's AGB in trees whose species group gives a
    root:shoot ratio: below 1, part of the plot's carbon is above-ground only), ``method``) and, from a Monte Carlo ``mc`` (plots in the same order), ``carbon_sd_mg_ha`` and
    the mean, median, sd and 2.5 / 97.5 % quantiles of AGB and carbon (``*_mc_mean_mg_ha``, ...).
    Plots without trees get zero stock. Plot ids come out as given.
    """
    area = _check_plots(plots, source)
    orphans = sorted(set(tree_table["plot_id"]) - set(plots["plot_id"]))
    if orphans:
        raise InputError(f"trees: plot_id(s) not in the plot table: {', '.join(map(str, orphans[:10]))}")
    live = tree_table["agb_mg"] > 0
    rooted = tree_table["agb_mg"].where(tree_table["root_shoot"] > 0, 0.0) if "root_shoot" in tree_table else 0.0
    sums = tree_table.assign(live=live, rooted=rooted).groupby("plot_id").agg(
        agb_mg=("agb_mg", "sum"), carbon_mg=("carbon_mg", "sum"), n_trees=("live", "sum"),
        rooted_mg=("rooted", "sum"))
    out = plots.copy()
    joined = sums.reindex(out["plot_id"]).fillna(0.0)
    out["n_trees"] = joined["n_trees"].to_numpy().astype(int)
    out["stems_ha"] = out["n_trees"] / area
    out["agb_mg_ha"] = joined["agb_mg"].to_numpy() / area
    out["carbon_mg_ha"] = joined["carbon_mg"].to_numpy() / area
    # the share of the plot's AGB whose roots are counted: trees outside the species groups
    # (species_groups.csv, or --species-table) get no root:shoot ratio and no below-ground carbon
    with np.errstate(invalid="ignore", divide="ignore"):
        out["roots_counted_share"] = np.where(joined["agb_mg"].to_numpy() > 0,
                                              joined["rooted_mg"].to_numpy() / joined["agb_mg"].to_numpy(), np.nan)
    out["co2e_mg_ha"] = out["carbon_mg_ha"] * allometry_parameter("co2_per_c", "ratio")
    out["carbon_sd_mg_ha"] = np.nan
    if mc is not None:
        for name, draws in (("agb", mc.agb_mg), ("carbon", mc.carbon_mg)):
            for stat, values in montecarlo.summarise(draws).items():
                out[f"{name}_mc_{stat}_mg_ha"] = values / area
        out["carbon_sd_mg_ha"] = out["carbon_mc_sd_mg_ha"]
    out["pool"] = "forest"
    out["method"] = method or "Chave et al. 2014; species-group root:shoot and carbon fraction"
    return out


@dataclass
class ForestStocks:
    """What :func:`forest_stocks` returns.

    ``plots``: one row per plot with ``agb_mg_ha``, ``carbon_mg_ha``, ``co2e_mg_ha`` and, with a
    Monte Carlo, their ``*_mc_{mean,median,sd,q025,q975}_mg_ha`` and ``carbon_sd_mg_ha``;
    ``trees``: one row per tree (height and its source, wood density and its level, AGB/BGB/carbon
    in Mg); ``dropped``: rows refused with ``drop_invalid``; ``info``: height models, wood-density
    counts, unmatched names, route; ``method``: one line of provenance.
    """

    plots: pd.DataFrame
    trees: pd.DataFrame
    dropped: Dropped
    info: dict
    method: str


def forest_stocks(trees: pd.DataFrame, plots: pd.DataFrame, options: TreeOptions | None = None, *,
                  n_draws: int = 0, diameter_error="chave2004", seed: int | None = 1,
                  drop_invalid: bool = False, n_jobs: int = 1, progress: bool = False,
                  allow_implausible: bool = False, trees_source: str = "trees",
                  plots_source: str = "plots") -> ForestStocks:
    """Tree list (``plot_id``, ``tree_id``, ``dbh_cm``, ...) + plot table (``plot_id``, ``area_ha``)
    -> :class:`ForestStocks` (plot stocks in Mg/ha, per-tree results, dropped rows, provenance).

    ``n_draws`` > 0 runs the Monte Carlo (1,000 is BIOMASS's maximum and usual choice).
    Before it, the plausibility guards run (:mod:`sinks.pools.plausibility`): unit slips of
    diameters, heights and plot areas, and plot stocks below 0 or above the documented maximum
    (an allometry off by a factor or its sign, a bad E) raise
    :class:`~sinks.errors.ImplausibleValueError` unless ``allow_implausible``.
    """
    if "plot_id" in trees and "plot_id" in plots:
        tree_ids, plot_ids = matching_ids(trees["plot_id"], plots["plot_id"])
        trees, plots = trees.assign(plot_id=tree_ids), plots.assign(plot_id=plot_ids)
    tree_table, dropped, info = tree_biomass(trees, options, drop_invalid=drop_invalid, source=trees_source,
                                             allow_implausible=allow_implausible)
    plot_ids = plots["plot_id"].tolist() if "plot_id" in plots else []
    check_plausible_plots(tree_table, plots, allow_implausible=allow_implausible, source=plots_source,
                          trees_source=trees_source)
    mc = None
    if n_draws:
        _check_plots(plots, plots_source)
        mc = monte_carlo(tree_table, info, plot_ids, n_draws=n_draws, diameter_error=diameter_error,
                         seed=seed, n_jobs=n_jobs, progress=progress)
    method = describe_method(tree_table, info, n_draws=n_draws, diameter_error=diameter_error)
    return ForestStocks(plot_stocks(tree_table, plots, mc=mc, method=method), tree_table, dropped, info, method)


def check_plausible_plots(tree_table: pd.DataFrame, plots: pd.DataFrame, *, allow_implausible: bool = False,
                          source: str = "plots", trees_source: str = "trees") -> None:
    """Plot areas in m² or 亩, and deterministic plot stocks outside [0, documented maximum]."""
    if "area_ha" in plots.columns and "plot_id" in plots.columns:
        live = tree_table.loc[tree_table["agb_mg"] != 0, "plot_id"].value_counts()
        n_trees = live.reindex(plots["plot_id"]).fillna(0).to_numpy()
        plausibility.check_plot_area(plots, source, n_trees=n_trees, allow_implausible=allow_implausible)
    agb = tree_table["agb_mg"].to_numpy(dtype=float)
    negative = agb < 0  # no tree has negative biomass: refused even when passed as real
    if negative.any():
        raise plausibility.ImplausibleValueError(
            f"{trees_source}: the allometry gives negative biomass for {int(negative.sum())} tree(s), e.g. "
            f"{', '.join(map(str, tree_table.loc[negative, 'tree_id'].head(10)))} (down to {agb[negative].min():.4g} "
            "Mg); a biomass equation must give 0 or more: check its form, its sign and its valid diameter range")
    if allow_implausible:
        return
    stocks = plot_stocks(tree_table, plots, source=source)
    bad = ~np.isfinite(agb)
    if bad.any():
        raise plausibility.ImplausibleValueError(
            f"{trees_source}: the allometry gives no finite biomass for tree(s) "
            f"{', '.join(map(str, tree_table.loc[bad, 'tree_id'].head(10)))}; "
            "check the equation and its inputs (D cm, H m, WD g/cm3)")
    plausibility.check_stocks(stocks["carbon_mg_ha"].to_numpy(float), "forest", source=source,
                              ids=stocks["plot_id"].to_numpy())
    plausibility.check_tree_biomass(tree_table["dbh_cm"].to_numpy(float), tree_table["agb_mg"].to_numpy(float),
                                    trees_source, tree_ids=tree_table["tree_id"].to_numpy())


def describe_method(tree_table: pd.DataFrame, info: dict, *, n_draws: int = 0, diameter_error=None) -> str:
    """One line of provenance: allometries, heights, wood-density levels, Monte Carlo settings."""
    parts = ["AGB: " + ", ".join(sorted(set(tree_table["allometry"])))]
    heights = tree_table["height_source"].value_counts()
    parts.append("height: " + ", ".join(f"{k} {v}" for k, v in heights.items()))
    parts += [m.describe() for m in info["height_models"]]
    parts.append("wood density: " + ", ".join(f"{k} {v}" for k, v in info["wood_density_counts"].items()))
    parts.append("BGB and carbon: species-group root:shoot and carbon fraction (species_groups.csv), "
                 "else no roots and CF 0.47 (IPCC 2006 Vol. 4 Table 4.3)")
    if n_draws:
        parts.append(f"Monte Carlo {n_draws} draws as BIOMASS AGBmonteCarlo (diameter error {diameter_error})")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------------
# Stand-volume route
# ------------------------------------------------------------------------------------------------


def volume_stocks(stands: pd.DataFrame, *, species_table=None, source: str = "stands",
                  allow_implausible: bool = False) -> pd.DataFrame:
    """Stand volume (m3/ha) -> carbon (Mg C/ha): C = V x SVD x BEF x (1 + R) x CF.

    ``stands``: ``plot_id``, ``species_group`` (group name, Chinese name or a species of the
    group), ``volume_m3_ha`` [, ``volume_sd_m3_ha``]; several rows per plot (one per species
    group of a mixed stand) are summed. Returns one row per plot with ``agb_mg_ha``,
    ``bgb_mg_ha``, ``carbon_mg_ha``, ``co2e_mg_ha``, ``carbon_sd_mg_ha`` (from the volume sd
    alone, when given) and the factors used. Carbon below 0 or above the documented maximum
    (:func:`sinks.pools.plausibility.max_stock_mg_ha`) raises unless ``allow_implausible``.
    """
    require_columns(stands, STAND_COLUMNS, source)
    table = species_groups(species_table)
    params = table.set_index("group")
    volume = pd.to_numeric(stands["volume_m3_ha"], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(volume) | (volume < 0) | (volume > 5000))
    if bad.size:
        raise InputError(f"{source}: volume_m3_ha missing, negative or above 5000 in row(s) {format_rows(bad)}")
    group = match_species_group(stands["species_group"], table)
    unknown = np.flatnonzero(group.isna().to_numpy())
    if unknown.size:
        names = sorted(set(stands["species_group"].astype(str).iloc[unknown]))
        raise InputError(f"{source}: species group not in the table in row(s) {format_rows(unknown)}: "
                         f"{', '.join(names[:10])} (known: {', '.join(table['group'])})")
    factors = params.loc[group.to_numpy(), ["wood_density_g_cm3", "bef", "root_shoot", "carbon_fraction"]].astype(float)
    no_value = np.flatnonzero(factors.isna().any(axis=1).to_numpy())
    if no_value.size:
        missing = sorted(set(group.iloc[no_value]))
        why = "; ".join(f"{g}: {params.loc[g, 'source']}" for g in missing if "source" in params.columns)
        raise InputError(f"{source}: no volume-route factors for group(s) {', '.join(missing)} in row(s) "
                         f"{format_rows(no_value)}{f' ({why})' if why else ''}; give your own --species-table")
    # a plot's rows are summed (species, layers or origins listed apart); a row given twice, the same in
    # every column, is a copy, not a second stand component
    as_text = stands.astype(str).apply(lambda column: column.str.strip()).assign(species_group=group.to_numpy())
    twice = as_text.duplicated(keep=False).to_numpy()
    if twice.any():
        raise InputError(f"{source}: row(s) {format_rows(np.flatnonzero(twice))} repeat another row in every column "
                         f"(plot {', '.join(sorted(set(map(str, stands['plot_id'][twice]))))}): a plot's rows are "
                         "summed, so a copy would count twice; remove it, or tell the rows apart (a layer or origin "
                         "column)")
    svd, bef, r, cf = (factors[c].to_numpy() for c in factors.columns)
    agb = volume * svd * bef
    rows = pd.DataFrame({"plot_id": stands["plot_id"].to_numpy(), "agb": agb, "bgb": agb * r,
                         "carbon": agb * (1 + r) * cf})
    if "volume_sd_m3_ha" in stands:
        sd = pd.to_numeric(stands["volume_sd_m3_ha"], errors="coerce").to_numpy(dtype=float)
        negative = np.flatnonzero(sd < 0)
        if negative.size:
            raise InputError(f"{source}: volume_sd_m3_ha negative in row(s) {format_rows(negative)}; a standard "
                             "deviation is 0 or more (leave it empty where unknown)")
        rows["carbon_var"] = (sd * svd * bef * (1 + r) * cf) ** 2
    else:
        rows["carbon_var"] = np.nan
    per_plot = rows.groupby("plot_id", sort=False).agg(
        agb_mg_ha=("agb", "sum"), bgb_mg_ha=("bgb", "sum"), carbon_mg_ha=("carbon", "sum"),
        carbon_var=("carbon_var", lambda v: v.sum(min_count=1)), n_groups=("agb", "size"))
    extra = [c for c in ("species_group", "volume_m3_ha", "volume_sd_m3_ha") if c in stands.columns]
    first = stands.drop(columns=extra).drop_duplicates("plot_id").set_index("plot_id")
    out = first.join(per_plot, how="right").reset_index()
    if hasattr(stands, "crs") and "geometry" in out.columns:
        import geopandas as gpd

        out = gpd.GeoDataFrame(out, geometry="geometry", crs=stands.crs)
    out["carbon_sd_mg_ha"] = np.sqrt(out.pop("carbon_var"))
    out["co2e_mg_ha"] = out["carbon_mg_ha"] * allometry_parameter("co2_per_c", "ratio")
    out["species_groups"] = rows.assign(g=group.to_numpy()).groupby("plot_id", sort=False)["g"].agg(";".join).to_numpy()
    out["pool"] = "forest"
    out["method"] = "stand volume: C = V x SVD x BEF x (1 + R) x CF (species_groups.csv)"
    plausibility.check_stocks(out["carbon_mg_ha"].to_numpy(float), "forest", source=source,
                              ids=out["plot_id"].to_numpy(), allow_implausible=allow_implausible,
                              what="volume in another unit, or factors of your --species-table off by a factor")
    return out
