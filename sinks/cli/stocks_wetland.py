"""``sinks stocks wetland INTERVALS [--cores CORES] --out PLOTS [--depth-cm 100]``."""

from __future__ import annotations

import sys

from sinks.cli._common import (
    add_crs,
    add_overwrite,
    add_rename,
    echo,
    positive_float,
    print_dropped,
    read_with_sites,
    renames,
    summary,
)
from sinks.cli.stocks import add_allow_implausible


def register(pools) -> None:
    parser = pools.add_parser(
        "wetland",
        help="wetland core intervals -> organic carbon stock to a reference depth (Mg C/ha)",
        description="Carbon density = dry bulk density x fraction carbon (organic matter converted "
        "by a cited equation where only it was measured), integrated to the reference depth; gaps "
        "linearly interpolated, the deepest density extrapolated, each core flagged.",
    )
    parser.add_argument("intervals", help="interval table: core_id, top_cm, bottom_cm, dry_bulk_density_g_cm3, "
                        "fraction_carbon and/or fraction_organic_matter")
    parser.add_argument("--cores", help="core table joined by core_id (x, y, year, habitat)")
    parser.add_argument("--out", required=True, help="plot table to write (.gpkg, .csv or .parquet)")
    parser.add_argument("--depth-cm", type=positive_float, help="reference depth in cm (default 100)")
    parser.add_argument("--conversion", default="kauffman_donato_2012",
                        help="organic matter -> organic carbon conversion (wetland_om_to_oc.csv)")
    parser.add_argument("--intervals-out", help="also write the per-interval table (carbon density and its source)")
    parser.add_argument("--drop-invalid", action="store_true", help="drop impossible rows and list them instead of failing")
    add_allow_implausible(parser)
    add_rename(parser)
    add_crs(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run, outputs={"out": "table", "intervals_out": "table"}, inputs=("intervals", "cores"))


def run(args) -> None:
    from sinks.io import write_tables
    from sinks.pools import plausibility, wetland

    mapping = renames(args)
    plausibility.check_rename_units(mapping)
    intervals = read_with_sites(args.intervals, args.cores, mapping, "core_id", wetland.INTERVAL_COLUMNS[:3], encoding=args.encoding)
    result = wetland.wetland_stocks(intervals, depth_cm=args.depth_cm, conversion=args.conversion,
                                    crs=args.crs, drop_invalid=args.drop_invalid, source=str(args.intervals),
                                    allow_implausible=args.allow_implausible)
    print_dropped(result.dropped)
    write_tables({args.out: result.plots, **({args.intervals_out: result.intervals} if args.intervals_out else {})})
    plots = result.plots
    echo(f"{len(plots)} cores; carbon to {plots['reference_depth_cm'].iloc[0] if len(plots) else args.depth_cm:g} cm "
         f"Mg C/ha: {summary(plots['carbon_mg_ha'])}")
    echo("  flags: " + ", ".join(f"{k} {v}" for k, v in plots["flag"].value_counts().items()))
    below = plots["n_om_below_range"] > 0
    if below.any():
        print(f"sinks stocks wetland: warning: {int(plots['n_om_below_range'].sum())} organic-matter-only intervals "
              f"in {int(below.sum())} cores are below the range of the {args.conversion} conversion (it gives more "
              "carbon than organic matter there): they count as gaps, filled from the core's other intervals "
              "(n_om_below_range), which overstates a mineral sediment (a salt marsh, seagrass) whose intervals "
              "are mostly that poor: give it --conversion craft_1991 (fitted through the origin)", file=sys.stderr)
    echo(f"plot table -> {args.out}")
    if args.intervals_out:
        echo(f"per-interval table -> {args.intervals_out}")
