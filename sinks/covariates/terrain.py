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
"""

from __future__ import annotations

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


DERIVATIVES = {
    "slope": slope,
    "aspect": aspect,
    "northness": northness,
    "eastness": eastness,
    "curvature": curvature,
    "tpi": tpi,
}
