"""Reading and writing the tables that flow between stages.

Tables are read from CSV, GeoPackage, GeoParquet or Shapefile (chosen by extension), columns can
be renamed (``--rename OLD=NEW``), and every output is written to a temporary name in the target
folder and renamed only when complete, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sinks.errors import InputError, OutputError

if TYPE_CHECKING:
    import pandas as pd

VECTOR_SUFFIXES = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON"}
TABLE_SUFFIXES = {".csv", ".parquet", ".geoparquet", *VECTOR_SUFFIXES}
#: Tables sinks writes: those it reads, but a Shapefile (read only: see SHAPEFILE_OUTPUT).
OUTPUT_TABLE_SUFFIXES = TABLE_SUFFIXES - {".shp"}
SHAPEFILE_OUTPUT = ("a Shapefile is not written: it cuts column names to 10 characters (stock_change_tco2e, "
                    "credit_status, ...) and is several files, which cannot appear together or not at all; "
                    "write .gpkg (QGIS, ArcGIS and GDAL read it)")
#: 1 mu (亩), the Chinese area unit, is 1/15 ha (GB 3100-1993 lists it as a non-SI unit of China).
HA_PER_MU = 1.0 / 15.0


def parse_rename(pairs: Iterable[str] | None) -> dict[str, str]:
    """Parse ``["OLD=NEW", ...]`` into a mapping, rejecting malformed items."""
    mapping: dict[str, str] = {}
    for item in pairs or ():
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise InputError(f"--rename expects OLD=NEW, got {item!r}")
        mapping[old.strip()] = new.strip()
    return mapping


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(
            f"{path}: unsupported table format {path.suffix!r}; use one of "
            + ", ".join(sorted(TABLE_SUFFIXES))
        )


def read_table(
    path: str | os.PathLike,
    *,
    rename: Mapping[str, str] | None = None,
    required: Sequence[str] = (),
    crs: str | None = None,
    geometry: bool = False,
    encoding: str | None = None,
    renamed_later: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Read a table by its extension and check its columns.

    Parameters
    ----------
    path : CSV, GeoPackage, GeoParquet (``.parquet``) or Shapefile.
    rename : columns to rename before checking, ``{old: new}``.
    required : columns that must be present (after renaming).
    crs : CRS of ``x``/``y`` columns in a CSV (e.g. ``"EPSG:4326"``); with ``geometry=True`` a
        CSV with ``x``/``y`` becomes a GeoDataFrame of points in that CRS.
    geometry : return a GeoDataFrame with a CRS (an error when none can be had).
    encoding : text encoding of a CSV; by default UTF-8 (with or without BOM), else GB18030 (the
        superset of GBK, what Chinese Excel writes), detected.
    renamed_later : renames the caller applies itself (to this table or another read beside it):
        a column renamed to an id column is read from a CSV as text too (:data:`ID_COLUMNS`).
    """
    path = Path(path)
    _check_exists(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            text = ID_COLUMNS | {old for old, new in {**(renamed_later or {}), **(rename or {})}.items()
                                 if new in ID_COLUMNS}
            frame = read_csv(path, encoding=encoding, text_columns=text)
        elif suffix in (".parquet", ".geoparquet"):
            frame = _read_parquet(path)
        else:
            import geopandas as gpd

            _refuse_several_layers(path)
            frame = gpd.read_file(path)
    except InputError:
        raise
    except Exception as exc:  # corrupt or unreadable file
        raise InputError(f"{path}: cannot read table ({type(exc).__name__}: {_gdal_reason(exc)}; is the file "
                         "truncated or corrupt?)") from exc
    frame = check_columns(frame, path, rename=rename, required=required)
    if geometry:
        frame = to_geodataframe(frame, crs=crs, source=str(path))
    return frame


def _gdal_reason(exc: BaseException) -> str:
    """The reason in a GDAL/SQLite message, without the SQL statement a GeoPackage error quotes
    ("sqlite3_prepare_v2(SELECT ...) failed: database disk image is malformed"), first line only."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = re.sub(r"sqlite3_\w+\(.*\) failed:\s*", "", text)
    parts = list(dict.fromkeys(p.strip() for p in text.split(";") if p.strip()))  # GDAL repeats the reason
    return "; ".join(parts)[:300]


def _refuse_several_layers(path: Path) -> None:
    """A GeoPackage of several layers: which one is meant cannot be guessed (GDAL reads the first)."""
    import pyogrio

    layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    if len(layers) > 1:
        raise InputError(f"{path}: holds {len(layers)} layers ({', '.join(layers[:8])}); sinks reads a file of one "
                         f"layer: write the one you mean to its own file, e.g. ogr2ogr ONE.gpkg {path} {layers[0]}")


#: Encodings tried in turn when none is given: UTF-8 (a BOM is skipped), then GB18030, the
#: Chinese national standard that contains GBK and GB2312 (the ANSI code page of Chinese Windows).
CSV_ENCODINGS = ("utf-8-sig", "gb18030")


#: Columns that hold ids: read from a CSV as text, never as numbers, so that plots '007' and '7',
#: or '1.1' and '1.10', stay two plots (as numbers they were merged into one, their trees summed).
ID_COLUMNS = frozenset({"plot_id", "tree_id", "profile_id", "core_id", "parcel_id", "site_id", "polygon_id"})


def matching_ids(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Two id columns to be matched (a tree list's plot_id and a plot table's), both as text when
    one holds numbers and the other text (a GeoPackage's integer 201 and a CSV's '201' or '201.0');
    else as they are. Whole-number floats (201.0, from an integer column with gaps) read '201'."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(a) == pd.api.types.is_numeric_dtype(b):
        return a, b

    def text(values: pd.Series) -> pd.Series:
        if not pd.api.types.is_numeric_dtype(values):  # '201.0', as a float column is written, reads '201'
            return values.map(lambda v: re.sub(r"^(\d+)\.0+$", r"\1", v) if isinstance(v, str) else v)
        return values.map(lambda v: v if pd.isna(v) else str(int(v)) if float(v).is_integer() else str(v))

    return text(a), text(b)


def read_csv(path: str | os.PathLike, *, encoding: str | None = None,
             text_columns: Iterable[str] = ()) -> pd.DataFrame:
    """Read a CSV in ``encoding``, or in the first of :data:`CSV_ENCODINGS` that decodes it;
    ``text_columns`` (names as in the header, spaces around them ignored) are read as text.

    A file whose header is one column holding ``;``, tab or ``|`` was split on the wrong delimiter:
    that is an :class:`InputError` listing what was found.
    """
    path = Path(path)
    if encoding is not None:
        import codecs

        try:
            codecs.lookup(encoding)
        except LookupError:
            raise InputError(f"--encoding {encoding!r} is not an encoding Python knows (e.g. utf-8, gbk, gb18030)") from None
    import pandas as pd

    tried = [encoding] if encoding else list(CSV_ENCODINGS)
    text_columns = set(text_columns)
    for i, name in enumerate(tried):
        try:
            header = _header(path, name)
            frame = pd.read_csv(path, encoding=name, dtype={h: str for h in header if h.strip() in text_columns})
            break
        except UnicodeDecodeError as exc:
            if i == len(tried) - 1:
                raise InputError(f"{path}: cannot decode the text as {' or '.join(tried)} ({exc.reason} at byte "
                                 f"{exc.start}); save it as UTF-8 or give --encoding") from exc
    if len(frame.columns) == 1:
        header = str(frame.columns[0])
        for sep, label in ((";", "semicolon"), ("\t", "tab"), ("|", "'|'")):
            if sep in header:
                raise InputError(f"{path}: found a single column {header!r}: the file looks {label}-separated; "
                                 "save it as comma-separated CSV")
    _refuse_repeated_header(path, header)
    # ' plot_id ' is plot_id (spreadsheets pad headers); a name repeated once stripped is refused above
    frame.columns = [c.strip() if isinstance(c, str) else c for c in frame.columns]
    _refuse_decimal_commas(frame, path)
    return frame


def _header(path: Path, encoding: str) -> list[str]:
    """The names of a CSV's header row, as written."""
    import csv

    with open(path, encoding=encoding, newline="") as handle:
        return next(csv.reader(handle), [])


def _refuse_repeated_header(path: Path, header: list[str]) -> None:
    """A column name given twice: pandas reads the second as NAME.1, and which one is meant cannot
    be told (a feature table then 'lacks' a column it has)."""
    seen, repeated = set(), []
    for name in (h.strip() for h in header):
        if name in seen and name and name not in repeated:
            repeated.append(name)
        seen.add(name)
    if repeated:
        raise InputError(f"{path}: the header names column(s) {', '.join(map(repr, repeated))} more than once; "
                         "rename or remove the repeated ones")


def _refuse_decimal_commas(frame: pd.DataFrame, path: Path) -> None:
    """A text column whose every value is a number with a comma ("12,5") holds decimal commas (or
    thousands separators): neither can be read as a number without guessing which."""
    import pandas as pd

    for column in frame.columns:
        values = frame[column]
        if not (pd.api.types.is_string_dtype(values) or values.dtype == object):
            continue
        text = values.dropna().astype(str).str.strip()
        if len(text) and text.str.fullmatch(r"[+-]?\d+(,\d+)?").all() and text.str.contains(",").any():
            shown = ", ".join(repr(v) for v in text[text.str.contains(",")].unique()[:3])
            raise InputError(f"{path}: column {column!r} holds numbers written with a comma ({shown}): save the "
                             "file with decimal points and no thousands separators")


def check_columns(frame: pd.DataFrame, source, *, rename: Mapping[str, str] | None = None,
                  required: Sequence[str] = (), only_present: bool = False) -> pd.DataFrame:
    """Rename columns (``{old: new}``) and check that ``required`` ones are there, naming ``source``.

    A rename of a column the table lacks is an error, unless ``only_present`` (for a second table
    read with the same ``--rename`` options as the first, e.g. a height sample beside a tree list).
    """
    if rename:
        missing = [old for old in rename if old not in frame.columns]
        if missing and not only_present:
            raise InputError(f"{source}: --rename names columns not in the file: {', '.join(missing)}")
        applied = {old: new for old, new in rename.items() if old in frame.columns}
        kept = [c for c in frame.columns if c not in applied]
        for old, new in applied.items():
            if new in kept:
                raise InputError(f"{source}: --rename {old}={new}: the file already has a column {new!r}; "
                                 f"rename that one too (e.g. --rename {new}={new}_original)")
            others = [o for o, n in applied.items() if n == new and o != old]
            if others:
                raise InputError(f"{source}: --rename gives two columns the name {new!r} ({old}, {others[0]})")
        frame = frame.rename(columns=applied)
    require_columns(frame, required, source)
    return frame


def require_columns(frame: pd.DataFrame, required: Sequence[str], source) -> None:
    """Refuse a table that lacks any of ``required``, naming what it has and the nearest names
    (``DBH_cm`` for ``dbh_cm``)."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        from sinks.validate import did_you_mean

        found = [str(c) for c in frame.columns]
        hints = "".join(did_you_mean(c, found) for c in missing[:3])
        raise InputError(f"{source}: missing required column(s) {', '.join(missing)}{hints}; found "
                         f"{', '.join(found) or 'no columns'} (use --rename OLD=NEW for your own names)")


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if b"geo" in meta:
        import geopandas as gpd

        return gpd.read_parquet(path)
    import pandas as pd

    return pd.read_parquet(path)


def _within_degrees(frame) -> bool:
    """Whether a frame's coordinates can be longitudes and latitudes (x in [-180, 360], y in [-90, 90])."""
    x0, y0, x1, y1 = frame.total_bounds
    finite = np.isfinite([x0, y0, x1, y1]).all()
    return not finite or (-180 <= x0 and x1 <= 360 and -90 <= y0 and y1 <= 90)


def _refuse_degrees_as_projected(x0: float, y0: float, x1: float, y1: float, crs: str, source: str) -> None:
    """Coordinates that all fit longitude/latitude (|x| <= 180, |y| <= 90) under a projected CRS:
    every point within 180 m of the projection's origin, which no survey is; as metres they land
    thousands of km from the plots (113.5, 28.1 in UTM 49N is on the equator)."""
    if np.isfinite([x0, y0, x1, y1]).all() and -180 <= x0 and x1 <= 180 and -90 <= y0 and y1 <= 90:
        raise InputError(f"{source}: every coordinate (x {x0:g} to {x1:g}, y {y0:g} to {y1:g}) fits a longitude and "
                         f"latitude, but the CRS is {crs}, a projected one in metres or feet; if they are degrees, "
                         "give --crs EPSG:4326 (or set it in the file)")


def _projected_in_degrees(frame, crs: str | None, source: str):
    """A file whose coordinates cannot be degrees but whose CRS is geographic: a GeoJSON without a
    ``crs`` member is read as WGS84 (RFC 7946 §4) whatever its numbers. Taken in ``crs`` when the
    user gives a projected one, else refused: reprojected as degrees it would land nowhere."""
    from pyproj import CRS

    x0, y0, x1, y1 = frame.total_bounds
    if crs is not None and not CRS.from_user_input(crs).is_geographic:
        return frame.set_crs(crs, allow_override=True)
    raise InputError(f"{source}: its coordinates (x {x0:,.0f} to {x1:,.0f}, y {y0:,.0f} to {y1:,.0f}) are not "
                     f"longitudes and latitudes, but its CRS is {frame.crs.to_string()} (a GeoJSON file without a "
                     "'crs' member is read as WGS84, RFC 7946); are they projected? Give their CRS with --crs "
                     "(e.g. EPSG:32648) or set it in the file (ogr2ogr -a_srs EPSG:32648 OUT IN)")


def to_geodataframe(frame: pd.DataFrame, *, crs: str | None = None, source: str = "table"):
    """Return ``frame`` as a GeoDataFrame with a CRS, from its geometry or its ``x``/``y``."""
    import geopandas as gpd

    if isinstance(frame, gpd.GeoDataFrame) and frame.geometry is not None:
        if frame.crs is not None and frame.crs.is_geographic and not _within_degrees(frame):
            frame = _projected_in_degrees(frame, crs, source)
        if len(frame) and frame.crs is not None and not frame.crs.is_geographic:
            _refuse_degrees_as_projected(*frame.total_bounds, frame.crs.to_string(), source)
        if frame.crs is None:
            if crs is None:
                raise InputError(f"{source}: geometry has no CRS; pass --crs (e.g. EPSG:4326)")
            frame = frame.set_crs(crs)
        elif crs is not None and not _same_crs(frame.crs, crs):
            raise InputError(f"{source}: geometry CRS is {frame.crs.to_string()} but --crs says {crs}")
        return frame
    if {"x", "y"} <= set(frame.columns):
        if crs is None:
            raise InputError(f"{source}: has x/y columns but no CRS; pass --crs (e.g. EPSG:32648)")
        import pandas as pd

        x = pd.to_numeric(frame["x"], errors="coerce")
        y = pd.to_numeric(frame["y"], errors="coerce")
        bad = np.flatnonzero(~(np.isfinite(x) & np.isfinite(y)))
        if bad.size:
            raise InputError(f"{source}: row(s) {format_rows(bad)} have missing or non-numeric x/y")
        from pyproj import CRS

        if CRS.from_user_input(crs).is_geographic:
            off = np.flatnonzero(((x.abs() > 180) | (y.abs() > 90)).to_numpy())
            if off.size:
                raise InputError(
                    f"{source}: row(s) {format_rows(off)} have x/y outside longitude/latitude range for "
                    f"{crs}; are they projected coordinates? (CRS mismatch: give their real --crs)"
                )
        else:
            _refuse_degrees_as_projected(x.min(), y.min(), x.max(), y.max(), crs, source)
        return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(x, y), crs=crs)
    names = {str(c).lower(): str(c) for c in frame.columns}
    pairs = [("lon", "lat"), ("longitude", "latitude"), ("long", "lat"), ("easting", "northing"), ("x_coord", "y_coord")]
    found = next(((names[a], names[b]) for a, b in pairs if a in names and b in names), None)
    hint = (f"; rename {found[0]}/{found[1]}: --rename {found[0]}=x --rename {found[1]}=y and give --crs"
            f"{' EPSG:4326' if found[0].lower().startswith('lon') else ''}" if found else "")
    raise InputError(f"{source}: no geometry and no x/y columns to locate the rows{hint}")


def _same_crs(a, b) -> bool:
    from pyproj import CRS

    return CRS.from_user_input(a) == CRS.from_user_input(b)


def format_rows(index: Sequence[int], limit: int = 10) -> str:
    """Format 0-based row positions as 1-based data-row numbers for error messages."""
    shown = ", ".join(str(int(i) + 1) for i in list(index)[:limit])
    more = len(index) - limit
    return shown + (f" and {more} more" if more > 0 else "")


def check_ids(ids: pd.Series, source: str, name: str) -> None:
    """Refuse a column of ids (parcels, polygons) with a missing or blank id, a repeated id, or two
    ids that differ only in case or surrounding spaces ('P1' and 'p1 '): a registry that trims or
    folds ids would take those two for one parcel and count it twice."""
    import pandas as pd

    text = ids.astype(str).str.strip()
    missing = np.flatnonzero((ids.isna() | (text == "")).to_numpy())
    if missing.size:
        raise InputError(f"{source}: {name} missing or blank in row(s) {format_rows(missing)}")
    dup = np.flatnonzero(ids.duplicated(keep=False).to_numpy())
    if dup.size:
        shown = ", ".join(map(str, pd.unique(ids.iloc[dup])[:10]))
        raise InputError(f"{source}: duplicate {name} in row(s) {format_rows(dup)}: {shown} repeated; each needs "
                         "its own id")
    folded = text.str.casefold()
    near = np.flatnonzero(folded.duplicated(keep=False).to_numpy())
    if near.size:
        first = folded.iloc[near[0]]
        rows = [i for i in near if folded.iloc[i] == first]
        shown = " and ".join(f"{ids.iloc[i]!r} (row {i + 1})" for i in rows)
        raise InputError(f"{source}: {name}s {shown} differ only in case or surrounding spaces; a registry that "
                         f"trims or folds ids would take them for one. Rename one ({near.size} row(s) are affected)")


def generated_time() -> str:
    """When a report is made, UTC to the second; ``SOURCE_DATE_EPOCH`` (seconds since 1970, the
    reproducible-builds.org convention) when set, so that a rerun with the same inputs writes the same
    bytes (a registry comparing a resubmitted report)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch:  # unset, or exported empty (as many CI set-ups do): now
        when = datetime.datetime.now(datetime.timezone.utc)
    else:
        try:
            seconds = int(epoch)
            if seconds < 0:
                raise ValueError(epoch)
            when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise InputError(f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds since "
                             "1970-01-01 UTC (unset it, or set e.g. SOURCE_DATE_EPOCH=$(date +%s))") from None
    return when.isoformat(timespec="seconds")


#: What each kind of output may be called: file kinds by extension; folder kinds by the file that
#: marks a folder as one sinks made (only such a folder is ever replaced, and only when asked).
FILE_OUTPUTS = {
    "table": frozenset(OUTPUT_TABLE_SUFFIXES),
    "raster": frozenset({".tif", ".tiff"}),
    "json": frozenset({".json"}),
    "gpkg": frozenset({".gpkg"}),
    "figure": frozenset({".png"}),
    "html": frozenset({".html", ".htm"}),
}
FOLDER_MARKERS = {"bundle": "metadata.json", "workspace": ".sinks-workspace"}
_STAGING = ".partial"


#: Files of a bundle folder besides those its metadata lists under ``files`` (sinks.bundle).
BUNDLE_OWN_FILES = frozenset({"metadata.json", "MODEL_CARD.md"})


def is_sinks_folder(path: str | os.PathLike, kind: str) -> bool:
    """Whether ``path`` is a folder sinks made of ``kind`` (``bundle`` or ``workspace``): its marker
    file holds what sinks writes there (a bundle's metadata with its id and file list; the
    workspace's JSON), not merely a file of that name."""
    import json

    marker = Path(path) / FOLDER_MARKERS[kind]
    try:
        content = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(content, dict):
        return False
    if kind == "bundle":
        return isinstance(content.get("bundle_id"), str) and isinstance(content.get("files"), dict)
    return content.get("sinks") == "demo workspace"


def workspace_files(path: str | os.PathLike) -> list[str]:
    """Every file under a workspace folder but its marker, as paths relative to it (``/``-separated):
    the list its marker keeps of what sinks wrote there."""
    root = Path(path)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p.relative_to(root).as_posix() != FOLDER_MARKERS["workspace"])


def foreign_files(path: str | os.PathLike, kind: str) -> list[str]:
    """Entries of a sinks folder that sinks did not write there (a bundle's: not in its metadata's
    file list; a workspace's: not in its marker's list, every file when it has none):
    ``--overwrite`` would delete them."""
    import json

    marker = json.loads((Path(path) / FOLDER_MARKERS[kind]).read_text(encoding="utf-8"))
    if kind == "workspace":
        listed = set(marker.get("files") or ())
        return [name for name in workspace_files(path) if name not in listed]
    listed = set(marker["files"])
    return sorted(e.name for e in Path(path).iterdir() if e.name not in listed | BUNDLE_OWN_FILES)


def check_outputs(outputs: Mapping[str | os.PathLike, str] | Iterable[tuple[str | os.PathLike, str]], *,
                  inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False) -> None:
    """Check output paths before any work; :class:`~sinks.errors.OutputError` says what is wrong.

    ``outputs`` maps each path to its kind (a key of :data:`FILE_OUTPUTS` or
    :data:`FOLDER_MARKERS`), as a mapping or as ``(path, kind)`` pairs. A file output must have a known extension, must not be a folder, and
    is replaced only with ``overwrite``; a folder output may be new, empty, or a folder of its kind
    (replaced only with ``overwrite``), never another folder. Every output's folder must exist and
    be writable, and outputs must differ from each other and from the inputs, must not lie inside an
    input folder that sinks made (a bundle), and a folder output must not hold an input.
    """
    seen: dict[Path, str] = {}
    input_paths = {Path(p).resolve() for p in inputs if p}
    pairs = outputs.items() if isinstance(outputs, Mapping) else outputs
    for raw, kind in pairs:
        text, path = str(raw), Path(raw)
        if kind in FILE_OUTPUTS:
            _check_file_output(text, path, FILE_OUTPUTS[kind], overwrite)
        else:
            _check_folder_output(path, kind, overwrite)
        parent = path.resolve().parent
        if not parent.is_dir():
            raise OutputError(f"{path}: the folder {parent} does not exist; create it first or write elsewhere")
        _check_name_length(path, parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: the folder {parent} is not writable; write elsewhere")
        resolved = path.resolve()
        if resolved in input_paths:
            raise OutputError(f"{path}: is also an input of this command; write the output elsewhere")
        for source in input_paths:
            if resolved.is_relative_to(source) and any(is_sinks_folder(source, k) for k in FOLDER_MARKERS):
                raise OutputError(f"{path}: lies inside {source}, an input of this command that sinks made "
                                  "(its files are checked as a whole); write the output elsewhere")
            if kind in FOLDER_MARKERS and source.is_relative_to(resolved):
                raise OutputError(f"{path}: holds {source}, an input of this command; write the output elsewhere")
        if resolved in seen:
            raise OutputError(f"{path}: named as two outputs; give each output its own path")
        seen[resolved] = kind


#: Bytes sinks may add to an output's file name for its staging and checkpoint files
#: (``.NAME.PID.RANDOM.partial.tif.staging.tif.aux.xml``, ``.NAME.resume-KEY``), with room to spare.
STAGING_NAME_EXTRA = 64


def _check_name_length(path: Path, parent: Path) -> None:
    """Refuse a name so long that the staging names beside it would exceed the file system's limit
    (found only when the output is written, after the work)."""
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    length = len(os.fsencode(path.name))
    if length + STAGING_NAME_EXTRA > name_max:
        raise OutputError(f"{path}: the file name is {length} bytes long; sinks writes it under staging names up to "
                          f"{STAGING_NAME_EXTRA} bytes longer and this file system allows {name_max}: give a name "
                          f"of at most {name_max - STAGING_NAME_EXTRA} bytes")


def _check_file_output(text: str, path: Path, suffixes, overwrite: bool) -> None:
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name ({' or '.join(sorted(suffixes))}) "
                          "- sinks never replaces a folder with a file")
    if path.suffix.lower() == ".shp":
        raise OutputError(f"{path}: {SHAPEFILE_OUTPUT}")
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{path}: unknown output format {path.suffix or '(no extension)'!r}; "
                          f"use {', '.join(sorted(suffixes))}")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists; pass --overwrite to replace it")


def _check_folder_output(path: Path, kind: str, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is a file, not a {kind} folder; choose another path")
    if path.is_dir() and any(path.iterdir()):
        if not is_sinks_folder(path, kind):
            raise OutputError(f"{path}: is a folder that is not a sinks {kind}; sinks never replaces a "
                              "folder it did not make: choose a new path")
        if not overwrite:
            raise OutputError(f"{path}: a {kind} exists there; pass --overwrite to replace it")
        _refuse_foreign_files(path, kind)


def _refuse_foreign_files(path: Path, kind: str) -> None:
    foreign = foreign_files(path, kind)
    if foreign:
        raise OutputError(f"{path}: the {kind} there also holds files sinks did not write "
                          f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); --overwrite would "
                          "delete them: move them out or choose a new path")


_STAGED = re.compile(r"^\.(?P<name>.+)\.\d+\.[A-Za-z0-9_]+\.partial")


#: The tag of a map's checkpoint folder, ``.NAME.resume-KEY`` beside the map (sinks.mapping.resume).
RESUME_TAG = ".resume-"


def staged_for(path: str | os.PathLike) -> Path:
    """The output a staging path stands for, for messages: a staging file of :func:`atomic_path`
    (``.NAME.PID.RANDOM.partial*``), a map's checkpoint folder (``.NAME.resume-KEY``) or anything
    inside either -> ``NAME`` in their folder; any other path as it is."""
    path = Path(path)
    for i, part in enumerate(path.parts):
        match = _STAGED.match(part)
        name = match["name"] if match else (part[1:].split(RESUME_TAG)[0] if part.startswith(".") and RESUME_TAG in part
                                            else None)
        if name:
            return Path(*path.parts[:i], name)
    return path


def _staging_prefix(path: Path) -> str:
    return f".{path.name}."


def clean_stale_staging(path: str | os.PathLike) -> list[Path]:
    """Remove staging files that a killed run (its process gone) left for the output ``path``."""
    path = Path(path)
    removed = []
    prefix = _staging_prefix(path)
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        name = entry.name
        if not (name.startswith(prefix) and _STAGING in name):
            continue
        pid_text = name[len(prefix):].split(".", 1)[0]
        if not pid_text.isdigit() or process_alive(int(pid_text)):
            continue
        _remove(entry)
        removed.append(entry)
    return removed


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux ``/proc/PID/stat`` field 22), or
    None where that cannot be read: with the pid it tells the process from a later one that reused
    its number."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[19])  # fields after the command name start at field 3 (state)
    except (OSError, ValueError, IndexError):
        return None


def process_identity() -> dict:
    """This process as a lock file records it: host name, pid and start time."""
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": process_start(os.getpid())}


def identity_running(identity: dict) -> bool | None:
    """Whether the process a lock file names (:func:`process_identity`) still runs: False when it
    has ended or its pid now belongs to a later process, None when it ran on another host (sinks
    cannot tell)."""
    import socket

    if identity.get("host") not in (None, socket.gethostname()):
        return None
    pid = int(identity["pid"])
    if not process_alive(pid):
        return False
    started = identity.get("started")
    return started is None or process_start(pid) in (None, started)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (this process counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


#: Free bytes under which the disk of a failed write counts as full (libtiff reports a full disk only
#: as a failed write, or not at all when the write fails as the file is closed).
FULL_DISK_BYTES = 64 * 2**20


def free_bytes(folder: str | os.PathLike) -> int:
    return shutil.disk_usage(folder).free


def full_disk_hint(paths: Iterable[str | os.PathLike]) -> str:
    """'the disk holding FOLDER is full (N MiB free): ...' for the first existing folder of ``paths``
    (files being written) with under :data:`FULL_DISK_BYTES` free; '' when none is."""
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        try:
            free = free_bytes(folder)
        except OSError:
            continue
        if free < FULL_DISK_BYTES:
            return f"the disk holding {folder} is full ({free / 2**20:.0f} MiB free): free some space or write elsewhere"
    return ""


def _replaceable(path: Path, kind: str | None) -> None:
    if path.is_dir() and not path.is_symlink():
        if kind is None:
            raise OutputError(f"{path}: is a folder; sinks never replaces a folder with a file")
        if any(path.iterdir()) and not is_sinks_folder(path, kind):
            raise OutputError(f"{path}: is a folder that is not a sinks {kind}; sinks never replaces a "
                              "folder it did not make: choose a new path")
        if any(path.iterdir()):
            _refuse_foreign_files(path, kind)
    elif path.exists() and kind is not None:
        raise OutputError(f"{path}: exists and is a file, not a {kind} folder; choose another path")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None,
                folder_kind: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    For a file, or for a folder of ``folder_kind`` (``bundle``, ``workspace``): an existing folder
    is replaced only when it is one sinks made of that kind (or empty), never otherwise, and a file
    never replaces a folder. On error (and on SIGINT, or SIGTERM/SIGHUP under the ``sinks``
    command) the temporary is removed and any existing ``path`` is left untouched. Staging that a
    killed run left for the same output is removed first. The staging name is
    ``.NAME.PID.RANDOM.partialSUFFIX`` in the target's folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _replaceable(path, folder_kind)
    clean_stale_staging(path)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f"{_staging_prefix(path)}{os.getpid()}.",
                                    suffix=f"{_STAGING}{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    old = tmp.with_name(tmp.name + ".old")  # an existing folder, moved aside while the new one moves in

    def undo() -> None:
        if old.exists() and not path.exists():
            os.replace(old, path)
        for entry in path.parent.glob(f"{glob.escape(tmp.name)}*"):  # tmp, tmp.old, tmp.staging.tif, ...
            _remove(entry)

    try:
        with on_abandon(undo):
            yield tmp
            _replaceable(path, folder_kind)
            if path.is_dir() and not path.is_symlink():
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    except BaseException:
        undo()
        raise


#: Undo actions of the outputs this process is writing, newest last (see :func:`abandon_outputs`).
_UNDO: list = []


@contextlib.contextmanager
def on_abandon(undo) -> Iterator[None]:
    """Register ``undo()`` (remove staging, put back what was moved aside) while the block runs."""
    _UNDO.append(undo)
    try:
        yield
    finally:
        _UNDO.remove(undo)


_KEPT: list = []


@contextlib.contextmanager
def kept_on_stop(describe) -> Iterator[None]:
    """While the block runs, ``describe()`` says what a stop now keeps on purpose (a map's finished
    tiles, to resume from), or returns None; :func:`kept_notes` collects them for the message."""
    _KEPT.append(describe)
    try:
        yield
    finally:
        _KEPT.remove(describe)


def kept_notes() -> list[str]:
    """What the running work would keep if it stopped now (see :func:`kept_on_stop`)."""
    notes = []
    for describe in list(_KEPT):
        try:
            note = describe()
        except Exception:  # a stop must not fail on its message
            note = None
        if note:
            notes.append(note)
    return notes


def abandon_outputs() -> None:
    """Undo every output being written, newest first: for a process that must stop at once.

    The ``sinks`` command calls it on SIGTERM and SIGHUP and then exits without unwinding, because
    an exception raised from a signal handler can surface inside a library's C++ callback (XGBoost
    turns it into its own error, or aborts). Previous outputs are untouched or put back.
    """
    for undo in reversed(list(_UNDO)):
        try:
            undo()
        except OSError:
            pass


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _write_table_file(frame: pd.DataFrame, tmp: Path, path: Path) -> None:
    suffix = path.suffix.lower()
    import geopandas as gpd
    import pandas as pd

    is_geo = isinstance(frame, gpd.GeoDataFrame) and "geometry" in frame.columns
    if suffix == ".csv":
        out = frame
        if is_geo:
            out = pd.DataFrame(frame.drop(columns="geometry"))
            if frame.geometry.geom_type.eq("Point").all():
                out["x"], out["y"] = frame.geometry.x, frame.geometry.y
            else:
                out["wkt"] = frame.geometry.to_wkt()
        out.to_csv(tmp, index=False)
    elif suffix in (".parquet", ".geoparquet"):
        frame.to_parquet(tmp, index=False)
    else:
        write_vector(frame, tmp, path)


def write_vector(frame, tmp: Path, path: Path) -> None:
    """Write a GeoDataFrame to ``tmp`` in the format of ``path``'s suffix, layer ``path.stem``. GDAL's
    write errors (pyogrio's DataSourceError, FeatureError... carry a SQL statement for a GeoPackage
    on a full disk) become one :class:`~sinks.errors.OutputError` naming ``path`` and, when it is full,
    the disk."""
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        frame.to_file(tmp, driver=VECTOR_SUFFIXES[path.suffix.lower()], layer=path.stem)
    except (DataLayerError, DataSourceError) as exc:
        hint = full_disk_hint([path]) or "is the disk full, or the folder not writable?"
        raise OutputError(f"{path}: writing failed ({type(exc).__name__}: {_gdal_reason(exc)}); {hint}") from exc


def _check_table_output(frame: pd.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".shp":
        raise OutputError(f"{path}: {SHAPEFILE_OUTPUT}")
    if suffix not in OUTPUT_TABLE_SUFFIXES:
        raise InputError(f"{path}: unsupported output format {suffix!r}; use .csv, .gpkg or .parquet")
    import geopandas as gpd

    is_geo = isinstance(frame, gpd.GeoDataFrame) and "geometry" in frame.columns
    if suffix in VECTOR_SUFFIXES and not is_geo:
        raise InputError(f"{path}: {suffix} needs geometry; write .csv or .parquet instead")


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a (Geo)DataFrame by extension, atomically. Returns the path written."""
    return write_tables({path: frame})[0]


def write_tables(tables: Mapping[str | os.PathLike, pd.DataFrame]) -> list[Path]:
    """Write tables that belong together (a plot table and its tree table): all appear or none.

    Each is written to its staging name; only when every one is complete are they renamed.
    """
    items = [(Path(path), frame) for path, frame in tables.items()]
    for path, frame in items:
        _replaceable(path, None)
        _check_table_output(frame, path)
    with contextlib.ExitStack() as stack:
        for path, frame in items:
            _write_table_file(frame, stack.enter_context(atomic_path(path)), path)
    return [path for path, _ in items]


def read_toml(path: str | os.PathLike, what: str) -> dict:
    """Parse a TOML file (a feature spec, recipe or rule set); :class:`SpecError` names the problem."""
    import tomllib

    from sinks.errors import SpecError

    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: {what} not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_frame(frame: pd.DataFrame) -> str:
    """Hex sha256 of a table's content (column names and values, row order kept)."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False).values.tobytes())
    return digest.hexdigest()


def first_per_id(frame: pd.DataFrame, column: str, ids, key: str) -> np.ndarray:
    """The first non-missing ``column`` value of each ``key`` in ``ids`` (NaN where none)."""
    if column not in frame.columns:
        return np.full(len(ids), np.nan)
    first = frame.dropna(subset=[column]).groupby(key, sort=False)[column].first()
    return first.reindex(ids).to_numpy()


def locate_by_id(plots: pd.DataFrame, rows: pd.DataFrame, ids, *, key: str, crs: str | None,
                 source: str) -> pd.DataFrame:
    """Give one-row-per-id ``plots`` the location of its first row in ``rows`` (many rows per id).

    From ``rows``' geometry when it has one, else from ``x``/``y`` (kept as columns, and as point
    geometry when ``crs`` is known).
    """
    if "geometry" in rows.columns and getattr(rows, "geometry", None) is not None:
        import geopandas as gpd

        first = gpd.GeoDataFrame(rows[[key]].assign(geometry=rows.geometry), geometry="geometry", crs=rows.crs)
        first = first.drop_duplicates(key).set_index(key).reindex(ids)
        return gpd.GeoDataFrame(plots, geometry=first.geometry.to_numpy(), crs=rows.crs)
    if {"x", "y"} <= set(rows.columns):
        plots["x"] = first_per_id(rows, "x", ids, key)
        plots["y"] = first_per_id(rows, "y", ids, key)
        if crs is not None:
            return to_geodataframe(plots, crs=crs, source=source)
    return plots
