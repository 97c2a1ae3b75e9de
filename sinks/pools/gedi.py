"""GEDI L4A footprints -> pseudo-plots: a plot table of above-ground carbon (Mg C/ha) per shot.

Reads GEDI L4A Version 2 granules (HDF5, as ``.h5`` or zipped), one row per laser shot of every
``BEAM*`` group, filters them by the product's own quality flag and by the user's area and dates,
and turns each kept footprint into a row of the plot table (DESIGN.md):

- ``carbon_mg_ha = agbd x CF`` with CF the default carbon fraction of
  ``sinks/pools/data/allometry.csv`` (IPCC 2006 Vol. 4 Table 4.3, 0.47), and ``carbon_sd_mg_ha``
  the footprint's uncertainty from its prediction interval (:func:`footprint_sd`);
- ``area_ha`` = the nominal footprint area, pi x (25 m / 2)^2 = 0.0491 ha
  (``sinks/pools/data/gedi_parameters.csv``, ORNL DAAC L4A user guide).

Quality rule (``quality="recommended"``): ``l4_quality_flag == 1``, the flag that the L4A product
defines to select its most useful biomass predictions ("Flag simplifying selection of most useful
biomass predictions", dataset attribute; the ORNL DAAC GEDI L4A tutorials keep "good quality
shots" with ``l4_quality_flag == 1``). Shots whose AGBD is the fill value -9999 (the algorithm did
not run) are never kept. Every other rule (``degrade_flag == 0``, a minimum sensitivity, leaf-on
only) is an explicit option, off by default, because the user guide sets no threshold for them
beyond what ``l4_quality_flag`` already contains.

GEDI AGBD values are model predictions from lidar waveforms, not field measurements.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from sinks.errors import InputError
from sinks.io import sha256_file
from sinks.pools.tables import allometry_parameter, scalar_parameter

#: ``delta_time`` is in seconds since 2018-01-01 00:00 (the dataset's own ``description``
#: attribute: "Time delta since Jan 1 00:00 2018."). Leap seconds are not applied (an error of a
#: few seconds at most, which only matters for shots a few seconds before midnight).
GEDI_EPOCH = datetime(2018, 1, 1, tzinfo=timezone.utc)
#: Fill value of ``agbd`` / ``agbd_se`` where the L4A algorithm did not run (``algorithm_run_flag
#: == 0``); read from the granules, which carry no ``_FillValue`` attribute.
AGBD_FILL = -9999.0
#: Product short name in the granule's root attribute ``short_name``.
L4A_SHORT_NAME = "GEDI_L4A"
#: A zipped granule whose HDF5 is at most this large is read in memory; a larger one is unpacked
#: to a temporary folder that is removed afterwards (a plain limit on memory use, not a parameter).
IN_MEMORY_MAX_BYTES = 1 << 30

QUALITY_CHOICES = ("recommended", "all")

#: column name -> dataset inside each ``BEAMxxxx`` group; these must exist in an L4A granule.
REQUIRED_FIELDS = {
    "shot_number": "shot_number",
    "lat": "lat_lowestmode",
    "lon": "lon_lowestmode",
    "agbd_mg_ha": "agbd",
    "agbd_se_mg_ha": "agbd_se",
    "l4_quality_flag": "l4_quality_flag",
    "delta_time_s": "delta_time",
}
#: Read when present (all are in V002 granules); absent ones become missing values.
OPTIONAL_FIELDS = {
    "beam": "beam",
    "l2_quality_flag": "l2_quality_flag",
    "algorithm_run_flag": "algorithm_run_flag",
    "degrade_flag": "degrade_flag",
    "sensitivity": "sensitivity",
    "agbd_pi_lower_mg_ha": "agbd_pi_lower",
    "agbd_pi_upper_mg_ha": "agbd_pi_upper",
    "surface_flag": "surface_flag",
    "selected_algorithm": "selected_algorithm",
    "elev_lowestmode_m": "elev_lowestmode",
    "leaf_off_flag": "land_cover_data/leaf_off_flag",
    "pft_class": "land_cover_data/pft_class",
    "region_class": "land_cover_data/region_class",
}
INTEGER_FIELDS = (
    "beam", "l4_quality_flag", "l2_quality_flag", "algorithm_run_flag", "degrade_flag",
    "surface_flag", "selected_algorithm", "leaf_off_flag", "pft_class", "region_class",
)


@dataclass
class FilterStep:
    """One filter applied to the footprints: what it kept and how many shots were left."""

    rule: str
    kept: int


@dataclass
class GediRead:
    """Result of :func:`read_gedi_l4a_steps`: the plot table and the count after each filter."""

    plots: pd.DataFrame
    n_read: int
    steps: list[FilterStep] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Reading granules
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_granules(path: str | os.PathLike) -> Iterator[list[tuple[str, "object"]]]:
    """Open the HDF5 granule(s) of ``path`` (``.h5`` or a ``.zip`` holding ``.h5`` files).

    Yields a list of ``(granule_name, h5py.File)``; files are closed (and any temporary copy
    removed) on exit. Raises :class:`InputError` naming the file when it cannot be read.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: GEDI granule not found")
    opened: list[tuple[str, object]] = []
    tmpdir: str | None = None
    try:
        if zipfile.is_zipfile(path):
            try:
                archive = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise InputError(f"{path}: not a readable zip file ({exc})") from exc
            with archive:
                members = [m for m in archive.infolist()
                           if not m.is_dir() and m.filename.lower().endswith((".h5", ".hdf5"))]
                if not members:
                    raise InputError(
                        f"{path}: the zip holds no .h5 file (found: "
                        f"{', '.join(archive.namelist()) or 'nothing'}); give a GEDI L4A granule"
                    )
                for member in members:
                    name = Path(member.filename).name
                    where = f"{path}!{member.filename}"
                    try:
                        if member.file_size <= IN_MEMORY_MAX_BYTES:
                            handle = h5py.File(io.BytesIO(archive.read(member)), "r")
                        else:
                            tmpdir = tmpdir or tempfile.mkdtemp(prefix="sinks-gedi-")
                            target = Path(tmpdir) / f"{len(opened)}_{name}"
                            with archive.open(member) as src, open(target, "wb") as dst:
                                shutil.copyfileobj(src, dst, 1 << 20)
                            handle = h5py.File(target, "r")
                    except (OSError, zipfile.BadZipFile, EOFError) as exc:
                        raise InputError(f"{where}: not a readable HDF5 file ({exc})") from exc
                    opened.append((name, handle))
        else:
            try:
                opened.append((path.name, h5py.File(path, "r")))
            except OSError as exc:
                raise InputError(
                    f"{path}: not a readable HDF5 file or zip ({exc}); give a GEDI L4A granule "
                    "(.h5 or .zip)"
                ) from exc
        yield opened
    finally:
        for _, handle in opened:
            with contextlib.suppress(Exception):
                handle.close()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.reshape(-1)[0])
    return str(value)


def _product_version(h5, granule: str) -> str:
    """``V002``-style version: from the file name, else from the PGEVersion attribute."""
    match = re.search(r"_V(\d{3})(?:\.h5)?$", granule)
    if match:
        return f"V{match.group(1)}"
    meta = h5.get("METADATA/DatasetIdentification")
    if meta is not None and "PGEVersion" in meta.attrs:
        return f"V{_text(meta.attrs['PGEVersion'])}"
    return "unknown"


def _check_l4a(h5, where: str) -> list[str]:
    """Names of the beam groups, after checking that the file is a GEDI L4A granule."""
    short = _text(h5.attrs["short_name"]) if "short_name" in h5.attrs else None
    if short is None:
        meta = h5.get("METADATA/DatasetIdentification")
        if meta is not None and "shortName" in meta.attrs:
            short = _text(meta.attrs["shortName"])
    if short != L4A_SHORT_NAME:
        raise InputError(
            f"{where}: not a GEDI L4A granule (product short_name is {short!r}, expected "
            f"{L4A_SHORT_NAME!r}); download GEDI04_A files from the ORNL DAAC"
        )
    beams = sorted(k for k in h5.keys() if k.startswith("BEAM"))
    if not beams:
        raise InputError(f"{where}: GEDI L4A granule without any BEAM group")
    return beams


def _read_beam(group, beam: str, where: str) -> pd.DataFrame:
    missing = [ds for ds in REQUIRED_FIELDS.values() if ds not in group]
    if missing:
        raise InputError(
            f"{where}: {beam} lacks dataset(s) {', '.join(missing)}; is this a GEDI L4A V002 granule?"
        )
    columns: dict[str, np.ndarray] = {}
    n = group[REQUIRED_FIELDS["shot_number"]].shape[0]
    for column, dataset in {**REQUIRED_FIELDS, **OPTIONAL_FIELDS}.items():
        if dataset in group:
            values = group[dataset][()]
            if values.shape != (n,):
                raise InputError(
                    f"{where}: {beam}/{dataset} has shape {values.shape}, expected ({n},) like "
                    "shot_number"
                )
        elif column in INTEGER_FIELDS:
            values = np.full(n, -1, dtype=np.int64)
        else:
            values = np.full(n, np.nan)
        columns[column] = values
    frame = pd.DataFrame(columns)
    frame["shot_number"] = frame["shot_number"].astype(np.uint64).astype(str)
    for column in INTEGER_FIELDS:
        frame[column] = frame[column].astype(np.int64)
    for column in ("agbd_mg_ha", "agbd_se_mg_ha", "agbd_pi_lower_mg_ha", "agbd_pi_upper_mg_ha", "sensitivity",
                   "elev_lowestmode_m"):
        frame[column] = frame[column].astype(np.float64)
    # the prediction interval's level is 1 - alpha, an attribute of the beam's agbd_prediction group
    prediction = group.get("agbd_prediction")
    alpha = prediction.attrs.get("alpha") if prediction is not None else None
    frame["pi_alpha"] = float(alpha) if alpha is not None else np.nan
    frame.insert(1, "beam_name", beam)
    frame.insert(2, "beam_type", _text(group.attrs.get("description", "")))
    return frame


def read_granule(path: str | os.PathLike) -> pd.DataFrame:
    """Every shot of every beam of one granule file (``.h5`` or ``.zip``), unfiltered.

    Columns: ``shot_number`` (string), ``beam_name``, ``beam_type``, ``lat``/``lon`` (degrees,
    EPSG:4326, lowest mode), ``agbd_mg_ha`` and ``agbd_se_mg_ha`` (Mg/ha, -9999 where not
    predicted), ``delta_time_s`` (s since 2018-01-01), the quality flags, ``sensitivity``,
    ``leaf_off_flag``, ``pft_class``, ``region_class``, ``selected_algorithm``, and provenance:
    ``granule``, ``product_version``, ``source_file``, ``source_sha256``.
    """
    path = Path(path)
    frames = []
    digest = sha256_file(path) if path.is_file() else ""
    with open_granules(path) as granules:
        for granule, h5 in granules:
            where = f"{path}" if path.name == granule else f"{path}!{granule}"
            version = _product_version(h5, granule)
            for beam in _check_l4a(h5, where):
                beam_frame = _read_beam(h5[beam], beam, where)
                beam_frame["granule"] = granule
                beam_frame["product_version"] = version
                frames.append(beam_frame)
    shots = pd.concat(frames, ignore_index=True)
    shots["source_file"] = path.name
    shots["source_sha256"] = digest
    return shots


def read_footprints(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """All shots of several granule files (see :func:`read_granule`), with ``date`` and ``year``.

    The same granule given twice, by name or as shots repeated across files, is an
    :class:`InputError` (its shots would count twice).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    frames = [read_granule(p) for p in paths]
    if not frames:
        raise InputError("no GEDI granule given")
    seen: dict[str, str] = {}
    for frame in frames:
        for granule in frame["granule"].unique():
            source = frame["source_file"].iloc[0]
            if granule in seen:
                raise InputError(
                    f"granule {granule} is given twice ({seen[granule]} and {source}); give it once"
                )
            seen[granule] = source
    shots = pd.concat(frames, ignore_index=True)
    repeated = shots["shot_number"].duplicated(keep=False)
    if repeated.any():  # the same granule under another file name (a renamed or extracted copy)
        files = ", ".join(pd.unique(shots.loc[repeated, "source_file"].astype(str))[:4])
        raise InputError(f"{int(repeated.sum()) // 2} shot number(s) appear in more than one file ({files}): "
                         "the same granule given twice, under other names; give it once")
    when = pd.Timestamp(GEDI_EPOCH) + pd.to_timedelta(shots["delta_time_s"], unit="s")
    shots["date"] = when.dt.strftime("%Y-%m-%d")
    shots["year"] = when.dt.year.astype(np.int64)
    return shots


# --------------------------------------------------------------------------------------------
# Filtering
# --------------------------------------------------------------------------------------------


def parse_bbox(text: str | Sequence[float]) -> tuple[float, float, float, float]:
    """``"xmin,ymin,xmax,ymax"`` (degrees, EPSG:4326) -> a checked 4-tuple."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        xmin, ymin, xmax, ymax = (float(p) for p in parts)
    except (TypeError, ValueError) as exc:
        raise InputError(f"bbox must be xmin,ymin,xmax,ymax in degrees, got {text!r}") from exc
    if not (-180 <= xmin < xmax <= 180 and -90 <= ymin < ymax <= 90):
        raise InputError(
            f"bbox {text!r} is not xmin<xmax, ymin<ymax within longitude -180..180 and latitude "
            "-90..90 (EPSG:4326 degrees)"
        )
    return xmin, ymin, xmax, ymax


def _as_date(value, name: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise InputError(f"{name} must be a date YYYY-MM-DD, got {value!r}") from exc


def _polygon_4326(polygon):
    """A shapely geometry in EPSG:4326 from a geometry, GeoSeries or GeoDataFrame."""
    import geopandas as gpd

    if isinstance(polygon, (gpd.GeoDataFrame, gpd.GeoSeries)):
        if polygon.crs is None:
            raise InputError("clip polygon has no CRS; give it one (e.g. EPSG:4326)")
        geoms = polygon.to_crs("EPSG:4326")
        geoms = geoms.geometry if isinstance(geoms, gpd.GeoDataFrame) else geoms
        polygon = geoms.union_all()
    if polygon is None or polygon.is_empty or polygon.geom_type not in ("Polygon", "MultiPolygon"):
        kind = getattr(polygon, "geom_type", type(polygon).__name__)
        raise InputError(f"clip geometry must be a polygon or multipolygon, got {kind}")
    return polygon


def filter_footprints(
    shots: pd.DataFrame,
    *,
    quality: str = "recommended",
    bbox: str | Sequence[float] | None = None,
    polygon=None,
    start: str | date | None = None,
    end: str | date | None = None,
    min_sensitivity: float | None = None,
    exclude_degraded: bool = False,
    exclude_leaf_off: bool = False,
    pft_classes: Iterable[int] | None = None,
) -> tuple[pd.DataFrame, list[FilterStep]]:
    """Apply the filters in order; return the kept shots and the count left after each step.

    quality : ``"recommended"`` keeps ``l4_quality_flag == 1`` (ORNL DAAC L4A user guide and
        tutorials); ``"all"`` skips that flag. Either way shots with AGBD or its standard error at
        the fill value -9999 are dropped (no prediction was made).
    bbox : ``(xmin, ymin, xmax, ymax)`` or ``"xmin,ymin,xmax,ymax"`` in EPSG:4326 degrees,
        edges included.
    polygon : shapely (multi)polygon in EPSG:4326, or a GeoDataFrame/GeoSeries in any CRS;
        footprint centres on its boundary are kept.
    start, end : first and last acquisition date kept (UTC, inclusive).
    min_sensitivity : keep ``sensitivity >= min_sensitivity`` (0..1). No default: choose and cite
        your own (e.g. 0.95, or 0.98 for tropical forest, as some studies do).
    exclude_degraded : keep only ``degrade_flag == 0`` (no degraded pointing/positioning). Note that
        ``l4_quality_flag`` does not include it: whole V002 granules can have every shot degraded.
    exclude_leaf_off : keep only ``leaf_off_flag == 0`` (leaf-on; deciduous forests only are
        ever flagged leaf-off).
    pft_classes : keep only these ``land_cover_data/pft_class`` values (MODIS MCD12Q1 Land Cover
        Type 5: 1-4 are the tree classes ENT, EBT, DNT, DBT; 5 shrub, 6 grass, 11 barren).
    """
    if quality not in QUALITY_CHOICES:
        raise InputError(f"quality must be one of {', '.join(QUALITY_CHOICES)}, got {quality!r}")
    steps: list[FilterStep] = []
    keep = np.ones(len(shots), dtype=bool)

    def step(rule: str, mask) -> None:
        nonlocal keep
        keep &= np.asarray(mask, dtype=bool)
        steps.append(FilterStep(rule, int(keep.sum())))

    step("AGBD predicted (agbd and agbd_se not -9999)",
         (shots["agbd_mg_ha"] != AGBD_FILL) & (shots["agbd_se_mg_ha"] != AGBD_FILL)
         & np.isfinite(shots["agbd_mg_ha"]) & np.isfinite(shots["agbd_se_mg_ha"]))
    if quality == "recommended":
        step("l4_quality_flag == 1", shots["l4_quality_flag"] == 1)
    if exclude_degraded:
        step("degrade_flag == 0", shots["degrade_flag"] == 0)
    if min_sensitivity is not None:
        if not 0 <= float(min_sensitivity) <= 1:
            raise InputError(f"min_sensitivity must lie in 0..1, got {min_sensitivity}")
        step(f"sensitivity >= {float(min_sensitivity):g}", shots["sensitivity"] >= float(min_sensitivity))
    if exclude_leaf_off:
        step("leaf_off_flag == 0 (leaf-on)", shots["leaf_off_flag"] == 0)
    if pft_classes is not None:
        classes = sorted({int(c) for c in pft_classes})
        if not classes:
            raise InputError("pft_classes is empty: give at least one class (e.g. 1,2,3,4)")
        step(f"pft_class in {','.join(map(str, classes))}", shots["pft_class"].isin(classes))
    if bbox is not None:
        xmin, ymin, xmax, ymax = parse_bbox(bbox)
        step(f"inside bbox {xmin:g},{ymin:g},{xmax:g},{ymax:g}",
             shots["lon"].between(xmin, xmax) & shots["lat"].between(ymin, ymax))
    if polygon is not None:
        import shapely

        shape = _polygon_4326(polygon)
        step("inside clip polygon", shapely.intersects_xy(shape, shots["lon"].to_numpy(),
                                                          shots["lat"].to_numpy()))
    if start is not None or end is not None:
        first = _as_date(start, "start") if start is not None else date.min
        last = _as_date(end, "end") if end is not None else date.max
        if first > last:
            raise InputError(f"start {first} is after end {last}")
        days = pd.to_datetime(shots["date"]).dt.date
        step(f"date from {start or 'any'} to {end or 'any'}", days.between(first, last))
    return shots.loc[keep].reset_index(drop=True), steps


# --------------------------------------------------------------------------------------------
# Plot table
# --------------------------------------------------------------------------------------------


def gedi_parameter(name: str, table: str | os.PathLike | pd.DataFrame | None = None) -> float:
    """A value of ``gedi_parameters.csv`` (or the user's table with the same columns)."""
    return scalar_parameter("gedi_parameters.csv", name, table)


def footprint_area_ha(parameters: str | os.PathLike | pd.DataFrame | None = None) -> float:
    """Nominal footprint area (ha): pi x (diameter / 2)^2 / 10,000, diameter 25 m -> 0.0491 ha."""
    diameter_m = gedi_parameter("footprint_diameter_m", parameters)
    return float(np.pi * (diameter_m / 2.0) ** 2 / 10_000.0)


def footprint_sd(shots: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each footprint's AGBD uncertainty as a standard deviation (Mg/ha) and where it came from.

    From the L4A prediction interval where the granule has one: its larger half-width about
    ``agbd`` over z(1 - alpha) (:func:`sinks.stats.sd_from_interval`, as sinks reads every
    interval), alpha the ``agbd_prediction`` group's attribute (0.1: a 90 % interval; the datasets'
    description: "Lower prediction interval (see alpha attribute for the level)"). The interval is
    asymmetric (the L4A models are fitted on transformed AGBD), so the larger half is the cautious
    side. Else ``agbd_se``, the product's "prediction standard error". The two differ by an order of
    magnitude: in the shared 2020 and 2021 granules the interval's sd is a median 6.8 and 10.5 x
    ``agbd_se`` (2021: a median ``agbd_se`` of 13 Mg/ha against a larger half-width of 225), so
    ``agbd_se`` reads as the error of the model's mean prediction without the footprints' residual
    scatter, which the interval includes (our reading of the figures, not checked against the L4A
    ATBD). A footprint used as a plot is one realisation of that scatter, so the interval is its
    uncertainty.
    """
    from sinks.stats import sd_from_interval

    agbd = shots["agbd_mg_ha"].to_numpy(float)
    lower, upper = shots["agbd_pi_lower_mg_ha"].to_numpy(float), shots["agbd_pi_upper_mg_ha"].to_numpy(float)
    alpha = shots["pi_alpha"].to_numpy(float)
    # a lower bound whose transformed value falls below 0 is the fill value in the granules (low-AGBD
    # shots: 107 of 321 and 30 of 733 kept in the shared granules, their upper bound given): 0 Mg/ha
    lower = np.where((lower == AGBD_FILL) & np.isfinite(upper) & (upper != AGBD_FILL), 0.0, lower)
    with np.errstate(invalid="ignore"):
        usable = (np.isfinite(lower) & np.isfinite(upper) & (lower != AGBD_FILL) & (upper != AGBD_FILL)
                  & (lower <= agbd) & (agbd <= upper) & (alpha > 0) & (alpha < 1))
    sd = shots["agbd_se_mg_ha"].to_numpy(float).copy()
    for a in np.unique(alpha[usable]):
        rows = usable & (alpha == a)
        sd[rows] = sd_from_interval(agbd[rows], lower[rows], upper[rows], 1 - a)
    return sd, np.where(usable, "prediction interval", "agbd_se")


def footprints_to_plots(
    shots: pd.DataFrame,
    *,
    carbon_fraction: float | None = None,
    parameters: str | os.PathLike | pd.DataFrame | None = None,
):
    """Turn footprints into the plot table (GeoDataFrame, points in EPSG:4326).

    ``carbon_mg_ha = agbd_mg_ha x CF`` and ``carbon_sd_mg_ha = sd x CF`` (Mg C/ha), sd the
    footprint's from its prediction interval (:func:`footprint_sd`; ``carbon_sd_source`` says which);
    CF defaults to ``allometry.csv`` ``default_carbon_fraction`` (IPCC 2006 Vol. 4 Table 4.3, 0.47).
    Above-ground biomass only: no roots, dead wood or soil.
    """
    import geopandas as gpd

    cf = (allometry_parameter("default_carbon_fraction", "carbon_fraction")
          if carbon_fraction is None else float(carbon_fraction))
    if not 0 < cf <= 1:
        raise InputError(f"carbon fraction must lie in (0, 1], got {cf}")
    area = footprint_area_ha(parameters)
    sd, sd_source = footprint_sd(shots)
    out = pd.DataFrame({
        "plot_id": shots["shot_number"].astype(str),
        "area_ha": area,
        "year": shots["year"].astype(np.int64),
        "date": shots["date"],
        "pool": "forest",
        "carbon_mg_ha": shots["agbd_mg_ha"] * cf,
        "carbon_sd_mg_ha": sd * cf,
        "carbon_sd_source": sd_source,
        "agbd_mg_ha": shots["agbd_mg_ha"],
        "agbd_se_mg_ha": shots["agbd_se_mg_ha"],
        "agbd_pi_lower_mg_ha": shots["agbd_pi_lower_mg_ha"],
        "agbd_pi_upper_mg_ha": shots["agbd_pi_upper_mg_ha"],
        "carbon_fraction": cf,
        "method": "GEDI L4A footprint AGBD (lidar model prediction) x carbon fraction; above-ground only",
    })
    for column in ("beam_name", "beam_type", "beam", "delta_time_s", "l4_quality_flag",
                   "l2_quality_flag", "algorithm_run_flag", "degrade_flag", "sensitivity",
                   "surface_flag", "selected_algorithm", "leaf_off_flag", "pft_class",
                   "region_class", "elev_lowestmode_m", "granule", "product_version",
                   "source_file", "source_sha256"):
        out[column] = shots[column].to_numpy()
    geometry = gpd.points_from_xy(shots["lon"], shots["lat"])
    return gpd.GeoDataFrame(out, geometry=geometry, crs="EPSG:4326")


def read_gedi_l4a_steps(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    carbon_fraction: float | None = None,
    parameters: str | os.PathLike | pd.DataFrame | None = None,
    **filters,
) -> GediRead:
    """Read granules, filter (see :func:`filter_footprints`) and build the plot table, keeping
    the number of shots read and left after each filter."""
    shots = read_footprints(paths)
    kept, steps = filter_footprints(shots, **filters)
    plots = footprints_to_plots(kept, carbon_fraction=carbon_fraction, parameters=parameters)
    return GediRead(plots=plots, n_read=len(shots), steps=steps)


def read_gedi_l4a(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    bbox: str | Sequence[float] | None = None,
    polygon=None,
    quality: str = "recommended",
    start: str | date | None = None,
    end: str | date | None = None,
    min_sensitivity: float | None = None,
    exclude_degraded: bool = False,
    exclude_leaf_off: bool = False,
    pft_classes: Iterable[int] | None = None,
    carbon_fraction: float | None = None,
    parameters: str | os.PathLike | pd.DataFrame | None = None,
):
    """GEDI L4A granules -> plot table of footprint pseudo-plots (GeoDataFrame, EPSG:4326).

    One row per kept shot: ``plot_id`` (shot number), point geometry, ``area_ha`` (0.0491),
    ``year``, ``date``, ``pool="forest"``, ``carbon_mg_ha``, ``carbon_sd_mg_ha`` (Mg C/ha),
    ``agbd_mg_ha``, ``agbd_se_mg_ha`` (Mg/ha), the flags and provenance columns. Filters: see
    :func:`filter_footprints`.
    """
    return read_gedi_l4a_steps(
        paths, bbox=bbox, polygon=polygon, quality=quality, start=start, end=end,
        min_sensitivity=min_sensitivity, exclude_degraded=exclude_degraded,
        exclude_leaf_off=exclude_leaf_off, pft_classes=pft_classes,
        carbon_fraction=carbon_fraction, parameters=parameters,
    ).plots


__all__ = [
    "FilterStep", "GediRead", "filter_footprints", "footprint_area_ha", "footprints_to_plots",
    "open_granules", "parse_bbox", "read_footprints", "read_gedi_l4a", "read_gedi_l4a_steps",
    "read_granule",
]
