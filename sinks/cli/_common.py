"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import TYPE_CHECKING

from sinks.constants import MAX_PIXELS
from sinks import validate
from sinks.errors import InputError, SinksError

if TYPE_CHECKING:  # heavy imports wait until a command runs: 'sinks --help' stays quick
    import pandas as pd


def add_rename(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rename",
        action="append",
        metavar="OLD=NEW",
        default=[],
        help="rename an input column to its standard name (repeatable), e.g. --rename DBH=dbh_cm",
    )
    parser.add_argument(
        "--encoding", metavar="NAME",
        help="text encoding of CSV inputs (default: UTF-8, else GB18030/GBK as Chinese Excel writes, detected)",
    )


def add_crs(parser: argparse.ArgumentParser, help: str = "CRS of x/y columns in a CSV input, e.g. EPSG:32648") -> None:
    parser.add_argument("--crs", metavar="CRS", type=crs_string, help=help)


def add_engine(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument("--engine", choices=("local", "ee"), default="local",
                       help="local: GeoTIFF/VRT sources with rasterio (default); ee: the spec's [sources.ee] "
                       "sections on Google Earth Engine (needs sinks[ee] and 'earthengine authenticate')")
    group.add_argument("--ee-project", metavar="PROJECT",
                       help="Google Cloud project with the Earth Engine API enabled (with --engine ee)")


def add_ee_export(parser: argparse.ArgumentParser, what: str) -> None:
    """``--bucket`` / ``--drive-folder`` / ``--tile-pixels``: where an Earth Engine export of ``what`` goes."""
    export = parser.add_argument_group(f"Earth Engine export of the {what} (with --engine ee)")
    where = export.add_mutually_exclusive_group()
    where.add_argument("--bucket", help="Cloud Storage bucket to export to")
    where.add_argument("--drive-folder", help="Google Drive folder to export to")
    export.add_argument("--tile-pixels", type=positive_int,
                        help="width and height of each exported file in pixels, a multiple of 256 "
                        "(default: Earth Engine's file size)")


def check_ee_export(args: argparse.Namespace, what: str) -> None:
    """The export options go with --engine ee, and an ee export needs a destination."""
    if args.engine == "ee" and not (args.bucket or args.drive_folder):
        raise InputError(f"--engine ee exports the {what}: give --bucket BUCKET or --drive-folder FOLDER")
    if args.engine != "ee" and (args.bucket or args.drive_folder or args.tile_pixels):
        raise InputError("--bucket, --drive-folder and --tile-pixels are for --engine ee")


def export_destination(args: argparse.Namespace) -> str:
    return (f"gs://{args.bucket}/{args.out}*" if args.bucket
            else f"Drive folder {args.drive_folder!r}, files {args.out}*")


def start_engine(args: argparse.Namespace) -> None:
    """Initialize Earth Engine for ``--engine ee`` (the only place the CLI calls ee.Initialize)."""
    if args.engine == "ee":
        from sinks.covariates.earthengine import initialize

        initialize(args.ee_project)
    elif args.ee_project:
        raise InputError("--ee-project is for --engine ee")


def renames(args: argparse.Namespace) -> dict[str, str]:
    from sinks.io import parse_rename

    return parse_rename(args.rename)


def table_options(args: argparse.Namespace) -> dict:
    """``read_table`` keywords from ``--rename`` and ``--encoding``."""
    return {"rename": renames(args), "encoding": getattr(args, "encoding", None)}


def add_quiet(parser: argparse.ArgumentParser, bars: str = "bar") -> None:
    parser.add_argument("--quiet", action="store_true",
                        help=f"no progress {bars} (there are none either when stderr is not a terminal, as in a log file, "
                             "unless SINKS_PROGRESS=1)")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars unless ``--quiet`` or stderr is not a terminal (a log would get every redraw);
    ``SINKS_PROGRESS=1`` draws them on any stderr (a wrapper that reads them), ``=0`` never."""
    forced = os.environ.get("SINKS_PROGRESS", "").strip()
    if args.quiet or forced == "0":
        return False
    return forced == "1" or sys.stderr.isatty()


def echo(message: str = "") -> None:
    """Print a line of a command's summary (stdout)."""
    print(message, flush=True)


def check_renames_found(mapping: dict[str, str], columns: dict[str, object]) -> None:
    """Each ``--rename OLD=NEW`` must name a column of one of the tables (``{path: columns}``) it
    applies to, whichever that is; one in none is an error."""
    unknown = [old for old in mapping if not any(old in set(map(str, cols)) for cols in columns.values())]
    if unknown:
        where = f"in neither {' nor '.join(map(str, columns))}" if len(columns) > 1 else f"not in {next(iter(columns))}"
        raise InputError(f"--rename names columns {where}: {', '.join(unknown)}")


def read_with_sites(path: str, sites_path: str | None, mapping: dict[str, str], key: str,
                    required, encoding: str | None = None) -> pd.DataFrame:
    """Read the main table and join a site/core table's x, y, year, habitat by ``key``.

    Each ``--rename`` applies to whichever of the two tables has that column; one in neither
    is an error.
    """
    from sinks.io import check_columns, matching_ids, read_table

    rows = read_table(path, encoding=encoding, renamed_later=mapping)
    sites = read_table(sites_path, encoding=encoding, renamed_later=mapping) if sites_path else None
    check_renames_found(mapping, {path: rows.columns, **({sites_path: sites.columns} if sites is not None else {})})
    rows = check_columns(rows, path, rename=mapping, required=required, only_present=True)
    if sites is None:
        return rows
    sites = check_columns(sites, sites_path, rename=mapping, required=(key,), only_present=True)
    extra = [c for c in ("x", "y", "year", "habitat") if c in sites.columns and c not in rows.columns]
    if not extra:
        return rows
    row_ids, site_ids = matching_ids(rows[key], sites[key])  # a CSV's text ids, a GeoPackage's numbers
    rows, sites = rows.assign(**{key: row_ids}), sites.assign(**{key: site_ids})
    return rows.merge(sites[[key, *extra]].drop_duplicates(key), on=key, how="left")


def print_dropped(dropped: pd.DataFrame) -> None:
    if len(dropped):
        echo(f"dropped {len(dropped)} invalid row(s):")
        for row in dropped.itertuples(index=False):
            echo(f"  row {row.row}: {row.reason}")


def summary(values: pd.Series) -> str:
    import numpy as np
    import pandas as pd

    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "n 0"
    q = np.quantile(v, [0.05, 0.5, 0.95])
    return f"n {len(v)}, mean {v.mean():.1f}, median {q[1]:.1f}, 5-95% {q[0]:.1f}-{q[2]:.1f}"


# ---- option types: a bad number is a one-line usage error naming the option ---------------------

def _typed(convert, test, what: str):
    def parse(text: str):
        try:
            value = convert(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _typed(int, lambda v: v > 0, "a positive integer")
nonnegative_int = _typed(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _typed(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
nonnegative_float = _typed(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
unit_fraction = _typed(float, lambda v: 0 <= v <= 1, "a number between 0 and 1")


def interval_level(text: str) -> float:
    """An interval level: a fraction strictly between 0 and 1 (``90`` is caught as a percentage)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a fraction such as 0.9") from None
    if validate.looks_like_percentage(value):
        raise argparse.ArgumentTypeError(f"{text} looks like a percentage; the level is a fraction: {value / 100:g}")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (exclusive); give e.g. 0.8, 0.9 or 0.95")
    return value


interval_level.__name__ = "level"


def add_level(parser) -> None:
    """``--level``: the prediction interval's level, recalibrated from the bundle's calibration plots."""
    parser.add_argument("--level", type=interval_level, metavar="FRACTION",
                        help="prediction-interval level, e.g. 0.8 or 0.95 (default: the bundle's own, "
                        "usually 0.9); recalibrated on the bundle's calibration plots")


def crs_string(text: str) -> str:
    """A CRS as the user wrote it, checked by pyproj (``EPSG:32648``, a WKT, a PROJ string)."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(text)
    except CRSError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CRS pyproj knows; use e.g. EPSG:32648 or EPSG:4326") from None
    return text


crs_string.__name__ = "CRS"


# ---- options of the raster commands (stack, map) ------------------------------------------------

def block_size(text: str) -> int:
    """argparse type of ``--block``: :func:`sinks.validate.check_block`'s window size."""
    from sinks.validate import MAX_BLOCK, check_block

    try:
        return check_block(int(text))
    except (ValueError, InputError):
        raise argparse.ArgumentTypeError(f"expected a multiple of 16 (the GeoTIFF tile size) from 16 to {MAX_BLOCK}, "
                                         f"e.g. 256 or 512, got {text!r}") from None


block_size.__name__ = "block size"


def max_pixels_option(group, *, ee: bool = False) -> None:
    group.add_argument("--max-pixels", type=positive_float, metavar="N",
                       help=f"largest grid, in pixels, the job may compute (default {MAX_PIXELS:.0e}, a guard "
                       "against a resolution in the wrong units)"
                       + ("; with --engine ee, the export's maxPixels (default 1e10)" if ee else ""))


def spec_inputs(*names: str):
    """``inputs`` of a command that reads a feature spec: the named options' files and the spec's
    local rasters (so an output can never replace one of them)."""

    def inputs(args) -> list[str]:
        paths = [getattr(args, n) for n in names if getattr(args, n, None)]
        try:
            from sinks.covariates.spec import load_spec

            spec = load_spec(args.spec)
        except (SinksError, OSError):  # reported when the command loads it
            return paths
        return paths + [p for s in spec.sources for p in s.paths]

    return inputs


# ---- outputs: declared by each subcommand, checked before any work --------------------------------

def add_overwrite(parser: argparse.ArgumentParser, what: str = "output files") -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace existing {what} (never a folder sinks did not make)")


def _declared(args: argparse.Namespace, name: str):
    value = getattr(args, name, None)
    return value(args) if callable(value) else (value or ())


def _outputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(path, kind) of each output the subcommand declared and the user gave."""
    return [(getattr(args, opt), kind) for opt, kind in dict(_declared(args, "outputs")).items()
            if getattr(args, opt, None)]


def output_paths(args: argparse.Namespace) -> list[str]:
    """The paths of the outputs the subcommand declared (what a full disk would stop)."""
    return [str(path) for path, _ in _outputs(args)]


def check_cli_outputs(args: argparse.Namespace) -> None:
    """Check the outputs a subcommand declared before it runs.

    ``outputs`` is ``{option: kind}`` (or a function of the arguments giving it); ``inputs`` is a
    tuple of option names (or a function giving the input paths).
    """
    from sinks.io import check_outputs

    outputs = _outputs(args)
    declared_inputs = getattr(args, "inputs", None)
    if callable(declared_inputs):
        inputs = list(declared_inputs(args))
    else:
        inputs = []
        for opt in declared_inputs or ():
            value = getattr(args, opt, None)
            inputs += [v for v in (value if isinstance(value, list) else [value]) if v]
    if outputs:
        check_outputs(outputs, inputs=inputs, overwrite=getattr(args, "overwrite", False))
