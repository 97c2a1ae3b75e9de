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

from sinks.io import atomic_path

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

    ``band_tags`` maps a band name to tags for that band (e.g. ``{"carbon": {"units": "Mg C/ha"}}``).
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
                    dst.update_tags(i, name=name, **{k: str(v) for k, v in (band_tags or {}).get(name, {}).items()})
                dst.update_tags(**{k: str(v) for k, v in (tags or {}).items()})
                yield dst
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
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def to_cog(source: str | os.PathLike, dest: str | os.PathLike, *, blocksize: int = 512, resampling: str = "average",
           predictor: int = 3, threads: int | None = None) -> Path:
    """Convert a raster GDAL can read (a GeoTIFF, a VRT of tiles) into a COG at ``dest``: DEFLATE,
    internal tiles, overviews, compressed with ``threads`` threads (default :func:`cog_threads`;
    the bytes do not depend on it). Band descriptions, units, nodata and tags are copied."""
    rio_copy(
        str(source), str(dest), driver="COG", COMPRESS="DEFLATE", PREDICTOR=predictor,
        BLOCKSIZE=blocksize if blocksize >= 128 else 512,  # the COG driver's minimum; 512 is its default
        OVERVIEWS="AUTO", RESAMPLING=resampling.upper(), BIGTIFF="IF_SAFER",
        NUM_THREADS=str(threads or cog_threads()),
    )
    return Path(dest)


def band_index(ds, name: str) -> int:
    """1-based index of the band whose description is ``name``."""
    for i, desc in enumerate(ds.descriptions, start=1):
        if desc == name:
            return i
    raise KeyError(name)
