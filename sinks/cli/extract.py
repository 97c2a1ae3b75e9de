"""``sinks extract SPEC PLOTS --out TABLE``: covariates at plots, on local rasters or Earth Engine."""

from __future__ import annotations

import sys

from sinks.cli._common import (add_crs, add_engine, add_overwrite, add_quiet, add_rename, echo, show_progress,
                               start_engine, table_options)
from sinks.errors import InputError


def register(sub) -> None:
    parser = sub.add_parser(
        "extract",
        help="covariates at plots from a feature spec -> feature table",
        description="Compute a feature spec's covariates over each plot's footprint (point, buffer or "
        "polygon, as the spec says) and write one row per plot: plot_id, x, y, one column per "
        "feature, pixel counts, then the plot table's other columns (e.g. carbon_mg_ha). "
        "The same spec runs on local rasters (default) or on Earth Engine (--engine ee).",
    )
    parser.add_argument("spec", help="feature spec (features/*.toml)")
    parser.add_argument("plots", help="plot table: plot_id and geometry, or x/y with --crs")
    parser.add_argument("--out", required=True, help="feature table to write (.csv or .parquet)")
    add_rename(parser)
    add_crs(parser)
    parser.add_argument("--allow-missing", action="store_true",
                        help="keep plots outside the grid or a raster's coverage (local engine): their "
                        "features are NaN and a missing_reason column says why (default: an error)")
    add_overwrite(parser)
    parser.add_argument("--row-ids", action="store_true",
                        help="number the rows 1..n as plot_id (for point tables without an id column)")
    add_quiet(parser)
    add_engine(parser)
    parser.set_defaults(func=run, outputs={"out": "table"}, inputs=("spec", "plots"))


def run(args) -> None:
    from sinks.covariates.spec import load_spec
    from sinks.io import read_table, write_table

    spec = load_spec(args.spec)
    plots = read_table(args.plots, **table_options(args), crs=args.crs, geometry=True)
    if args.row_ids:
        if "plot_id" in plots.columns:
            raise InputError(f"{args.plots}: already has plot_id; drop --row-ids")
        plots.insert(0, "plot_id", range(1, len(plots) + 1))
    if args.allow_missing and args.engine == "ee":
        raise InputError("--allow-missing is for the local engine (Earth Engine gives NaN outside its data)")
    start_engine(args)
    if args.engine == "ee":
        from sinks.covariates.earthengine import extract_ee

        table = extract_ee(spec, plots)
    else:
        from sinks.covariates.extract import extract

        table = extract(spec, plots, progress=show_progress(args), allow_missing=args.allow_missing)
    valid = int((table["valid_pixels"] > 0).sum())
    if valid == 0:
        raise InputError(f"none of the {len(table)} plots has a pixel where every feature of spec {spec.name!r} is "
                         "valid: check the sources' nodata, extents and CRS against the plots")
    write_table(table, args.out)
    if "missing_reason" in table.columns:
        missing = table[table["missing_reason"].astype(bool)]
        if len(missing):
            counts = missing.groupby("missing_reason", sort=False)["plot_id"].agg(list)
            parts = [f"{reason}: {len(ids)} ({', '.join(map(str, ids[:3]))}{', ...' if len(ids) > 3 else ''})"
                     for reason, ids in counts.items()]
            print(f"sinks extract: warning: {len(missing)} of {len(table)} plot(s) have missing features, kept "
                  f"with NaN (column missing_reason): {'; '.join(parts)}", file=sys.stderr)
    echo(f"{len(table)} plots x {len(spec.features)} features of spec {spec.name!r} ({args.engine} engine); "
         f"{valid} plots with every feature valid")
    echo(f"feature table -> {args.out}")
