"""``sinks stocks gedi GRANULE [GRANULE ...] --out PLOTS``: GEDI L4A footprints -> pseudo-plots."""

from __future__ import annotations

from sinks.cli._common import add_crs, add_overwrite, echo, unit_fraction
from sinks.cli.stocks import add_allow_implausible
from sinks.errors import InputError


def register(pools) -> None:
    parser = pools.add_parser(
        "gedi",
        help="GEDI L4A footprints -> pseudo-plots of above-ground carbon (Mg C/ha)",
        description="Read GEDI L4A V002 granules (.h5 or .zip), keep the shots with "
        "l4_quality_flag == 1 (ORNL DAAC L4A user guide) and a predicted AGBD, clip them to an "
        "area and dates, and write one plot per footprint: carbon = AGBD x 0.47 (IPCC 2006 Vol. 4 "
        "Table 4.3), area 0.0491 ha (25 m footprint). AGBD is a lidar model prediction, not a "
        "field measurement.",
    )
    parser.add_argument("granules", nargs="+", metavar="GRANULE", help="GEDI04_A granule(s), .h5 or .zip")
    parser.add_argument("--out", required=True, help="plot table to write (.gpkg, .csv or .parquet)")
    parser.add_argument("--bbox", metavar="XMIN,YMIN,XMAX,YMAX",
                        help="keep footprints inside this box (EPSG:4326 degrees)")
    parser.add_argument("--clip", metavar="POLYGONS",
                        help="keep footprints inside these polygons (GeoPackage, Shapefile, GeoParquet)")
    parser.add_argument("--start", metavar="YYYY-MM-DD", help="first acquisition date kept (UTC)")
    parser.add_argument("--end", metavar="YYYY-MM-DD", help="last acquisition date kept (UTC)")
    parser.add_argument("--min-sensitivity", type=unit_fraction, metavar="S",
                        help="also require sensitivity >= S (0..1; no default: cite your choice)")
    parser.add_argument("--exclude-degraded", action="store_true",
                        help="also require degrade_flag == 0 (not part of l4_quality_flag)")
    parser.add_argument("--exclude-leaf-off", action="store_true",
                        help="also require leaf_off_flag == 0 (leaf-on observations)")
    parser.add_argument("--pft", metavar="CLASSES",
                        help="keep only these pft_class values, e.g. 1,2,3,4 (MODIS tree classes)")
    parser.add_argument("--all-shots", action="store_true",
                        help="skip the l4_quality_flag rule (shots without a prediction are still dropped)")
    parser.add_argument("--carbon-fraction", type=unit_fraction, metavar="CF",
                        help="carbon fraction of dry biomass (default 0.47, IPCC 2006 Vol. 4 Table 4.3)")
    parser.add_argument("--parameters", metavar="CSV",
                        help="your own gedi_parameters.csv (footprint_diameter_m, with source)")
    add_crs(parser, "CRS of --clip polygons whose file has none, e.g. EPSG:4326")
    add_allow_implausible(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run, outputs={"out": "table"},
                        inputs=lambda args: [*args.granules, *(p for p in (args.clip, args.parameters) if p)])


def run(args) -> None:
    from sinks.pools import gedi
    from sinks.io import read_table, write_tables
    from sinks.pools import plausibility

    polygon = None
    if args.clip:
        polygon = read_table(args.clip, geometry=True, crs=args.crs)
    result = gedi.read_gedi_l4a_steps(
        args.granules,
        quality="all" if args.all_shots else "recommended",
        bbox=args.bbox,
        polygon=polygon,
        start=args.start,
        end=args.end,
        min_sensitivity=args.min_sensitivity,
        exclude_degraded=args.exclude_degraded,
        exclude_leaf_off=args.exclude_leaf_off,
        pft_classes=_pft_classes(args.pft),
        carbon_fraction=args.carbon_fraction,
        parameters=args.parameters,
    )
    echo(f"{result.n_read} shots read from {len(args.granules)} file(s)")
    for step in result.steps:
        echo(f"  {step.kept:>8} kept by {step.rule}")
    plots = result.plots
    if plots.empty:
        raise InputError("no footprint is left after the filters above; nothing written "
                         "(widen --bbox/--clip/dates or relax the options)")
    plausibility.check_stocks(plots["carbon_mg_ha"].to_numpy(float), "gedi", source=", ".join(args.granules[:3]),
                              ids=plots["shot_number"].to_numpy() if "shot_number" in plots else None,
                              allow_implausible=args.allow_implausible,
                              what="a --carbon-fraction or --parameters table off by a factor")
    write_tables({args.out: plots})
    echo(f"{len(plots)} footprints: AGBD {plots['agbd_mg_ha'].mean():.1f} Mg/ha on average, carbon "
         f"{plots['carbon_mg_ha'].mean():.1f} Mg C/ha (CF {plots['carbon_fraction'].iloc[0]:g})")
    echo(f"plot table -> {args.out}")


def _pft_classes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise InputError(f"--pft expects class numbers like 1,2,3,4, got {text!r}") from exc
