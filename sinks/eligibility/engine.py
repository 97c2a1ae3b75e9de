"""Apply a rule set to parcels: each rule's status with evidence, and one verdict per parcel.

Verdict: ``ineligible`` if any rule fails; else ``undetermined`` if any rule is unknown; else
``eligible``. Rules whose optional layer was not given are ``not_checked`` and do not change the
verdict (the report lists them). Rasters are read only around each parcel.
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
from tqdm.auto import tqdm

from sinks.eligibility.checks import CHECKS, LayerPixels, ParcelContext, RuleResult
from sinks.eligibility.rules import RuleSet
from sinks.errors import InputError
from sinks.io import format_rows, sha256_file
from sinks.pixels import polygon_pixels

VERDICTS = ("eligible", "ineligible", "undetermined")


@dataclass
class ParcelResult:
    parcel_id: str
    verdict: str
    area_ha: float
    start_date: str | None
    rules: dict[str, RuleResult]
    geometry: object = field(repr=False, default=None)


@dataclass
class EligibilityReport:
    ruleset: RuleSet
    layers: dict[str, dict]
    parcels: list[ParcelResult]
    crs: str
    generated: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

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
        raise InputError("parcels: geometry has no CRS")
    ids = parcels["parcel_id"]
    bad = np.flatnonzero(ids.isna().to_numpy())
    if bad.size:
        raise InputError(f"parcels: parcel_id missing in row(s) {format_rows(bad)}")
    dup = np.flatnonzero(ids.duplicated(keep=False).to_numpy())
    if dup.size:
        raise InputError(f"parcels: duplicate parcel_id in row(s) {format_rows(dup)}")
    geom = parcels.geometry
    bad = np.flatnonzero((geom.isna() | ~geom.geom_type.isin(["Polygon", "MultiPolygon"])).to_numpy())
    if bad.size:
        raise InputError(f"parcels: row(s) {format_rows(bad)} are not polygons")
    bad = np.flatnonzero((~geom.is_valid | geom.is_empty).to_numpy())
    if bad.size:
        raise InputError(f"parcels: invalid or empty polygon in row(s) {format_rows(bad)} (fix with make_valid)")
    if start_date_column in parcels.columns:
        parsed = pd.to_datetime(parcels[start_date_column], errors="coerce", format="ISO8601")
        bad = np.flatnonzero((parsed.isna() & parcels[start_date_column].notna()).to_numpy())
        if bad.size:
            raise InputError(f"parcels: {start_date_column} is not an ISO date (YYYY-MM-DD) in row(s) {format_rows(bad)}")


def equal_area_ha(geometries) -> np.ndarray:
    """Areas (ha) in a Lambert azimuthal equal-area projection centred on the parcels."""
    lonlat = geometries.to_crs("EPSG:4326")
    minx, miny, maxx, maxy = lonlat.total_bounds
    laea = CRS.from_proj4(f"+proj=laea +lat_0={(miny + maxy) / 2} +lon_0={(minx + maxx) / 2} +datum=WGS84 +units=m")
    return geometries.to_crs(laea).area.to_numpy() / 10_000


class _Layer:
    def __init__(self, name: str, path: str):
        if not Path(path).exists():
            raise InputError(f"layer {name}: {path}: raster not found")
        try:
            self.ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"layer {name}: {path}: cannot open raster ({exc})") from exc
        if self.ds.crs is None:
            self.ds.close()
            raise InputError(f"layer {name}: {path}: raster has no CRS")
        self.name, self.path = name, path
        self.bands = [d if d else str(i) for i, d in enumerate(self.ds.descriptions, start=1)]

    def pixels(self, geometry) -> LayerPixels | None:
        ds = self.ds
        left, bottom, right, top = geometry.bounds
        b = ds.bounds
        if left >= b.right or right <= b.left or bottom >= b.top or top <= b.bottom:
            return None
        w = from_bounds(left, bottom, right, top, ds.transform)
        col0, row0 = int(np.floor(w.col_off)), int(np.floor(w.row_off))
        window = Window(col0, row0, int(np.ceil(w.col_off + w.width)) - col0 or 1,
                        int(np.ceil(w.row_off + w.height)) - row0 or 1)
        data = ds.read(window=window, boundless=True, masked=True)
        mask, centroid = polygon_pixels(geometry, ds.window_transform(window), int(window.height), int(window.width))
        values = data.astype("float64").filled(np.nan)[:, mask]
        return LayerPixels(values, self.bands, centroid)

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": sha256_file(self.path), "crs": self.ds.crs.to_string(),
                "bands": self.bands, "resolution": list(self.ds.res)}


def assess(parcels, ruleset: RuleSet, layers: dict[str, str | os.PathLike], *,
           start_date: str | dt.date | None = None, start_date_column: str = "start_date",
           progress: bool = True) -> EligibilityReport:
    """Apply ``ruleset`` to ``parcels`` (GeoDataFrame with parcel_id, polygons, CRS).

    ``layers`` maps layer names the rules use (e.g. ``forest_history``, ``wetland``) to rasters.
    ``start_date`` is used where a parcel has no ``start_date`` of its own.
    """
    check_parcels(parcels, start_date_column=start_date_column)
    default_start = dt.date.fromisoformat(str(start_date)) if start_date else None
    missing = [name for name, required in ruleset.layers.items() if required and name not in layers]
    if missing:
        raise InputError(f"rule set {ruleset.id} needs layer(s) {', '.join(missing)}: pass --layer NAME=RASTER")
    unused = sorted(set(layers) - set(ruleset.layers))
    if unused:
        raise InputError(f"layer(s) {', '.join(unused)} are not used by rule set {ruleset.id} "
                         f"(it reads {', '.join(ruleset.layers)})")
    opened: dict[str, _Layer] = {}
    try:
        for name, path in layers.items():
            opened[name] = _Layer(name, str(path))
        areas = equal_area_ha(parcels.geometry)
        in_crs = {name: parcels.geometry.to_crs(layer.ds.crs) for name, layer in opened.items()}
        starts = (pd.to_datetime(parcels[start_date_column], errors="coerce", format="ISO8601")
                  if start_date_column in parcels.columns else pd.Series(pd.NaT, index=parcels.index))
        results = []
        for i in tqdm(range(len(parcels)), desc="eligibility", unit="parcel", disable=not progress):
            start = starts.iloc[i].date() if pd.notna(starts.iloc[i]) else default_start
            cache: dict[str, LayerPixels | None] = {}

            def pixels(name: str, i=i, cache=cache):
                if name not in cache:
                    cache[name] = opened[name].pixels(in_crs[name].iloc[i])
                return cache[name]

            context = ParcelContext(str(parcels["parcel_id"].iloc[i]), float(areas[i]), start, pixels)
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
