"""``sinks eligibility PARCELS --rules ccer-14-001 --layer NAME=RASTER ... --out REPORT.json``."""

from __future__ import annotations

from sinks.cli._common import add_rename, echo, renames
from sinks.errors import InputError
from sinks.io import read_table


def register(sub) -> None:
    from sinks.eligibility.rules import shipped_rulesets

    parser = sub.add_parser(
        "eligibility",
        help="per-parcel land eligibility against a methodology's rule set -> JSON + GeoPackage",
        description="Check each candidate parcel against the map- and geometry-checkable conditions of "
        "a carbon-sink methodology (area, forest history since a cut-off date, wetland, organic soil). "
        "Every rule gets pass / fail / unknown with its evidence; every parcel a verdict: eligible, "
        "ineligible or undetermined. The JSON report follows sinks/eligibility/report.schema.json.",
        epilog=f"Shipped rule sets: {', '.join(shipped_rulesets())}.",
    )
    parser.add_argument("parcels", help="parcel table: parcel_id, polygon geometry with a CRS [, start_date]")
    parser.add_argument("--rules", default="ccer-14-001", help="rule set id or TOML file (default ccer-14-001)")
    parser.add_argument("--layer", action="append", default=[], metavar="NAME=RASTER",
                        help="a raster the rules read, e.g. forest_history=F.tif, wetland=W.tif (repeatable)")
    parser.add_argument("--start-date", help="project start date (YYYY-MM-DD) for parcels without start_date")
    parser.add_argument("--param", action="append", default=[], metavar="RULE.PARAM=VALUE",
                        help="override a rule parameter, e.g. non_forest_since.since=2010-01-01 (repeatable)")
    parser.add_argument("--out", required=True, help="JSON report to write")
    parser.add_argument("--gpkg", help="also write a GeoPackage with one row per parcel")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_rename(parser)
    parser.set_defaults(func=run)


def _layers(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--layer expects NAME=RASTER, got {item!r}")
        out[name.strip()] = path.strip()
    return out


def run(args) -> None:
    from sinks.eligibility.engine import assess
    from sinks.eligibility.report import write_report
    from sinks.eligibility.rules import load_ruleset, parse_overrides

    ruleset = load_ruleset(args.rules, parse_overrides(args.param))
    parcels = read_table(args.parcels, rename=renames(args), required=("parcel_id",), geometry=True)
    report = assess(parcels, ruleset, _layers(args.layer), start_date=args.start_date, progress=not args.quiet)
    document = write_report(report, args.out, args.gpkg)
    s = document["summary"]
    echo(f"{s['parcels']} parcels against {ruleset.id}: {s['eligible']} eligible ({s['eligible_area_ha']:.1f} ha), "
         f"{s['ineligible']} ineligible, {s['undetermined']} undetermined")
    echo(f"report -> {args.out}")
    if args.gpkg:
        echo(f"parcels -> {args.gpkg}")
