"""Check functions: one per kind of rule. Each returns a :class:`RuleResult` with evidence.

A check sees one parcel (:class:`ParcelContext`): its geometry, equal-area area, start date and a
reader for each layer that returns the parcel's pixels with the exact equal-area hectares of their
parts inside it (see :class:`LayerPixels`).
Statuses: ``pass``, ``fail``, ``unknown`` (the data cannot decide), ``not_checked`` (an optional
layer was not given).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sinks import validate
from sinks.errors import SpecError

STATUSES = ("pass", "fail", "unknown", "not_checked")
#: Shares within this of a limit are taken as equal to it (rounding of exact pixel-part areas).
TOLERANCE = 1e-9


@dataclass
class RuleResult:
    status: str
    reason: str
    evidence: dict = field(default_factory=dict)


@dataclass
class LayerPixels:
    """A parcel's pixels in one layer: ``values`` (bands, n) with NaN for nodata, band names, the
    layer's declared classes (``{class: values}``, see :class:`sinks.eligibility.rules.LayerEncoding`),
    and the exact equal-area hectares of each pixel's part inside the parcel (``areas_ha``, from
    :func:`sinks.pixels.coverage_fractions`), plus the parcel's hectares beyond the raster's edge
    (``outside_ha``, no data). Shares are shares of area, not counts of pixel centres: a parcel
    smaller than a pixel has its real share of the pixels it lies on."""

    values: np.ndarray
    bands: list[str]
    classes: dict = field(default_factory=dict)
    areas_ha: np.ndarray | None = None
    outside_ha: float = 0.0

    def __post_init__(self):
        if self.areas_ha is None:  # equal weights (pixel counts), for callers without areas
            self.areas_ha = np.ones(self.values.shape[1])
        self.areas_ha = np.asarray(self.areas_ha, dtype=float)

    def fraction(self, row: np.ndarray, name: str) -> float | None:
        """Share of the area with data (non-NaN) of ``row`` in class ``name``; None if none has data."""
        valid = np.isfinite(row)
        total = float(self.areas_ha[valid].sum())
        if not valid.any() or total <= 0:
            return None
        return float(self.areas_ha[valid & np.isin(row, self.classes[name])].sum() / total)

    def area_evidence(self, row: np.ndarray, name: str | None = None) -> dict:
        """Area shares of one band on the parcel: hectares with data, without data (beyond the
        raster's edge included), and of class ``name``, with their fractions of the parcel."""
        valid = np.isfinite(row)
        data_ha = float(self.areas_ha[valid].sum())
        nodata_ha = float(self.areas_ha[~valid].sum()) + self.outside_ha
        total = data_ha + nodata_ha
        out = {"pixels": self.n, "area_with_data_ha": round(data_ha, 6), "nodata_area_ha": round(nodata_ha, 6),
               "outside_raster_ha": round(self.outside_ha, 6),
               "nodata_share": round(nodata_ha / total, 6) if total > 0 else None}
        if name is not None:
            class_ha = float(self.areas_ha[valid & np.isin(row, self.classes[name])].sum())
            out.update({f"{name}_area_ha": round(class_ha, 6),
                        f"{name}_share_of_parcel": round(class_ha / total, 6) if total > 0 else None})
        return out

    def has_nodata(self, row: np.ndarray) -> bool:
        return bool((~np.isfinite(row)).any()) or self.outside_ha > 0

    @property
    def n(self) -> int:
        return self.values.shape[1]


@dataclass
class ParcelContext:
    parcel_id: str
    area_ha: float
    start_date: dt.date | None
    pixels: Callable[[str], LayerPixels | None]  # layer name -> pixels, None when outside the layer
    pieces_ha: tuple[float, ...] = ()  # equal-area areas of the contiguous pieces (one for a polygon)


def min_area_ha(rule, parcel: ParcelContext) -> RuleResult:
    """Equal-area contiguous area >= ``min_area_ha``: every contiguous piece of the parcel must reach
    it (the methodologies' minimum is of contiguous land, 连续面积: eleven 225 m² pieces of one
    MultiPolygon are not a 0.25 ha parcel); a methodology that kept an older, larger minimum for
    projects started up to a date gives it as ``legacy_min_area_ha`` and ``legacy_until`` (ISO date)."""
    minimum = float(rule.params["min_area_ha"])
    pieces = parcel.pieces_ha or (parcel.area_ha,)
    area = min(pieces)  # the smallest contiguous piece decides
    evidence = {"area_ha": round(parcel.area_ha, 6), "min_area_ha": minimum, "pieces": len(pieces),
                "smallest_piece_ha": round(area, 6)}
    shown = f"{area:.6g}"  # not rounded onto the minimum: 0.039998 ha is not '0.0400 below 0.04'
    what = f"area {shown} ha" if len(pieces) == 1 else f"smallest of {len(pieces)} contiguous pieces {shown} ha"
    if "legacy_min_area_ha" in rule.params:
        legacy, until = float(rule.params["legacy_min_area_ha"]), dt.date.fromisoformat(str(rule.params["legacy_until"]))
        evidence.update(legacy_min_area_ha=legacy, legacy_until=until.isoformat())
        if parcel.start_date is None:
            if min(minimum, legacy) <= area < max(minimum, legacy):
                return RuleResult("unknown", f"{what}: the minimum is {legacy:g} ha for projects "
                                  f"started by {until.isoformat()}, else {minimum:g} ha, and this parcel has no start "
                                  "date", evidence)
            minimum = max(minimum, legacy)
        elif parcel.start_date <= until:
            minimum = legacy
        evidence["applied_min_area_ha"] = minimum
    if area >= minimum:
        return RuleResult("pass", f"{what} >= {minimum:g} ha", evidence)
    return RuleResult("fail", f"{what} is below the minimum {minimum:g} ha", evidence)


def _outside(layer: str) -> RuleResult:
    return RuleResult("unknown", f"parcel lies outside the '{layer}' layer", {"layer": layer})


def required_years(rule, start: dt.date) -> tuple[list[int], str]:
    """Calendar years that must be non-forest, and how they were chosen: every year from the
    ``since`` cut-off date, or the ``years_before_start`` years just before the start year."""
    if "since" in rule.params:
        since = dt.date.fromisoformat(str(rule.params["since"]))
        return list(range(since.year, start.year)), f"after the {since.isoformat()} cut-off"
    n_years = int(rule.params["years_before_start"])
    return list(range(start.year - n_years, start.year)), f"within {n_years} years before the {start.isoformat()} start"


def _forest_by_year(rule, parcel: ParcelContext, fails, bound_key: str):
    """The per-year forest evidence shared by the forest-history checks.

    ``fails(forest_fraction)`` says whether a year breaks the rule. Returns ``(result, None)`` when
    the parcel cannot be judged at all, else ``(None, (years, window, evidence, failed, missing,
    unknown))``.
    """
    if parcel.start_date is None:
        return RuleResult("unknown", "no project start date for this parcel (give start_date or --start-date)"), None
    pixels = parcel.pixels(rule.layer)
    if pixels is None:
        return _outside(rule.layer), None
    years, window = required_years(rule, parcel.start_date)
    available = {name: i for i, name in enumerate(pixels.bands) if name.isdigit()}
    missing = [y for y in years if str(y) not in available]
    per_year, failed, unknown = {}, [], []
    for year in years:
        if str(year) not in available:
            continue
        row = pixels.values[available[str(year)]]
        forest = pixels.fraction(row, "forest")
        per_year[str(year)] = {"forest_fraction": None if forest is None else round(forest, 6),
                               **pixels.area_evidence(row, "forest")}
        if forest is not None and fails(forest):
            failed.append(year)
        elif forest is None or pixels.has_nodata(row):
            unknown.append(year)
    evidence = {"required_years": [years[0], years[-1]] if years else [], "pixels": pixels.n,
                "parcel_area_ha": round(parcel.area_ha, 6), bound_key: float(rule.params[bound_key]),
                "years": per_year, "missing_years": missing}
    return None, (years, window, evidence, failed, missing, unknown)


def _history_result(found, fail_reason: str, pass_reason: str) -> RuleResult:
    years, window, evidence, failed, missing, unknown = found
    if not years:  # a start in the cut-off's year or before it: no year of the window to check
        return RuleResult("unknown", f"no year of the history lies in the required window ({window}): the start "
                                     "is in the cut-off's year or before it, so the rule cannot be checked", evidence)
    if failed:
        return RuleResult("fail", f"{fail_reason} in {_years(failed)} ({window})", evidence)
    if missing:
        return RuleResult("unknown", f"the forest history lacks {_years(missing)}", evidence)
    if unknown:
        return RuleResult("unknown", f"nodata on the parcel in {_years(unknown)}", evidence)
    return RuleResult("pass", f"{pass_reason} in every year {years[0]}-{years[-1]}", evidence)


def non_forest_history(rule, parcel: ParcelContext) -> RuleResult:
    """Non-forest (no pixel of the layer's ``forest`` class beyond the tolerance) in every required
    year before the start year (see :func:`required_years`)."""
    tolerance = float(rule.params["max_forest_fraction"])
    result, found = _forest_by_year(rule, parcel, lambda forest: forest > tolerance + TOLERANCE,
                                    "max_forest_fraction")
    return result or _history_result(found, "forest on the parcel", "non-forest")


def forest_history_min(rule, parcel: ParcelContext) -> RuleResult:
    """Forest (the layer's ``forest`` class on at least ``min_forest_fraction`` of the area with
    data) in every required year before the start year (see :func:`required_years`): the
    condition of forest-management methodologies, whose land must already be forest."""
    minimum = float(rule.params["min_forest_fraction"])
    result, found = _forest_by_year(rule, parcel, lambda forest: forest < minimum - TOLERANCE,
                                    "min_forest_fraction")
    return result or _history_result(found, f"less than {minimum:.0%} forest on the parcel", "forest")


def raster_fraction_max(rule, parcel: ParcelContext) -> RuleResult:
    """Fraction of parcel pixels in the layer's class ``class`` (e.g. ``wetland``) is at most ``max_fraction``."""
    limit, name = float(rule.params["max_fraction"]), rule.params["class"]
    pixels = parcel.pixels(rule.layer)
    if pixels is None:
        return _outside(rule.layer)
    row = pixels.values[0]
    fraction = pixels.fraction(row, name)
    evidence = {"layer": rule.layer, "class": name, "parcel_area_ha": round(parcel.area_ha, 6),
                "fraction": None if fraction is None else round(fraction, 6), "max_fraction": limit,
                **pixels.area_evidence(row, name)}
    if fraction is not None and fraction > limit + TOLERANCE:
        return RuleResult("fail", f"{fraction:.0%} of the parcel is {name} (at most {limit:.0%} allowed)", evidence)
    if fraction is None or pixels.has_nodata(row):
        return RuleResult("unknown", f"nodata in the '{rule.layer}' layer on the parcel", evidence)
    return RuleResult("pass", f"{fraction:.0%} of the parcel is {name}", evidence)


def _years(years: list[int]) -> str:
    return ", ".join(map(str, years[:6])) + (f" and {len(years) - 6} more" if len(years) > 6 else "")


CHECKS: dict[str, Callable] = {
    "min_area_ha": min_area_ha,
    "non_forest_history": non_forest_history,
    "raster_fraction_max": raster_fraction_max,
    "forest_history_min": forest_history_min,
}
#: Parameters each check needs: every group must be present, with exactly one of its names for an
#: either-or group (a rule counts years from a cut-off date or back from the start, not both);
#: PAIRED names come together or not at all.
REQUIRED_PARAMS: dict[str, list[tuple[str, ...]]] = {
    "min_area_ha": [("min_area_ha",)],
    "non_forest_history": [("max_forest_fraction",), ("since", "years_before_start")],
    "raster_fraction_max": [("max_fraction",), ("class",)],
    "forest_history_min": [("min_forest_fraction",), ("since", "years_before_start")],
}
PAIRED_PARAMS = {"min_area_ha": ("legacy_min_area_ha", "legacy_until")}

#: Whether a check reads a layer, and how: ``"years"`` (one band per calendar year, band
#: descriptions are the years) or ``"single"`` (one band); None for geometry-only checks.
LAYER_BANDS: dict[str, str | None] = {"min_area_ha": None, "non_forest_history": "years",
                                      "raster_fraction_max": "single", "forest_history_min": "years"}


def _area(section, key, where):
    return validate.number(section, key, where, minimum=0, exclusive_minimum=True)


def _fraction(section, key, where):
    return validate.number(section, key, where, minimum=0, maximum=1)


def _year_count(section, key, where):
    return validate.number(section, key, where, integer=True, minimum=1, maximum=200)


def _date(section, key, where):
    """An ISO date (TOML date or ``"YYYY-MM-DD"`` string) -> its ISO string."""
    value = section[key]
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        parsed = value
    else:
        try:
            parsed = dt.date.fromisoformat(str(value).strip())
        except ValueError:
            raise SpecError(f"{where}: '{key}' must be an ISO date (YYYY-MM-DD), got {value!r}") from None
    if not 1900 <= parsed.year <= 2100:
        raise SpecError(f"{where}: '{key}' = {parsed.isoformat()} is not a plausible date (year 1900-2100)")
    return parsed.isoformat()


def _class_name(section, key, where):
    return validate.string(section, key, where).strip()


#: Every parameter a check knows, with the function that validates and normalizes its value.
PARAM_TYPES: dict[str, dict[str, Callable]] = {
    "min_area_ha": {"min_area_ha": _area, "legacy_min_area_ha": _area, "legacy_until": _date},
    "non_forest_history": {"max_forest_fraction": _fraction, "since": _date, "years_before_start": _year_count},
    "raster_fraction_max": {"max_fraction": _fraction, "class": _class_name},
    "forest_history_min": {"min_forest_fraction": _fraction, "since": _date, "years_before_start": _year_count},
}


#: Rule parameters whose change has a known direction: +1 when a larger value lets more land pass
#: (so can credit more), -1 when a smaller one does. Any other parameter's change goes either way.
LOOSER_WHEN_LARGER = {"max_forest_fraction": 1, "max_fraction": 1, "min_area_ha": -1, "legacy_min_area_ha": -1,
                      "min_forest_fraction": -1, "years_before_start": -1}


def check_params(check: str, params: dict, where: str) -> dict:
    """Validate and normalize a rule's parameters for its check; :class:`SpecError` names the key."""
    known = PARAM_TYPES[check]
    out = {}
    for key in params:
        if key not in known:
            raise SpecError(f"{where}: unknown parameter '{key}'{validate.did_you_mean(key, known)} for check "
                            f"'{check}' (it takes {', '.join(known)})")
        out[key] = known[key](params, key, where)
    problem = parameter_problem(check, out)
    if problem:
        raise SpecError(f"{where}: {problem}")
    return out


def parameter_problem(check: str, params: dict) -> str | None:
    """What is wrong with a rule's parameters for its check, or None."""
    for group in REQUIRED_PARAMS[check]:
        present = [name for name in group if name in params]
        if len(present) != 1:
            wanted = group[0] if len(group) == 1 else "exactly one of " + ", ".join(group)
            return f"check {check!r} needs {wanted}" + (f" (has {', '.join(present)})" if present else "")
    pair = PAIRED_PARAMS.get(check, ())
    if pair and sum(name in params for name in pair) == 1:
        return f"check {check!r} needs {' and '.join(pair)} together"
    return None
