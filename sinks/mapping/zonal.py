"""Per-polygon totals of a carbon map (t C, t CO2e) or a sink map (t CO2e/yr), with intervals.

Weights. Each pixel counts with the exact area of its part inside the polygon
(:func:`sinks.pixels.coverage_fractions`: pixel boxes clipped against the polygon, checked against
the exactextract library in the tests), measured on the ellipsoid in any CRS:

- geographic CRS: a whole pixel is the ellipsoidal quadrangle between two meridians and two
  parallels, whose area is exact in closed form, ``A = b²/2 · Δλ · [f(φ2) − f(φ1)]`` with
  ``f(φ) = sinφ / (1 − e² sin²φ) + ln((1 + e sinφ) / (1 − e sinφ)) / (2e)`` (the authalic-latitude
  zone area; Snyder 1987, *Map Projections: A Working Manual*, USGS PP 1395, Eqs. 3-12 and 3-13).
  A partial pixel's share is its planar share weighted by the area density ``a²(1 − e²) cosφ /
  (1 − e² sin²φ)²`` at the centroid of the covered part relative to the pixel centre (exact for a
  density linear in φ across the pixel; the remainder is of order (Δφ)², 10⁻⁹ for a 0.01° pixel).
- projected CRS: planar area times the ellipsoid's area per CRS unit² at the pixel centre (or at the
  covered part's centroid), from the Jacobian of the inverse projection (:meth:`EqualArea.density`;
  the inverse of the areal scale factor ``h·k`` of a projection on the ellipsoid: 1 for an
  equal-area projection, up to 1.002 at the edge of a UTM zone; not PROJ's factor for Web
  Mercator, whose figure is a sphere).

Totals are ``Σ value × pixel_area_ha × fraction`` over the pixels with data; ``area_ha`` is the
polygon's ellipsoidal area (its pixel parts as above, plus any part beyond the raster's edge by pyproj
``Geod``, Karney 2013, edges densified), ``nodata_share`` the
share of the polygon's area inside the raster that has no data, ``outside_raster_share`` the share
outside the raster's extent, ``outside_aoa_share`` the share of the mapped area outside the area of
applicability.

Intervals of totals. The per-pixel standard deviation is read from the map's interval (as in
:mod:`sinks.mapping.change`: the larger half-width over the normal quantile of its level). Pixel
errors are not independent: a model's errors are spatially autocorrelated, so the variance of a
sum does not shrink as 1/n. The errors follow an exponential correlation model with a nugget,
``ρ(d) = (1 − ν) exp(−d / r)`` for d > 0 (ρ(0) = 1), where r (``error_range_m``) is the distance at
which the correlated part falls to 1/e (gstat's ``Exp`` range parameter; the practical range, where
it falls to 5 %, is 3r) and ν the nugget share of the error variance. The variance of the total
``T = Σ wᵢ xᵢ`` is the quadratic form ``Σᵢ Σⱼ aᵢ aⱼ ρ(dᵢⱼ)`` with ``aᵢ = wᵢ σᵢ``:

- exact (every pair of pixels) when the polygon has at most ``exact_limit`` pixels;
- above that, a block approximation: pixels are summed into k × k blocks (k chosen so the number
  of blocks is about ``exact_limit``), blocks correlate by the distance of their area-weighted
  centroids, and a block with itself by the mean correlation of all pixel pairs of a full k × k
  block. The error is small when the block side is well below r; the ``variance_method`` column says
  which was used.

r and ν come from ``error_range_m`` / ``error_nugget``, else from the map's tags
``sinks_error_range_m`` / ``sinks_error_nugget`` (a variogram of the model's out-of-fold residuals),
else the errors are taken as **fully correlated** within a polygon (ρ = 1: the interval of the sum
is the sum of the pixel intervals), the conservative bound, and the ``error_model`` column says so.
``error_range_m = 0`` declares independent pixel errors (the narrowest interval, rarely honest).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sinks.errors import InputError
from sinks.mapping.change import CO2_PER_C, SINK_UNITS, MapInfo, check_stock_units, read_bands, read_map_info
from sinks.pixels import check_north_up, coverage_fractions, pixel_window
from sinks.stats import half_width, normal_quantile

#: Polygons with at most this many pixels get the exact pairwise variance.
EXACT_LIMIT = 10_000
#: Pixels per side of the windows a polygon is processed in (memory bound).
CHUNK = 512
#: Elements of the distance matrix computed at once in the variance (memory bound: 8 bytes each).
_PAIR_CHUNK = 4_000_000
ID_CANDIDATES = ("parcel_id", "polygon_id", "id")


# ---- the error model ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ErrorModel:
    """Spatial correlation of pixel errors: exponential with range ``range_m`` and nugget share."""

    range_m: float | None  # None: fully correlated; 0: independent
    nugget: float = 0.0
    source: str = "option"

    def describe(self) -> str:
        if self.range_m is None:
            what = "fully correlated within the polygon (conservative bound)"
        elif self.range_m == 0:
            what = "independent pixel errors"
        else:
            what = f"exponential, range {self.range_m:g} m"
        if self.nugget and self.range_m != 0:
            what += f", nugget {self.nugget:g}"
        return f"{what} ({self.source})"

    def correlation(self, d: np.ndarray) -> np.ndarray:
        """ρ(d) for distances in metres (1 at d = 0)."""
        d = np.asarray(d, dtype=float)
        if self.range_m is None:
            rho = np.full(d.shape, 1.0 - self.nugget)
        elif self.range_m == 0:
            rho = np.zeros(d.shape)
        else:
            rho = (1.0 - self.nugget) * np.exp(-d / self.range_m)
        return np.where(d == 0, 1.0, rho)


def error_model(info: MapInfo, range_m: float | None = None, nugget: float | None = None) -> ErrorModel:
    """The error model from the options, else the map's tags, else full correlation (conservative).

    The options replace the tags' model as a whole: a range given without a nugget has nugget 0
    (not the map's, which could be 1, pure nugget, and make the range moot), a nugget given without
    a range is taken with full correlation of the rest.
    """
    source, given = "option", range_m is not None or nugget is not None
    if not given:
        tagged = info.tags.get("sinks_error_range_m")
        if tagged not in (None, ""):
            range_m, source = _tag_number(info, "sinks_error_range_m", tagged, 0, math.inf), "map tags"
            tagged = info.tags.get("sinks_error_nugget")
            nugget = _tag_number(info, "sinks_error_nugget", tagged, 0, 1) if tagged not in (None, "") else 0.0
    nugget = 0.0 if nugget is None else nugget
    if range_m is None:
        stated = None if given else info.tags.get("sinks_error_model")
        source = f"map tags: {stated}" if stated else "no error range given" + (", nugget from the option" if nugget else "")
    range_m = None if range_m is None else float(range_m)
    if range_m is not None and not (math.isfinite(range_m) and range_m >= 0):
        raise InputError(f"--error-range-m must be a distance >= 0 in metres, got {range_m!r}")
    if not (0 <= float(nugget) <= 1):
        raise InputError(f"--error-nugget must be between 0 and 1, got {nugget!r}")
    return ErrorModel(range_m, float(nugget), source)


def _tag_number(info, key, text, low, high) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (low <= value <= high):
        raise InputError(f"{info.path}: tag {key}={text!r} is not a number in [{low}, {high}]")
    return value


def mean_block_correlation(model: ErrorModel, k: int, dx: float, dy: float) -> float:
    """Mean of ρ over all ordered pixel pairs (with themselves) of a full k × k block of dx × dy m pixels."""
    if k == 1:
        return 1.0
    i = np.arange(-(k - 1), k)
    w = (k - np.abs(i)).astype(float)
    d = np.hypot(i[:, None] * dy, i[None, :] * dx)
    return float((w[:, None] * w[None, :] * model.correlation(d)).sum() / k ** 4)


def correlated_variance(x: np.ndarray, y: np.ndarray, a: np.ndarray, model: ErrorModel, *,
                        self_correlation: np.ndarray | float = 1.0) -> float:
    """``Σᵢ Σⱼ aᵢ aⱼ ρ(dᵢⱼ)`` for points at ``x``, ``y`` (metres), with ``ρ(dᵢᵢ) = self_correlation``.

    Exact, in chunks of rows (memory bounded); O(n²) time.
    """
    x, y, a = (np.asarray(v, dtype=float) for v in (x, y, a))
    n = a.size
    if n == 0:
        return 0.0
    self_corr = np.broadcast_to(np.asarray(self_correlation, dtype=float), (n,))
    if model.range_m is None:
        total = (1.0 - model.nugget) * a.sum() ** 2
        return float(total + np.sum(a ** 2 * (self_corr - (1.0 - model.nugget))))
    if model.range_m == 0:
        return float(np.sum(a ** 2 * self_corr))
    step = max(1, _PAIR_CHUNK // n)
    total = 0.0
    for i0 in range(0, n, step):
        i1 = min(n, i0 + step)
        d = np.hypot(x[i0:i1, None] - x[None, :], y[i0:i1, None] - y[None, :])
        rho = (1.0 - model.nugget) * np.exp(-d / model.range_m)
        rows = np.arange(i1 - i0)
        rho[rows, rows + i0] = self_corr[i0:i1]
        total += float(a[i0:i1] @ (rho @ a))
    return total


# ---- equal-area pixel areas -------------------------------------------------------------------------

def _wrapped(dlon: np.ndarray) -> np.ndarray:
    """Longitude differences (degrees) into [-180, 180)."""
    return (dlon + 180.0) % 360.0 - 180.0


#: Step (CRS units) of the central differences of :meth:`EqualArea.density`: 1 m or 1 ft; the
#: truncation error is below 1e-9 relative for map projections over distances of metres.
JACOBIAN_STEP = 1.0


class EqualArea:
    """Pixel and part-pixel areas on the ellipsoid, and metric coordinates, for one raster grid."""

    def __init__(self, crs, transform):
        from pyproj import CRS, Transformer

        check_north_up(transform)
        self.crs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        self.transform = transform
        self.geod = self.crs.get_geod()
        ellipsoid = self.crs.ellipsoid
        self.a = ellipsoid.semi_major_metre
        b = ellipsoid.semi_minor_metre
        self.b = b
        self.e2 = 1.0 - (b / self.a) ** 2
        self.geographic = self.crs.is_geographic
        self._lonlat = None if self.geographic else Transformer.from_crs(self.crs, self.crs.geodetic_crs,
                                                                         always_xy=True)
        if self.geographic:
            self.unit = None
        else:
            self.unit = float(self.crs.axis_info[0].unit_conversion_factor)

    def _lonlat_density(self, lat_deg: np.ndarray) -> np.ndarray:
        """m² of the ellipsoid per square degree of longitude x latitude at ``lat_deg``."""
        phi = np.radians(lat_deg)
        s2 = np.sin(phi) ** 2
        return (np.pi / 180) ** 2 * self.a ** 2 * (1 - self.e2) * np.cos(phi) / (1 - self.e2 * s2) ** 2

    # area density: m² per CRS unit², at points
    def density(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """m² of the geodetic CRS's ellipsoid per CRS unit² at points ``x, y``.

        Projected CRSs: the Jacobian of the inverse projection (central differences of
        :data:`JACOBIAN_STEP` CRS units) times the ellipsoid's area per square degree. PROJ's own
        areal scale factor is taken on the projection's own figure, which for Web Mercator
        (EPSG:3857, a sphere of radius a on WGS84 coordinates) is not the ellipsoid: its areas read
        0.2-0.7 % high (0.33 % at 30° N)."""
        if self.geographic:
            return self._lonlat_density(y)
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        h = JACOBIAN_STEP
        with np.errstate(invalid="ignore"):
            lon_e, lat_e = self._lonlat.transform(x + h, y)
            lon_w, lat_w = self._lonlat.transform(x - h, y)
            lon_n, lat_n = self._lonlat.transform(x, y + h)
            lon_s, lat_s = self._lonlat.transform(x, y - h)
            _, lat = self._lonlat.transform(x, y)
            # longitude differences wrapped into [-180, 180): across the antimeridian they jump by 360
            dlon_dx = _wrapped(np.asarray(lon_e) - lon_w) / (2 * h)
            dlon_dy = _wrapped(np.asarray(lon_n) - lon_s) / (2 * h)
            dlat_dx, dlat_dy = (np.asarray(lat_e) - lat_w) / (2 * h), (np.asarray(lat_n) - lat_s) / (2 * h)
            density = np.abs(dlon_dx * dlat_dy - dlon_dy * dlat_dx) * self._lonlat_density(np.asarray(lat))
        if not np.all(np.isfinite(density) & (density > 0)):
            raise InputError(f"cannot compute equal-area pixel areas in the raster's CRS ({self.crs.name}) "
                             "at some pixels (outside the projection's domain?)")
        return density

    def _zone(self, phi: np.ndarray) -> np.ndarray:
        e = math.sqrt(self.e2)
        s = np.sin(phi)
        if e == 0:
            return 2 * s
        return s / (1 - self.e2 * s ** 2) + np.log((1 + e * s) / (1 - e * s)) / (2 * e)

    def pixel_ha(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Ellipsoidal area (ha) of whole pixels at global ``rows``, ``cols``."""
        t = self.transform
        if self.geographic:
            lat1 = np.radians(t.f + rows * t.e)
            lat2 = np.radians(t.f + (rows + 1) * t.e)
            dlon = abs(math.radians(t.a))
            return self.b ** 2 / 2 * dlon * np.abs(self._zone(lat2) - self._zone(lat1)) / 1e4
        x, y = t @ (cols + 0.5, rows + 0.5)
        return abs(t.a * t.e) * self.density(np.asarray(x), np.asarray(y)) / 1e4

    def cover_ha(self, rows, cols, fraction, cx, cy) -> np.ndarray:
        """Ellipsoidal area (ha) of the covered parts of pixels (planar ``fraction``, centroid ``cx, cy``)."""
        whole = self.pixel_ha(rows, cols)
        partial = fraction < 1
        share = fraction.astype(float).copy()
        if partial.any():
            px, py = self.transform @ (cols[partial] + 0.5, rows[partial] + 0.5)
            share[partial] *= self.density(cx[partial], cy[partial]) / self.density(np.asarray(px), np.asarray(py))
        return whole * share

    def metric(self, x, y, centre) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates in metres for distances: projected as they are, geographic in an azimuthal
        equidistant projection centred on ``centre`` (lon, lat)."""
        if not self.geographic:
            return np.asarray(x) * self.unit, np.asarray(y) * self.unit
        from pyproj import Transformer

        aeqd = f"+proj=aeqd +lat_0={centre[1]} +lon_0={centre[0]} +a={self.a} +b={self.b} +units=m"
        tr = Transformer.from_crs(self.crs, aeqd, always_xy=True)
        mx, my = tr.transform(x, y)
        return np.asarray(mx), np.asarray(my)

    def pixel_metres(self, lat: float) -> tuple[float, float]:
        """Pixel width and height in metres (at latitude ``lat`` for a geographic CRS)."""
        t = self.transform
        if not self.geographic:
            return abs(t.a) * self.unit, abs(t.e) * self.unit
        phi = math.radians(lat)
        w = 1 - self.e2 * math.sin(phi) ** 2
        n = self.a / math.sqrt(w)
        m = self.a * (1 - self.e2) / w ** 1.5
        return n * math.cos(phi) * math.radians(abs(t.a)), m * math.radians(abs(t.e))

    def geometry_ha(self, geom) -> float:
        """Ellipsoidal area (ha) of a polygon in the raster's CRS (edges densified, Karney's geodesics)."""
        import shapely
        from shapely.geometry.polygon import orient

        if geom is None or geom.is_empty:
            return 0.0
        x0, y0, x1, y1 = geom.bounds  # segments short enough that geodesic ~ straight edge (~1e-8)
        step = min(abs(self.transform.a), abs(self.transform.e), math.hypot(x1 - x0, y1 - y0)) / 64
        dense = shapely.segmentize(geom, step)
        if not self.geographic:
            dense = shapely.transform(dense, lambda xy: np.column_stack(self._lonlat.transform(xy[:, 0], xy[:, 1])))
        total = 0.0
        for part in getattr(dense, "geoms", [dense]):
            if part.geom_type == "Polygon" and not part.is_empty:
                total += abs(self.geod.geometry_area_perimeter(orient(part, 1.0))[0])
        return total / 1e4


# ---- polygons ----------------------------------------------------------------------------------------

def check_polygons(frame, *, id_column: str | None = None, source: str = "polygons"):
    """Refuse what cannot be summed: no CRS, missing ids, non-polygons, invalid geometries (per polygon).

    Returns ``(frame, ids, id_name)``. Invalid or self-intersecting polygons are listed with the
    reason and never repaired here.
    """
    import geopandas as gpd
    import shapely

    from sinks.io import check_ids

    if not isinstance(frame, gpd.GeoDataFrame) or frame.geometry is None:
        raise InputError(f"{source}: has no polygon geometry (use a GeoPackage, Shapefile or GeoParquet)")
    if frame.crs is None:
        raise InputError(f"{source}: the polygons have no CRS; pass --crs (e.g. EPSG:4326) or set it in the file")
    if len(frame) == 0:
        raise InputError(f"{source}: holds no polygons")
    if id_column is not None:
        if id_column not in frame.columns:
            raise InputError(f"{source}: no column {id_column!r} for --id; found {', '.join(map(str, frame.columns))}")
        name = id_column
    else:  # the usual id columns, in any case (Parcel_ID, ID)
        lower = {str(c).lower(): c for c in frame.columns if c != frame.geometry.name}
        name = next((lower[c] for c in ID_CANDIDATES if c in lower), None)
    if name is None:
        ids = pd.Series(np.arange(1, len(frame) + 1), name="polygon")
        name = "polygon"
    else:
        ids = frame[name].reset_index(drop=True)
        check_ids(ids, source, name)
    geoms = frame.geometry.to_numpy()
    problems = []
    for i, geom in enumerate(geoms):
        label = f"{name} {ids.iloc[i]}"
        if geom is None or geom.is_empty:
            problems.append(f"{label}: empty geometry")
        elif geom.geom_type not in ("Polygon", "MultiPolygon"):
            problems.append(f"{label}: a {geom.geom_type}, not a polygon")
        elif not geom.is_valid:
            problems.append(f"{label}: invalid ({shapely.is_valid_reason(geom)})")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InputError(f"{source}: {len(problems)} polygon(s) cannot be used: {shown}. Fix them (e.g. QGIS "
                         "'Fix geometries' or shapely.make_valid, then check the result); sinks never repairs "
                         "a polygon silently")
    return frame, ids, name


def to_raster_crs(frame, crs, *, source: str = "polygons"):
    """Polygons in the raster's CRS: reprojected (edges densified first, 256 segments per bbox diagonal)."""
    import shapely
    from pyproj import CRS

    target = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    if frame.crs.equals(target, ignore_axis_order=True):
        return frame.geometry.to_numpy()
    geoms = frame.geometry.to_numpy()
    b = shapely.bounds(geoms)
    diag = np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    dense = shapely.segmentize(geoms, np.where(diag > 0, diag / 256, 1.0))
    try:
        out = frame.set_geometry(dense, crs=frame.crs).to_crs(target).geometry.to_numpy()
    except Exception as exc:
        raise InputError(f"{source}: cannot reproject the polygons from {frame.crs} to the raster's CRS "
                         f"({type(exc).__name__}: {exc})") from exc
    bad = [i for i, g in enumerate(out) if g is None or g.is_empty or not g.is_valid
           or not np.all(np.isfinite(shapely.get_coordinates(g)))]
    if bad:
        raise InputError(f"{source}: polygon(s) at row(s) {', '.join(str(i + 1) for i in bad[:10])} become invalid "
                         f"or fall outside the raster CRS's domain when reprojected to {target.name}")
    return out


# ---- totals -------------------------------------------------------------------------------------------

def choose_band(info: MapInfo, band: str | None) -> tuple[str, str]:
    """The band to total and its kind: ``"stock"`` (Mg C/ha) or ``"sink"`` (t CO2e/ha/yr)."""
    if band is None:
        band = next((b for b in ("carbon", "sink") if b in info.bands), None)
        if band is None:
            quantities = [b for b in info.bands if b not in ("lower", "upper", "aoa", "di", "error")]
            hint = ("name the band to total with --band" if quantities else
                    "it holds only an interval or the AOA: map the carbon band too (sinks map --bands carbon,...)")
            raise InputError(f"{info.path}: has neither a carbon nor a sink band (bands: "
                             f"{', '.join(info.bands) or 'none named'}); {hint}")
    elif band not in info.bands:
        from sinks.validate import did_you_mean

        raise InputError(f"{info.path}: no band {band!r}{did_you_mean(band, info.bands)}; it has "
                         f"{', '.join(info.bands) or 'no named bands'}")
    if band in ("lower", "upper", "aoa", "di", "error"):
        raise InputError(f"{info.path}: band {band!r} is part of the interval, AOA or error profile, not a "
                         "quantity to total")
    units = info.units(band)
    if units.replace(" ", "").lower() == SINK_UNITS.replace(" ", "").lower():
        return band, "sink"
    check_stock_units(info, band)
    return band, "stock"


def zonal_totals(map_path: str | os.PathLike, polygons, *, band: str | None = None, id_column: str | None = None,
                 error_range_m: float | None = None, error_nugget: float | None = None,
                 level: float | None = None, exact_limit: int = EXACT_LIMIT, chunk: int = CHUNK,
                 progress: bool = True, source: str | None = None) -> pd.DataFrame:
    """One row per polygon: area, pixels, shares of nodata / outside raster / outside AOA, totals.

    ``polygons`` is a GeoDataFrame (any CRS: reprojected to the map's) or a path. Totals of a
    carbon map are in t C and t CO2e, of a sink map in t CO2e/yr, each with its standard deviation
    and interval at ``level`` (default the map's) under the spatial error model (see the module).
    """
    import rasterio
    from rasterio.windows import Window
    from tqdm.auto import tqdm

    from sinks.io import read_table

    if isinstance(polygons, (str, os.PathLike)):
        source = source or str(polygons)
        polygons = read_table(polygons, geometry=True)
    source = source or "polygons"
    if isinstance(exact_limit, bool) or not isinstance(exact_limit, (int, np.integer)) or exact_limit < 1:
        raise InputError(f"exact_limit must be a positive integer, got {exact_limit!r}")
    info = read_map_info(map_path)
    band, kind = choose_band(info, band)
    info.require(("lower", "upper"))
    map_level = info.level()
    level = map_level if level is None else float(level)
    if not 0 < level < 1:
        raise InputError(f"--level must be between 0 and 1 (e.g. 0.9), got {level!r}")
    z_map, z_out = normal_quantile(map_level), normal_quantile(level)
    model = error_model(info, error_range_m, error_nugget)
    polygons, ids, id_name = check_polygons(polygons, id_column=id_column, source=source)
    geoms = to_raster_crs(polygons, info.crs, source=source)
    ea = EqualArea(info.crs, info.transform)
    import shapely

    raster_box = _raster_box(info)
    outside = [i for i, g in enumerate(geoms) if pixel_window(g, info.transform, info.height, info.width) is None
               or shapely.area(shapely.intersection(g, raster_box)) == 0]
    if outside:
        shown = ", ".join(str(ids.iloc[i]) for i in outside[:10]) + (f" and {len(outside) - 10} more" if len(outside) > 10 else "")
        raise InputError(f"{source}: {len(outside)} polygon(s) lie wholly outside the raster {info.path} "
                         f"({id_name} {shown}); check the CRS of both, or leave those polygons out")
    indexes = {name: info.bands[name] for name in (band, "lower", "upper", "aoa") if name in info.bands}
    rows_out = []
    with rasterio.open(info.path) as ds:
        for i, geom in enumerate(tqdm(geoms, desc="zonal", unit="polygon", disable=not progress)):
            stats = _polygon_totals(ds, info, ea, geom, raster_box, indexes, band, kind, model, exact_limit, chunk,
                                    Window)
            rows_out.append(_row(ids.iloc[i], stats, kind, level, z_map, z_out, model))
    table = pd.DataFrame(rows_out)
    return table.rename(columns={"id": id_name})


def _raster_box(info: MapInfo):
    import shapely

    t = info.transform
    x0, x1 = sorted((t.c, t.c + info.width * t.a))
    y0, y1 = sorted((t.f, t.f + info.height * t.e))
    return shapely.box(x0, y0, x1, y1)


def _polygon_totals(ds, info, ea: EqualArea, geom, raster_box, indexes, band, kind, model, exact_limit, chunk,
                    Window):
    import shapely

    window = pixel_window(geom, info.transform, info.height, info.width)
    r0, c0, h, w = window
    t = info.transform
    inside_part = shapely.intersection(geom, raster_box)
    n_est = shapely.area(inside_part) / abs(t.a * t.e)
    k = 1 if n_est <= exact_limit else int(math.ceil(math.sqrt(n_est / exact_limit)))
    nbc = -(-w // k)
    centre = inside_part.centroid
    nodata = info.nodata
    stock_max = info.stock_max() if kind == "stock" else None
    sink_max = info.sink_max() if kind == "sink" else None
    acc = dict(cover=0.0, valid_cover=0.0, out_aoa=0.0, aoa_known=0.0, total=0.0, sum_a=0.0, sum_a2=0.0,
               pixels=0, pixels_valid=0)
    keys, s_parts, wx_parts, wy_parts, w_parts = [], [], [], [], []
    for rr in range(0, h, chunk):
        for cc in range(0, w, chunk):
            sub = (r0 + rr, c0 + cc, min(chunk, h - rr), min(chunk, w - cc))
            frac, cx, cy = coverage_fractions(geom, t, sub)
            hit = frac > 0
            if not hit.any():
                continue
            lr, lc = np.nonzero(hit)
            grow, gcol = lr + sub[0], lc + sub[1]
            cover = ea.cover_ha(grow, gcol, frac[hit], cx[hit], cy[hit])
            names = list(indexes)
            data = read_bands(ds, list(indexes.values()), Window(sub[1], sub[0], sub[3], sub[2]), nodata,
                              stock=0 if kind == "stock" else None, stock_max=stock_max, sink_max=sink_max,
                              interval=(0, names.index("lower"), names.index("upper")),
                              aoa=names.index("aoa") if "aoa" in indexes else None)
            vals = {name: data[j][hit] for j, name in enumerate(indexes)}
            value, lower, upper = vals[band], vals["lower"], vals["upper"]
            valid = np.isfinite(value) & np.isfinite(lower) & np.isfinite(upper)
            acc["pixels"] += int(hit.sum())
            acc["pixels_valid"] += int(valid.sum())
            acc["cover"] += float(cover.sum())
            if not valid.any():
                continue
            cv = cover[valid]
            acc["valid_cover"] += float(cv.sum())
            acc["total"] += float(np.sum(value[valid] * cv))
            if "aoa" in vals:
                aoa = vals["aoa"][valid]
                known = np.isfinite(aoa)
                acc["aoa_known"] += float(cv[known].sum())
                acc["out_aoa"] += float(cv[known & (aoa != 1)].sum())
            sd = half_width(value[valid], lower[valid], upper[valid])
            a = cv * sd  # per-pixel sd in the total's units, before dividing by z
            acc["sum_a"] += float(a.sum())
            acc["sum_a2"] += float(np.sum(a ** 2))
            if model.range_m not in (None, 0):
                px, py = t @ (gcol[valid] + 0.5, grow[valid] + 0.5)
                mx, my = ea.metric(np.asarray(px), np.asarray(py), (centre.x, centre.y))
                key = ((grow[valid] - r0) // k) * nbc + (gcol[valid] - c0) // k
                keys.append(key)
                s_parts.append(a)
                w_parts.append(cv)
                wx_parts.append(cv * mx)
                wy_parts.append(cv * my)
    acc["k"] = k
    # the polygon's area: its pixel parts (exact) plus any part beyond the raster's edge (Geod)
    acc["outside_ha"] = ea.geometry_ha(shapely.difference(geom, raster_box))
    acc["area_ha"] = acc["cover"] + acc["outside_ha"]
    # variance of the total times z_map^2 (each a is a half-width, not yet an sd)
    if model.range_m == 0:  # independent
        acc["var"] = acc["sum_a2"]
    elif model.range_m is None:  # fully correlated (but for the nugget)
        acc["var"] = (1 - model.nugget) * acc["sum_a"] ** 2 + model.nugget * acc["sum_a2"]
    else:
        key = np.concatenate(keys) if keys else np.zeros(0, dtype=int)
        uniq, inv = np.unique(key, return_inverse=True)
        s = np.bincount(inv, np.concatenate(s_parts)) if keys else np.zeros(0)
        wsum = np.bincount(inv, np.concatenate(w_parts)) if keys else np.zeros(0)
        bx = np.bincount(inv, np.concatenate(wx_parts)) / np.where(wsum > 0, wsum, 1) if keys else np.zeros(0)
        by = np.bincount(inv, np.concatenate(wy_parts)) / np.where(wsum > 0, wsum, 1) if keys else np.zeros(0)
        lat = centre.y if ea.geographic else 0.0
        dx, dy = ea.pixel_metres(lat)
        plain = ErrorModel(model.range_m, 0.0, model.source)
        rho_self = mean_block_correlation(plain, k, dx, dy)
        q = correlated_variance(bx, by, s, plain, self_correlation=rho_self)
        acc["var"] = model.nugget * acc["sum_a2"] + (1 - model.nugget) * q
        acc["n_blocks"] = int(uniq.size)
    return acc


def _row(pid, s, kind, level, z_map, z_out, model) -> dict:
    area = s["area_ha"]
    mapped = s["valid_cover"]
    has_data = s["pixels_valid"] > 0
    sd = math.sqrt(max(s["var"], 0.0)) / z_map if has_data else math.nan
    total = s["total"] if has_data else math.nan
    lower, upper = total - z_out * sd, total + z_out * sd
    if s.get("k", 1) == 1 or model.range_m in (None, 0):
        method = "exact" if model.range_m not in (None, 0) else "closed form"
    else:
        method = f"block approximation, {s['k']}x{s['k']}-pixel blocks ({s.get('n_blocks', 0)} blocks)"
    row = {
        "id": pid,
        "area_ha": area,
        "mapped_area_ha": mapped,
        "pixels": s["pixels"],
        "pixels_valid": s["pixels_valid"],
        "nodata_share": (1 - mapped / s["cover"]) if s["cover"] > 0 else math.nan,
        "outside_raster_share": s["outside_ha"] / area if area > 0 else math.nan,
        "outside_aoa_share": s["out_aoa"] / s["aoa_known"] if s["aoa_known"] > 0 else math.nan,
    }
    if kind == "stock":
        row.update({
            "mean_mg_c_ha": total / mapped if has_data and mapped > 0 else math.nan,
            "total_t_c": total, "sd_t_c": sd, "lower_t_c": max(lower, 0.0) if has_data else math.nan,
            "upper_t_c": upper,
            "total_t_co2e": total * CO2_PER_C, "sd_t_co2e": sd * CO2_PER_C,
            "lower_t_co2e": max(lower, 0.0) * CO2_PER_C if has_data else math.nan, "upper_t_co2e": upper * CO2_PER_C,
        })
    else:
        row.update({
            "mean_t_co2e_ha_yr": total / mapped if has_data and mapped > 0 else math.nan,
            "total_t_co2e_yr": total, "sd_t_co2e_yr": sd, "lower_t_co2e_yr": lower, "upper_t_co2e_yr": upper,
        })
    row.update({"interval_level": level, "error_model": model.describe(), "variance_method": method})
    return row
