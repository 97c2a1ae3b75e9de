"""``sinks map BUNDLE SPEC --out MAP.tif``: wall-to-wall prediction as a COG."""

from __future__ import annotations

import sys
import warnings

from sinks.cli._common import add_overwrite, block_size, echo, max_pixels_option, positive_int, spec_inputs


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
    parser.add_argument("--block", type=block_size, default=512,
                        help="window size in pixels, a multiple of 16 (default 512)")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="threads (each predicts its own windows; default 1)")
    max_pixels_option(parser)
    add_overwrite(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run, outputs={"out": "raster"}, inputs=spec_inputs("bundle", "spec"))


def run(args) -> None:
    from sinks.mapping.predict import AOAWarning, predict_map

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AOAWarning)
        path = predict_map(args.bundle, args.spec, args.out, block=args.block, n_jobs=args.jobs,
                           progress=not args.quiet, max_pixels=args.max_pixels)
    for warning in caught:
        if issubclass(warning.category, AOAWarning):
            print(f"sinks map: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    echo(f"map -> {path}")
