"""``sinks eligibility PARCELS --rules ccer-14-001 --layer NAME=RASTER ... --out REPORT.json``."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from sinks.cli._common import add_overwrite, add_quiet, add_rename, crs_string, echo, show_progress, table_options
from sinks.errors import InputError


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
    parser.add_argument("--layer-values", action="append", default=[], metavar="NAME:CLASS=V1,V2;CLASS=V3",
                        help="the encoding of a layer coded otherwise than the rule set declares, e.g. "
                        "'forest_history:forest=100;non_forest=0;nodata=255' (all its classes, 'nodata' for "
                        "values meaning no data; repeatable, one per layer)")
    parser.add_argument("--start-date", type=iso_date, metavar="YYYY-MM-DD",
                        help="project start date for parcels without start_date")
    parser.add_argument("--param", action="append", default=[], metavar="RULE.PARAM=VALUE",
                        help="override a rule parameter, e.g. non_forest_since.since=2010-01-01 (repeatable)")
    parser.add_argument("--crs", type=crs_string, help="CRS of the parcels when the file has none (checked "
                        "against the file's CRS when it has one)")
    parser.add_argument("--out", required=True, help="JSON report to write (.json)")
    parser.add_argument("--gpkg", help="also write a GeoPackage with one row per parcel (.gpkg); it and the "
                        "JSON are written together or not at all")
    add_quiet(parser)
    add_rename(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run, outputs={"out": "json", "gpkg": "gpkg"}, inputs=_inputs)


def iso_date(text: str) -> str:
    """A ``--start-date``: an ISO date (YYYY-MM-DD)."""
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date YYYY-MM-DD, got {text!r}") from None
    if not 1900 <= day.year <= 2100:
        raise argparse.ArgumentTypeError(f"expected a date of a year 1900-2100, got {text!r}")
    return day.isoformat()


iso_date.__name__ = "date"


def _inputs(args) -> list[str]:
    """The files the command reads: the parcels, every layer raster, the rule file if a path."""
    paths = [args.parcels, *_layers(args.layer).values()]
    if Path(args.rules).exists():
        paths.append(args.rules)
    return paths


def _layers(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise InputError(f"--layer expects NAME=RASTER (e.g. forest_history=F.tif), got {item!r}")
        if name in out:
            raise InputError(f"--layer {name} is given twice ({out[name]} and {path}); give each layer once")
        out[name] = path
    return out


def provenance(args, report) -> dict:
    """The report's ``inputs`` (:func:`sinks.eligibility.report.input_files`): the parcel file, the
    layers and the rule file with their sha256, and the command's options as given (a credit's maps,
    growth table and controls are hashed in their own entries too)."""
    from sinks.eligibility.report import input_files

    options = {k: v for k, v in sorted(vars(args).items())
               if k not in ("func", "outputs", "inputs") and isinstance(v, (str, int, float, bool, list, type(None)))}
    return input_files(report, parcels=args.parcels, options=options)


def run(args) -> None:
    from sinks.eligibility.engine import assess
    from sinks.eligibility.report import write_report
    from sinks.eligibility.rules import load_ruleset, parse_layer_values, parse_overrides
    from sinks.io import read_table

    ruleset = load_ruleset(args.rules, parse_overrides(args.param), parse_layer_values(args.layer_values))
    layers = _layers(args.layer)
    unused = sorted(set(layers) - set(ruleset.layers))
    if unused:
        from sinks.validate import did_you_mean

        raise InputError(f"--layer {unused[0]}: rule set {ruleset.id} reads no layer '{unused[0]}'"
                         f"{did_you_mean(unused[0], ruleset.layers)} (it reads {', '.join(ruleset.layers)})")
    for name, path in layers.items():
        if not Path(path).is_file():
            raise InputError(f"--layer {name}: {path}: raster not found")
    parcels = read_table(args.parcels, **table_options(args), required=("parcel_id",), geometry=True, crs=args.crs)
    report = assess(parcels, ruleset, layers, start_date=args.start_date, progress=show_progress(args))
    report.inputs = provenance(args, report)
    document = write_report(report, args.out, args.gpkg)
    s = document["summary"]
    echo(f"{s['parcels']} parcels against {ruleset.id}: {s['eligible']} eligible ({s['eligible_area_ha']:.1f} ha), "
         f"{s['ineligible']} ineligible, {s['undetermined']} undetermined")
    echo(f"report -> {args.out}")
    if args.gpkg:
        echo(f"parcels -> {args.gpkg}")
