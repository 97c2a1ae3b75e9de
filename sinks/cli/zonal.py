"""``sinks zonal MAP POLYGONS --out TABLE``: per-polygon totals with exact partial pixels."""

from __future__ import annotations

import sys

from sinks.cli._common import (add_crs, add_overwrite, add_quiet, add_rename, echo, nonnegative_float, show_progress,
                               table_options, unit_fraction)
from sinks.cli.change import level_option


def register(sub) -> None:
    parser = sub.add_parser(
        "zonal",
        help="per-polygon totals of a carbon map (t C, t CO2e) or sink map (t CO2e/yr), with intervals",
        description="Sum a carbon map (Mg C/ha) or sink map (t CO2e/ha/yr) over polygons, each pixel "
        "weighted by the exact ellipsoidal area of its part inside the polygon (in any CRS). Intervals "
        "of the totals treat pixel errors as spatially correlated (exponential model with "
        "--error-range-m, or the map's tags; without either, fully correlated: the conservative bound). "
        "Also reports area, pixels, and the shares without data, outside the raster and outside the AOA.",
    )
    parser.add_argument("map", help="carbon or sink map (from 'sinks map' or 'sinks change')")
    parser.add_argument("polygons", help="polygons (GeoPackage, Shapefile, GeoParquet, GeoJSON); any CRS")
    parser.add_argument("--out", required=True, help="output table (.csv, .parquet, or .gpkg / .geojson with the "
                        "polygons and their columns)")
    parser.add_argument("--band", help="band to total (default: carbon, else sink)")
    parser.add_argument("--id", dest="id_column", metavar="COLUMN",
                        help="polygon id column (default: parcel_id, polygon_id or id, in any case, else the row "
                        "number)")
    parser.add_argument("--error-range-m", type=nonnegative_float, metavar="M",
                        help="range r of the exponential correlation of pixel errors, rho(d) = exp(-d/r), in "
                        "metres (0 = independent pixels); default: the map's sinks_error_range_m tag, else "
                        "fully correlated. Given, it replaces the map's error model whole (its nugget tag too)")
    parser.add_argument("--error-nugget", type=unit_fraction, metavar="SHARE",
                        help="share of the pixel error variance that is uncorrelated (default: the map's "
                        "sinks_error_nugget tag, else 0). Given, it replaces the map's error model whole (its range "
                        "tag too: give --error-range-m as well)")
    level_option(parser)
    add_rename(parser)
    add_crs(parser, "CRS of polygons whose file has none, e.g. EPSG:4326")
    add_overwrite(parser)
    add_quiet(parser)
    parser.set_defaults(func=run, outputs={"out": "table"}, inputs=("map", "polygons"))


def run(args) -> None:
    import geopandas as gpd
    import pandas as pd

    from sinks.io import VECTOR_SUFFIXES, read_table, write_table
    from sinks.mapping.zonal import zonal_totals

    polygons = read_table(args.polygons, geometry=True, crs=args.crs, **table_options(args))
    table = zonal_totals(args.map, polygons, band=args.band, id_column=args.id_column,
                         error_range_m=args.error_range_m, error_nugget=args.error_nugget, level=args.level,
                         progress=show_progress(args), source=args.polygons)
    from pathlib import Path

    unmapped = (table["outside_raster_share"].fillna(0) + table["nodata_share"].fillna(0)) > 0
    unmapped_ids = table.loc[unmapped, table.columns[0]].astype(str).tolist()  # the id column comes first
    if Path(args.out).suffix.lower() in VECTOR_SUFFIXES:  # the polygons as given: their columns, then the totals
        given = polygons.drop(columns=[c for c in polygons.columns if c in table.columns or c == polygons.geometry.name])
        table = gpd.GeoDataFrame(pd.concat([given.reset_index(drop=True), table.reset_index(drop=True)], axis=1),
                                 geometry=polygons.geometry.to_numpy(), crs=polygons.crs)
    path = write_table(table, args.out)
    total = [c for c in ("total_t_co2e", "total_t_co2e_yr") if c in table.columns][0]
    echo(f"{len(table)} polygon(s), {table['area_ha'].sum():,.1f} ha, {total} {table[total].sum():,.1f} -> {path}")
    if unmapped_ids:
        shown = ", ".join(unmapped_ids[:5]) + (f" and {len(unmapped_ids) - 5} more" if len(unmapped_ids) > 5 else "")
        print(f"sinks zonal: warning: {len(unmapped_ids)} polygon(s) lie partly beyond the map or on its nodata "
              f"({shown}): their totals count the "
              "mapped part only (outside_raster_share, nodata_share in the table)", file=sys.stderr)
