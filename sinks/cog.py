"""Writing Cloud-Optimized GeoTIFFs window by window, atomically.

:func:`cog_writer` opens a tiled, compressed GeoTIFF at a temporary name beside the target, lets
the caller write windows into it, and on success converts it to a COG (internal tiles and
overviews, GDAL's ``COG`` driver) and renames it into place. Band names go into the band
descriptions, units and any provenance into the tags. On error nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.shutil import copy as rio_copy

from sinks.constants import NODATA_LIKE, QUIET_LIBTIFF_ENV
from sinks.io import atomic_path
from sinks.threads import available_cores

def quiet_libtiff() -> None:
    """Turn off libtiff's own printing of errors.

    Where GDAL hands libtiff no file handle (its I/O callbacks), a failed write goes to libtiff's
    default handler, which prints ``_tiffWriteProc: No space left on device.`` to stderr for every
    block (19 lines for one full disk). GDAL reports the same failure through its own errors, which
    the ``sinks`` command turns into one line (and :func:`check_written` catches what fails as a file
    closes), so nothing is lost. The libtiff is the one rasterio's wheel bundles (GDAL is loaded by
    then: set before that, the change did not hold, measured); where there is none (a system GDAL),
    libtiff keeps printing. The command asks for it through :data:`sinks.constants.QUIET_LIBTIFF_ENV`,
    so only processes that write rasters pay for it."""
    import ctypes
    import glob

    base = os.path.dirname(rasterio.__file__)
    found = sorted(glob.glob(base + ".libs/libtiff*.so*") + glob.glob(os.path.join(base, ".dylibs", "libtiff*")))
    if not found:
        return
    try:
        libtiff = ctypes.CDLL(found[0])
        libtiff.TIFFSetErrorHandler.restype = ctypes.c_void_p
        libtiff.TIFFSetErrorHandler.argtypes = [ctypes.c_void_p]
        libtiff.TIFFSetErrorHandler(None)
    except (OSError, AttributeError):  # no such library or symbol: leave libtiff as it is
        return


if os.environ.get(QUIET_LIBTIFF_ENV) == "1":
    quiet_libtiff()

#: Nodata for float outputs: the GeoTIFF convention of a value outside any real range.
FLOAT_NODATA = -9999.0


@contextlib.contextmanager
def cog_writer(
    path: str | os.PathLike,
    *,
    crs,
    transform,
    width: int,
    height: int,
    band_names: Sequence[str],
    dtype: str = "float32",
    nodata: float | None = FLOAT_NODATA,
    tags: Mapping[str, object] | None = None,
    band_tags: Mapping[str, Mapping[str, object]] | None = None,
    blocksize: int = 512,
    resampling: str = "average",
) -> Iterator[rasterio.io.DatasetWriter]:
    """Yield a writable dataset; on success the file at ``path`` is a complete COG.

    ``band_tags`` maps a band name to tags for that band (e.g. ``{"carbon": {"units": "Mg C/ha"}}``);
    a ``units`` tag is also set as the band's GDAL unit type.
    """
    path = Path(path)
    profile = dict(
        driver="GTiff", crs=crs, transform=transform, width=width, height=height, count=len(band_names),
        dtype=dtype, nodata=nodata, tiled=True, blockxsize=blocksize, blockysize=blocksize,
        compress="deflate", BIGTIFF="IF_SAFER",
    )
    with atomic_path(path) as final_tmp:
        staging = final_tmp.with_name(final_tmp.name + ".staging.tif")
        try:
            with rasterio.open(staging, "w", **profile) as dst:
                for i, name in enumerate(band_names, start=1):
                    dst.set_band_description(i, name)
                    own = (band_tags or {}).get(name, {})
                    dst.update_tags(i, name=name, **{k: str(v) for k, v in own.items()})
                    if own.get("units"):
                        dst.set_band_unit(i, str(own["units"]))  # GDAL's unit type too (gdalinfo, QGIS show it)
                dst.update_tags(**{k: str(v) for k, v in (tags or {}).items()})
                yield dst
            check_written(staging)
            to_cog(staging, final_tmp, blocksize=blocksize, resampling=resampling,
                   predictor=3 if np.dtype(dtype).kind == "f" else 2)
        finally:
            staging.unlink(missing_ok=True)
            Path(str(staging) + ".aux.xml").unlink(missing_ok=True)


def cog_threads() -> int:
    """Threads GDAL uses to compress a COG and compute its overviews: ``SINKS_COG_THREADS``, else
    every core this process may use."""
    text = os.environ.get("SINKS_COG_THREADS", "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    return available_cores()


#: Options of the conversion to a COG, each unless the user set it. ``GDAL_MAX_DATASET_POOL_SIZE``:
#: source files a VRT keeps open at once (GDAL's default 100); each open tile holds its decoded
#: block outside the block cache. ``GDAL_CACHEMAX`` (MiB): the conversion reads each block once
#: per pass, so a large block cache only holds memory. Converting an 8192² VRT of 256 map tiles
#: (one band; six) peaked at 880 MiB (800) with GDAL's pool, 419 (617) with 16, 390 (567) with 8,
#: and with 8 and a 32 MiB cache instead of 128, 343 MiB at six bands; all in the same time
#: (4.2-5.2 s; 29-35 s at six bands), since the tiles are band-interleaved (benchmarks/README.md).
VRT_SOURCE_POOL = 8
COG_GDAL_CACHE_MB = 32
#: ``COG_TMP_COMPRESSION``: the COG driver computes the overviews into a temporary file beside the
#: output before copying them in; uncompressed, that file costs disk (a third of the map's raw size)
#: but no compression pass: the conversion of a 4096² map was 25-30 % faster (five bands, 10.4-11.0 s
#: -> 7.9-8.1 s; one band 1.5 -> 1.1-1.4 s), with the same bytes (benchmarks/README.md).
COG_TMP_COMPRESSION = "NONE"
#: The value sinks gave ``GDAL_CACHEMAX`` (sinks.mapping.executors.limit_gdal_cache), which tells a
#: value the user chose from one sinks set.
GDAL_CACHE_SET_BY_SINKS = "SINKS_GDAL_CACHEMAX"


def gdal_cache_chosen_by_user() -> bool:
    """Whether ``GDAL_CACHEMAX`` holds a value the user set (sinks then keeps it everywhere)."""
    current = os.environ.get("GDAL_CACHEMAX")
    return current is not None and current != os.environ.get(GDAL_CACHE_SET_BY_SINKS)


def _conversion_options() -> dict:
    options = {}
    if "GDAL_MAX_DATASET_POOL_SIZE" not in os.environ:
        options["GDAL_MAX_DATASET_POOL_SIZE"] = VRT_SOURCE_POOL
    if not gdal_cache_chosen_by_user():
        options["GDAL_CACHEMAX"] = COG_GDAL_CACHE_MB * 2**20  # bytes: rasterio sets it in GDAL at once
    if "COG_TMP_COMPRESSION" not in os.environ:
        options["COG_TMP_COMPRESSION"] = COG_TMP_COMPRESSION
    return options


def to_cog(source: str | os.PathLike, dest: str | os.PathLike, *, blocksize: int = 512, resampling: str = "average",
           predictor: int = 3, threads: int | None = None) -> Path:
    """Convert a raster GDAL can read (a GeoTIFF, a VRT of tiles) into a COG at ``dest``: DEFLATE,
    internal tiles, overviews, compressed with ``threads`` threads (default :func:`cog_threads`;
    the bytes do not depend on it). Band descriptions, units, nodata and tags are copied. A VRT's
    sources are opened at most :data:`VRT_SOURCE_POOL` at a time, GDAL's block cache is
    :data:`COG_GDAL_CACHE_MB` meanwhile and the temporary overviews are not compressed
    (:data:`COG_TMP_COMPRESSION`), unless the user set these."""
    with rasterio.Env(**_conversion_options()):
        rio_copy(
            str(source), str(dest), driver="COG", COMPRESS="DEFLATE", PREDICTOR=predictor,
            BLOCKSIZE=blocksize if blocksize >= 128 else 512,  # the COG driver's minimum; 512 is its default
            OVERVIEWS="AUTO", RESAMPLING=resampling.upper(), BIGTIFF="IF_SAFER",
            NUM_THREADS=str(threads or cog_threads()),
        )
    check_written(dest)
    return Path(dest)


def check_written(path: str | os.PathLike, *, name: str | os.PathLike | None = None) -> None:
    """Refuse a GeoTIFF just written that is not whole: a block never written or lying past the end
    of the file. GDAL writes the last blocks as the file is closed, and a write failing there (a
    full disk) is only printed by libtiff, not raised, so the file would pass for complete (and a
    block never written reads as nodata). Checks the full-resolution blocks of every band, which a
    COG stores last; a file that cannot be opened at all is refused too. ``name``: the file the
    message names (default: the output a staging ``path`` stands for)."""
    from sinks.errors import OutputError
    from sinks.io import full_disk_hint, staged_for

    path = Path(path)
    size = path.stat().st_size
    problem = ""
    try:
        with rasterio.open(path) as ds:
            for band in ds.indexes:
                for (row, col), _ in ds.block_windows(band):
                    offset = ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
                    length = ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
                    if not offset or not length or int(offset) + int(length) > size:
                        problem = f"block {row},{col} of band {band} was not written"
                        break
                if problem:
                    break
    except rasterio.errors.RasterioError as exc:
        problem = f"it cannot be read back: {str(exc).split(': ', 1)[-1]}"
    if problem:
        hint = full_disk_hint([path]) or "is the disk full, or a file-size limit reached?"
        raise OutputError(f"{name or staged_for(path)}: writing failed, {problem}; {hint}")


def nodata_in_dtype(nodata: float | None, dtype: str):
    """A band's nodata value in the band's own data type, as GDAL compares it (a float32 band with
    the float32 nearest the stored double, a float64 or integer band with the value itself); None
    where no pixel can equal it (none set, NaN, which a float cast keeps as NaN anyway, or a value the
    integer type cannot hold)."""
    if nodata is None or np.isnan(nodata):
        return None
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return dtype.type(nodata) if float(nodata).is_integer() and info.min <= nodata <= info.max else None
    with np.errstate(over="ignore"):
        return dtype.type(nodata)


def read_window(ds, indexes, window) -> np.ndarray:
    """``ds.read(indexes, window=window)``, with an error that names the file when its pixels cannot
    be decoded (a truncated or corrupt file opens, then fails here)."""
    from rasterio.errors import RasterioIOError

    from sinks.errors import InputError

    try:
        return ds.read(indexes, window=window)
    except RasterioIOError as exc:
        raise InputError(f"{ds.name}: cannot read its pixels at rows {window.row_off}-"
                         f"{window.row_off + window.height}, columns {window.col_off}-{window.col_off + window.width} "
                         f"({exc}); is the file truncated or corrupt?") from exc


def band_scales(ds, indexes) -> list[tuple[float, float]]:
    """The (scale, offset) a raster declares for each of ``indexes`` (GDAL's scale/offset: value =
    raw x scale + offset; 1, 0 where none)."""
    return [(float(ds.scales[i - 1] if ds.scales[i - 1] is not None else 1.0),
             float(ds.offsets[i - 1] if ds.offsets[i - 1] is not None else 0.0)) for i in indexes]


def undeclared_nodata(values: np.ndarray) -> tuple[float, int] | None:
    """The first common nodata value (:data:`sinks.constants.NODATA_LIKE`: -9999, -32768, float32's
    lowest) found in ``values`` of a band that declares none, and how many pixels hold it; or None."""
    hit = np.isin(values, np.asarray(NODATA_LIKE, dtype=values.dtype if values.dtype.kind == "f" else np.float64))
    return (float(values[hit][0]), int(hit.sum())) if hit.any() else None


def band_index(ds, name: str) -> int:
    """1-based index of the band whose description is ``name``."""
    for i, desc in enumerate(ds.descriptions, start=1):
        if desc == name:
            return i
    raise KeyError(name)
