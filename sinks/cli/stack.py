"""``sinks stack SPEC --out STACK.tif``: the covariate stack on the spec's grid."""

from __future__ import annotations

from sinks.cli._common import echo


def register(sub) -> None:
    parser = sub.add_parser(
        "stack",
        help="covariate stack (one band per feature) as a Cloud-Optimized GeoTIFF",
        description="Compute every feature of a spec over its whole target grid, window by window, "
        "and write them as bands of one COG (band descriptions = feature names, nodata -9999).",
    )
    parser.add_argument("spec", help="feature spec (features/*.toml)")
    parser.add_argument("--out", required=True, help="output GeoTIFF (written as a COG)")
    parser.add_argument("--block", type=int, default=512, help="window size in pixels, a multiple of 16 (default 512)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> None:
    from sinks.covariates.extract import build_stack
    from sinks.covariates.spec import load_spec

    spec = load_spec(args.spec)
    build_stack(spec, args.out, block=args.block, progress=not args.quiet)
    echo(f"{len(spec.features)} features of spec {spec.name!r} -> {args.out}")
