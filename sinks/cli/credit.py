"""``sinks credit PARCELS --methodology NAME --maps T1 T2 --years Y1 Y2 --layer NAME=RASTER ... --out REPORT.json``,
or ex ante from a growth-curve table: ``sinks credit PARCELS --growth TABLE.csv --years Y1 Y2 ...``."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from sinks.cli._common import (add_overwrite, add_quiet, add_rename, crs_string, echo, nonnegative_float,
                               show_progress, table_options, unit_fraction)
from sinks.cli.eligibility import _layers, iso_date, provenance


def register(sub) -> None:
    from sinks.eligibility.rules import shipped_rulesets

    parser = sub.add_parser(
        "credit",
        help="creditable t CO2e per parcel and project from two carbon maps (or ex ante from a growth-curve "
        "table), by a methodology's terms",
        description="Check each parcel's eligibility (as 'sinks eligibility'), then credit the eligible ones "
        "from two carbon maps: the stock change with exact partial pixels and equal-area weights, its "
        "interval with spatially correlated errors, then the methodology's baseline, leakage, uncertainty "
        "deduction (its own rule, else the lower bound of the 90 percent interval) and buffer. Parcels outside "
        "the model's area of applicability need field measurement and are not credited. With --growth instead "
        "of --maps, the stock change is expected ex ante from a cited growth-curve table (species group x site "
        "class x stand age) and the same deductions follow. Writes the JSON "
        "report (with a crediting block) and optionally a GeoPackage and a one-page HTML summary, together or not "
        "at all.",
        epilog=f"Methodologies: {', '.join(shipped_rulesets())} (see 'sinks methodologies').",
    )
    parser.add_argument("parcels", help="parcel table: parcel_id, polygon geometry with a CRS [, start_date]")
    parser.add_argument("--methodology", default="ccer-14-001",
                        help="methodology (rule set) id or TOML file (default ccer-14-001)")
    parser.add_argument("--maps", nargs=2, metavar=("T1", "T2"),
                        help="carbon maps of the two epochs (from 'sinks map': carbon, lower, upper, aoa; one bundle)")
    parser.add_argument("--growth", metavar="TABLE",
                        help="instead of --maps: credit ex ante from a growth-curve table (CSV: species_group, "
                        "site_class, quantity, unit, age_yr, value, sd or ci, source, checked; see docs/crediting.md); "
                        "the parcels need species_group, site_class and planting_year or stand_age_yr (at Y1)")
    parser.add_argument("--years", nargs=2, type=float, metavar=("Y1", "Y2"),
                        help="the years of the two maps (by default their own, from 'sinks map --year', and "
                             "checked against them when given), or the crediting period of the ex-ante route")
    parser.add_argument("--layer", action="append", default=[], metavar="NAME=RASTER",
                        help="a raster the eligibility rules read, e.g. forest_history=F.tif (repeatable)")
    parser.add_argument("--layer-values", action="append", default=[], metavar="NAME:CLASS=V1,V2;CLASS=V3",
                        help="the encoding of a layer coded otherwise than the rule set declares")
    parser.add_argument("--param", action="append", default=[], metavar="RULE.PARAM=VALUE",
                        help="override a rule parameter (repeatable)")
    parser.add_argument("--term", action="append", default=[], metavar="TERM.KEY=VALUE",
                        help="override a crediting term, e.g. buffer.fraction=0.15 (repeatable)")
    parser.add_argument("--start-date", type=iso_date, metavar="YYYY-MM-DD",
                        help="project start date for parcels without start_date")
    parser.add_argument("--epoch-correlation", type=float, default=0.0, metavar="RHO",
                        help="correlation of the two epochs' errors at a pixel (default 0: independent, "
                        "conservative for any RHO >= 0)")
    parser.add_argument("--error-range-m", type=nonnegative_float, metavar="M",
                        help="range of the exponential correlation of pixel errors (default: the map's tag, "
                        "else fully correlated within a parcel)")
    parser.add_argument("--error-nugget", type=unit_fraction, metavar="SHARE", help="uncorrelated share of the error")
    parser.add_argument("--aoa-threshold", type=unit_fraction, default=0.1, metavar="SHARE",
                        help="largest share of a parcel's mapped area outside the AOA that is still credited "
                        "from the map (default 0.1)")
    parser.add_argument("--controls", metavar="COVARIATES", dest="controls",
                        help="a dynamic baseline from matched controls: a raster on the maps' grid whose bands are "
                        "the covariates to match on (with the starting stock); control pixels outside the parcels "
                        "are matched by nearest neighbour without replacement within calipers, and a balance "
                        "table (standardised mean differences, threshold 0.25) is reported; a failing balance "
                        "credits nothing")
    parser.add_argument("--caliper", type=float, metavar="SD", help="caliper of the matching on each covariate, in "
                        "pooled standard deviations (default 0.25)")
    parser.add_argument("--allow-different-models", action="store_true",
                        help="difference maps of two model bundles anyway (recorded)")
    parser.add_argument("--crs", type=crs_string, help="CRS of the parcels when the file has none")
    parser.add_argument("--out", required=True, help="JSON report to write (.json)")
    parser.add_argument("--gpkg", help="also write a GeoPackage, one row per parcel (.gpkg)")
    parser.add_argument("--summary", metavar="PROJECT.html",
                        help="also write a one-page HTML summary for a verifier: totals, terms with their sources, "
                        "balance, parcels and a map figure (written with the report or not at all)")
    add_quiet(parser)
    add_rename(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run, outputs={"out": "json", "gpkg": "gpkg", "summary": "html"}, inputs=_inputs)


def _inputs(args) -> list[str]:
    paths = [args.parcels, *(args.maps or []), *_layers(args.layer).values(),
             *([args.controls] if args.controls else []), *([args.growth] if args.growth else [])]
    if Path(args.methodology).exists():
        paths.append(args.methodology)
    return paths


def run(args) -> None:
    from sinks.eligibility.crediting import check_route, credit, parse_term_overrides
    from sinks.eligibility.report import write_report
    from sinks.eligibility.rules import load_ruleset, parse_layer_values, parse_overrides
    from sinks.errors import InputError
    from sinks.io import read_table
    from sinks.mapping.change import years_of_maps

    check_route(args.maps, args.growth or None)  # before the parcels are read
    if args.growth and args.years is None:
        raise InputError("--growth credits ex ante over a period: give --years Y1 Y2")
    years = args.years if args.growth else years_of_maps(args.years, *args.maps)
    ruleset = load_ruleset(args.methodology, parse_overrides(args.param), parse_layer_values(args.layer_values),
                           terms=parse_term_overrides(args.term))
    layers = _layers(args.layer)
    for name, path in layers.items():
        if not Path(path).is_file():
            raise InputError(f"--layer {name}: {path}: raster not found")
    parcels = read_table(args.parcels, **table_options(args), required=("parcel_id",), geometry=True, crs=args.crs)
    report = credit(parcels, ruleset, args.maps, years, growth=args.growth, layers=layers,
                    start_date=args.start_date,
                    epoch_correlation=args.epoch_correlation, error_range_m=args.error_range_m,
                    error_nugget=args.error_nugget, aoa_threshold=args.aoa_threshold,
                    allow_different_models=args.allow_different_models, controls_covariates=args.controls,
                    caliper=args.caliper, progress=show_progress(args),
                    source=args.parcels)
    report.inputs = provenance(args, report)
    with contextlib.ExitStack() as stack:
        if args.summary:  # drawn before anything is written; renamed into place after the report
            from sinks.eligibility.summary import project_summary
            from sinks.io import atomic_path

            text = project_summary(report, title=Path(args.parcels).name)
            Path(stack.enter_context(atomic_path(args.summary))).write_text(text, encoding="utf-8")
        document = write_report(report, args.out, args.gpkg)
    project = document["crediting"]["project"]
    statuses = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in project["statuses"].items() if n)
    echo(f"{project['parcels']} parcels against {ruleset.id}: {statuses}")
    change = ("expected stock change (ex ante, growth table)" if args.growth else "stock change") + " of the counted parcels"
    echo(f"creditable {project['tco2e']:,.1f} t CO2e ({project['creditable_interval_level'] * 100:.4g}% interval "
         f"{project['lower_tco2e']:,.1f}-"
         f"{project['upper_tco2e']:,.1f}); {change} {project['stock_change_tco2e']:,.1f} t CO2e")
    if project.get("netted_losses_tco2e"):
        echo(f"netted: {-project['netted_losses_tco2e']:,.1f} t CO2e lost by parcels with a negative net, deducted "
             f"from the parcels' {project['parcels_tco2e']:,.1f} t CO2e")
    if project.get("binding") == "project_level":
        echo(f"bound by the project level: the deductions made once on the project give {project['tco2e']:,.1f} t "
             f"CO2e, less than the parcels' {project['by_parcels_tco2e']:,.1f} (each parcel may issue "
             f"{project['parcel_scale']:.1%} of its creditable volume)")
    if not document["crediting"]["conservative_as_methodology"]:
        flagged = [d for d in document["crediting"]["departures"]
                   if d["effect"] in ("less conservative", "changed", "unchecked")]
        listed = "; ".join(f"{d['setting']} ({d['effect']})" for d in flagged[:5])
        print(f"sinks credit: warning: not conservative as the methodology (conservative_as_methodology false), "
              f"{len(flagged)} departure(s): {listed}{'; ...' if len(flagged) > 5 else ''}", file=sys.stderr)
    controls = document["crediting"].get("controls")
    if controls:
        echo(f"matched controls: {controls['matched']} of {controls['project_pixels']} project pixels, "
             f"{controls['reason']}")
    echo(f"report -> {args.out}")
    if args.gpkg:
        echo(f"parcels -> {args.gpkg}")
    if args.summary:
        echo(f"summary -> {args.summary}")
