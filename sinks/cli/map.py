"""``sinks map BUNDLE SPEC --out MAP.tif``: wall-to-wall prediction as a COG."""

from __future__ import annotations

from sinks.cli._common import echo


def register(sub) -> None:
    parser = sub.add_parser(
        "map",
        help="predict a model bundle over a spec's grid -> COG with interval, DI and AOA bands",
        description="Compute the spec's features window by window, predict with the bundle, and "
        "write a Cloud-Optimized GeoTIFF with bands: the target (e.g. carbon, Mg C/ha), lower, upper "
        "(prediction interval), di (dissimilarity index) and aoa (1 = inside the area of "
        "applicability). The spec must define the same features the bundle was trained on.",
    )
    parser.add_argument("bundle", help="model bundle folder (from 'sinks train')")
    parser.add_argument("spec", help="feature spec (features/*.toml) the bundle was trained with")
    parser.add_argument("--out", required=True, help="output COG")
    parser.add_argument("--block", type=int, default=512, help="window size in pixels (default 512)")
    parser.add_argument("--jobs", type=int, default=1, help="threads (each predicts its own windows; default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> None:
    from sinks.mapping.predict import predict_map

    path = predict_map(args.bundle, args.spec, args.out, block=args.block, n_jobs=args.jobs,
                       progress=not args.quiet)
    echo(f"map -> {path}")
