"""Covariates at plots (the feature table) and wall-to-wall (the covariate stack).

:func:`extract` computes a spec's features over each plot's footprint (the pixel under a point,
the pixels whose centres fall in a buffer or polygon) and averages the valid pixels; it works
tile by tile so only the rasters around the plots are read. :func:`build_stack` writes every
feature as one band of a Cloud-Optimized GeoTIFF on the spec's grid.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.features import geometry_mask
from rasterio.windows import Window
from tqdm.auto import tqdm

from sinks.cog import cog_writer
from sinks.covariates.local import LocalEngine, TargetGrid
from sinks.covariates.spec import FeatureSpec
from sinks.errors import InputError

FEATURE_TABLE_KEYS = ("plot_id", "x", "y")


def _footprints(spec: FeatureSpec, plots, grid: TargetGrid):
    plots = plots.to_crs(grid.crs)
    kind = spec.footprint.kind
    if kind == "polygon":
        not_poly = ~plots.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
        if not_poly.any():
            raise InputError(
                f"spec {spec.name!r} uses polygon footprints but plot(s) "
                f"{', '.join(map(str, plots['plot_id'][not_poly].head(5)))} are not polygons"
            )
        shapes = plots.geometry
    elif kind == "buffer":
        shapes = plots.geometry.centroid.buffer(spec.footprint.radius)
    else:
        shapes = plots.geometry.centroid
    return plots, shapes


def extract(spec: FeatureSpec, plots, *, tile: int = 512, progress: bool = True) -> pd.DataFrame:
    """Feature table: ``plot_id``, ``x``, ``y`` (grid CRS), one column per feature, pixel counts.

    ``plots`` is a GeoDataFrame with ``plot_id`` and a CRS (any: it is reprojected to the grid).
    Each feature is the mean of its valid pixels in the footprint (NaN when none is valid);
    ``footprint_pixels`` counts the pixels in the footprint and ``valid_pixels`` those where every
    feature is valid. The plots' other columns follow, unchanged. A plot whose footprint lies
    outside the grid is an error that names it.
    """
    if "plot_id" not in plots.columns:
        raise InputError("plots: missing required column plot_id")
    if plots.crs is None:
        raise InputError("plots: no CRS; pass --crs or use a file with a CRS")
    if plots["plot_id"].duplicated().any():
        dup = plots["plot_id"][plots["plot_id"].duplicated()].head(5)
        raise InputError(f"plots: duplicate plot_id {', '.join(map(str, dup))}")
    clash = [c for c in plots.columns if c in spec.feature_names or c in ("footprint_pixels", "valid_pixels")]
    if clash:
        raise InputError(f"plots: column(s) {', '.join(clash)} clash with feature names of spec {spec.name!r}")
    with LocalEngine(spec) as engine:
        grid = engine.grid
        plots_g, shapes = _footprints(spec, plots, grid)
        inv = ~grid.transform
        minx, miny, maxx, maxy = (shapes.bounds[c].to_numpy() for c in ("minx", "miny", "maxx", "maxy"))
        col_lo, row_lo = inv * (minx, maxy)
        col_hi, row_hi = inv * (maxx, miny)
        col_lo, row_lo = np.floor(col_lo).astype(np.int64), np.floor(row_lo).astype(np.int64)
        col_hi, row_hi = np.floor(col_hi).astype(np.int64), np.floor(row_hi).astype(np.int64)
        outside = (col_hi < 0) | (row_hi < 0) | (col_lo >= grid.width) | (row_lo >= grid.height)
        if outside.any():
            ids = plots_g["plot_id"][outside]
            raise InputError(
                f"{outside.sum()} of {len(plots_g)} plot(s) lie outside the grid of spec {spec.name!r} "
                f"(first: {', '.join(map(str, ids.head(5)))}); check the plots' CRS "
                f"({plots.crs.to_string()}) and that the rasters cover them"
            )
        col_lo, row_lo = np.clip(col_lo, 0, grid.width - 1), np.clip(row_lo, 0, grid.height - 1)
        col_hi, row_hi = np.clip(col_hi, 0, grid.width - 1), np.clip(row_hi, 0, grid.height - 1)
        n_feat = len(spec.features)
        values = np.full((len(plots_g), n_feat), np.nan, dtype=np.float64)
        n_pixels = np.zeros(len(plots_g), dtype=np.int64)
        n_valid = np.zeros(len(plots_g), dtype=np.int64)
        tile_key = (row_lo // tile) * (grid.width // tile + 1) + (col_lo // tile)
        groups = pd.Series(np.arange(len(plots_g))).groupby(tile_key).indices
        for members in tqdm(groups.values(), desc=f"extract {spec.name}", unit="tile", disable=not progress):
            r0, r1 = row_lo[members].min(), row_hi[members].max() + 1
            c0, c1 = col_lo[members].min(), col_hi[members].max() + 1
            window = Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))
            block = engine.compute(window)
            if spec.footprint.kind == "point":
                vals = block[:, row_lo[members] - r0, col_lo[members] - c0].T
                values[members] = vals
                n_pixels[members] = 1
                n_valid[members] = np.isfinite(vals).all(axis=1)
                continue
            for i in members:
                sub = block[:, row_lo[i] - r0: row_hi[i] - r0 + 1, col_lo[i] - c0: col_hi[i] - c0 + 1]
                inside = _inside(shapes.iloc[i], grid, int(col_lo[i]), int(row_lo[i]), sub.shape[1:])
                pix = sub[:, inside]
                n_pixels[i] = pix.shape[1]
                n_valid[i] = int(np.isfinite(pix).all(axis=0).sum())
                with np.errstate(invalid="ignore"):
                    counts = np.isfinite(pix).sum(axis=1)
                    sums = np.nansum(pix, axis=1)
                    values[i] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    out = pd.DataFrame({"plot_id": plots_g["plot_id"].to_numpy()})
    centroids = plots_g.geometry.centroid
    out["x"], out["y"] = centroids.x.to_numpy(), centroids.y.to_numpy()
    for j, name in enumerate(spec.feature_names):
        out[name] = values[:, j]
    out["footprint_pixels"], out["valid_pixels"] = n_pixels, n_valid
    rest = [c for c in plots.columns if c not in (*FEATURE_TABLE_KEYS, plots.geometry.name)]
    for column in rest:
        out[column] = plots[column].to_numpy()
    out.attrs.update(crs=grid.crs.to_string(), spec=spec.name, spec_fingerprint=spec.fingerprint())
    return out


def _inside(shape, grid: TargetGrid, col: int, row: int, size) -> np.ndarray:
    """Pixels (of a small window) whose centres fall in ``shape``; the centre pixel if none do."""
    transform = grid.window_transform(Window(col, row, size[1], size[0]))
    mask = ~geometry_mask([shape], out_shape=size, transform=transform, all_touched=False)
    if not mask.any():
        c, r = ~transform * (shape.centroid.x, shape.centroid.y)
        mask[min(max(int(r), 0), size[0] - 1), min(max(int(c), 0), size[1] - 1)] = True
    return mask


def build_stack(spec: FeatureSpec, out: str | os.PathLike, *, block: int = 512, progress: bool = True) -> Path:
    """Write all features of ``spec`` on its grid as a multi-band COG (band names = features)."""
    with LocalEngine(spec) as engine:
        grid = engine.grid
        windows = list(grid.windows(block))
        with cog_writer(
            out, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
            band_names=spec.feature_names, blocksize=block,
            tags={"sinks_spec": spec.name, "sinks_spec_fingerprint": spec.fingerprint()},
        ) as dst:
            nodata = np.float32(dst.nodata)
            for window in tqdm(windows, desc=f"stack {spec.name}", unit="tile", disable=not progress):
                data = engine.compute(window)
                dst.write(np.where(np.isnan(data), nodata, data), window=window)
    return Path(out)
