"""``sinks stocks soil HORIZONS --out PLOTS [--depths 0-30,30-100] [--fill-bd]``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sinks.cli._common import add_crs, add_rename, echo, renames
from sinks.errors import InputError
from sinks.io import read_table, write_table
from sinks.pools import soil
from sinks.pools.depth import METHODS, interval_label, parse_depths


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
    parser.add_argument("--method", choices=METHODS, default="spline", help="depth harmonisation (default spline)")
    parser.add_argument("--lambda", dest="lam", type=float, help="spline smoothing (default 0.1, Malone et al. 2009)")
    parser.add_argument("--fill-bd", action="store_true",
                        help="fill missing bulk density by a pedotransfer function (flagged in bd_source)")
    parser.add_argument("--ptf", default="manrique_jones_1991", help="pedotransfer function for --fill-bd")
    parser.add_argument("--sites", help="optional site table joined by profile_id (x, y, year)")
    parser.add_argument("--horizons-out", help="also write the per-horizon table (BD used and its source)")
    parser.add_argument("--drop-invalid", action="store_true", help="drop impossible rows and list them instead of failing")
    add_rename(parser)
    add_crs(parser)
    parser.set_defaults(func=run)


def read_with_sites(path: str, sites_path: str | None, mapping: dict[str, str], key: str,
                    required) -> pd.DataFrame:
    """Read the main table and join a site/core table's x, y, year, habitat by ``key``.

    Each ``--rename`` applies to whichever of the two tables has that column; one in neither
    is an error.
    """
    rows = read_table(path)
    sites = read_table(sites_path) if sites_path else None
    unknown = [old for old in mapping if old not in rows.columns
               and (sites is None or old not in sites.columns)]
    if unknown:
        raise InputError(f"{path}: --rename names columns not in the file(s): {', '.join(unknown)}")
    rows = rows.rename(columns={o: n for o, n in mapping.items() if o in rows.columns})
    missing = [c for c in required if c not in rows.columns]
    if missing:
        raise InputError(f"{path}: missing required column(s) {', '.join(missing)}; found "
                         f"{', '.join(map(str, rows.columns))} (use --rename OLD=NEW for your own names)")
    if sites is None:
        return rows
    sites = sites.rename(columns={o: n for o, n in mapping.items() if o in sites.columns})
    if key not in sites.columns:
        raise InputError(f"{sites_path}: missing column {key} (use --rename OLD=NEW)")
    extra = [c for c in ("x", "y", "year", "habitat") if c in sites.columns and c not in rows.columns]
    return rows.merge(sites[[key, *extra]].drop_duplicates(key), on=key, how="left") if extra else rows


def print_dropped(dropped: pd.DataFrame) -> None:
    if len(dropped):
        echo(f"dropped {len(dropped)} invalid row(s):")
        for row in dropped.itertuples(index=False):
            echo(f"  row {row.row}: {row.reason}")


def summary(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "n 0"
    q = np.quantile(v, [0.05, 0.5, 0.95])
    return f"n {len(v)}, mean {v.mean():.1f}, median {q[1]:.1f}, 5-95% {q[0]:.1f}-{q[2]:.1f}"


def run(args) -> None:
    mapping = renames(args)
    horizons = read_with_sites(args.horizons, args.sites, mapping, "profile_id", soil.HORIZON_COLUMNS)
    result = soil.soil_stocks(horizons, depths=args.depths, method=args.method, lam=args.lam,
                              fill_bd=args.fill_bd, ptf=args.ptf, crs=args.crs,
                              drop_invalid=args.drop_invalid, source=str(args.horizons))
    print_dropped(result.dropped)
    write_table(result.plots, args.out)
    echo(f"{len(result.plots)} profiles, {len(result.horizons)} carbon horizons "
         f"(bulk density: {', '.join(f'{k} {v}' for k, v in result.horizons['bd_source'].value_counts().items())})")
    for interval in parse_depths(args.depths):
        label = interval_label(interval)
        echo(f"  {label.replace('_', '-')} cm: carbon Mg C/ha {summary(result.plots[f'carbon_mg_ha_{label}'])}; "
             f"SOC g/kg {summary(result.plots[f'soc_g_kg_{label}'])}")
    echo(f"plot table -> {args.out}")
    if args.horizons_out:
        write_table(result.horizons, args.horizons_out)
        echo(f"per-horizon table -> {args.horizons_out}")
