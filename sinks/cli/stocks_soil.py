"""``sinks stocks soil HORIZONS --out PLOTS [--depths 0-30,30-100] [--fill-bd]``."""

from __future__ import annotations

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
from sinks.constants import DEPTH_METHODS


def register(pools) -> None:
    parser = pools.add_parser(
        "soil",
        help="soil horizons -> organic carbon stocks (Mg C/ha) per standard depth interval",
        description="Horizon stocks SOC x BD x thickness x (1 - CF/100), carbon density harmonised "
        "to standard depths by the equal-area spline (Bishop et al. 1999) or weighted overlap. "
        "Writes one row per profile: carbon_mg_ha_<top>_<bottom> and soc_g_kg_<top>_<bottom> per "
        "interval, carbon_mg_ha = the first interval.",
    )
    parser.add_argument("horizons", help="horizon table: profile_id, top_cm, bottom_cm, soc_g_kg "
                        "[, bulk_density_g_cm3, coarse_fragments_pct, x, y, year]")
    parser.add_argument("--out", required=True, help="plot table to write (.gpkg, .csv or .parquet)")
    parser.add_argument("--depths", default="0-30,30-100", help="standard intervals in cm (default 0-30,30-100)")
    parser.add_argument("--method", choices=DEPTH_METHODS, default="spline", help="depth harmonisation (default spline)")
    parser.add_argument("--lambda", dest="lam", type=positive_float, help="spline smoothing (default 0.1, Malone et al. 2009)")
    parser.add_argument("--fill-bd", action="store_true",
                        help="fill missing bulk density by a pedotransfer function (flagged in bd_source)")
    parser.add_argument("--ptf", default="manrique_jones_1991", help="pedotransfer function for --fill-bd")
    parser.add_argument("--sites", help="optional site table joined by profile_id (x, y, year)")
    parser.add_argument("--horizons-out", help="also write the per-horizon table (BD used and its source)")
    parser.add_argument("--drop-invalid", action="store_true", help="drop impossible rows and list them instead of failing")
    add_allow_implausible(parser)
    add_rename(parser)
    add_crs(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run, outputs={"out": "table", "horizons_out": "table"}, inputs=("horizons", "sites"))


def run(args) -> None:
    from sinks.io import write_tables
    from sinks.pools import plausibility, soil
    from sinks.pools.depth import interval_label, parse_depths

    mapping = renames(args)
    plausibility.check_rename_units(mapping)
    horizons = read_with_sites(args.horizons, args.sites, mapping, "profile_id", soil.HORIZON_COLUMNS, encoding=args.encoding)
    result = soil.soil_stocks(horizons, depths=args.depths, method=args.method, lam=args.lam,
                              fill_bd=args.fill_bd, ptf=args.ptf, crs=args.crs,
                              drop_invalid=args.drop_invalid, source=str(args.horizons),
                              allow_implausible=args.allow_implausible)
    print_dropped(result.dropped)
    write_tables({args.out: result.plots, **({args.horizons_out: result.horizons} if args.horizons_out else {})})
    echo(f"{len(result.plots)} profiles, {len(result.horizons)} carbon horizons "
         f"(bulk density: {', '.join(f'{k} {v}' for k, v in result.horizons['bd_source'].value_counts().items())})")
    for interval in parse_depths(args.depths):
        label = interval_label(interval)
        echo(f"  {label.replace('_', '-')} cm: carbon Mg C/ha {summary(result.plots[f'carbon_mg_ha_{label}'])}; "
             f"SOC g/kg {summary(result.plots[f'soc_g_kg_{label}'])}")
    echo(f"plot table -> {args.out}")
    if args.horizons_out:
        echo(f"per-horizon table -> {args.horizons_out}")
