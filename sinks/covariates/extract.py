"""Covariates at plots (the feature table) and wall-to-wall (the covariate stack).

:func:`extract` computes a spec's features over each plot's footprint (the pixel under a point,
the pixels whose centres fall in a buffer or polygon) and averages the valid pixels; it works
tile by tile so only the rasters around the plots are read. :func:`build_stack` writes every
feature as one band of a Cloud-Optimized GeoTIFF on the spec's grid.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.windows import Window
from tqdm.auto import tqdm

from sinks.cog import cog_writer
from sinks.covariates.local import LocalEngine, TargetGrid, check_grid_size
from sinks.covariates.spec import EXTRACT_COLUMNS, FEATURE_TABLE_KEYS, FeatureSpec
from sinks.errors import InputError
from sinks.pixels import polygon_pixels
from sinks.validate import check_block

#: A window of plots is split in four (recursively) while it holds more than this many grid pixels
#: per plot: reading a sparse window whole costs more than the fixed cost of reading it in parts.
#: Set from benchmarks/bench_covariates.py (engine.compute costs about 1 ms per call plus ~40 ns per
#: pixel and band there, so splitting pays off above roughly 2 x 10^4 pixels per plot).
SPARSE_PIXELS_PER_PLOT = 16384
#: Most footprint pixels gathered at once (plots x stencil pixels) for buffer footprints.
_GATHER_LIMIT = 2_000_000


def _centroids(geometry):
    """Centroids in the geometry's own CRS. In a geographic CRS they are planar in degrees: for a
    plot of a few hundred metres the difference from the geodesic centroid is far below a pixel,
    so geopandas' warning about it is not shown."""
    import geopandas as gpd
    import shapely

    return gpd.GeoSeries(shapely.centroid(geometry.to_numpy()), index=geometry.index, crs=geometry.crs)


def _check_plots(spec: FeatureSpec, plots) -> None:
    if "plot_id" not in plots.columns:
        raise InputError("plots: missing required column plot_id")
    if getattr(plots, "crs", None) is None:
        raise InputError("plots: no CRS; pass --crs or use a file with a CRS")
    if len(plots) == 0:
        raise InputError("plots: the table has no rows; nothing to extract")
    missing = plots["plot_id"].isna().to_numpy()
    if missing.any():
        from sinks.io import format_rows

        raise InputError(f"plots: plot_id missing in row(s) {format_rows(np.flatnonzero(missing))}")
    if plots["plot_id"].duplicated().any():
        dup = plots["plot_id"][plots["plot_id"].duplicated()].head(5)
        raise InputError(f"plots: duplicate plot_id {', '.join(map(str, dup))}")
    empty = plots.geometry.isna() | plots.geometry.is_empty
    if empty.any():
        raise InputError(f"plots: plot(s) {', '.join(map(str, plots['plot_id'][empty].head(5)))} have no geometry")
    clash = [c for c in plots.columns if c in spec.feature_names or c in EXTRACT_COLUMNS]
    if clash:
        raise InputError(f"plots: column(s) {', '.join(clash)} clash with the feature names of spec {spec.name!r} "
                         f"or the columns extract adds ({', '.join(EXTRACT_COLUMNS)}); rename them")


def _footprints(spec: FeatureSpec, plots, grid: TargetGrid):
    """Plots in the grid CRS and the footprint geometry of each (centroids for point and buffer)."""
    source_crs = plots.crs
    plots = plots.to_crs(grid.crs)
    bounds = plots.geometry.bounds.to_numpy()
    lost = ~np.isfinite(bounds).all(axis=1)
    if lost.any():
        raise InputError(
            f"{lost.sum()} plot(s) (first: {', '.join(map(str, plots['plot_id'][lost].head(5)))}) cannot be "
            f"placed in {grid.crs.to_string()} from {source_crs.to_string()}: check the plots' CRS"
        )
    if spec.footprint.kind == "polygon":
        not_poly = ~plots.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
        if not_poly.any():
            raise InputError(
                f"spec {spec.name!r} uses polygon footprints but plot(s) "
                f"{', '.join(map(str, plots['plot_id'][not_poly].head(5)))} are not polygons"
            )
        return plots, plots.geometry
    return plots, _centroids(plots.geometry)


def _pixel_bounds(shapes, grid: TargetGrid, radius: float):
    """Inclusive pixel rows/columns (row_lo, row_hi, col_lo, col_hi) of each footprint's bounding box."""
    b = shapes.bounds
    inv = ~grid.transform
    col_lo, row_lo = inv @ (b["minx"].to_numpy() - radius, b["maxy"].to_numpy() + radius)
    col_hi, row_hi = inv @ (b["maxx"].to_numpy() + radius, b["miny"].to_numpy() - radius)
    as_int = lambda v: np.floor(v).astype(np.int64)  # noqa: E731
    return as_int(row_lo), as_int(row_hi), as_int(col_lo), as_int(col_hi)


def _windows(members: np.ndarray, rows: np.ndarray, cols: np.ndarray, bounds):
    """Split plots (by centre pixel) into windows that are not too sparse; yield (members, window)."""
    row_lo, row_hi, col_lo, col_hi = bounds
    r0, r1 = row_lo[members].min(), row_hi[members].max() + 1
    c0, c1 = col_lo[members].min(), col_hi[members].max() + 1
    area = (r1 - r0) * (c1 - c0)
    if len(members) > 1 and area > SPARSE_PIXELS_PER_PLOT * len(members):
        rm, cm = (r0 + r1) // 2, (c0 + c1) // 2
        south, east = rows[members] >= rm, cols[members] >= cm
        parts = [members[~south & ~east], members[~south & east], members[south & ~east], members[south & east]]
        if max(len(p) for p in parts) < len(members):
            for part in parts:
                if len(part):
                    yield from _windows(part, rows, cols, bounds)
            return
    yield members, Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))


def _mean_valid(pix: np.ndarray, inside: np.ndarray):
    """Per plot: feature means over valid footprint pixels, footprint size, pixels valid in all features.

    ``pix`` is (n_plots, n_pixels, n_features), ``inside`` (n_plots, n_pixels) bool.
    """
    finite = np.isfinite(pix) & inside[:, :, None]
    counts = finite.sum(axis=1)
    sums = np.where(finite, pix, 0.0).sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    return means, inside.sum(axis=1), finite.all(axis=2).sum(axis=1)


def _circle_pixels(block, window: Window, grid: TargetGrid, cx, cy, radius: float):
    """Footprint pixels of buffers (pixel centres within ``radius`` of the plot centre; the pixel
    under the centre when none is): values (n, k, n_features) and the inside mask (n, k)."""
    t = grid.transform
    xres, yres = t.a, -t.e
    kc, kr = math.ceil(radius / xres) + 1, math.ceil(radius / yres) + 1
    dr, dc = np.meshgrid(np.arange(-kr, kr + 1), np.arange(-kc, kc + 1), indexing="ij")
    dr, dc = dr.ravel(), dc.ravel()
    col_c = np.floor((cx - t.c) / xres).astype(np.int64)
    row_c = np.floor((t.f - cy) / yres).astype(np.int64)
    rows, cols = row_c[:, None] + dr, col_c[:, None] + dc
    x = t.c + (cols + 0.5) * xres
    y = t.f - (rows + 0.5) * yres
    inside = (x - cx[:, None]) ** 2 + (y - cy[:, None]) ** 2 <= radius**2
    centre = (dr == 0) & (dc == 0)
    inside[~inside.any(axis=1)] |= centre
    r_local, c_local = rows - int(window.row_off), cols - int(window.col_off)
    in_block = (r_local >= 0) & (r_local < block.shape[1]) & (c_local >= 0) & (c_local < block.shape[2])
    inside &= in_block
    pix = block[:, np.clip(r_local, 0, block.shape[1] - 1), np.clip(c_local, 0, block.shape[2] - 1)]
    return np.moveaxis(pix, 0, -1), inside


def _polygon_pixels(block, window: Window, grid: TargetGrid, shape):
    """Footprint pixels of one polygon (see :func:`sinks.pixels.polygon_pixels`)."""
    inside, _ = polygon_pixels(shape, grid.window_transform(window), block.shape[1], block.shape[2])
    return block.reshape(block.shape[0], -1).T[None], inside.reshape(1, -1)


def extract(spec: FeatureSpec, plots, *, tile: int = 512, progress: bool = True,
            allow_missing: bool = False) -> pd.DataFrame:
    """Feature table: ``plot_id``, ``x``, ``y`` (grid CRS), one column per feature, pixel counts.

    ``plots`` is a GeoDataFrame with ``plot_id`` and a CRS (any: it is reprojected to the grid).
    The footprint follows the spec: ``point`` = the pixel under the plot's centroid; ``buffer`` =
    pixels whose centres lie within ``radius`` (grid CRS units) of the centroid; ``polygon`` =
    pixels whose centres lie in the polygon; a footprint that holds no pixel centre falls back to
    the pixel under the centroid. Each feature is the mean of its valid pixels in the footprint
    (NaN when none is valid); ``footprint_pixels`` counts the pixels in the footprint (inside the
    grid) and ``valid_pixels`` those where every feature is valid. The plots' other columns follow,
    unchanged. A plot whose footprint lies wholly outside the grid, or whose centre lies outside
    the files of a source the features read, is an error that names it and the raster. With
    ``allow_missing`` such plots are kept instead, with NaN for what could not be read, and a
    ``missing_reason`` column says for every plot with a missing feature why ("outside the grid",
    "outside raster F (source S)", "nodata in FEATURES"; empty when complete).

    Plots are grouped by ``tile`` x ``tile`` blocks of the grid and each group's window is computed
    once; sparse groups are split so few pixels are read per plot. Memory is bounded by the window.
    """
    _check_plots(spec, plots)
    with LocalEngine(spec) as engine:
        grid = engine.grid
        plots_g, shapes = _footprints(spec, plots, grid)
        kind, radius = spec.footprint.kind, spec.footprint.radius
        diagonal = math.hypot(grid.width * grid.transform.a, grid.height * grid.transform.e)
        if kind == "buffer" and radius > diagonal:
            raise InputError(f"spec {spec.name!r}: a buffer footprint of radius {radius:g} is larger than the whole "
                             f"grid (its diagonal is {diagonal:,.6g} in {grid.crs} units): every plot would get the "
                             "grid's mean; check the radius and its units")
        bounds = _pixel_bounds(shapes, grid, radius if kind == "buffer" else 0.0)
        row_lo, row_hi, col_lo, col_hi = bounds
        outside = (col_hi < 0) | (row_hi < 0) | (col_lo >= grid.width) | (row_lo >= grid.height)
        reasons = np.full(len(plots_g), "", dtype=object)
        if outside.any():
            ids = plots_g["plot_id"][outside]
            if not allow_missing:
                raise InputError(
                    f"{outside.sum()} of {len(plots_g)} plot(s) lie outside the grid of spec {spec.name!r} "
                    f"(plot_id {', '.join(map(str, ids.head(5)))}{', ...' if outside.sum() > 5 else ''}; grid "
                    f"bounds {tuple(round(v, 3) for v in grid.bounds)} in {grid.crs.to_string()}); check the "
                    f"plots' CRS ({plots.crs.to_string()}) and that the rasters cover them, or pass "
                    "--allow-missing to keep them with NaN features"
                )
            reasons[outside] = f"outside the grid of spec {spec.name!r}"
        for arr, top in ((row_lo, grid.height), (row_hi, grid.height), (col_lo, grid.width), (col_hi, grid.width)):
            np.clip(arr, 0, top - 1, out=arr)
        centre = _centroids(shapes) if kind == "polygon" else shapes
        cx, cy = centre.x.to_numpy(), centre.y.to_numpy()
        inv = ~grid.transform
        ccol, crow = inv @ (cx, cy)
        crow = np.clip(np.floor(crow).astype(np.int64), 0, grid.height - 1)
        ccol = np.clip(np.floor(ccol).astype(np.int64), 0, grid.width - 1)
        by_files: dict[tuple, list] = {}  # the same file(s) read as several sources: one reason
        for name, uncovered in engine.uncovered(cx, cy).items():
            uncovered &= ~outside
            if not uncovered.any():
                continue
            files = tuple(Path(ds.name).name for ds in engine._datasets[name])
            raster = f"raster{'s' if len(files) > 1 else ''} {', '.join(files)} (source {name!r})"
            if not allow_missing:
                ids = plots_g["plot_id"][uncovered]
                ds = engine._datasets[name][0]
                raise InputError(
                    f"{uncovered.sum()} of {len(plots_g)} plot(s) lie outside {raster} of spec {spec.name!r} "
                    f"(plot_id {', '.join(map(str, ids.head(5)))}{', ...' if uncovered.sum() > 5 else ''}; "
                    f"{files[0]} covers {tuple(round(v, 3) for v in ds.bounds)} in {ds.crs.to_string()}); "
                    "use rasters that cover every plot, or pass --allow-missing to keep these plots with NaN "
                    "features and a missing_reason column"
                )
            by_files.setdefault(files, []).append((name, uncovered))
        for files, parts in by_files.items():
            names = ", ".join(repr(n) for n, _ in parts)
            raster = (f"raster{'s' if len(files) > 1 else ''} {', '.join(files)} "
                      f"(source{'s' if len(parts) > 1 else ''} {names})")
            for i in np.flatnonzero(np.logical_or.reduce([m for _, m in parts])):
                reasons[i] = f"{reasons[i]}; outside {raster}" if reasons[i] else f"outside {raster}"
        n_feat = len(spec.features)
        values = np.full((len(plots_g), n_feat), np.nan, dtype=np.float64)
        n_pixels = np.zeros(len(plots_g), dtype=np.int64)
        n_valid = np.zeros(len(plots_g), dtype=np.int64)
        tile_key = (crow // tile) * (grid.width // tile + 1) + (ccol // tile)
        inside_grid = np.flatnonzero(~outside)
        groups = pd.Series(inside_grid).groupby(tile_key[inside_grid]).indices
        groups = {key: inside_grid[idx] for key, idx in groups.items()}
        bar = tqdm(total=len(plots_g), desc=f"extract {spec.name}", unit="plot", disable=not progress)
        for group in groups.values():
            for members, window in _windows(np.asarray(group), crow, ccol, bounds):
                block = engine.compute(window)
                if kind == "point":
                    vals = block[:, crow[members] - window.row_off, ccol[members] - window.col_off].T
                    values[members] = vals
                    n_pixels[members] = 1
                    n_valid[members] = np.isfinite(vals).all(axis=1)
                elif kind == "buffer":
                    kc = math.ceil(radius / grid.transform.a) * 2 + 3
                    kr = math.ceil(radius / -grid.transform.e) * 2 + 3
                    step = max(1, _GATHER_LIMIT // (kc * kr * max(n_feat, 1)))
                    for i in range(0, len(members), step):
                        part = members[i: i + step]
                        pix, inside = _circle_pixels(block, window, grid, cx[part], cy[part], radius)
                        values[part], n_pixels[part], n_valid[part] = _mean_valid(pix, inside)
                else:
                    for i in members:
                        r0, r1 = row_lo[i] - window.row_off, row_hi[i] - window.row_off + 1
                        c0, c1 = col_lo[i] - window.col_off, col_hi[i] - window.col_off + 1
                        sub_window = Window(int(col_lo[i]), int(row_lo[i]), int(c1 - c0), int(r1 - r0))
                        pix, inside = _polygon_pixels(block[:, r0:r1, c0:c1], sub_window, grid, shapes.iloc[i])
                        mean, count, valid = _mean_valid(pix, inside)
                        values[i], n_pixels[i], n_valid[i] = mean[0], count[0], valid[0]
                bar.update(len(members))
        bar.update(int(outside.sum()))
        bar.close()
    out = pd.DataFrame({"plot_id": plots_g["plot_id"].to_numpy()})
    centroids = _centroids(plots_g.geometry)
    out["x"], out["y"] = centroids.x.to_numpy(), centroids.y.to_numpy()
    for j, name in enumerate(spec.feature_names):
        out[name] = values[:, j]
    out["footprint_pixels"], out["valid_pixels"] = n_pixels, n_valid
    if allow_missing:
        names = spec.feature_names
        for i in np.flatnonzero(~np.isfinite(values).all(axis=1)):
            if not reasons[i]:
                nan = [names[j] for j in np.flatnonzero(~np.isfinite(values[i]))]
                reasons[i] = f"nodata in {', '.join(nan[:3])}{', ...' if len(nan) > 3 else ''}"
        out["missing_reason"] = reasons
    rest = [c for c in plots.columns if c not in (*FEATURE_TABLE_KEYS, plots.geometry.name)]
    for column in rest:
        out[column] = plots[column].to_numpy()
    out.attrs.update(crs=grid.crs.to_string(), spec=spec.name, spec_fingerprint=spec.fingerprint())
    return out


def build_stack(spec: FeatureSpec, out: str | os.PathLike, *, block: int = 512, progress: bool = True,
                max_pixels: float | None = None) -> Path:
    """Write all features of ``spec`` on its grid as a multi-band COG (band names = features).

    Windows of ``block`` x ``block`` pixels (a multiple of 16: the GeoTIFF tile size) are computed
    and written one at a time, so memory is bounded by the block, not the grid. NaN is written as
    :data:`sinks.cog.FLOAT_NODATA`. On any error no file is left at ``out`` (nor a partial one); a
    stack with no pixel where every feature is valid is an :class:`InputError` (nothing written).
    Before anything is written, a grid above ``max_pixels`` (default
    :data:`sinks.covariates.local.MAX_PIXELS`) or a window needing more memory than is available is
    refused with :class:`~sinks.errors.ResourceError`.
    """
    block = check_block(block)
    with LocalEngine(spec) as engine:
        grid = engine.grid
        check_grid_size(f"spec {spec.name!r}", grid, n_bands=len(spec.features), max_pixels=max_pixels, what="stack")
        engine.check_memory(block, what="stack")
        windows = list(grid.windows(block))
        with cog_writer(
            out, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
            band_names=spec.feature_names, blocksize=block,
            tags={"sinks_spec": spec.name, "sinks_spec_fingerprint": spec.fingerprint()},
        ) as dst:
            nodata = np.float32(dst.nodata)
            any_valid = False
            for window in tqdm(windows, desc=f"stack {spec.name}", unit="tile", disable=not progress):
                data = engine.compute(window)
                any_valid = any_valid or bool(np.isfinite(data).all(axis=0).any())
                dst.write(np.where(np.isnan(data), nodata, data), window=window)
            if not any_valid:  # raised inside the writer: no file is left
                raise InputError(f"spec {spec.name!r}: no pixel of the {grid.width} x {grid.height} grid has every "
                                 "feature valid; check the sources' nodata, extents and CRS against the grid")
    return Path(out)
