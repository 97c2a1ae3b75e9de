"""``sinks map BUNDLE [SPEC] [--stack STACK.tif] --out MAP.tif``: wall-to-wall prediction as a COG."""

from __future__ import annotations

import sys
import warnings

from sinks.cli._common import (add_ee_export, add_engine, add_level, add_overwrite, add_quiet, block_size,
                               check_ee_export, echo, export_destination, max_pixels_option, positive_int,
                               show_progress, spec_inputs, start_engine)
from sinks.constants import EXECUTORS


def register(sub) -> None:
    parser = sub.add_parser(
        "map",
        help="predict a model bundle over a spec's grid or a covariate stack -> COG with interval, DI and AOA bands",
        description="Predict with the bundle window by window and write a Cloud-Optimized GeoTIFF (with "
        "overviews) and a STAC Item beside it (NAME.stac.json). Bands (--bands): the target (e.g. carbon, "
        "Mg C/ha), lower, upper (prediction interval), di (dissimilarity index), aoa (1 = inside the "
        "area of applicability) and error (when the bundle has an error profile). The features come "
        "from SPEC (computed per window; it must define the features the bundle was trained on) or from "
        "--stack (a covariate raster from 'sinks stack', or your own, whose band descriptions are the "
        "bundle's feature names). Finished tiles are checkpointed beside the output "
        "(.NAME.resume-KEY/): a killed job rerun with the same arguments resumes, and the folder is "
        "removed when the map is complete.",
    )
    parser.add_argument("bundle", help="model bundle folder (from 'sinks train')")
    parser.add_argument("spec", nargs="?", help="feature spec (features/*.toml) the bundle was trained with "
                        "(optional with --stack: then the stack's grid must be the spec's)")
    parser.add_argument("--stack", metavar="STACK.tif",
                        help="prebuilt covariate stack, one band per feature named as the bundle's features")
    parser.add_argument("--out", required=True, help="output COG")
    parser.add_argument("--bands", metavar="LIST",
                        help="bands to write, comma-separated, e.g. carbon or carbon,lower,upper,di,aoa,error "
                        "(default: every band the bundle gives but error, which is written when asked for)")
    add_level(parser)
    parser.add_argument("--block", type=block_size, default=512,
                        help="tile size in pixels, a multiple of 16 (default 512)")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="tiles computed at once (workers); the model gets cores/jobs threads in each (default 1)")
    parser.add_argument("--executor", choices=EXECUTORS,
                        help="where tiles run: serial, threads, processes (local worker processes) or dask "
                        "(a Dask cluster, with --scheduler; needs sinks[dask]); default serial, or threads with --jobs > 1. "
                        "Serial and threads use the least memory (one process); each worker process adds about "
                        "230-300 MiB, mostly libraries (docs/mapping.md)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786")
    parser.add_argument("--no-resume", action="store_true",
                        help="do not reuse finished tiles of an interrupted run (nor keep them when this one fails)")
    parser.add_argument("--year", metavar="YEAR",
                        help="the year the covariates show (the map's epoch), written into the map's tags; "
                             "'sinks change' and 'sinks credit' then refuse --years that differ from it")
    parser.add_argument("--stac", metavar="ITEM.json", help="where to write the STAC Item (default NAME.stac.json)")
    parser.add_argument("--no-stac", action="store_true", help="write no STAC Item")
    max_pixels_option(parser)
    add_overwrite(parser)
    add_quiet(parser)
    add_engine(parser)
    add_ee_export(parser, "map (the prediction band, from the bundle's tree strings; --out is the files' name prefix)")
    parser.add_argument("--trees", metavar="gs://FILE",
                        help="with --engine ee: a tree file on Cloud Storage for a model above the request limit "
                        "(default: the bundle's trees inline)")
    parser.set_defaults(func=run, outputs=_outputs, inputs=_inputs)


def _outputs(args) -> dict:
    if args.engine == "ee":
        return {}  # an Earth Engine export writes nothing here
    if not args.no_stac and not args.stac and args.out and str(args.out).lower().endswith((".tif", ".tiff")):
        from pathlib import Path

        out = Path(args.out)
        args.stac = str(out.with_name(out.stem + ".stac.json"))
    return {"out": "raster", **({"stac": "json"} if args.stac and not args.no_stac else {})}


def _inputs(args) -> list[str]:
    paths = [p for p in (args.bundle, args.stack) if p]
    if args.spec:
        paths += spec_inputs("spec")(args)
    return paths


def run(args) -> None:
    from sinks.errors import InputError
    from sinks.mapping.predict import AOAWarning, predict_map

    check_ee_export(args, "map")
    if args.engine == "ee":
        if args.year is not None:
            raise InputError("--year tags a local map (a COG); an Earth Engine export carries no sinks tags")
        return _export_ee(args)
    if args.trees:
        raise InputError("--trees is for --engine ee")
    if args.spec is None and args.stack is None:
        from pathlib import Path

        if not (Path(args.bundle) / "metadata.json").is_file():
            raise InputError(f"{args.bundle}: not a model bundle (no metadata.json); sinks map takes BUNDLE, then "
                             "the feature SPEC or --stack STACK.tif")
        raise InputError("give the feature SPEC or --stack STACK.tif to map from")
    if args.no_stac and args.stac:
        raise InputError("--stac and --no-stac exclude each other")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AOAWarning)
        path = predict_map(args.bundle, args.spec, args.out, stack=args.stack, bands=args.bands,
                           block=args.block, n_jobs=args.jobs, executor=args.executor, scheduler=args.scheduler,
                           progress=show_progress(args), max_pixels=args.max_pixels, resume=not args.no_resume,
                           stac=False if args.no_stac else (args.stac or None), level=args.level,
                           year=args.year)
    for warning in caught:
        if issubclass(warning.category, AOAWarning):
            print(f"sinks map: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    echo(f"map -> {path}")


def _export_ee(args) -> None:
    from sinks.errors import InputError
    from sinks.mapping.ee_export import export_map_ee

    if args.spec is None or args.stack is not None:
        raise InputError("--engine ee: give the feature SPEC (with its [sources.ee] sections), not --stack")
    if args.bands:
        raise InputError("sinks map --engine ee exports the prediction band only: leave out --bands (map the "
                         "interval, DI and AOA locally)")
    start_engine(args)
    task = export_map_ee(args.bundle, args.spec, bucket=args.bucket, folder=args.drive_folder, trees=args.trees,
                         file_prefix=args.out, tile_pixels=args.tile_pixels,
                         max_pixels=1e10 if args.max_pixels is None else args.max_pixels, start=True)
    echo(f"bundle {args.bundle}: Earth Engine map export task {task.id} started -> {export_destination(args)}")
    echo(f"follow it with 'earthengine task info {task.id}' or at https://code.earthengine.google.com/tasks")
