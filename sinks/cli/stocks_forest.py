"""``sinks stocks forest INPUT --out PLOTS``: tree lists or stand volumes -> plot carbon stocks."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from sinks.cli._common import (
    add_crs,
    add_overwrite,
    add_quiet,
    add_rename,
    check_renames_found,
    echo,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    print_dropped,
    renames,
    show_progress,
    summary,
)
from sinks.cli.stocks import add_allow_implausible
from sinks.constants import HEIGHT_MODELS
from sinks.errors import InputError


#: Options of the tree route and their defaults (the parser's, set from here): given with a
#: stand-volume table, they would be silently ignored.
TREE_ROUTE_OPTIONS = {"plots": None, "area_ha": None, "trees_out": None, "height_sample": None, "hd_model": "log2",
                      "hd_weighted": False, "hd_per_plot": False, "feldpausch": None, "height_sd": 0.0, "e": None,
                      "wood_density": None, "allometry": None, "allometry_table": None, "draws": 1000,
                      "diameter_error": "chave2004", "drop_invalid": False}


def register(pools) -> None:
    parser = pools.add_parser(
        "forest",
        help="tree lists (or stand volumes) -> plot carbon stocks (Mg C/ha) with Monte Carlo uncertainty",
        description="Tree route: height (measured, or a height-diameter model fitted on a height sample, "
        "or Feldpausch et al. 2012), wood density (species -> genus -> family -> species group -> plot "
        "mean), above-ground biomass by Chave et al. 2014 eq. 4 (with height) or eq. 7 (with --e), "
        "roots and carbon by species-group root:shoot and carbon fraction; summed per plot over "
        "area_ha, with a BIOMASS-style Monte Carlo (diameter, wood density, height and allometry "
        "errors). Stand-volume route (an INPUT with volume_m3_ha): C = V x SVD x BEF x (1 + R) x CF.",
    )
    parser.add_argument("input", help="tree table: plot_id, tree_id, dbh_cm [, height_m, species, genus, family, "
                        "wood_density_g_cm3, status]; or stand table: plot_id, species_group, volume_m3_ha")
    parser.add_argument("--out", required=True, help="plot table to write (.gpkg, .csv or .parquet)")
    parser.add_argument("--plots", help="plot table: plot_id, area_ha [, geometry or x/y with --crs]")
    parser.add_argument("--area-ha", type=positive_float, metavar="HA", help="area of every plot (ha), instead of --plots")
    parser.add_argument("--trees-out", help="also write the per-tree results here")
    group = parser.add_argument_group("height")
    group.add_argument("--height-sample", metavar="TABLE",
                       help="trees with dbh_cm and height_m to fit a height-diameter model for trees without height")
    group.add_argument("--hd-model", choices=HEIGHT_MODELS, default=TREE_ROUTE_OPTIONS["hd_model"],
                       help="model fitted on --height-sample (default log2)")
    group.add_argument("--hd-weighted", action="store_true", help="weight the fit by D^2 H (BIOMASS useWeight)")
    group.add_argument("--hd-per-plot", action="store_true",
                       help="fit one model per plot_id of the height sample (stand-specific models)")
    group.add_argument("--feldpausch", metavar="REGION",
                       help="Feldpausch et al. 2012 regional model instead, e.g. GuianaShield, SEAsia")
    group.add_argument("--height-sd", type=nonnegative_float, default=TREE_ROUTE_OPTIONS["height_sd"], metavar="M",
                       help="measurement sd of measured heights for the Monte Carlo (m, default 0)")
    group.add_argument("--e", type=float, metavar="E",
                       help="Chave 2014 stress index E: if some trees lack a height and no H-D model is given, "
                       "every tree uses eq. 7 (BIOMASS coefficients; one allometry per run)")
    group = parser.add_argument_group("wood density and allometry")
    group.add_argument("--wood-density", metavar="TABLE",
                       help="wood-density table (BIOMASS wsg_estimates, GWDD records or your own)")
    group.add_argument("--species-table", metavar="CSV",
                       help="your own species-group table (wood density, BEF, root:shoot, carbon fraction)")
    group.add_argument("--allometry", metavar="EXPR",
                       help="your AGB equation in kg over D (cm), H (m), WD (g/cm3), E, e.g. '0.0673*(WD*D**2*H)**0.976'")
    group.add_argument("--allometry-table", metavar="CSV",
                       help="equations per species group: species_group, equation, source, coefficient columns")
    group = parser.add_argument_group("Monte Carlo")
    group.add_argument("--draws", type=nonnegative_int, default=TREE_ROUTE_OPTIONS["draws"],
                       help="Monte Carlo draws (default 1000; 0 turns it off)")
    group.add_argument("--diameter-error", default=TREE_ROUTE_OPTIONS["diameter_error"], metavar="SD|chave2004|none",
                       help="diameter measurement error: chave2004 (default), an sd in cm, or none")
    group.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    group.add_argument("--jobs", type=positive_int, default=1, help="threads for the Monte Carlo (default 1)")
    parser.add_argument("--drop-invalid", action="store_true",
                        help="drop impossible tree rows and list them instead of failing")
    add_allow_implausible(parser)
    add_quiet(parser)
    add_rename(parser)
    add_crs(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run, outputs={"out": "table", "trees_out": "table"},
                        inputs=("input", "plots", "height_sample", "wood_density", "species_table",
                                "allometry_table"))


def run(args) -> None:
    from sinks.io import check_columns, read_table, write_tables
    from sinks.pools import forest, plausibility

    mapping = renames(args)
    plausibility.check_rename_units(mapping)
    # each --rename applies to whichever of the tree list, the plot table and the height sample has
    # the column; one in none of them is an error
    table = read_table(args.input, encoding=args.encoding, crs=args.crs, renamed_later=mapping)
    if args.plots and args.area_ha is not None:
        raise InputError("give --plots or --area-ha, not both")
    plots_raw = (read_table(args.plots, crs=args.crs, encoding=args.encoding, renamed_later=mapping)
                 if args.plots else None)
    sample_raw = (read_table(args.height_sample, encoding=args.encoding, renamed_later=mapping)
                  if args.height_sample else None)
    columns = {args.input: table.columns, **({args.plots: plots_raw.columns} if args.plots else {}),
               **({args.height_sample: sample_raw.columns} if args.height_sample else {})}
    if len(columns) > 1:
        check_renames_found(mapping, columns)
    table = check_columns(table, args.input, rename=mapping, only_present=len(columns) > 1)
    if "volume_m3_ha" in table.columns and "dbh_cm" not in table.columns:
        return _run_volume(args, table)
    if "dbh_cm" not in table.columns:  # a stand table whose volume column has another case
        near = [c for c in map(str, table.columns) if c.lower() == "volume_m3_ha"]
        if near:
            raise InputError(f"{args.input}: no column volume_m3_ha (did you mean {near[0]!r}?) nor dbh_cm; "
                             f"--rename {near[0]}=volume_m3_ha for a stand-volume table")
        volume = [c for c in map(str, table.columns) if c.lower().startswith("volume") or "蓄积" in c]
        if volume:  # a stand table whose volume is not stated per hectare: never read as a tree list
            raise InputError(f"{args.input}: has {volume[0]!r} but neither dbh_cm (a tree list) nor volume_m3_ha "
                             f"(a stand table, m³ per ha); if {volume[0]!r} is the stand volume per hectare, "
                             f"--rename {volume[0]}=volume_m3_ha; if it is the plot's volume (m³), divide it by "
                             "the plot's area in ha first")
    trees = table
    plots = _plots(args, trees, plots_raw)
    if Path(args.out).suffix.lower() == ".gpkg" and "geometry" not in plots.columns:
        raise InputError(f"{args.out}: a GeoPackage needs the plots' locations, and "
                         + (f"{args.plots} has no geometry and no x/y columns with --crs" if args.plots else
                            "--area-ha gives none") + "; give --plots with x/y (and --crs) or geometry, "
                         "or write .csv or .parquet")
    options = forest.TreeOptions(
        height_model=_height_model(args, sample_raw), e=args.e, allometry=_allometry(args),
        wood_density_table=args.wood_density, species_table=args.species_table, height_sd_m=args.height_sd)
    stocks = forest.forest_stocks(
        trees, plots, options, n_draws=args.draws, diameter_error=_diameter_error(args.diameter_error),
        seed=args.seed, drop_invalid=args.drop_invalid, n_jobs=args.jobs, progress=show_progress(args),
        allow_implausible=args.allow_implausible, trees_source=str(args.input),
        plots_source=str(args.plots or "--area-ha"))
    plot_table, tree_table, info = stocks.plots, stocks.trees, stocks.info
    print_dropped(stocks.dropped.table())
    write_tables({args.out: plot_table, **({args.trees_out: tree_table} if args.trees_out else {})})
    echo(f"{len(plot_table)} plots, {len(tree_table)} trees ({info['route']} route)")
    for model in info["height_models"]:
        echo(f"  height: {model.describe()}")
    echo("  wood density by level: " + ", ".join(f"{k} {v}" for k, v in info["wood_density_counts"].items()))
    if info["unmatched_names"]:
        names = info["unmatched_names"]
        echo(f"  {len(names)} name(s) matched no taxon or species group (took a plot or dataset mean): "
             + ", ".join(names[:8]) + (" ..." if len(names) > 8 else ""))
    echo(f"  carbon Mg C/ha: {summary(plot_table['carbon_mg_ha'])}")
    share = plot_table["roots_counted_share"]
    if (share < 1 - 1e-9).any():
        mixed = int(((share > 0) & (share < 1 - 1e-9)).sum())
        print(f"sinks stocks forest: warning: roots are counted for only part of the trees: in {int((share < 1 - 1e-9).sum())} "
              f"of {int(share.notna().sum())} plots some AGB has no root:shoot ratio ({mixed} mix trees with and without "
              "roots), so their carbon is partly above-ground only (roots_counted_share); trees outside the species "
              "groups get none: give --species-table with a root_shoot for them", file=sys.stderr)
    if args.draws:
        echo(f"  Monte Carlo ({args.draws} draws): carbon sd {summary(plot_table['carbon_sd_mg_ha'])}")
    echo(f"plot table -> {args.out}")
    if args.trees_out:
        echo(f"per-tree results -> {args.trees_out}")


def _run_volume(args, stands) -> None:
    given = [f"--{name.replace('_', '-')}" for name, default in TREE_ROUTE_OPTIONS.items()
             if getattr(args, name) != default]
    if given:
        raise InputError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for a tree list; {args.input} is a "
                         "stand-volume table (volume_m3_ha, no dbh_cm): its plots need no area, and its uncertainty "
                         "comes from volume_sd_m3_ha")
    from sinks.io import to_geodataframe, write_tables
    from sinks.pools import forest

    if "geometry" not in stands.columns and {"x", "y"} <= set(stands.columns) and args.crs:
        stands = to_geodataframe(stands, crs=args.crs, source=args.input)

    plot_table = forest.volume_stocks(stands, species_table=args.species_table, source=args.input,
                                      allow_implausible=args.allow_implausible)
    write_tables({args.out: plot_table})
    echo(f"{len(plot_table)} stands (stand-volume route, C = V x SVD x BEF x (1 + R) x CF)")
    echo(f"  carbon Mg C/ha: {summary(plot_table['carbon_mg_ha'])}")
    echo(f"plot table -> {args.out}")


def _plots(args, trees, raw):
    """The plot table: ``raw`` (the --plots table as read) renamed and checked, or --area-ha's."""
    from sinks.io import check_columns, require_columns, to_geodataframe
    from sinks.pools import forest

    if args.plots:
        plots = check_columns(raw, args.plots, rename=renames(args), required=forest.PLOT_COLUMNS, only_present=True)
        if "geometry" in plots.columns:
            return plots
        if {"x", "y"} <= set(plots.columns) and args.crs:
            return to_geodataframe(plots, crs=args.crs, source=args.plots)
        if args.crs:
            lonlat = [c for c in plots.columns if str(c).lower() in ("lon", "long", "longitude", "lat", "latitude")]
            hint = (f" (it has {', '.join(map(str, lonlat))}: --rename them to x and y)" if lonlat else "")
            raise InputError(f"{args.plots}: --crs {args.crs} is given but the plot table has no x and y columns"
                             f"{hint}; found {', '.join(map(str, plots.columns))}")
        return plots
    if args.area_ha is None:
        raise InputError("the tree route needs plot areas: --plots TABLE (plot_id, area_ha) or --area-ha HA")
    require_columns(trees, ["plot_id"], args.input)
    import pandas as pd

    return pd.DataFrame({"plot_id": pd.unique(trees["plot_id"]), "area_ha": args.area_ha})


def _height_model(args, raw):
    """The height model: Feldpausch's region, or fitted on ``raw`` (the --height-sample table as read)."""
    if args.feldpausch and args.height_sample:
        raise InputError("give --height-sample or --feldpausch, not both")
    from sinks.io import check_columns
    from sinks.pools import height

    if args.feldpausch:
        return height.feldpausch_model(args.feldpausch)
    if not args.height_sample:
        return None
    sample = check_columns(raw, args.height_sample, rename=renames(args), required=("dbh_cm", "height_m"),
                           only_present=True)
    from sinks.pools.plausibility import check_tree_units

    check_tree_units(sample, args.height_sample, allow_implausible=args.allow_implausible)  # as the tree list's
    if args.hd_per_plot:
        if "plot_id" not in sample.columns:
            raise InputError(f"{args.height_sample}: --hd-per-plot needs a plot_id column")
        return {key: height.fit_height_model(rows["dbh_cm"], rows["height_m"], args.hd_model, weighted=args.hd_weighted)
                for key, rows in sample.groupby("plot_id")}
    return height.fit_height_model(sample["dbh_cm"], sample["height_m"], args.hd_model, weighted=args.hd_weighted)


def _allometry(args):
    if args.allometry and args.allometry_table:
        raise InputError("give --allometry or --allometry-table, not both")
    from sinks.pools.allometry import ExpressionAllometry, read_allometry_table

    if args.allometry:
        return ExpressionAllometry(args.allometry)
    return read_allometry_table(args.allometry_table) if args.allometry_table else None


def _diameter_error(text: str):
    if text.lower() in ("none", "0"):
        return None
    if text.lower() == "chave2004":
        return "chave2004"
    try:
        sd = float(text)
    except ValueError as exc:
        raise InputError(f"--diameter-error expects chave2004, none or an sd in cm, got {text!r}") from exc
    if not (math.isfinite(sd) and sd > 0):
        raise InputError(f"--diameter-error: an sd in cm must be a finite number above 0 (or none), got {text!r}")
    return sd
