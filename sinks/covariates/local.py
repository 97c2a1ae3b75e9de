"""The local engine: a feature spec computed with rasterio, window by window.

Sources are aligned to the spec's target grid on the fly: a source already on the grid (same CRS,
pixel size and pixel-aligned origin) is read directly; any other is read around the window in its
own CRS, masked, rescaled and reprojected to the window. Masks (``valid``) are applied to the raw
values before any resampling, nodata stays NaN throughout, and terrain derivatives get the
one-pixel halo they need. Nothing here reads a whole raster at once, with one documented exception:
the topographic wetness index (``terrain = "twi"``) needs flow accumulation over the whole DEM, so
the engine reads the DEM once on the whole target grid (window by window), computes the index and
keeps it in a small process-wide cache (shared by the engines of a multi-threaded map job). Its
working memory is about :data:`sinks.covariates.terrain.FLOW_BYTES_PER_PIXEL` bytes per grid pixel;
grids above ``SINKS_FLOW_MAX_PIXELS`` (default :data:`FLOW_MAX_PIXELS`) are refused with a message
saying to precompute TWI with a hydrology tool (TauDEM, WhiteboxTools, SAGA) and add it as a band.

Resource guards, before anything is allocated or written: :func:`check_grid_size` refuses a grid
above :data:`~sinks.covariates.spec.MAX_PIXELS` pixels (``max_pixels`` / ``--max-pixels`` raises it)
and :meth:`LocalEngine.check_memory` refuses windows whose estimated working memory
(:meth:`LocalEngine.window_bytes`: each source read at its own resolution, composites, features)
times the number of threads exceeds :data:`MEMORY_FRACTION` of the available memory.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.windows import Window, from_bounds

from sinks.cog import band_scales, undeclared_nodata
from sinks.covariates import expressions, terrain
from sinks.covariates.spec import MAX_PIXELS, FeatureSpec, Source
from sinks.errors import InputError, ResourceError, SpecError

#: Largest grid (pixels) on which the TWI's whole-grid flow accumulation runs by default: at
#: FLOW_BYTES_PER_PIXEL = 100 bytes per pixel (an upper bound) this is at most 2.5 GB of working memory
#: (measured: about 58 bytes per pixel at 4 million pixels, so ~1.5 GB). Override with
#: the environment variable SINKS_FLOW_MAX_PIXELS.
FLOW_MAX_PIXELS = 25_000_000
#: Fraction of the memory available (MemAvailable) that a job's windows may use, all threads together.
MEMORY_FRACTION = 0.8
_FLOW_CACHE: OrderedDict = OrderedDict()  # key -> float32 TWI grid; at most 2 entries
_FLOW_LOCK = threading.Lock()


@dataclass(frozen=True)
class TargetGrid:
    """A north-up grid: CRS, affine transform of the top-left corner, and size in pixels."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        left, top = self.transform.c, self.transform.f
        return (left, top + self.transform.e * self.height, left + self.transform.a * self.width, top)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def window_transform(self, window: Window) -> Affine:
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def windows(self, block: int = 512):
        """Row-major blocks of at most ``block`` x ``block`` pixels covering the grid."""
        for row in range(0, self.height, block):
            for col in range(0, self.width, block):
                yield Window(col, row, min(block, self.width - col), min(block, self.height - row))

    def pixel_size_m(self, window: Window):
        """Pixel size (dx, dy) in metres; per-row arrays on a geographic grid (spherical approx.)."""
        xres, yres = abs(self.transform.a), abs(self.transform.e)
        if not self.crs.is_geographic:
            factor = self.crs.axis_info[0].unit_conversion_factor if self.crs.axis_info else 1.0
            return xres * factor, yres * factor
        rows = np.arange(window.row_off, window.row_off + window.height) + 0.5
        lat = np.radians(self.transform.f + rows * self.transform.e)
        metres_per_degree = 2 * math.pi * 6371008.8 / 360  # mean Earth radius, IUGG
        return xres * metres_per_degree * np.cos(lat), np.full(lat.shape, yres * metres_per_degree)


def available_memory() -> int | None:
    """Bytes of memory available to a new job (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _gib(n_bytes: float) -> str:
    if n_bytes >= 2**27:
        return f"{n_bytes / 2**30:,.1f} GiB"
    return f"{n_bytes / 2**20:,.0f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 2**10:,.0f} KiB"


def check_grid_size(where: str, grid: TargetGrid, *, n_bands: int, max_pixels: float | None = None,
                    what: str = "stack", from_spec: bool = True) -> int:
    """Refuse a grid with more than ``max_pixels`` pixels (default :data:`MAX_PIXELS`) before
    anything is allocated or written; returns the estimated output size in bytes (float32,
    uncompressed) of ``n_bands`` bands. ``where`` names the grid's origin in the message (``spec
    'x'``, ``stack s.tif``); ``from_spec``: the grid is a spec's, whose [grid] to check."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    pixels = grid.width * grid.height
    size = pixels * n_bands * 4
    if pixels > limit:
        unit = grid.crs.axis_info[0].unit_name if grid.crs.axis_info else "CRS units"
        hint = ""
        if not grid.crs.is_geographic and abs(grid.transform.a) < 0.01:
            hint = (f" (a resolution in degrees? in {grid.crs.to_string()} it is in {unit}s, so "
                    f"{grid.transform.a:g} is a pixel of {grid.transform.a * 1000:g} mm)")
        check = (f"check [grid] resolution {grid.transform.a:g} ({unit}){hint} and the extent, or " if from_spec
                 else f"it is the stack's own grid ({grid.transform.a:g} {unit} pixels); ")
        raise ResourceError(
            f"{where}: the {what} grid is {grid.width:,} x {grid.height:,} = {pixels:,} pixels "
            f"(about {_gib(size)} uncompressed for {n_bands} float32 band(s)), more than the limit of "
            f"{int(limit):,} pixels; {check}pass --max-pixels {pixels:.3g} to run it anyway")
    return size


def _open(path: str):
    if not Path(path).exists() and "://" not in path and not path.startswith("/vsi"):
        default_shared = str(Path("../shared/data").resolve())
        hint = (f" (${{SINKS_SHARED_DATA}} is not set, so it stands for ../shared/data from the current folder, "
                f"{default_shared}: set SINKS_SHARED_DATA to the shared data folder)"
                if "SINKS_SHARED_DATA" not in os.environ and path.startswith(default_shared) else "")
        raise InputError(f"{path}: raster not found{hint}")
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"{path}: cannot open raster ({exc})") from exc
    if ds.crs is None:
        ds.close()
        raise InputError(f"{path}: raster has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32648 {path})")
    return ds


def target_grid(spec: FeatureSpec) -> TargetGrid:
    """The spec's grid: its extent, or the ``like`` source's extent, snapped to the resolution."""
    crs = CRS.from_user_input(spec.grid.crs)
    xres, yres = spec.grid.resolution
    if spec.grid.extent is not None:
        left, bottom, right, top = spec.grid.extent
        if right <= left or top <= bottom:
            raise SpecError(f"spec {spec.name!r}: grid extent must be [xmin, ymin, xmax, ymax]")
    else:
        source = spec.source(spec.grid.like)
        if not source.paths:
            raise SpecError(f"spec {spec.name!r}: grid.like source {source.name!r} has no local file")
        with _open(source.paths[0]) as ds:
            _refuse_not_north_up(ds)
            if CRS.from_user_input(ds.crs) == crs and np.isclose(abs(ds.transform.a), xres) and np.isclose(
                abs(ds.transform.e), yres
            ):
                return TargetGrid(crs, ds.transform, ds.width, ds.height)
            left, bottom, right, top = transform_bounds(ds.crs, crs, *ds.bounds, densify_pts=21)
    x0, y0 = _source_lattice(spec, crs, xres, yres)
    left = x0 + math.floor((left - x0) / xres + 1e-9) * xres
    bottom = y0 + math.floor((bottom - y0) / yres + 1e-9) * yres
    width, height = math.ceil((right - left) / xres - 1e-9), math.ceil((top - bottom) / yres - 1e-9)
    top = bottom + height * yres
    return TargetGrid(crs, Affine(xres, 0, left, 0, -yres, top), width, height)


def _source_lattice(spec: FeatureSpec, crs: CRS, xres: float, yres: float) -> tuple[float, float]:
    """A point of the pixel lattice the grid's edges snap to: the origin of the first local source
    on the grid's CRS and resolution (so an extent cut from the sources' grid keeps their pixels,
    unresampled), else (0, 0) (edges at multiples of the resolution)."""
    for source in spec.sources:
        if not source.paths or not Path(source.paths[0]).is_file():
            continue
        try:
            with rasterio.open(source.paths[0]) as ds:
                if (ds.crs is not None and _north_up(ds) and CRS.from_user_input(ds.crs) == crs
                        and np.isclose(abs(ds.transform.a), xres) and np.isclose(abs(ds.transform.e), yres)):
                    return float(ds.transform.c), float(ds.transform.f)
        except RasterioError:
            continue  # an unreadable source is reported where it is read
    return 0.0, 0.0


def _north_up(ds) -> bool:
    t = ds.transform
    return t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0


def _refuse_not_north_up(ds) -> None:
    """A south-up, mirrored or rotated source: its windows cannot be read onto the grid (its
    bounds, bottom above top, read as missing the grid altogether)."""
    if not _north_up(ds):
        raise InputError(f"{ds.name}: not a north-up raster (transform {tuple(ds.transform)[:6]}: rows must run "
                         "north to south, columns west to east, unrotated); warp it first: gdalwarp IN.tif OUT.tif")


def _refuse_undeclared_nodata(source: Source, ds, raw: np.ndarray, indexes) -> None:
    """A band that declares no nodata (nor does the spec) but holds a common nodata value
    (:func:`sinks.cog.undeclared_nodata`) where the source's ``valid`` mask keeps it: those pixels
    would be extracted and mapped as real covariates (an elevation of -9999 m)."""
    if source.nodata is not None:
        return
    for i, index in enumerate(indexes):
        if ds.nodatavals[index - 1] is not None:
            continue
        found = undeclared_nodata(raw[i])
        if found:
            value, count = found
            raise InputError(
                f"{ds.name}: band {index} ({source.bands[i].name}) of source {source.name!r} holds {value:g} at "
                f"{count} pixel(s) of a window, a common nodata value, but the file declares no nodata; "
                f"declare it (gdal_edit.py -a_nodata {value:g} {ds.name}) or set nodata = {value:g} for the source "
                "in the feature spec")


def _aligned(ds, grid: TargetGrid) -> bool:
    if CRS.from_user_input(ds.crs) != grid.crs:
        return False
    t, g = ds.transform, grid.transform
    if not (np.isclose(t.a, g.a) and np.isclose(t.e, g.e) and t.b == 0 and t.d == 0):
        return False
    col, row = (t.c - g.c) / g.a, (t.f - g.f) / g.e
    return abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6


class LocalEngine:
    """Compute a feature spec's features on windows of its target grid.

    Use as a context manager (it holds the source rasters open)::

        with LocalEngine(spec) as engine:
            block = engine.compute(Window(0, 0, 256, 256))   # (n_features, 256, 256) float32, NaN = nodata
    """

    def __init__(self, spec: FeatureSpec, grid: TargetGrid | None = None):
        self.spec = spec
        self.grid = grid or target_grid(spec)
        self.halo = terrain.HALO if any(f.terrain for f in spec.features) else 0
        needed = self._needed_sources()
        self._datasets: dict[str, list] = {}
        try:
            for source in spec.sources:
                if source.name not in needed:
                    continue
                if not source.paths:
                    raise SpecError(f"spec {spec.name!r}: source {source.name!r} has no local file (Earth Engine only)")
                self._datasets[source.name] = [self._check(source, _open(p)) for p in source.paths]
        except BaseException:
            self.close()
            raise

    def window_bytes(self, block: int) -> int:
        """Estimated peak working memory (bytes) of :meth:`compute` on a ``block`` x ``block`` window:
        each source's read window in its own pixels (larger when the source is finer than the grid,
        and one per scene of a composite), its reprojected copy, and the features with temporaries."""
        side = min(block, max(self.grid.width, self.grid.height)) + 2 * self.halo
        h, w = min(side, self.grid.height + 2 * self.halo), min(side, self.grid.width + 2 * self.halo)
        window = Window(-self.halo, -self.halo, w, h)
        bounds = rasterio.windows.bounds(window, self.grid.transform)
        total = 0
        for source in self.spec.sources:
            for ds in self._datasets.get(source.name, []):
                n = len(source.bands)
                if _aligned(ds, self.grid):
                    src_pixels = h * w
                else:
                    try:
                        src_bounds = transform_bounds(self.grid.crs, ds.crs, *bounds, densify_pts=21)
                        approx = from_bounds(*src_bounds, transform=ds.transform)
                        src_pixels = (abs(approx.height) + 5) * (abs(approx.width) + 5)
                    except Exception:  # noqa: BLE001 - an estimate only; the read reports real errors
                        src_pixels = h * w
                    if not math.isfinite(src_pixels):
                        src_pixels = float(ds.width) * ds.height
                total += n * (src_pixels * (4 + 4 + 1) + h * w * 4)  # float copy, masked read, mask; dst
            if len(self._datasets.get(source.name, [])) > 1:
                total += len(source.bands) * h * w * 4 * 2  # the composite's stack and result
        total += len(self.spec.features) * h * w * 4 * 4  # values, output slice, expression temporaries
        return int(total)

    def check_memory(self, block: int, *, n_jobs: int = 1, extra_per_pixel: int = 0, what: str = "stack") -> int:
        """Refuse a job whose windows (``n_jobs`` at a time) would need more memory than is available.

        Returns the estimate in bytes. ``extra_per_pixel`` adds the caller's own arrays per window
        pixel (e.g. the map's output bands and model inputs)."""
        side = min(block, max(self.grid.width, self.grid.height))
        need = (self.window_bytes(block) + extra_per_pixel * side * side) * max(1, n_jobs)
        have = available_memory()
        if have is not None and need > MEMORY_FRACTION * have:
            finer = [s.name for s in self.spec.sources for ds in self._datasets.get(s.name, [])
                     if not _aligned(ds, self.grid)]
            raise ResourceError(
                f"spec {self.spec.name!r}: a {what} window of {block} x {block} pixels"
                f"{f' with {n_jobs} jobs' if n_jobs > 1 else ''} needs about {_gib(need)} of memory, more than "
                f"{MEMORY_FRACTION:.0%} of the {_gib(have)} available; use a smaller --block"
                + (" or fewer --jobs" if n_jobs > 1 else "")
                + (f", or check that the grid's resolution ({self.grid.transform.a:g} {self.grid.crs.axis_info[0].unit_name if self.grid.crs.axis_info else 'CRS units'}) "
                   f"is not far coarser than source(s) {', '.join(dict.fromkeys(finer))} (each window is read from them at their own resolution)"
                   if finer else ""))
        return need

    def uncovered(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """Which points (grid CRS) lie outside every file of each source the features read:
        ``{source name: bool array}``. A point outside a source's files gets NaN from it."""
        from rasterio.warp import transform as transform_xy

        out = {}
        for source in self.spec.sources:
            datasets = self._datasets.get(source.name, [])
            if not datasets:
                continue
            outside = np.ones(len(x), dtype=bool)
            for ds in datasets:
                if CRS.from_user_input(ds.crs) == self.grid.crs:
                    sx, sy = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
                else:
                    sx, sy = (np.asarray(v, dtype=float) for v in transform_xy(self.grid.crs, ds.crs, list(x), list(y)))
                left, bottom, right, top = ds.bounds
                inside = np.isfinite(sx) & np.isfinite(sy) & (sx >= left) & (sx < right) & (sy > bottom) & (sy <= top)
                outside &= ~inside
            out[source.name] = outside
        return out

    def _needed_sources(self) -> set[str]:
        refs: list[str] = []
        names = {f.name for f in self.spec.features}
        for feature in self.spec.features:
            if feature.band:
                refs.append(feature.band)
            if feature.expression:
                refs += [r for r in expressions.names(feature.expression) if r not in names]
        return {self.spec.resolve(r)[0].name for r in refs}

    def _check(self, source: Source, ds):
        self._datasets.setdefault("_all", []).append(ds)
        _refuse_not_north_up(ds)
        for band in source.bands:
            if not 1 <= band.index <= ds.count:
                raise SpecError(
                    f"{ds.name}: source {source.name!r} names band {band.name!r} at index {band.index}, "
                    f"but the raster has {ds.count} band(s)"
                )
        classes = [f.name for f in self.spec.features
                   if f.categorical and f.band and self.spec.resolve(f.band)[0].name == source.name]
        if classes and source.resampling not in ("nearest", "mode") and not _aligned(ds, self.grid):
            # the spec allows it for the grid's `like` source, which is then on the grid's pixels; off them,
            # class codes would be interpolated (classes 1 and 3 read 2.2)
            raise SpecError(f"{ds.name}: categorical feature(s) {', '.join(classes)} of source {source.name!r} would "
                            f"be resampled with {source.resampling!r} onto the grid (the raster is not on its "
                            "pixels), which mixes class codes; set resampling = \"nearest\" (or \"mode\") on that "
                            "source")
        left, bottom, right, top = transform_bounds(ds.crs, self.grid.crs, *ds.bounds, densify_pts=21)
        g = self.grid.bounds
        if left >= g[2] or right <= g[0] or bottom >= g[3] or top <= g[1]:
            raise InputError(
                f"{ds.name}: raster does not overlap the target grid of spec {self.spec.name!r} "
                f"(raster bounds {tuple(round(v, 3) for v in (left, bottom, right, top))} vs grid "
                f"{tuple(round(v, 3) for v in g)} in {self.grid.crs.to_string()})"
            )
        return ds

    def close(self) -> None:
        for ds in self._datasets.pop("_all", []):
            ds.close()
        self._datasets.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading ---------------------------------------------------------------------------
    def _read_scene(self, source: Source, ds, window: Window) -> dict[str, np.ndarray]:
        """Bands of one scene on ``window`` of the grid: masked, rescaled, float32 with NaN."""
        indexes = [b.index for b in source.bands]
        out_shape = (int(window.height), int(window.width))
        if _aligned(ds, self.grid):
            col0 = round((self.grid.transform.c - ds.transform.c) / ds.transform.a) + int(window.col_off)
            row0 = round((self.grid.transform.f - ds.transform.f) / ds.transform.e) + int(window.row_off)
            src_window, dst_slice = _clip(col0, row0, out_shape, ds.width, ds.height)
            raw = np.full((len(indexes), *out_shape), np.nan, dtype=np.float32)
            if src_window is not None:
                raw[(slice(None), *dst_slice)] = self._read_raw(source, ds, indexes, src_window)
            return self._finish(source, ds, raw, None, None, window)
        bounds = rasterio.windows.bounds(window, self.grid.transform)
        src_bounds = transform_bounds(self.grid.crs, ds.crs, *bounds, densify_pts=21)
        approx = from_bounds(*src_bounds, transform=ds.transform)
        col0, row0 = math.floor(approx.col_off) - 2, math.floor(approx.row_off) - 2
        shape = (math.ceil(approx.height) + 5, math.ceil(approx.width) + 5)
        src_window, dst_slice = _clip(col0, row0, shape, ds.width, ds.height)
        raw = np.full((len(indexes), *shape), np.nan, dtype=np.float32)
        if src_window is not None:
            raw[(slice(None), *dst_slice)] = self._read_raw(source, ds, indexes, src_window)
        src_transform = ds.transform @ Affine.translation(col0, row0)
        return self._finish(source, ds, raw, src_transform, ds.crs, window)

    def _read_raw(self, source: Source, ds, indexes, src_window: Window) -> np.ndarray:
        try:
            data = ds.read(indexes, window=src_window, masked=True)
        except RasterioError as exc:
            raise InputError(
                f"{ds.name}: cannot read band(s) {', '.join(b.name for b in source.bands)} of source "
                f"{source.name!r} at rows {src_window.row_off}-{src_window.row_off + src_window.height}, "
                f"columns {src_window.col_off}-{src_window.col_off + src_window.width} (is the file "
                f"truncated or corrupt? {exc})"
            ) from exc
        out = data.astype(np.float32).filled(np.nan)
        if source.nodata is not None:
            out[out == np.float32(source.nodata)] = np.nan
        return out

    def _finish(self, source: Source, ds, raw, src_transform, src_crs, window) -> dict[str, np.ndarray]:
        indexes = [b.index for b in source.bands]
        values = {b.name: raw[i] for i, b in enumerate(source.bands)}
        if source.valid:
            keep = np.asarray(expressions.evaluate(source.valid, values), dtype=bool)
            raw[:, ~keep] = np.nan
        _refuse_undeclared_nodata(source, ds, raw, indexes)
        file_scales = band_scales(ds, indexes)
        for i, band in enumerate(source.bands):
            # the spec's scale/offset, else the file's own (GDAL's scale/offset tags: value = raw x scale + offset)
            scale, offset = (band.scale, band.offset) if (band.scale, band.offset) != (1.0, 0.0) else file_scales[i]
            if scale != 1.0 or offset != 0.0:
                raw[i] = raw[i] * np.float32(scale) + np.float32(offset)
        if src_transform is None:
            return {b.name: raw[i] for i, b in enumerate(source.bands)}
        dst = np.full((len(source.bands), int(window.height), int(window.width)), np.nan, dtype=np.float32)
        reproject(
            raw, dst, src_transform=src_transform, src_crs=src_crs, src_nodata=np.nan,
            dst_transform=self.grid.window_transform(window), dst_crs=self.grid.crs, dst_nodata=np.nan,
            resampling=Resampling[source.resampling],
        )
        return {b.name: dst[i] for i, b in enumerate(source.bands)}

    def read_source(self, source: Source, window: Window) -> dict[str, np.ndarray]:
        """All bands of a source on ``window`` (scenes composited per pixel, ignoring NaN)."""
        scenes = [self._read_scene(source, ds, window) for ds in self._datasets[source.name]]
        if len(scenes) == 1:
            return scenes[0]
        reducer = {"median": np.nanmedian, "mean": np.nanmean, "min": np.nanmin, "max": np.nanmax}
        out = {}
        for band in source.bands:
            stack = np.stack([s[band.name] for s in scenes])
            if source.composite == "first":
                first = np.argmax(~np.isnan(stack), axis=0)
                out[band.name] = np.take_along_axis(stack, first[None], axis=0)[0]
            else:
                with warnings.catch_warnings():  # an all-NaN pixel stays NaN, as intended
                    warnings.simplefilter("ignore", RuntimeWarning)
                    out[band.name] = reducer[source.composite](stack, axis=0).astype(np.float32)
        return out

    def _twi(self, ref: str) -> np.ndarray:
        """The TWI of elevation ``ref`` on the whole grid (float32), computed once and cached."""
        source, band = self.spec.resolve(ref)
        text = os.environ.get("SINKS_FLOW_MAX_PIXELS", str(FLOW_MAX_PIXELS))
        try:
            limit = int(float(text))
        except ValueError:
            raise InputError(f"SINKS_FLOW_MAX_PIXELS={text!r} is not a number of pixels (e.g. 25000000)") from None
        n_pixels = self.grid.width * self.grid.height
        if n_pixels > limit:
            raise SpecError(
                f"spec {self.spec.name!r}: terrain 'twi' needs flow accumulation over the whole grid "
                f"({self.grid.width} x {self.grid.height} = {n_pixels:,} pixels, about "
                f"{n_pixels * terrain.FLOW_BYTES_PER_PIXEL / 2**30:.1f} GiB), above the limit of {limit:,} "
                "pixels; precompute TWI with a hydrology tool (TauDEM, WhiteboxTools, SAGA) and add it as a "
                "source band, or raise SINKS_FLOW_MAX_PIXELS if the memory is there"
            )
        stats = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) if os.path.exists(p) else (p,)
                      for p in source.paths)
        g = self.grid
        key = (stats, band, source.valid, source.nodata, source.resampling, source.composite,
               g.crs.to_wkt(), tuple(g.transform), g.width, g.height)
        with _FLOW_LOCK:
            if key in _FLOW_CACHE:
                _FLOW_CACHE.move_to_end(key)
                return _FLOW_CACHE[key]
            z = np.empty(g.shape, dtype=np.float32)
            for window in g.windows(1024):
                rows, cols = window.toslices()
                z[rows, cols] = self.read_source(source, window)[band.name]
            dx, dy = g.pixel_size_m(Window(0, 0, g.width, g.height))
            result = terrain.twi_grid(z, dx, dy)
            _FLOW_CACHE[key] = result
            while len(_FLOW_CACHE) > 2:
                _FLOW_CACHE.popitem(last=False)
            return result

    def compute(self, window: Window) -> np.ndarray:
        """Features on ``window``: array (n_features, height, width), float32, NaN = nodata."""
        halo = self.halo
        padded = Window(window.col_off - halo, window.row_off - halo, window.width + 2 * halo, window.height + 2 * halo)
        values: dict[str, np.ndarray] = {}
        for source in self.spec.sources:
            if source.name in self._datasets:
                bands = self.read_source(source, padded)
                for name, array in bands.items():
                    values[f"{source.name}.{name}"] = array
        unique: dict[str, list[str]] = {}
        for key in list(values):
            unique.setdefault(key.split(".", 1)[1], []).append(key)
        for short, keys in unique.items():
            if len(keys) == 1:
                values.setdefault(short, values[keys[0]])
        out = np.empty((len(self.spec.features), int(window.height), int(window.width)), dtype=np.float32)
        for i, feature in enumerate(self.spec.features):
            if feature.terrain == "twi":
                result = _slice_padded(self._twi(feature.band), padded)
            elif feature.terrain:
                z = values[_ref(self.spec, feature.band)]
                dx, dy = self.grid.pixel_size_m(padded)
                result = terrain.DERIVATIVES[feature.terrain](z, dx, dy)
            elif feature.expression:
                result = expressions.evaluate(feature.expression, values)
            else:
                result = values[_ref(self.spec, feature.band)]
            result = np.broadcast_to(np.asarray(result, dtype=np.float32), (int(padded.height), int(padded.width)))
            result = np.where(np.isfinite(result), result, np.nan).astype(np.float32)
            values[feature.name] = result
            out[i] = result[halo: halo + int(window.height), halo: halo + int(window.width)]
        return out


def _ref(spec: FeatureSpec, ref: str) -> str:
    source, band = spec.resolve(ref)
    return f"{source.name}.{band.name}"


def _slice_padded(full: np.ndarray, window: Window) -> np.ndarray:
    """``window`` of a whole-grid array, NaN where the window runs past the grid."""
    col0, row0 = int(window.col_off), int(window.row_off)
    shape = (int(window.height), int(window.width))
    out = np.full(shape, np.nan, dtype=np.float32)
    src, dst = _clip(col0, row0, shape, full.shape[1], full.shape[0])
    if src is not None:
        out[dst] = full[src.toslices()]
    return out


def _clip(col0: int, row0: int, shape, width: int, height: int):
    """Intersect a (possibly out-of-bounds) window with a raster; the read window and destination slices."""
    h, w = shape
    c0, r0 = max(col0, 0), max(row0, 0)
    c1, r1 = min(col0 + w, width), min(row0 + h, height)
    if c1 <= c0 or r1 <= r0:
        return None, None
    return Window(c0, r0, c1 - c0, r1 - r0), (slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0))

