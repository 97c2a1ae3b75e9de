"""The feature-spec format: ``features/*.toml`` parsed into frozen dataclasses.

A spec has four parts (see ``features/README.md`` for the full format)::

    name = "meuse"
    [grid]                      # the target grid every source is aligned to
    crs = "EPSG:28992"
    resolution = 40             # CRS units; or [xres, yres]
    like = "dem"                # copy extent from this source (or: extent = [xmin, ymin, xmax, ymax])
    [footprint]
    kind = "point"              # point | buffer (with radius, CRS units) | polygon
    [[sources]]
    name = "dem"
    path = "${SINKS_DATASETS}/meuse/covariates/dem.tif"   # or paths = [...] + composite = "median"
    bands = ["elevation"]       # names of bands 1..n; or [{name=..., index=..., scale=..., offset=...}]
    valid = "elevation > -100"  # optional mask over raw band values
    [[features]]
    name = "slope"
    terrain = "slope"           # or band = "dem.elevation", or expression = "(nir - red) / (nir + red)"
    band = "dem.elevation"

Paths are relative to the spec file unless absolute; ``${NAME}`` expands environment variables,
with ``SINKS_DATASETS`` (data shipped in the package) and ``SINKS_SHARED_DATA`` (default
``../shared/data``) always defined.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sinks import constants
from sinks.covariates import expressions
from sinks.errors import SpecError
from sinks.io import read_toml
from sinks.validate import check_keys, did_you_mean, number, string, table

FOOTPRINTS = ("point", "buffer", "polygon")
COMPOSITES = ("median", "mean", "min", "max", "first")
RESAMPLING = ("nearest", "bilinear", "cubic", "average", "mode")
TERRAIN = ("slope", "aspect", "northness", "eastness", "curvature", "tpi", "twi")


@dataclass(frozen=True)
class Band:
    """One band of a source: its name, 1-based index in the file, and the linear rescaling."""

    name: str
    index: int
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Source:
    """A raster input: one file, or several scenes combined by ``composite``."""

    name: str
    paths: tuple[str, ...]
    bands: tuple[Band, ...]
    nodata: float | None = None
    valid: str | None = None
    composite: str = "median"
    resampling: str = "bilinear"
    ee: dict = field(default_factory=dict, compare=False, hash=False)

    def band(self, name: str) -> Band:
        for band in self.bands:
            if band.name == name:
                return band
        raise SpecError(f"source {self.name!r} has no band {name!r}; it has {', '.join(b.name for b in self.bands)}")


@dataclass(frozen=True)
class Feature:
    """One output column/band: a source band, an index expression, or a terrain derivative."""

    name: str
    band: str | None = None
    expression: str | None = None
    terrain: str | None = None
    #: a class code (land cover, parent material): the AOA compares it by class, not by distance
    categorical: bool = False

    @property
    def kind(self) -> str:
        return "terrain" if self.terrain else "expression" if self.expression else "band"


@dataclass(frozen=True)
class Grid:
    crs: str
    resolution: tuple[float, float]
    extent: tuple[float, float, float, float] | None = None
    like: str | None = None


@dataclass(frozen=True)
class Footprint:
    kind: str = "point"
    radius: float = 0.0


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    grid: Grid
    footprint: Footprint
    sources: tuple[Source, ...]
    features: tuple[Feature, ...]
    description: str = ""
    path: Path | None = field(default=None, compare=False)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def source(self, name: str) -> Source:
        for source in self.sources:
            if source.name == name:
                return source
        raise SpecError(f"spec {self.name!r} has no source {name!r}")

    def resolve(self, ref: str) -> tuple[Source, Band]:
        """Resolve ``source.band`` (or a ``band`` name unique across sources)."""
        if "." in ref:
            source_name, band_name = ref.split(".", 1)
            source = self.source(source_name)
            return source, source.band(band_name)
        hits = [(s, b) for s in self.sources for b in s.bands if b.name == ref]
        if len(hits) != 1:
            raise SpecError(
                f"spec {self.name!r}: name {ref!r} "
                + ("matches no source band" if not hits else "is ambiguous; write source.band")
            )
        return hits[0]

    def fingerprint(self) -> str:
        """sha256 of what defines the features (grid, footprint, bands, formulas), not of paths.

        A model bundle records it; a map job refuses a spec whose fingerprint differs.
        """
        payload = {
            "grid": {"crs": self.grid.crs, "resolution": list(self.grid.resolution)},
            "footprint": asdict(self.footprint),
            "sources": [
                {"name": s.name, "bands": [asdict(b) for b in s.bands], "valid": s.valid,
                 "composite": s.composite, "resampling": s.resampling}
                for s in self.sources
            ],
            # 'categorical' only when set, so specs written before it keep their fingerprints
            "features": [{k: v for k, v in asdict(f).items() if k != "categorical" or v} for f in self.features],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _expand(value: str, base: Path, keep_unset: bool = False) -> str:
    """Expand ``${NAME}`` and resolve against ``base``; with ``keep_unset`` (a source that also has
    an Earth Engine section) an unset variable is left as written instead of raising, so the spec
    still loads for Earth Engine use and the local engine reports the path as not found."""
    env = dict(os.environ)
    env.setdefault("SINKS_DATASETS", str(Path(__file__).resolve().parents[1] / "datasets"))
    env.setdefault("SINKS_SHARED_DATA", str(Path("../shared/data").resolve()))

    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in env:
            if keep_unset:
                return match.group(0)
            raise SpecError(f"path {value!r} uses ${{{key}}}, which is not set")
        return env[key]

    expanded = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, value)
    path = Path(expanded)
    return str(path if path.is_absolute() else (base / path))


#: Allowed keys of each part of a spec (unknown keys are refused with a did-you-mean).
TOP_KEYS = ("name", "description", "grid", "footprint", "sources", "features")
GRID_KEYS = ("crs", "resolution", "extent", "like")
FOOTPRINT_KEYS = ("kind", "radius")
SOURCE_KEYS = ("name", "path", "paths", "bands", "nodata", "valid", "composite", "resampling", "ee")
BAND_KEYS = ("name", "index", "scale", "offset")
FEATURE_KEYS = ("name", "band", "expression", "terrain", "categorical")
#: Largest grid (pixels) a stack or a map computes unless told otherwise: see
#: :data:`sinks.constants.MAX_PIXELS` (defined there: the CLI shows it at start-up).
MAX_PIXELS = constants.MAX_PIXELS
#: Largest resolution accepted in a geographic (degree) CRS: 1 degree is ~111 km. A larger number is
#: almost always a resolution in metres written for a degree CRS (30 "degrees" for 30 m).
MAX_DEGREE_RESOLUTION = 1.0
#: Smallest resolution accepted in a projected CRS (its units, metres or feet): a resolution in
#: degrees written for a metric CRS reads 0.00009-0.0023 for 10-250 m pixels (30 m is 0.00027
#: degrees); no covariate of a carbon map has pixels under 5 mm (a drone's are 1-5 cm). A heuristic
#: threshold chosen for this check.
MIN_PROJECTED_RESOLUTION = 0.005
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _utm_hint(extent, crs) -> str:
    """An example projected CRS for a geographic grid: the UTM zone of the extent's centre."""
    if extent is not None and -180 <= extent[0] <= extent[2] <= 180 and -90 <= extent[1] <= extent[3] <= 90:
        lon, lat = (extent[0] + extent[2]) / 2, (extent[1] + extent[3]) / 2
        zone = min(int((lon + 180) // 6) + 1, 60)
        return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"
    return "EPSG:32648"


def _grid(raw: dict, where: str) -> Grid:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    where = f"{where} [grid]"
    check_keys(raw, GRID_KEYS, where)
    crs_text = string(raw, "crs", where)
    try:
        crs = CRS.from_user_input(crs_text)
    except CRSError:
        raise SpecError(f"{where}: crs {crs_text!r} is not a CRS pyproj knows; use e.g. EPSG:32648 "
                        "(UTM 48N) or EPSG:4326") from None
    if "resolution" not in raw:
        raise SpecError(f"{where}: missing 'resolution' (pixel size in CRS units, or [xres, yres])")
    res = raw["resolution"]
    if isinstance(res, list):
        if len(res) != 2:
            raise SpecError(f"{where}: 'resolution' must be one number or [xres, yres], got {res!r}")
        res = tuple(number({"resolution": v}, "resolution", where, minimum=0, exclusive_minimum=True) for v in res)
    else:
        one = number(raw, "resolution", where, minimum=0, exclusive_minimum=True)
        res = (one, one)
    extent = None
    if "extent" in raw:
        ext = raw["extent"]
        if not isinstance(ext, list) or len(ext) != 4:
            raise SpecError(f"{where}: 'extent' must be [xmin, ymin, xmax, ymax], got {ext!r}")
        extent = tuple(number({"extent": v}, "extent", where) for v in ext)
        if extent[2] <= extent[0] or extent[3] <= extent[1]:
            raise SpecError(f"{where}: 'extent' = {list(ext)} is not ordered [xmin, ymin, xmax, ymax] "
                            "(xmin < xmax, ymin < ymax)")
    like = None
    if "like" in raw:
        like = string(raw, "like", where)
        if extent is not None:
            raise SpecError(f"{where}: give extent or like, not both")
    if extent is None and like is None:
        raise SpecError(f"{where}: needs extent = [xmin, ymin, xmax, ymax] or like = SOURCE")
    if crs.is_geographic:
        if max(res) > MAX_DEGREE_RESOLUTION:
            metres = max(res)
            raise SpecError(
                f"{where}: resolution = {metres:g} is in degrees for {crs_text} (a geographic CRS), about "
                f"{metres * 111.32:,.0f} km per pixel; for a {metres:g} m grid use a projected CRS such as "
                f"UTM ({_utm_hint(extent, crs)}), or give the resolution in degrees "
                f"({metres:g} m is about {metres / 111_320:.2g} degrees)")
        if extent is not None and not (-180 <= extent[0] < extent[2] <= 360 and -90 <= extent[1] < extent[3] <= 90):
            raise SpecError(
                f"{where}: extent {list(extent)} is not in degrees, but {crs_text} is a geographic CRS; give the "
                f"extent in longitude/latitude, or use the projected CRS the extent is written in "
                f"(e.g. UTM {_utm_hint(None, crs)})")
    elif min(res) < MIN_PROJECTED_RESOLUTION:
        unit = crs.axis_info[0].unit_name if crs.axis_info else "CRS units"
        raise SpecError(
            f"{where}: resolution = {min(res):g} {unit} for {crs_text} (a projected CRS) is a pixel of "
            f"{min(res) * 1000:g} mm: a resolution in degrees? ({min(res):g} degrees is about "
            f"{min(res) * 111_320:,.0f} m); give it in {unit}s (e.g. 30), or use a geographic CRS such as EPSG:4326")
    return Grid(crs_text, res, extent, like)


def _footprint(raw, where: str) -> Footprint:
    where = f"{where} [footprint]"
    check_keys(raw, FOOTPRINT_KEYS, where)
    kind = string(raw, "kind", where, default="point", choices=FOOTPRINTS)
    radius = number(raw, "radius", where, default=0.0, minimum=0)
    if kind == "buffer" and radius <= 0:
        raise SpecError(f"{where}: a buffer footprint needs a positive radius (CRS units)")
    if kind != "buffer" and "radius" in raw and radius:
        raise SpecError(f"{where}: radius is for kind = \"buffer\", not {kind!r}")
    return Footprint(kind, radius)


def _bands(raw, where: str) -> tuple[Band, ...]:
    if raw is None:
        raise SpecError(f"{where}: missing 'bands' (names of bands 1..n, or tables with name/index/scale/offset)")
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"{where}: 'bands' must list at least one band, got {raw!r}")
    bands = []
    for i, item in enumerate(raw, start=1):
        if isinstance(item, str):
            if not _NAME.fullmatch(item):
                raise SpecError(f"{where}: band name {item!r} must be made of letters, digits and _")
            bands.append(Band(item, i))
        elif isinstance(item, dict):
            bname = string(item, "name", f"{where} band {i}")
            bwhere = f"{where} band {bname!r}"
            check_keys(item, BAND_KEYS, bwhere)
            if not _NAME.fullmatch(bname):
                raise SpecError(f"{bwhere}: band name must be made of letters, digits and _")
            scale = number(item, "scale", bwhere, default=1.0)
            if scale == 0:
                raise SpecError(f"{bwhere}: 'scale' = 0 would make every value equal to the offset")
            bands.append(Band(bname, number(item, "index", bwhere, default=i, integer=True, minimum=1),
                              scale, number(item, "offset", bwhere, default=0.0)))
        else:
            raise SpecError(f"{where}: each band is a name or a table with 'name', got {item!r}")
    names = [b.name for b in bands]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: band names repeat: {names}")
    return tuple(bands)


#: Columns of a feature table (``sinks extract``) that come from the plots, and those extract adds.
FEATURE_TABLE_KEYS = ("plot_id", "x", "y")
EXTRACT_COLUMNS = ("footprint_pixels", "valid_pixels", "missing_reason")
#: Columns of every feature table beside the features: no feature may take their names.
RESERVED_COLUMNS = (*FEATURE_TABLE_KEYS, "geometry", *EXTRACT_COLUMNS)


def _entry_name(raw, kind: str, where: str) -> str:
    """The name of a ``[[sources]]`` or ``[[features]]`` entry, checked."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: each [[{kind}s]] entry must be a table, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(f"{where}: every {kind} needs a name made of letters, digits and _ (got {name!r})")
    return name


def _source(raw, where: str, base: Path) -> Source:
    sname = _entry_name(raw, "source", where)
    swhere = f"{where} source {sname!r}"
    check_keys(raw, SOURCE_KEYS, swhere)
    if "path" in raw and "paths" in raw:
        raise SpecError(f"{swhere}: give path or paths, not both")
    if "paths" in raw:
        paths = raw["paths"]
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
            raise SpecError(f"{swhere}: 'paths' must be a non-empty list of file paths, got {paths!r}")
    else:
        paths = [string(raw, "path", swhere)] if "path" in raw else []
    ee = raw.get("ee", {})
    if not isinstance(ee, dict):
        raise SpecError(f"{swhere}: 'ee' must be a [sources.ee] table, got {ee!r}")
    if ee:
        from sinks.covariates.earthengine import EE_KEYS

        check_keys(ee, EE_KEYS, f"{swhere} [sources.ee]")
    if not paths and "ee" not in raw:
        raise SpecError(f"{swhere}: needs path, paths or an [sources.ee] section")
    nodata = raw.get("nodata")
    if nodata is not None:
        nodata = number(raw, "nodata", swhere)
    valid = string(raw, "valid", swhere, default=None)
    source = Source(
        name=sname,
        paths=tuple(_expand(p, base, keep_unset="ee" in raw) for p in paths),
        bands=_bands(raw.get("bands"), swhere),
        nodata=nodata,
        valid=valid,
        composite=string(raw, "composite", swhere, default="median", choices=COMPOSITES),
        resampling=string(raw, "resampling", swhere, default="bilinear", choices=RESAMPLING),
        ee=dict(ee),
    )
    if source.valid:
        try:
            refs = expressions.names(source.valid)
        except SpecError as exc:
            raise SpecError(f"{swhere}: valid: {exc}") from None
        for ref in refs:
            if ref not in {b.name for b in source.bands}:
                raise SpecError(f"{swhere}: valid = {source.valid!r} names {ref!r}, which is not a band of this "
                                f"source{did_you_mean(ref, [b.name for b in source.bands])}; its bands are "
                                f"{', '.join(b.name for b in source.bands)}")
    return source


def _list_of_tables(data: dict, key: str, where: str) -> list:
    value = data.get(key)
    if value is None:
        raise SpecError(f"{where}: missing [[{key}]] (at least one)")
    if not isinstance(value, list) or not value:
        raise SpecError(f"{where}: '{key}' must be a list of [[{key}]] tables, got {value!r}")
    return value


def parse_spec(data: dict, *, base: Path, name: str = "spec", path: Path | None = None) -> FeatureSpec:
    """Build a :class:`FeatureSpec` from the parsed TOML mapping; paths resolved against ``base``.

    Every part is checked here, before any raster is opened: unknown keys (with a did-you-mean),
    types, ranges (resolution > 0, radius >= 0, ordered extent, known CRS, composite, resampling
    and terrain names), references between sources and features, and a degree CRS with a
    metre-like resolution.
    """
    where = str(path or name)
    check_keys(data, TOP_KEYS, where)
    spec_name = string(data, "name", where, default=name)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"{where}: 'description' must be a string, got {description!r}")
    grid = _grid(table(data, "grid", where, required=True), where)
    footprint = _footprint(table(data, "footprint", where), where)
    if footprint.kind == "buffer" and footprint.radius > MAX_DEGREE_RESOLUTION:
        from pyproj import CRS

        if CRS.from_user_input(grid.crs).is_geographic:
            raise SpecError(f"{where} [footprint]: radius = {footprint.radius:g} is in degrees for {grid.crs} (a "
                            f"geographic CRS), about {footprint.radius * 111.32:,.0f} km; give it in degrees "
                            f"({footprint.radius:g} m is about {footprint.radius / 111_320:.2g} degrees) or use a "
                            "projected grid CRS")

    sources = [_source(raw, where, base) for raw in _list_of_tables(data, "sources", where)]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: source names repeat: {names}")

    spec = FeatureSpec(
        name=spec_name,
        description=description,
        grid=grid,
        footprint=footprint,
        sources=tuple(sources),
        features=(),
        path=path,
    )
    if grid.like is not None and grid.like not in names:
        raise SpecError(f"{where} [grid]: like = {grid.like!r} is not a source{did_you_mean(grid.like, names)}; "
                        f"sources: {', '.join(names)}")

    features: list[Feature] = []
    for raw in _list_of_tables(data, "features", where):
        fname = _entry_name(raw, "feature", where)
        fwhere = f"{where} feature {fname!r}"
        if fname in RESERVED_COLUMNS:
            raise SpecError(f"{fwhere}: {fname!r} is a column every feature table has "
                            f"({', '.join(RESERVED_COLUMNS)}); give the feature another name (e.g. {fname}_value)")
        check_keys(raw, FEATURE_KEYS, fwhere)
        categorical = raw.get("categorical", False)
        if not isinstance(categorical, bool):
            raise SpecError(f"{fwhere}: 'categorical' must be true or false, got {categorical!r}")
        feature = Feature(fname, string(raw, "band", fwhere, default=None),
                          string(raw, "expression", fwhere, default=None),
                          string(raw, "terrain", fwhere, default=None, choices=TERRAIN), categorical)
        if categorical and (feature.expression or feature.terrain):
            raise SpecError(f"{fwhere}: only a band feature (class codes read as they are) can be categorical, "
                            "not an expression or a terrain derivative")
        if bool(feature.expression) == bool(feature.band) or (feature.expression and feature.terrain):
            raise SpecError(f"{fwhere}: give exactly one of band, expression, or terrain (with band)")
        if feature.terrain and not feature.band:
            raise SpecError(f"{fwhere}: a terrain feature needs band = 'source.band' (the elevation)")
        if feature.band:
            _resolve_or_suggest(spec, feature.band, fwhere)
            source = spec.resolve(feature.band)[0]
            if categorical and source.name != grid.like and source.resampling not in ("nearest", "mode"):
                raise SpecError(f"{fwhere}: a categorical feature's source {source.name!r} is resampled with "
                                f"{source.resampling!r}, which mixes class codes; set resampling = \"nearest\" "
                                "(or \"mode\") on that source")
        if feature.expression:
            known = {f.name for f in features}
            try:
                refs = expressions.names(feature.expression)
            except SpecError as exc:
                raise SpecError(f"{fwhere}: {exc}") from None
            for ref in refs:
                if ref not in known:
                    try:
                        spec.resolve(ref)
                    except SpecError as exc:
                        options = [*known, *(b.name for s in sources for b in s.bands)]
                        raise SpecError(f"{fwhere}: expression names {ref!r}, which is neither an earlier feature "
                                        f"nor a source band ({exc}){did_you_mean(ref, options)}") from None
        features.append(feature)
    fnames = [f.name for f in features]
    if len(set(fnames)) != len(fnames):
        raise SpecError(f"{where}: feature names repeat: {fnames}")
    return FeatureSpec(spec.name, spec.grid, spec.footprint, spec.sources, tuple(features), spec.description, path)


def _resolve_or_suggest(spec: FeatureSpec, ref: str, where: str) -> None:
    try:
        spec.resolve(ref)
    except SpecError as exc:
        options = [f"{s.name}.{b.name}" for s in spec.sources for b in s.bands]
        raise SpecError(f"{where}: band = {ref!r}: {exc}{did_you_mean(ref, options)}") from None


def load_spec(path: str | os.PathLike) -> FeatureSpec:
    """Read a feature spec TOML file."""
    path = Path(path)
    return parse_spec(read_toml(path, "feature spec"), base=path.resolve().parent, name=path.stem, path=path)
