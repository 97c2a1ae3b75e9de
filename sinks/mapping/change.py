"""Stock change between two carbon maps: the annual sink in t CO2e ha⁻¹ yr⁻¹, with its interval.

The sink of a pixel is the stock-difference estimate of IPCC (2006) *Guidelines for National
Greenhouse Gas Inventories*, Vol. 4 (AFOLU), Ch. 2, Eq. 2.5, ΔC = (C_t2 − C_t1) / (t2 − t1),
converted from carbon to CO2 by the ratio of molecular weights 44/12 (IPCC 2006 Vol. 4 Ch. 2,
§2.2): ``sink = (C2 − C1) × 44/12 / (Y2 − Y1)``. A positive sink is a removal from the atmosphere
(the stock grew).

Interval. Each map's interval is read as a normal one: its per-pixel standard deviation is the
larger half-width divided by the normal quantile of its level, σ = max(upper − C, C − lower) / z
(the larger side, because the lower bound of a carbon map is clipped at 0). The two epochs combine
with a stated correlation ρ between their errors at the same pixel,
``var(C2 − C1) = σ1² + σ2² − 2 ρ σ1 σ2``, and the sink's interval is ``sink ± z σ_sink`` at the
output level. The default ρ = 0 (independent epochs) gives a wider interval than any positive ρ;
errors of one model at one place in two years are expected to be positively correlated (a site the
model over-predicts in one year it tends to over-predict in the next), so ρ = 0 is conservative
unless errors change sign between epochs. ρ = -1 gives the widest interval possible (σ1 + σ2).
ρ is recorded in the output's tags.

Work goes window by window (memory bounded by the window size, whatever the map size), into a
COG (:func:`sinks.cog.cog_writer`, written atomically) with bands ``sink``, ``lower``, ``upper``
and ``aoa`` (1 where both epochs are inside their area of applicability, 0 where either is not).
A pixel that is nodata in either map is nodata in every band.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sinks.errors import ImplausibleValueError, InputError, ModelMismatchError
from sinks.stats import half_width, normal_quantile

#: Molecular weight ratio CO2 / C (44.01 / 12.011 rounded as IPCC 2006 uses it: 44/12).
CO2_PER_C = 44.0 / 12.0
SINK_UNITS = "t CO2e/ha/yr"
SINK_BANDS = ("sink", "lower", "upper", "aoa")
#: Bands a carbon map must have for a stock change.
CARBON_BANDS = ("carbon", "lower", "upper", "aoa")
#: Units of a stock density that sinks accepts as Mg C/ha (= t C/ha).
_LEVEL_PATTERN = re.compile(r"(\d+(?:\.\d+)?)\s*%")


@dataclass
class MapInfo:
    """What sinks needs to know about a carbon (or sink) map, read from its header and tags."""

    path: Path
    crs: object
    transform: object
    width: int
    height: int
    nodata: float | None
    bands: dict[str, int]
    band_tags: dict[str, dict[str, str]]
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def bundle_id(self) -> str | None:
        return self.tags.get("sinks_bundle_id") or None

    def stock_max(self) -> tuple[float, str]:
        """The largest carbon stock (Mg C/ha) the map may hold and why: the documented maximum of its
        pool (the ``sinks_pool`` tag ``sinks map`` writes from the bundle's ``[target] pool``), else
        the loosest of the pools' bounds (soil and wetland to 1 m)."""
        from sinks.pools.plausibility import max_stock_mg_ha

        pool = self.tags.get("sinks_pool")
        if pool:
            limit, source = max_stock_mg_ha(pool)
            return limit, f"the {pool} maximum ({source})"
        limit, source = max(max_stock_mg_ha(p) for p in ("forest", "soil", "wetland"))
        return limit, f"the largest bound of any pool (no sinks_pool tag; {source})"

    def sink_max(self) -> tuple[float, str]:
        """The largest annual sink or emission (t CO2e/ha/yr) a sink map may hold, and why: the
        whole of the largest stock (:meth:`stock_max`) gained or lost over the map's years (its
        ``sinks_years`` tag), or within one year."""
        limit, why = self.stock_max()
        try:
            y1, y2 = (float(v) for v in self.tags.get("sinks_years", "").split())
        except ValueError:
            y1, y2 = 0.0, 1.0
        years = y2 - y1 if y2 - y1 >= 1 else 1.0
        return limit * CO2_PER_C / years, f"{why} x 44/12 gained or lost within {years:g} year(s)"

    @property
    def year(self) -> float | None:
        """The year the map shows (its ``sinks_year`` tag, from ``sinks map --year``), or None."""
        try:
            return float(self.tags["sinks_year"])
        except (KeyError, ValueError):
            return None

    def units(self, band: str) -> str:
        return (self.band_tags.get(band, {}).get("units") or self.tags.get("units") or "").strip()

    def require(self, names) -> None:
        missing = [n for n in names if n not in self.bands]
        if missing:
            raise InputError(f"{self.path}: missing band(s) {', '.join(missing)}; it has "
                             f"{', '.join(self.bands) or 'no named bands'} (a carbon map from 'sinks map' "
                             "has carbon, lower, upper, di, aoa)")

    def level(self, band: str = "lower") -> float:
        """The level of the map's interval (e.g. 0.9), from the tags or the band descriptions."""
        candidates = []
        for name in (band, "lower", "upper"):
            tags = self.band_tags.get(name, {})
            candidates += [tags.get("interval_level"), tags.get("level")]
        candidates += [self.tags.get("sinks_interval_level")]
        for value in candidates:
            if value not in (None, ""):
                try:
                    level = float(value)
                except ValueError:
                    continue
                if 0 < level < 1:
                    return level
        for name in ("lower", "upper"):
            match = _LEVEL_PATTERN.search(self.band_tags.get(name, {}).get("description", ""))
            if match:
                level = float(match.group(1)) / 100
                if 0 < level < 1:
                    return level
        raise InputError(f"{self.path}: the level of its interval (lower/upper) is not stated in the band "
                         "tags (interval_level) or descriptions ('90% prediction interval'), so its "
                         "standard deviation cannot be derived; state it in the map's tags, e.g. "
                         f"gdal_edit.py -mo sinks_interval_level=0.9 {self.path}")

    def same_grid(self, other: MapInfo) -> bool:
        from pyproj import CRS

        try:
            same_crs = CRS.from_user_input(self.crs.to_wkt()).equals(CRS.from_user_input(other.crs.to_wkt()),
                                                                     ignore_axis_order=True)
        except Exception:
            same_crs = self.crs == other.crs
        size = max(abs(self.transform.a), abs(self.transform.e))
        return (same_crs and (self.width, self.height) == (other.width, other.height)
                and self.transform.almost_equals(other.transform, precision=1e-6 * size))


def read_map_info(path: str | os.PathLike) -> MapInfo:
    """Open a raster and read its grid, band names (descriptions) and tags; refuse what is unusable."""
    import rasterio
    from rasterio.errors import RasterioIOError

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a raster map")
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                raise InputError(f"{path}: the raster has no CRS; assign one (gdal_edit.py -a_srs) first")
            bands, band_tags = {}, {}
            for i, desc in enumerate(ds.descriptions, start=1):
                name = desc or ds.tags(i).get("name")
                if name:
                    bands.setdefault(name, i)
                    band_tags.setdefault(name, ds.tags(i))
            return MapInfo(path, ds.crs, ds.transform, ds.width, ds.height, ds.nodata, bands, band_tags,
                           ds.tags())
    except RasterioIOError as exc:
        raise InputError(f"{path}: cannot read it as a raster ({exc})") from exc


def check_stock_units(info: MapInfo, band: str) -> None:
    """Refuse a band whose units are not a carbon stock density (Mg C/ha)."""
    from sinks.learn.targets import target_quantity

    units = info.units(band)
    if target_quantity(units, "carbon_mg_ha" if band == "carbon" else band) != "stock":
        raise InputError(f"{info.path}: band {band!r} has units {units or '(none)'!r}, not a carbon stock "
                         "density in Mg C/ha; stock change and totals need Mg C/ha maps")


def level_percent(level: float) -> str:
    """An interval level as band descriptions write it: ``90%``, ``97.5%`` (never rounded to ``98%``)."""
    return f"{level * 100:.4g}%"


#: Calendar years a map's epoch may have.
YEARS = (1900, 2200)


def check_map_year(year) -> float:
    """A map's year (``sinks map --year``): a finite calendar year in :data:`YEARS`."""
    try:
        value = float(year)
    except (TypeError, ValueError):
        raise InputError(f"--year must be a number (the year the covariates show), got {year!r}") from None
    if not (math.isfinite(value) and YEARS[0] <= value <= YEARS[1]):
        raise InputError(f"--year {year!r} is not a calendar year ({YEARS[0]}-{YEARS[1]})")
    return value


def years_of_maps(years, map1, map2) -> tuple[float, float]:
    """``years`` (``--years``) as given, else both maps' own years (their ``sinks_year`` tags)."""
    if years is not None:
        return tuple(years)
    infos = [read_map_info(m) for m in (map1, map2)]
    lacking = [str(i.path) for i in infos if i.year is None]
    if lacking:
        raise InputError(f"give --years Y1 Y2: {', '.join(lacking)} states no year of its own (map it with "
                         "'sinks map --year YEAR' to carry it)")
    return infos[0].year, infos[1].year


def _check_years(year1, year2) -> tuple[float, float]:
    try:
        y1, y2 = float(year1), float(year2)
    except (TypeError, ValueError):
        raise InputError(f"--years must be two numbers, got {year1!r} {year2!r}") from None
    if not (math.isfinite(y1) and math.isfinite(y2)):
        raise InputError(f"--years must be finite, got {year1!r} {year2!r}")
    if y2 <= y1:
        raise InputError(f"--years {year1:g} {year2:g}: the second epoch must be later than the first "
                         "(give MAP_T1 and its year first)")
    if not (YEARS[0] <= y1 <= YEARS[1] and YEARS[0] <= y2 <= YEARS[1]):
        raise InputError(f"--years {year1:g} {year2:g} are not calendar years ({YEARS[0]}-{YEARS[1]})")
    return y1, y2


def check_epochs(info1: MapInfo, info2: MapInfo, years: tuple[float, float], *,
                 allow_different_models: bool = False) -> None:
    """Refuse two maps that cannot be differenced: one file twice (or a copy), bands, grids, units,
    models, and ``years`` (``--years``) other than a map's own year (its ``sinks_year`` tag): the
    years set the annual rate, a rate baseline, and which growth came before a project's start."""
    if Path(info1.path).resolve() == Path(info2.path).resolve():
        raise InputError(f"{info1.path} is given for both epochs; give the map of each year (MAP_T1 MAP_T2)")
    for info, year in zip((info1, info2), years):
        if info.year is not None and info.year != year:
            raise InputError(f"{info.path} shows {info.year:g} (its sinks_year tag, from 'sinks map --year') but "
                             f"--years gives {year:g} for it; give the maps' own years, first map first")
    for info in (info1, info2):
        info.require(CARBON_BANDS)
    if not info1.same_grid(info2):
        from sinks.pixels import describe_grid

        raise InputError(f"{info1.path} and {info2.path} are on different grids ({describe_grid(info1)} vs "
                         f"{describe_grid(info2)}); map both epochs with one feature spec grid")
    for info in (info1, info2):  # Mg C/ha and t C/ha alike: the same unit
        check_stock_units(info, "carbon")
    p1, p2 = info1.tags.get("sinks_pool") or None, info2.tags.get("sinks_pool") or None
    if p1 and p2 and p1 != p2:
        raise InputError(f"{info1.path} maps the {p1} pool but {info2.path} the {p2} pool (their sinks_pool "
                         "tags): a change between two pools is not a sink; map both epochs with one pool's model")
    b1, b2 = info1.bundle_id, info2.bundle_id
    if not allow_different_models and (b1 is None or b2 is None or b1 != b2):
        raise ModelMismatchError(
            f"{info1.path} (bundle {b1 or 'unknown'}) and {info2.path} (bundle {b2 or 'unknown'}) were not "
            "mapped by the same model bundle: a change between two models mixes model differences into the "
            "sink; pass --allow-different-models to difference them anyway (recorded in the tags)")
    if os.path.getsize(info1.path) == os.path.getsize(info2.path):  # only then can they be copies
        from sinks.io import sha256_file

        if sha256_file(info1.path) == sha256_file(info2.path):
            raise InputError(f"{info1.path} and {info2.path} are the same file (byte for byte): a copy of one "
                             "epoch's map given as the other's; give the map of each year (MAP_T1 MAP_T2)")


def stock_change(map1: str | os.PathLike, map2: str | os.PathLike, year1: float, year2: float,
                 out: str | os.PathLike, *, epoch_correlation: float = 0.0, level: float | None = None,
                 allow_different_models: bool = False, block: int = 512, progress: bool = True) -> Path:
    """Write the annual sink map (t CO2e/ha/yr) of ``map1`` (year ``year1``) to ``map2`` (``year2``).

    ``epoch_correlation`` is ρ between the two epochs' errors at a pixel (default 0: independent,
    conservative for any ρ >= 0); ``level`` the output interval's level (default: the maps' level,
    which must then agree). Refused before anything is written: maps on different grids or CRS, in
    different units or not in Mg C/ha, lacking a band, from different bundles (unless
    ``allow_different_models``: :class:`~sinks.errors.ModelMismatchError`), ``year2 <= year1``,
    ρ outside [-1, 1], an interval level that cannot be read.
    """
    import sinks
    from rasterio.windows import Window
    from tqdm.auto import tqdm

    from sinks.cog import FLOAT_NODATA, cog_writer
    from sinks.io import sha256_file
    from sinks.validate import check_block

    block = check_block(block)
    y1, y2 = _check_years(year1, year2)
    rho = float(epoch_correlation)
    if not (math.isfinite(rho) and -1 <= rho <= 1):
        raise InputError(f"--epoch-correlation must be between -1 and 1, got {epoch_correlation!r}")
    info1, info2 = read_map_info(map1), read_map_info(map2)
    check_epochs(info1, info2, (y1, y2), allow_different_models=allow_different_models)
    level1, level2 = info1.level(), info2.level()
    if level is None:
        if abs(level1 - level2) > 1e-9:
            raise InputError(f"{info1.path} has an interval at {level1:.0%} but {info2.path} one at {level2:.0%}; "
                             "pass --level to choose the output's level")
        level = level1
    if not (0 < float(level) < 1):
        raise InputError(f"--level must be between 0 and 1 (e.g. 0.9), got {level!r}")
    level = float(level)
    z1, z2, z_out = normal_quantile(level1), normal_quantile(level2), normal_quantile(level)
    dt = y2 - y1
    factor = CO2_PER_C / dt
    pct = level_percent(level)
    band_tags = {
        "sink": {"units": SINK_UNITS, "description": "annual sink (C2 - C1) x 44/12 / (Y2 - Y1); positive = removal"},
        "lower": {"units": SINK_UNITS, "interval_level": level,
                  "description": f"lower bound of the {pct} interval of the sink (epoch correlation {rho:g})"},
        "upper": {"units": SINK_UNITS, "interval_level": level,
                  "description": f"upper bound of the {pct} interval of the sink (epoch correlation {rho:g})"},
        "aoa": {"units": "1", "description": "1 = inside the area of applicability in both epochs"},
    }
    same_bundle = info1.bundle_id is not None and info1.bundle_id == info2.bundle_id
    tags = {
        "sinks_version": sinks.__version__,
        "sinks_product": "annual sink",
        "sinks_method": "IPCC 2006 GL Vol. 4 Ch. 2 Eq. 2.5 stock difference, x 44/12",
        "sinks_years": f"{y1:g} {y2:g}",
        "sinks_epoch_correlation": f"{rho:g}",
        "sinks_interval_level": f"{level:g}",
        "sinks_interval_model": ("normal: sd_i = max(upper - C, C - lower) / z(level_i); "
                                 "var(C2 - C1) = sd1^2 + sd2^2 - 2 rho sd1 sd2"),
        "sinks_map_t1": str(info1.path.name), "sinks_map_t1_sha256": sha256_file(info1.path),
        "sinks_map_t2": str(info2.path.name), "sinks_map_t2_sha256": sha256_file(info2.path),
        "sinks_bundle_id_t1": info1.bundle_id or "unknown", "sinks_bundle_id_t2": info2.bundle_id or "unknown",
        "sinks_allow_different_models": str(bool(allow_different_models)).lower(),
    }
    if info1.tags.get("sinks_pool") and info1.tags.get("sinks_pool") == info2.tags.get("sinks_pool"):
        tags["sinks_pool"] = info1.tags["sinks_pool"]
    if same_bundle:
        tags["sinks_bundle_id"] = info1.bundle_id
        for key in ("sinks_error_range_m", "sinks_error_nugget", "sinks_error_model"):  # the model's error correlation
            if info1.tags.get(key):
                tags[key] = info1.tags[key]
    import rasterio

    idx1 = [info1.bands[b] for b in CARBON_BANDS]
    idx2 = [info2.bands[b] for b in CARBON_BANDS]
    windows = [Window(c, r, min(block, info1.width - c), min(block, info1.height - r))
               for r in range(0, info1.height, block) for c in range(0, info1.width, block)]
    counts = {"valid": 0, "inside": 0}
    limit1, limit2 = info1.stock_max(), info2.stock_max()
    with rasterio.open(info1.path) as ds1, rasterio.open(info2.path) as ds2, \
            cog_writer(out, crs=info1.crs, transform=info1.transform, width=info1.width, height=info1.height,
                       band_names=SINK_BANDS, blocksize=block, tags=tags, band_tags=band_tags) as dst:
        for window in tqdm(windows, desc="change", unit="tile", disable=not progress):
            a = read_bands(ds1, idx1, window, info1.nodata, stock=0, stock_max=limit1, interval=(0, 1, 2), aoa=3)
            b = read_bands(ds2, idx2, window, info2.nodata, stock=0, stock_max=limit2, interval=(0, 1, 2), aoa=3)
            data = change_window(a, b, z1=z1, z2=z2, z_out=z_out, rho=rho, factor=factor)
            valid = np.isfinite(data[0])
            counts["valid"] += int(valid.sum())
            counts["inside"] += int((data[3][valid] == 1).sum())
            dst.write(np.where(np.isfinite(data), data, np.float32(FLOAT_NODATA)).astype(np.float32),
                      window=window)
        if counts["valid"] == 0:
            raise InputError(f"{info1.path} and {info2.path} have no pixel valid in both epochs; nothing to "
                             "difference (check their nodata and extents)")
    return Path(out)


def read_bands(ds, indexes, window, nodata, *, stock: int | None = None,
               stock_max: tuple[float, str] | None = None, sink_max: tuple[float, str] | None = None,
               interval: tuple[int, int, int] | None = None, aoa: int | None = None) -> np.ndarray:
    """Bands ``indexes`` of an open map over ``window``, float64, NaN where nodata (compared in the
    band's own type), scaled by the bands' scale and offset (value = raw x scale + offset: a map
    stored as integers). ``stock``: the position (in ``indexes``) of a carbon stock band, refused
    where negative: a stock cannot be, and -9999 or -3.4e38 there is a nodata value the file does
    not declare; and above ``stock_max`` (:meth:`MapInfo.stock_max`: a map in kg/ha or t CO2e/ha,
    or edited). ``sink_max``: the largest annual sink or emission (t CO2e/ha/yr) the first band may
    hold, its sign either way. ``interval``: the positions of a (value, lower, upper) triple, refused
    where the interval does not hold its value or has no width (:func:`check_interval_bands`).
    ``aoa``: the position of an area-of-applicability band, refused where it is not 0 or 1."""
    from sinks.cog import band_scales, nodata_in_dtype, read_window, undeclared_nodata

    raw = read_window(ds, indexes, window)
    data = raw.astype(np.float64)
    typed = nodata_in_dtype(nodata, raw.dtype)
    found = undeclared_nodata(raw) if typed is None else None
    if found:
        raise InputError(f"{ds.name}: holds {found[0]:g} at {found[1]} pixel(s) in rows {window.row_off}-"
                         f"{window.row_off + window.height}, a common nodata value, but the file declares no nodata; "
                         f"declare it (gdal_edit.py -a_nodata {found[0]:g} {ds.name})")
    for j, (scale, offset) in enumerate(band_scales(ds, indexes)):
        if (scale, offset) != (1.0, 0.0):
            data[j] = data[j] * scale + offset
    if typed is not None:
        data[raw == typed] = np.nan
    if sink_max is not None:
        limit, why = sink_max
        beyond = np.abs(data[0]) > limit
        if beyond.any():
            raise ImplausibleValueError(
                f"{ds.name}: {int(beyond.sum())} pixel(s) of its sink band are beyond ±{limit:,.0f} t CO2e/ha/yr "
                f"(e.g. {data[0][beyond][0]:,.6g}) in rows {window.row_off}-{window.row_off + window.height}, {why}; "
                "if that is a nodata value, declare it (gdal_edit.py -a_nodata VALUE); else is the map in another unit?")
    if stock is not None:
        negative = data[stock] < 0
        if negative.any():
            raise InputError(
                f"{ds.name}: {int(negative.sum())} pixel(s) of its carbon stock band are negative (down to "
                f"{data[stock][negative].min():g} Mg C/ha) in rows {window.row_off}-{window.row_off + window.height}; "
                "a stock cannot be. If that is a nodata value, declare it (gdal_edit.py -a_nodata VALUE); if a "
                "model extrapolated below 0, map again with this sinks, which holds predictions at 0")
        if stock_max is not None:
            limit, why = stock_max
            above = data[stock] > limit
            if above.any():
                raise ImplausibleValueError(
                    f"{ds.name}: {int(above.sum())} pixel(s) of its carbon stock band are above {limit:,.0f} Mg C/ha "
                    f"(up to {data[stock][above].max():,.6g}) in rows {window.row_off}-"
                    f"{window.row_off + window.height}, {why}; is the map in another unit (kg/ha, t CO2e/ha)?")
    if interval is not None:
        check_interval_bands(ds.name, window, *(data[j] for j in interval))
    if aoa is not None:
        flag = data[aoa]
        odd = np.isfinite(flag) & (flag != 0) & (flag != 1)
        if odd.any():
            raise InputError(
                f"{ds.name}: {int(odd.sum())} pixel(s) of its aoa band are neither 0 nor 1 (e.g. {flag[odd][0]:g}) "
                f"in rows {window.row_off}-{window.row_off + window.height}; the aoa band is a flag (1 inside the "
                "area of applicability, 0 outside): is another band (di?) labelled aoa, or was the map resampled "
                "by averaging (warp a map with -r nearest)?")
    return data


def check_interval_bands(name: str, window, value: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
    """Refuse pixels where ``lower <= value <= upper`` does not hold, or ``upper == lower`` at a
    value other than 0.

    The per-pixel sd is read from the interval's larger half-width (:func:`sinks.stats.half_width`); with the
    bands swapped or mislabelled (lower above the value, upper below it) that half-width would be
    negative and count as no uncertainty at all, and a zero-width interval says the stock is known
    exactly, which no mapped estimate is: either would pass an overstated lower bound to crediting.
    At 0 (bare land a quantile model holds at 0 at both ends: CQR whose calibration shrank to 0)
    nothing is overstated and the pixel passes. A tolerance of 1e-6 of the value allows for rounding
    in another tool's arithmetic."""
    with np.errstate(invalid="ignore"):
        slack = 1e-6 * np.maximum(np.abs(value), 1.0)
        where = f"in rows {window.row_off}-{window.row_off + window.height}"
        for bad, what in ((lower > value + slack, "its lower band is above its value band"),
                          (upper < value - slack, "its upper band is below its value band"),
                          ((upper - lower <= 0) & (value != 0), "its interval has no width (upper = lower)")):
            if bad.any():
                row, col = (int(i[0]) for i in np.nonzero(bad))
                raise InputError(
                    f"{name}: {what} at {int(bad.sum())} pixel(s) {where} (first at row "
                    f"{window.row_off + row}, column {window.col_off + col}: value {value[row, col]:g}, lower "
                    f"{lower[row, col]:g}, upper {upper[row, col]:g}); the interval gives the map's uncertainty "
                    "and would be read as none or less than it is. Are the bands swapped or mislabelled, or was the "
                    "map resampled band by band (warp a map with -r nearest)? Pixels with no estimate should be nodata")


def change_window(a: np.ndarray, b: np.ndarray, *, z1: float, z2: float, z_out: float, rho: float,
                  factor: float) -> np.ndarray:
    """Sink bands (4, h, w) from the (carbon, lower, upper, aoa) stacks of two epochs; NaN = nodata."""
    valid = np.isfinite(a).all(axis=0) & np.isfinite(b).all(axis=0)
    c1, l1, u1, aoa1 = a
    c2, l2, u2, aoa2 = b
    with np.errstate(invalid="ignore"):
        s1 = half_width(c1, l1, u1) / z1
        s2 = half_width(c2, l2, u2) / z2
        var = np.maximum(s1 ** 2 + s2 ** 2 - 2 * rho * s1 * s2, 0)
        sink = (c2 - c1) * factor
        sd = np.sqrt(var) * factor
        aoa = ((aoa1 == 1) & (aoa2 == 1)).astype(np.float64)
    out = np.stack([sink, sink - z_out * sd, sink + z_out * sd, aoa])
    out[:, ~valid] = np.nan
    return out
