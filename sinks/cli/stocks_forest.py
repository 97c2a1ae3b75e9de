"""``sinks stocks forest TREES --plots PLOTS --out OUT``."""

from __future__ import annotations

from sinks.cli._common import add_crs, add_rename, echo, renames
from sinks.io import read_table, write_table
from sinks.pools import forest


def register(pools) -> None:
    parser = pools.add_parser(
        "forest",
        help="tree lists -> plot carbon stocks (Chave 2014 + species-group parameters)",
        description="Per-tree biomass and carbon from diameter, height and wood density (Chave et "
        "al. 2014 eq. 4), summed to Mg C/ha per plot using each plot's area_ha.",
    )
    parser.add_argument("trees", help="tree table: plot_id, tree_id, dbh_cm [, height_m, species, wood_density_g_cm3]")
    parser.add_argument("--plots", required=True, help="plot table: plot_id, area_ha, geometry or x/y (+ --crs)")
    parser.add_argument("--out", required=True, help="plot table to write (.gpkg, .csv or .parquet)")
    parser.add_argument("--trees-out", help="also write the per-tree results here")
    parser.add_argument("--species-table", help="your own species-group parameter table (CSV, same columns)")
    add_rename(parser)
    add_crs(parser)
    parser.set_defaults(func=run)


def run(args) -> None:
    trees = read_table(args.trees, rename=renames(args), required=forest.TREE_COLUMNS)
    plots = read_table(args.plots, required=forest.PLOT_COLUMNS,
                       crs=args.crs, geometry=True)
    plot_table, tree_table = forest.forest_stocks(trees, plots, species_table=args.species_table)
    write_table(plot_table, args.out)
    echo(f"{len(plot_table)} plots, {len(tree_table)} trees; carbon {plot_table['carbon_mg_ha'].mean():.1f} "
         f"Mg C/ha on average (min {plot_table['carbon_mg_ha'].min():.1f}, max {plot_table['carbon_mg_ha'].max():.1f})")
    echo(f"plot table -> {args.out}")
    if args.trees_out:
        write_table(tree_table, args.trees_out)
        echo(f"per-tree results -> {args.trees_out}")
