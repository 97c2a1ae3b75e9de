"""Which pixels of a grid a polygon covers, and how much of each.

Two rules, each for its use:

- :func:`polygon_pixels` (covariate extraction over plot footprints): a pixel belongs to a polygon
  when its centre lies inside it (the GDAL rasterisation rule without ``all_touched``); a polygon
  smaller than a pixel that contains no pixel centre is represented by the pixel under its
  centroid, so every plot has at least one pixel.
- :func:`coverage_fractions` (eligibility evidence, zonal totals, crediting): the exact fraction of
  each pixel inside the polygon, so that areas and totals are exact for parcels of any size,
  including parcels smaller than one pixel.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine


def polygon_pixels(shape, transform: Affine, height: int, width: int) -> tuple[np.ndarray, bool]:
    """Boolean mask (height, width) of the pixels of ``shape`` on a window with ``transform``.

    Returns the mask and whether the centroid fallback was used.
    """
    rows, cols = np.mgrid[0:height, 0:width]
    x, y = transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    inside = shapely.contains_xy(shape, x, y).reshape(height, width)
    if inside.any():
        return inside, False
    col, row = ~transform @ (shape.centroid.x, shape.centroid.y)
    inside[min(max(int(row), 0), height - 1), min(max(int(col), 0), width - 1)] = True
    return inside, True


# ---- exact partial-pixel coverage -----------------------------------------------------------------
#
# The fraction of each pixel's area that a polygon covers, computed by clipping pixel boxes against
# the polygon with shapely (GEOS). A quadtree over the polygon's window keeps it cheap: a tile wholly
# inside the polygon is all ones, a tile that misses it all zeros, and only tiles the boundary
# crosses are split, down to single pixels whose boxes are intersected with the polygon. The cost
# grows with the polygon's perimeter in pixels, not its area. Fractions are planar, in the grid's
# own coordinates; :mod:`sinks.mapping.zonal` turns them into equal-area weights.


def check_north_up(transform: Affine) -> None:
    """Refuse a rotated or sheared grid (coverage is computed on axis-aligned pixel boxes)."""
    from sinks.errors import InputError

    if transform.b != 0 or transform.d != 0:
        raise InputError(f"the raster grid is rotated or sheared (transform {tuple(transform)[:6]}); "
                         "warp it to a north-up grid first (gdalwarp)")


def pixel_window(shape, transform: Affine, height: int, width: int) -> tuple[int, int, int, int] | None:
    """``(row_off, col_off, height, width)`` of the pixels whose boxes meet ``shape``'s bounds.

    Clipped to the grid; ``None`` when the bounds miss the grid (or the shape is empty).
    """
    check_north_up(transform)
    if shape is None or shape.is_empty:
        return None
    minx, miny, maxx, maxy = shape.bounds
    cols, rows = ~transform @ (np.array([minx, maxx]), np.array([maxy, miny]))
    c0, c1 = int(np.floor(cols.min())), int(np.ceil(cols.max()))
    r0, r1 = int(np.floor(rows.min())), int(np.ceil(rows.max()))
    c0, c1 = max(c0, 0), min(c1, width)
    r0, r1 = max(r0, 0), min(r1, height)
    if c1 <= c0 or r1 <= r0:
        return None
    return r0, c0, r1 - r0, c1 - c0


def pixel_boxes(transform: Affine, rows: np.ndarray, cols: np.ndarray, nrows=1, ncols=1) -> np.ndarray:
    """Shapely boxes of the blocks of ``nrows`` x ``ncols`` pixels whose top-left pixels are at ``rows``, ``cols``."""
    x0 = transform.c + np.asarray(cols) * transform.a
    x1 = transform.c + (np.asarray(cols) + ncols) * transform.a
    y0 = transform.f + np.asarray(rows) * transform.e
    y1 = transform.f + (np.asarray(rows) + nrows) * transform.e
    return shapely.box(np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1))


def coverage_fractions(shape, transform: Affine, window: tuple[int, int, int, int]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact fraction of each pixel of ``window`` covered by ``shape``, and the covered parts' centroids.

    ``window`` is ``(row_off, col_off, height, width)`` on the grid of ``transform`` (north-up).
    Returns ``(fraction, cx, cy)``, each ``(height, width)`` float64: the planar share of the pixel's
    area inside ``shape`` (0 to 1) and the centroid of that inside part in the grid's coordinates
    (the pixel centre for a fully covered pixel; NaN where the fraction is 0).
    """
    check_north_up(transform)
    row_off, col_off, h, w = (int(v) for v in window)
    fraction = np.zeros((h, w))
    cx = np.full((h, w), np.nan)
    cy = np.full((h, w), np.nan)
    if h <= 0 or w <= 0 or shape is None or shape.is_empty:
        return fraction, cx, cy
    shapely.prepare(shape)
    pixel_area = abs(transform.a * transform.e)
    size = 1 << int(np.ceil(np.log2(max(h, w))))
    r = np.array([0])
    c = np.array([0])
    while r.size:
        nr = np.minimum(size, h - r)
        nc = np.minimum(size, w - c)
        if size == 1:
            boxes = pixel_boxes(transform, r + row_off, c + col_off)
            parts = shapely.intersection(shape, boxes)
            area = shapely.area(parts)
            keep = area > 0
            fraction[r[keep], c[keep]] = np.minimum(area[keep] / pixel_area, 1.0)
            centre = shapely.centroid(parts[keep])
            cx[r[keep], c[keep]] = shapely.get_x(centre)
            cy[r[keep], c[keep]] = shapely.get_y(centre)
            break
        boxes = shapely.box(*_tile_bounds(transform, r + row_off, c + col_off, nr, nc))
        inside = shapely.contains(shape, boxes)
        for i in np.flatnonzero(inside):
            fraction[r[i]:r[i] + nr[i], c[i]:c[i] + nc[i]] = 1.0
        split = ~inside & shapely.intersects(shape, boxes)
        half = size // 2
        r, c = r[split], c[split]
        r = np.concatenate([r, r, r + half, r + half])
        c = np.concatenate([c, c + half, c, c + half])
        ok = (r < h) & (c < w)
        r, c, size = r[ok], c[ok], half
    full = fraction == 1.0
    if full.any():
        rows, cols = np.nonzero(full)
        x, y = transform @ (cols + col_off + 0.5, rows + row_off + 0.5)
        cx[full], cy[full] = x, y
    return fraction, cx, cy


def _tile_bounds(transform: Affine, rows, cols, nrows, ncols):
    x0 = transform.c + cols * transform.a
    x1 = transform.c + (cols + ncols) * transform.a
    y0 = transform.f + rows * transform.e
    y1 = transform.f + (rows + nrows) * transform.e
    return np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1)


def describe_grid(grid) -> str:
    """A grid (anything with ``crs``, ``transform``, ``width``, ``height``) in a message, to full
    precision: a 3 m shift of the origin must show (six digits made two differing grids read alike)."""
    t = grid.transform
    crs = grid.crs.to_string() if hasattr(grid.crs, "to_string") else str(grid.crs)
    return (f"{grid.width} x {grid.height} pixels of {t.a:.10g} x {abs(t.e):.10g} from ({t.c:.12g}, {t.f:.12g}) "
            f"in {crs}")
