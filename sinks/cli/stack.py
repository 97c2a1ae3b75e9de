"""``sinks stack SPEC --out STACK.tif``: the covariate stack on the spec's grid (local COG, or an
Earth Engine export of COG tiles to Cloud Storage or Drive)."""

from __future__ import annotations

from sinks.cli._common import (add_ee_export, add_engine, add_overwrite, add_quiet, block_size, check_ee_export, echo,
                               export_destination, max_pixels_option, show_progress, spec_inputs, start_engine)


def register(sub) -> None:
    parser = sub.add_parser(
        "stack",
        help="covariate stack (one band per feature) as a Cloud-Optimized GeoTIFF",
        description="Compute every feature of a spec over its whole target grid, window by window, "
        "and write them as bands of one COG (band descriptions = feature names, nodata -9999). "
        "With --engine ee the stack is computed on Earth Engine and exported as COG tiles to a "
        "Cloud Storage bucket (--bucket) or a Drive folder (--drive-folder); --out is then the file "
        "name prefix, and the command prints the export task's id.",
    )
    parser.add_argument("spec", help="feature spec (features/*.toml)")
    parser.add_argument("--out", required=True,
                        help="output GeoTIFF (written as a COG); with --engine ee, the exported files' name prefix")
    parser.add_argument("--block", type=block_size, default=512,
                        help="window size in pixels, a multiple of 16 (default 512)")
    max_pixels_option(parser, ee=True)
    add_overwrite(parser)
    add_quiet(parser)
    add_engine(parser)
    add_ee_export(parser, "stack")
    parser.set_defaults(func=run, outputs=lambda args: {} if args.engine == "ee" else {"out": "raster"},
                        inputs=spec_inputs("spec"))


def run(args) -> None:
    from sinks.covariates.spec import load_spec

    spec = load_spec(args.spec)
    check_ee_export(args, "stack")
    if args.engine == "ee":
        return _export_ee(args, spec)
    start_engine(args)
    from sinks.covariates.extract import build_stack

    build_stack(spec, args.out, block=args.block, progress=show_progress(args), max_pixels=args.max_pixels)
    echo(f"{len(spec.features)} features of spec {spec.name!r} -> {args.out}")


def _export_ee(args, spec) -> None:
    from sinks.covariates.earthengine import check_export, export_stack_ee, require_project

    require_project(args.ee_project)  # the options and the spec first, then the sign-in
    check_export(spec, bucket=args.bucket, folder=args.drive_folder, tile_pixels=args.tile_pixels)
    start_engine(args)
    task = export_stack_ee(spec, bucket=args.bucket, folder=args.drive_folder, file_prefix=args.out,
                           tile_pixels=args.tile_pixels,
                           max_pixels=1e10 if args.max_pixels is None else args.max_pixels, start=True)
    echo(f"{len(spec.features)} features of spec {spec.name!r}: Earth Engine export task {task.id} started -> "
         f"{export_destination(args)}")
    echo(f"follow it with 'earthengine task info {task.id}' or at https://code.earthengine.google.com/tasks")
