"""Apply a rule set to parcels: each rule's status with evidence, and one verdict per parcel.

Verdict: ``ineligible`` if any rule fails; else ``undetermined`` if any rule is unknown; else
``eligible``. Rules whose optional layer was not given are ``not_checked`` and do not change the
verdict (the report lists them). Rasters are read only around each parcel.

Before any parcel is assessed, each layer is checked as a whole against its declared encoding
(:class:`sinks.eligibility.rules.LayerEncoding`): it overlaps the parcels, has the year bands the
rules need, and holds no value outside its declared classes and nodata.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from pyproj import CRS
from rasterio.windows import Window, from_bounds
from shapely.geometry import box as shapely_box
from tqdm.auto import tqdm

from sinks.eligibility.checks import CHECKS, LAYER_BANDS, LayerPixels, ParcelContext, RuleResult, required_years
from sinks.eligibility.rules import LayerEncoding, RuleSet, _fmt
from sinks.errors import InputError
from sinks.io import check_ids, format_rows, generated_time, sha256_file
from sinks.mapping.zonal import EqualArea
from sinks.pixels import coverage_fractions, pixel_window
from sinks.validate import did_you_mean

VERDICTS = ("eligible", "ineligible", "undetermined")
#: Pixels covered by less than this fraction of their area are slivers of rounding, not coverage.
SLIVER = 1e-9


@dataclass
class ParcelResult:
    parcel_id: str
    verdict: str
    area_ha: float
    start_date: str | None
    rules: dict[str, RuleResult]
    geometry: object = field(repr=False, default=None)
    creditable: dict | None = None  # filled by sinks.eligibility.crediting.credit


@dataclass
class EligibilityReport:
    ruleset: RuleSet
    layers: dict[str, dict]
    parcels: list[ParcelResult]
    crs: str
    generated: str = field(default_factory=generated_time)
    crediting: dict | None = None  # the crediting block, filled by sinks.eligibility.crediting.credit
    inputs: dict | None = None  # input files with sha256 and the command's options (the sinks command's)

    def counts(self) -> dict[str, int]:
        return {v: sum(p.verdict == v for p in self.parcels) for v in VERDICTS}


def verdict(results: dict[str, RuleResult]) -> str:
    statuses = {r.status for r in results.values()}
    return "ineligible" if "fail" in statuses else "undetermined" if "unknown" in statuses else "eligible"


def check_parcels(parcels, *, start_date_column: str = "start_date") -> None:
    """Raise :class:`InputError` for parcels that cannot be assessed, naming the rows."""
    if "parcel_id" not in parcels.columns:
        raise InputError("parcels: missing required column parcel_id")
    if parcels.crs is None:
        raise InputError("parcels: geometry has no CRS (pass --crs)")
    if len(parcels) == 0:
        raise InputError("parcels: the table has no rows")
    ids = parcels["parcel_id"]
    check_ids(ids, "parcels", "parcel_id")
    geom = parcels.geometry
    bad = np.flatnonzero((geom.isna() | ~geom.geom_type.isin(["Polygon", "MultiPolygon"])).to_numpy())
    if bad.size:
        raise InputError(f"parcels: row(s) {format_rows(bad)} are not polygons")
    bad = np.flatnonzero((~geom.is_valid | geom.is_empty).to_numpy())
    if bad.size:
        import shapely

        shown = "; ".join(f"row {i + 1} (parcel {ids.iloc[i]!s}): "
                          f"{'empty' if geom.iloc[i].is_empty else shapely.is_valid_reason(geom.iloc[i])}"
                          for i in bad[:5]) + (f"; and {bad.size - 5} more" if bad.size > 5 else "")
        raise InputError(f"parcels: invalid or empty polygon in {shown}. Fix them (e.g. QGIS 'Fix geometries' or "
                         "shapely.make_valid, then check the result); sinks never repairs a polygon silently")
    refuse_overlaps(list(geom), ids)
    if start_date_column in parcels.columns:
        parse_start_dates(parcels, start_date_column)


def refuse_overlaps(geoms, ids) -> None:
    """Refuse parcels that overlap: their area, and in crediting their removals, would be counted twice
    (an overlap of under 1e-9 of the smaller parcel, a shared edge's rounding, is allowed)."""
    import shapely

    overlaps = []
    tree = shapely.STRtree(geoms)
    for i, j in zip(*tree.query(geoms, predicate="intersects")):
        if i < j and shapely.area(shapely.intersection(geoms[i], geoms[j])) > 1e-9 * min(
                shapely.area(geoms[i]), shapely.area(geoms[j])):
            overlaps.append(f"{ids.iloc[i]} and {ids.iloc[j]}")
    if overlaps:
        more = f"; and {len(overlaps) - 5} more" if len(overlaps) > 5 else ""
        raise InputError(f"parcels: these parcels overlap ({'; '.join(overlaps[:5])}{more}): their area and removals "
                         "would be counted twice; give non-overlapping parcels")


def _to_date(value) -> dt.date | None:
    """A start date from a cell (ISO string, date, timestamp); None when missing; ValueError if bad."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime)):
        day = value.date()
    elif isinstance(value, dt.date):
        day = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            day = dt.datetime.fromisoformat(text).date()  # "2025-01-01T00:00:00"; ValueError if not a date
    else:
        raise ValueError(f"not a date: {value!r}")
    if not 1900 <= day.year <= 2100:
        raise ValueError(f"implausible year {day.year}")
    return day


def parse_start_dates(parcels, column: str = "start_date") -> list[dt.date | None]:
    """Each parcel's start date (None where empty); :class:`InputError` names the rows and parcels
    whose value is not an ISO date (YYYY-MM-DD) of a year 1900-2100."""
    out, bad = [], []
    for i, value in enumerate(parcels[column].tolist()):
        try:
            out.append(_to_date(value))
        except ValueError:
            out.append(None)
            bad.append(i)
    if bad:
        ids = parcels["parcel_id"].tolist()
        values = parcels[column].tolist()  # plain Python values: 43891.0, not np.float64(43891.0)
        shown = ", ".join(f"row {i + 1} (parcel {ids[i]!s}: {values[i]!r})" for i in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise InputError(f"parcels: {column} is not an ISO date (YYYY-MM-DD) in {shown}{more}")
    return out


def _equal_area(geometries):
    """The geometries in a Lambert azimuthal equal-area projection centred on them (metres)."""
    lonlat = geometries.to_crs("EPSG:4326")
    minx, miny, maxx, maxy = lonlat.total_bounds
    laea = CRS.from_proj4(f"+proj=laea +lat_0={(miny + maxy) / 2} +lon_0={(minx + maxx) / 2} +datum=WGS84 +units=m")
    return geometries.to_crs(laea)


def equal_area_ha(geometries) -> np.ndarray:
    """Areas (ha) in a Lambert azimuthal equal-area projection centred on the parcels."""
    return _equal_area(geometries).area.to_numpy() / 10_000


def contiguous_pieces_ha(geometries) -> list[tuple[float, ...]]:
    """Each parcel's contiguous pieces' areas (ha, equal-area as :func:`equal_area_ha`): the parts
    of a MultiPolygon that touch or overlap are one piece."""
    import shapely

    return [tuple(float(part.area) / 10_000 for part in shapely.get_parts(shapely.union_all(shapely.get_parts(g))))
            for g in _equal_area(geometries).to_numpy()]


class _Layer:
    def __init__(self, name: str, path: str, encoding: LayerEncoding):
        if not Path(path).exists():
            raise InputError(f"layer {name}: {path}: raster not found")
        try:
            self.ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"layer {name}: {path}: cannot open raster ({exc})") from exc
        if self.ds.crs is None:
            self.ds.close()
            raise InputError(f"layer {name}: {path}: raster has no CRS")
        self.name, self.path, self.encoding = name, path, encoding
        # names as every check reads them: '2017 ' is 2017 (a layer check stripped, a rule did not)
        self.bands = [d.strip() if d and d.strip() else str(i) for i, d in enumerate(self.ds.descriptions, start=1)]
        # declared values as the raster stores them (0.7 in a float32 raster is float32(0.7))
        dtype = np.dtype(self.ds.dtypes[0])
        as_stored = (lambda v: np.asarray(v, dtype=dtype).astype("float64")) if dtype.kind == "f" else \
            (lambda v: np.asarray(v, dtype="float64"))
        self.classes = {c: as_stored(v) for c, v in encoding.classes.items()}
        self.extra_nodata = as_stored(encoding.nodata)
        self.values_found: dict[str, int] = {}
        self.nodata_pixels = 0
        try:
            self.ea = EqualArea(self.ds.crs, self.ds.transform)
        except InputError as exc:
            self.ds.close()
            raise InputError(f"layer {name}: {path}: {exc}") from None
        t = self.ds.transform
        x0, x1 = sorted((t.c, t.c + self.ds.width * t.a))
        y0, y1 = sorted((t.f, t.f + self.ds.height * t.e))
        self.box = shapely_box(x0, y0, x1, y1)

    def pixels(self, geometry) -> LayerPixels | None:
        """The parcel's pixels with the exact equal-area hectares of their parts inside it.

        Each pixel the parcel covers, by any fraction, counts with the ellipsoidal area of the part
        of it inside the parcel (:func:`sinks.pixels.coverage_fractions` weighted by
        :class:`sinks.mapping.zonal.EqualArea`); the part of the parcel beyond the raster's edge is
        measured too (``outside_ha``) and counts as no data. ``None`` when the parcel misses the raster.
        """
        import shapely

        ds = self.ds
        window = pixel_window(geometry, ds.transform, ds.height, ds.width)
        if window is None or shapely.area(shapely.intersection(geometry, self.box)) == 0:
            return None
        r0, c0, h, w = window
        frac, cx, cy = coverage_fractions(geometry, ds.transform, window)
        hit = frac > SLIVER
        if not hit.any():
            return None
        lr, lc = np.nonzero(hit)
        areas = self.ea.cover_ha(lr + r0, lc + c0, frac[hit], cx[hit], cy[hit])
        data = ds.read(window=Window(c0, r0, w, h), masked=True)
        values = data.astype("float64").filled(np.nan)[:, hit]
        if self.extra_nodata.size:
            values[np.isin(values, self.extra_nodata)] = np.nan
        outside = self.ea.geometry_ha(shapely.difference(geometry, self.box)) if not self.box.contains(geometry) else 0.0
        return LayerPixels(values, self.bands, classes=self.classes, areas_ha=areas, outside_ha=float(outside))

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": sha256_file(self.path), "crs": self.ds.crs.to_string(),
                "bands": self.bands, "resolution": list(self.ds.res),
                "encoding": {**self.encoding.describe(), "raster_nodata": self.ds.nodata},
                "values_found": self.values_found, "nodata_pixels": self.nodata_pixels}

    # ---- layer-level checks, before any parcel is assessed ------------------------------------

    def check_overlap(self, geometries) -> None:
        """At least one parcel overlaps the raster (else the CRS or the file is likely wrong)."""
        b = self.ds.bounds
        minx, miny, maxx, maxy = geometries.total_bounds
        if minx >= b.right or maxx <= b.left or miny >= b.top or maxy <= b.bottom:
            raise InputError(f"layer {self.name}: {self.path}: no parcel overlaps the raster (raster bounds "
                             f"{_bounds(b)}, parcels {_bounds((minx, miny, maxx, maxy))} in {self.ds.crs.to_string()}): "
                             "check the parcels' CRS and that this is the right raster")

    def year_bands(self, rule) -> dict[int, int]:
        """``{year: band index}`` of a layer with one band per year; :class:`InputError` if the bands are not years."""
        not_years = [b for b in self.bands if not (b.isdigit() and len(b) == 4)]
        if not_years:
            raise InputError(f"layer {self.name}: {self.path}: rule '{rule.id}' reads one band per year, named by "
                             f"its year (band descriptions \"2019\", \"2020\", ...), but found band(s) named "
                             f"{', '.join(repr(b) for b in not_years[:5])}: set the band descriptions to the years")
        return {int(b): i for i, b in enumerate(self.bands)}

    def check_years(self, rule, starts) -> list[int]:
        """The band indexes ``rule`` needs for these start dates; one :class:`InputError` naming the
        missing years."""
        available = self.year_bands(rule)
        needed = sorted({y for start in set(starts) if start is not None for y in required_years(rule, start)[0]})
        missing = [y for y in needed if y not in available]
        if missing:
            have = sorted(available)
            raise InputError(f"layer {self.name}: {self.path}: rule '{rule.id}' needs the years {_span(needed)} for "
                             f"the parcels' start dates, but the layer has {_span(have) if have else 'no year band'}; "
                             f"missing {_span(missing)}: give a history with those years (or check the start dates "
                             "and the rule's parameters)")
        return [available[y] for y in needed]

    def check_values(self, bands: list[int], geometries) -> None:
        """Every value over the parcels' extent in ``bands`` is a declared class value or nodata."""
        if not bands:
            return
        ds = self.ds
        b = ds.bounds
        minx, miny, maxx, maxy = geometries.total_bounds
        left, bottom, right, top = max(minx, b.left), max(miny, b.bottom), min(maxx, b.right), min(maxy, b.top)
        w = from_bounds(left, bottom, right, top, ds.transform)
        col0, row0 = max(int(np.floor(w.col_off)), 0), max(int(np.floor(w.row_off)), 0)
        col1 = min(int(np.ceil(w.col_off + w.width)), ds.width)
        row1 = min(int(np.ceil(w.row_off + w.height)), ds.height)
        col1, row1 = max(col1, col0 + 1), max(row1, row0 + 1)
        step = max(1, 4_000_000 // max(1, (col1 - col0) * len(bands)))
        counts: dict[float, int] = {}
        nodata = 0
        for r in range(row0, row1, step):
            window = Window(col0, r, col1 - col0, min(step, row1 - r))
            data = ds.read([i + 1 for i in bands], window=window, masked=True)
            flat = data.compressed().astype("float64")
            finite = flat[np.isfinite(flat)]
            nodata += int(data.size - finite.size)
            values, n = np.unique(finite, return_counts=True)
            for v, k in zip(values.tolist(), n.tolist()):
                counts[v] = counts.get(v, 0) + k
        declared = {float(v) for vals in self.classes.values() for v in vals}
        extra = {float(v) for v in self.extra_nodata}
        undeclared = sorted(v for v in counts if v not in declared | extra)
        self.values_found = {_fmt(v): k for v, k in sorted(counts.items())}
        self.nodata_pixels = nodata + sum(k for v, k in counts.items() if v in extra)
        if undeclared:
            found = ", ".join(f"{_fmt(v)} ({counts[v]:,} px)" for v in sorted(counts, key=lambda v: -counts[v])[:8])
            if len(counts) > 8:
                found += f" and {len(counts) - 8} more values"
            raster_nd = f", raster nodata {_fmt(ds.nodata)}" if ds.nodata is not None else ""
            example = ";".join(f"{c}=V" for c in self.encoding.classes)
            raise InputError(f"layer {self.name}: {self.path}: value(s) {', '.join(_fmt(v) for v in undeclared[:8])} "
                             f"are not in the declared encoding ({self.encoding.declared()}{raster_nd}); values found "
                             f"over the parcels: {found}; if the map is coded otherwise, declare it with "
                             f"--layer-values {self.name}:{example} (or [layers.{self.name}] in the rule set)")


def _bounds(b) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in tuple(b)) + ")"


def _span(years: list[int]) -> str:
    if years and years == list(range(years[0], years[-1] + 1)) and len(years) > 2:
        return f"{years[0]}-{years[-1]}"
    return ", ".join(map(str, years[:8])) + (f" and {len(years) - 8} more" if len(years) > 8 else "")


def assess(parcels, ruleset: RuleSet, layers: dict[str, str | os.PathLike], *,
           start_date: str | dt.date | None = None, start_date_column: str = "start_date",
           layer_values: dict[str, dict] | None = None, progress: bool = True) -> EligibilityReport:
    """Apply ``ruleset`` to ``parcels`` (GeoDataFrame with parcel_id, polygons, CRS).

    ``layers`` maps layer names the rules use (e.g. ``forest_history``, ``wetland``) to rasters.
    ``start_date`` is used where a parcel has no ``start_date`` of its own. ``layer_values``
    replaces the declared encoding of layers, ``{layer: {class: [values], "nodata": [values]}}``
    (e.g. ``{"forest_history": {"forest": [100], "non_forest": [0]}}``).

    Before any parcel is assessed each layer is checked as a whole: it overlaps the parcels, it has
    a band for every year the rules need, and every value over the parcels' extent is declared in
    its encoding (or is nodata); each failure is one :class:`InputError`.
    """
    ruleset = ruleset.with_layer_values(layer_values)
    check_parcels(parcels, start_date_column=start_date_column)
    try:
        default_start = _to_date(start_date) if start_date else None
    except ValueError:
        raise InputError(f"start date {start_date!r} is not an ISO date (YYYY-MM-DD) of a year 1900-2100") from None
    layers = {str(name): path for name, path in layers.items()}
    unused = sorted(set(layers) - set(ruleset.layers))
    if unused:
        raise InputError(f"layer '{unused[0]}'{did_you_mean(unused[0], ruleset.layers)} is not used by rule set "
                         f"{ruleset.id} (it reads {', '.join(ruleset.layers)})")
    missing = [name for name, required in ruleset.layers.items() if required and name not in layers]
    if missing:
        raise InputError(f"rule set {ruleset.id} needs layer(s) {', '.join(missing)}: pass --layer NAME=RASTER")
    own = (parse_start_dates(parcels, start_date_column) if start_date_column in parcels.columns
           else [None] * len(parcels))
    starts = [day if day is not None else default_start for day in own]
    opened: dict[str, _Layer] = {}
    try:
        for name, path in layers.items():
            opened[name] = _Layer(name, str(path), ruleset.encodings[name])
        areas, pieces = equal_area_ha(parcels.geometry), contiguous_pieces_ha(parcels.geometry)
        in_crs = {name: parcels.geometry.to_crs(layer.ds.crs) for name, layer in opened.items()}
        for name, layer in opened.items():
            layer.check_overlap(in_crs[name])
            bands: set[int] = set()
            for rule in ruleset.rules:
                if rule.layer != name:
                    continue
                if LAYER_BANDS[rule.check] == "years":
                    bands.update(layer.check_years(rule, starts))
                else:
                    if layer.ds.count != 1:
                        raise InputError(f"layer {name}: {layer.path}: has {layer.ds.count} bands but rule "
                                         f"'{rule.id}' reads a one-band layer: give the single-band raster")
                    bands.add(0)
            layer.check_values(sorted(bands), in_crs[name])
        results = []
        for i in tqdm(range(len(parcels)), desc="eligibility", unit="parcel", disable=not progress):
            start = starts[i]
            cache: dict[str, LayerPixels | None] = {}

            def pixels(name: str, i=i, cache=cache):
                if name not in cache:
                    cache[name] = opened[name].pixels(in_crs[name].iloc[i])
                return cache[name]

            context = ParcelContext(str(parcels["parcel_id"].iloc[i]), float(areas[i]), start, pixels, pieces[i])
            rule_results = {}
            for rule in ruleset.rules:
                if rule.layer and rule.layer not in opened:
                    rule_results[rule.id] = RuleResult("not_checked", f"no '{rule.layer}' layer was given")
                else:
                    rule_results[rule.id] = CHECKS[rule.check](rule, context)
            results.append(ParcelResult(context.parcel_id, verdict(rule_results), context.area_ha,
                                        start.isoformat() if start else None, rule_results,
                                        parcels.geometry.iloc[i]))
        described = {name: layer.describe() for name, layer in opened.items()}
    finally:
        for layer in opened.values():
            layer.ds.close()
    return EligibilityReport(ruleset, described, results, parcels.crs.to_string())
