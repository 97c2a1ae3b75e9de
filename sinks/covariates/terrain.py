"""Terrain derivatives of an elevation array on a regular grid, by 3 x 3 neighbourhoods.

Every function takes elevation (m) with a one-pixel halo already around the area of interest and
the pixel size in metres (``dx`` east-west, ``dy`` north-south, scalars or per-row arrays for
geographic grids), and returns an array of the same shape whose border is NaN.

- slope (degrees) and aspect (degrees clockwise from north, the downslope direction): Horn (1981),
  "Hill shading and the reflectance map", Proc. IEEE 69(1):14-47 (the method GDAL's gdaldem uses).
- curvature (1/100 m, positive = convex, ArcGIS sign convention): Zevenbergen & Thorne (1987),
  "Quantitative analysis of land surface topography", Earth Surf. Process. Landf. 12:47-56.
- tpi (m): elevation minus the mean of its 8 neighbours, Weiss (2001) "Topographic position and
  landforms analysis" (poster, ESRI User Conference).
- northness / eastness: cos / sin of aspect (0 on flat ground).
- twi (dimensionless): topographic wetness index ln(a / tan b), Beven & Kirkby (1979), "A physically
  based, variable contributing area model of basin hydrology", Hydrol. Sci. Bull. 24(1):43-69.
  ``a`` is the specific catchment area (m^2 per m of contour width), ``tan b`` the local Horn slope.
  It is not a 3 x 3 derivative: it needs flow accumulation over the whole DEM
  (:func:`flow_accumulation`): depressions filled by Priority-Flood+epsilon, Barnes, Lehman & Mulla
  (2014), Computers & Geosciences 62:117-127, Algorithm 3; D8 single-flow directions to the steepest
  downslope neighbour, O'Callaghan & Mark (1984), Comput. Vision Graph. 28:323-344.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque

import numpy as np

HALO = 1


def _neighbours(z: np.ndarray):
    """The nine 3 x 3 neighbours (a..i, row-major, north up) of every interior pixel."""
    return (z[:-2, :-2], z[:-2, 1:-1], z[:-2, 2:], z[1:-1, :-2], z[1:-1, 1:-1], z[1:-1, 2:],
            z[2:, :-2], z[2:, 1:-1], z[2:, 2:])


def _pad(inner: np.ndarray) -> np.ndarray:
    out = np.full((inner.shape[0] + 2, inner.shape[1] + 2), np.nan, dtype=np.float32)
    out[1:-1, 1:-1] = inner
    return out


def _interior(spacing, n_rows: int):
    spacing = np.asarray(spacing, dtype=np.float64)
    return spacing[1:-1, None] if spacing.ndim == 1 and spacing.size == n_rows else spacing


def gradients(z: np.ndarray, dx, dy):
    """Horn (1981) gradients: (dz/dx toward east, dz/dy toward south), m/m."""
    a, b, c, d, _, f, g, h, i = _neighbours(z.astype(np.float64))
    dx, dy = _interior(dx, z.shape[0]), _interior(dy, z.shape[0])
    dzdx = ((c + 2 * f + i) - (a + 2 * d + g)) / (8 * dx)
    dzdy = ((g + 2 * h + i) - (a + 2 * b + c)) / (8 * dy)
    return dzdx, dzdy


def slope(z, dx, dy):
    dzdx, dzdy = gradients(z, dx, dy)
    return _pad(np.degrees(np.arctan(np.hypot(dzdx, dzdy))))


def aspect(z, dx, dy):
    dzdx, dzdy = gradients(z, dx, dy)
    out = np.degrees(np.arctan2(-dzdx, dzdy)) % 360.0
    out[(dzdx == 0) & (dzdy == 0)] = np.nan
    return _pad(out)


def northness(z, dx, dy):
    dzdx, dzdy = gradients(z, dx, dy)
    norm = np.hypot(dzdx, dzdy)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(norm > 0, dzdy / norm, 0.0)  # cos(aspect): downslope north component
    return _pad(np.where(np.isnan(norm), np.nan, out))


def eastness(z, dx, dy):
    dzdx, dzdy = gradients(z, dx, dy)
    norm = np.hypot(dzdx, dzdy)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(norm > 0, -dzdx / norm, 0.0)  # sin(aspect): downslope east component
    return _pad(np.where(np.isnan(norm), np.nan, out))


def curvature(z, dx, dy):
    _, b, _, d, e, f, _, h, _ = _neighbours(z.astype(np.float64))
    dx, dy = _interior(dx, z.shape[0]), _interior(dy, z.shape[0])
    big_d = ((d + f) / 2 - e) / dx**2
    big_e = ((b + h) / 2 - e) / dy**2
    return _pad(-2 * (big_d + big_e) * 100)


def tpi(z, dx=None, dy=None):
    a, b, c, d, e, f, g, h, i = _neighbours(z.astype(np.float64))
    return _pad(e - (a + b + c + d + f + g + h + i) / 8)


# -- flow routing (whole grid) --------------------------------------------------------------------

#: Bytes of working memory per pixel that :func:`twi_grid` needs at peak (float64 filled DEM,
#: int32 receivers, int64 sort order, float64 accumulation, D8 drops, masks), measured with
#: tracemalloc in ``benchmarks/bench_covariates.py`` (see docs/covariates.md), rounded up.
FLOW_BYTES_PER_PIXEL = 100


def _offsets(width: int) -> tuple[int, ...]:
    """Flat-index offsets of the 8 neighbours in a grid padded by one cell (row-major)."""
    w = width + 2
    return (-w - 1, -w, -w + 1, -1, 1, w - 1, w, w + 1)


def fill_depressions(z: np.ndarray) -> np.ndarray:
    """Depression-filled copy of ``z`` (float64) in which every valid cell drains to the grid edge
    or to a nodata (NaN) cell along a strictly descending path.

    Priority-Flood+epsilon (Barnes, Lehman & Mulla 2014, Algorithm 3): cells are flooded inward from
    the edge in order of elevation; a cell reached from a higher spill level is raised to the next
    representable float above it, so filled pits and flats keep a drainage gradient. Time
    O(n log n), a Python loop over cells (about 2 s per million cells); memory about 17 bytes/cell.
    """
    rows, cols = z.shape
    padded = np.full((rows + 2, cols + 2), np.nan, dtype=np.float64)
    padded[1:-1, 1:-1] = z
    flat = padded.ravel()
    closed_np = np.isnan(flat)
    # seeds: valid cells with an edge or nodata neighbour
    near_closed = np.zeros_like(closed_np)
    for off in _offsets(cols):
        near_closed |= np.roll(closed_np, -off)
    seeds = np.flatnonzero(near_closed & ~closed_np)
    out = array("d", flat.tobytes())
    closed = bytearray(closed_np.tobytes())
    del near_closed, closed_np
    heap = [(out[i], int(i)) for i in seeds]
    heapq.heapify(heap)
    for i in seeds:
        closed[i] = 1
    pit: deque[int] = deque()
    offsets = _offsets(cols)
    nextafter, inf, push, pop = math.nextafter, math.inf, heapq.heappush, heapq.heappop
    while heap or pit:
        c = pit.popleft() if pit else pop(heap)[1]
        spill = nextafter(out[c], inf)
        for off in offsets:
            n = c + off
            if closed[n]:
                continue
            closed[n] = 1
            if out[n] <= spill:
                out[n] = spill
                pit.append(n)
            else:
                push(heap, (out[n], n))
    return np.frombuffer(out, dtype=np.float64).reshape(rows + 2, cols + 2)[1:-1, 1:-1].copy()


def _row_spacing(spacing, rows: int) -> np.ndarray:
    """Pixel spacing as a (rows, 1) float64 column (scalars broadcast)."""
    spacing = np.asarray(spacing, dtype=np.float64)
    return np.broadcast_to(spacing.reshape(-1, 1) if spacing.ndim else spacing, (rows, 1))


def d8_receivers(filled: np.ndarray, dx, dy) -> np.ndarray:
    """Flat index (row-major, into ``filled``) of each cell's steepest-descent neighbour; -1 for
    cells with no lower neighbour (they drain off the grid) and for nodata. int32 when it fits."""
    rows, cols = filled.shape
    dx, dy = _row_spacing(dx, rows), _row_spacing(dy, rows)
    padded = np.full((rows + 2, cols + 2), np.nan, dtype=np.float64)
    padded[1:-1, 1:-1] = filled
    itype = np.int32 if rows * cols < 2**31 else np.int64
    best = np.zeros((rows, cols), dtype=np.float64)
    receiver = np.full((rows, cols), -1, dtype=itype)
    r_idx = np.arange(rows, dtype=itype)[:, None]
    c_idx = np.arange(cols, dtype=itype)[None, :]
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            distance = np.hypot(dx * abs(dc), dy * abs(dr))
            neighbour = padded[1 + dr: 1 + dr + rows, 1 + dc: 1 + dc + cols]
            with np.errstate(invalid="ignore"):
                drop = (filled - neighbour) / distance
                better = drop > best  # NaN (nodata/edge) never wins
            best[better] = drop[better]
            flat_n = (r_idx + dr) * cols + (c_idx + dc)
            receiver[better] = np.broadcast_to(flat_n, (rows, cols))[better]
    return receiver.ravel()


def flow_accumulation(z: np.ndarray, dx, dy) -> np.ndarray:
    """Upslope contributing area (m^2, including the cell itself) by D8 on the filled DEM.

    ``z`` is the whole DEM (m, NaN = nodata); ``dx``/``dy`` the pixel size in metres (scalars or
    per-row arrays). Every D8 receiver is strictly lower on the filled DEM, so visiting cells from
    the highest filled elevation down is a topological order: one pass adds each cell's area to its
    receiver (a Python loop, about 0.5 s per million cells). Nodata cells get NaN.
    """
    rows, cols = z.shape
    valid = ~np.isnan(z).ravel()
    filled = fill_depressions(z)
    receiver = d8_receivers(filled, dx, dy)
    order = np.argsort(filled.ravel(), kind="stable")[::-1]
    del filled
    area = (_row_spacing(dx, rows) * _row_spacing(dy, rows)) * np.ones((1, cols))
    acc = array("d", np.where(valid, area.ravel(), 0.0).tobytes())
    del area
    order = order[receiver[order] >= 0]  # cells with a receiver, highest first
    for start in range(0, order.size, 1 << 20):  # chunks bound the Python lists
        donors = order[start: start + (1 << 20)]
        for i, r in zip(donors.tolist(), receiver[donors].tolist()):
            acc[r] += acc[i]
    out = np.frombuffer(acc, dtype=np.float64).copy()
    out[~valid] = np.nan
    return out.reshape(rows, cols)


def twi_grid(z: np.ndarray, dx, dy) -> np.ndarray:
    """Topographic wetness index ln(a / tan b) over a whole DEM, float32, NaN where undefined.

    ``a`` = D8 contributing area / contour width, with the contour width taken as the cell width
    sqrt(dx * dy) (the cell size on square grids), as in the D8 form of Quinn et al. (1991),
    Hydrol. Process. 5:59-79. ``tan b`` is the Horn (1981) slope of the unfilled DEM; where it is 0
    (perfectly flat) or undefined (grid border, next to nodata) the index is NaN.
    """
    rows = z.shape[0]
    area = flow_accumulation(z, dx, dy)
    width = np.sqrt(_row_spacing(dx, rows) * _row_spacing(dy, rows))
    dzdx, dzdy = gradients(z, dx, dy)
    tan_b = np.full(z.shape, np.nan)
    tan_b[1:-1, 1:-1] = np.hypot(dzdx, dzdy)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log((area / width) / tan_b)
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32)


DERIVATIVES = {
    "slope": slope,
    "aspect": aspect,
    "northness": northness,
    "eastness": eastness,
    "curvature": curvature,
    "tpi": tpi,
}
