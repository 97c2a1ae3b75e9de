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

from sinks.covariates import expressions
from sinks.errors import SpecError
from sinks.io import read_toml

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
            "features": [asdict(f) for f in self.features],
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


def _bands(raw, where: str) -> tuple[Band, ...]:
    if not raw:
        raise SpecError(f"{where}: 'bands' must list at least one band")
    bands = []
    for i, item in enumerate(raw, start=1):
        if isinstance(item, str):
            bands.append(Band(item, i))
        elif isinstance(item, dict) and "name" in item:
            unknown = set(item) - {"name", "index", "scale", "offset"}
            if unknown:
                raise SpecError(f"{where}: band {item['name']!r} has unknown key(s) {', '.join(sorted(unknown))}")
            bands.append(Band(item["name"], int(item.get("index", i)), float(item.get("scale", 1.0)),
                              float(item.get("offset", 0.0))))
        else:
            raise SpecError(f"{where}: each band is a name or a table with 'name'")
    names = [b.name for b in bands]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: band names repeat: {names}")
    return tuple(bands)


def parse_spec(data: dict, *, base: Path, name: str = "spec", path: Path | None = None) -> FeatureSpec:
    """Build a :class:`FeatureSpec` from the parsed TOML mapping; paths resolved against ``base``."""
    where = str(path or name)
    unknown = set(data) - {"name", "description", "grid", "footprint", "sources", "features"}
    if unknown:
        raise SpecError(f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    for key in ("grid", "sources", "features"):
        if key not in data:
            raise SpecError(f"{where}: missing [{key}]")
    grid_raw = data["grid"]
    if "crs" not in grid_raw or "resolution" not in grid_raw:
        raise SpecError(f"{where}: [grid] needs crs and resolution")
    res = grid_raw["resolution"]
    res = (float(res), float(res)) if isinstance(res, (int, float)) else (float(res[0]), float(res[1]))
    if min(res) <= 0:
        raise SpecError(f"{where}: [grid] resolution must be positive")
    extent = tuple(float(v) for v in grid_raw["extent"]) if "extent" in grid_raw else None
    if extent is None and "like" not in grid_raw:
        raise SpecError(f"{where}: [grid] needs extent = [xmin, ymin, xmax, ymax] or like = SOURCE")
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(grid_raw["crs"])
    except CRSError as exc:
        raise SpecError(f"{where}: [grid] crs {grid_raw['crs']!r} is not a valid CRS") from exc
    grid = Grid(str(grid_raw["crs"]), res, extent, grid_raw.get("like"))

    fp_raw = data.get("footprint", {})
    footprint = Footprint(fp_raw.get("kind", "point"), float(fp_raw.get("radius", 0.0)))
    if footprint.kind not in FOOTPRINTS:
        raise SpecError(f"{where}: footprint kind must be one of {FOOTPRINTS}")
    if footprint.kind == "buffer" and footprint.radius <= 0:
        raise SpecError(f"{where}: a buffer footprint needs a positive radius (CRS units)")

    sources = []
    for raw in data["sources"]:
        sname = raw.get("name")
        if not sname or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", sname):
            raise SpecError(f"{where}: every source needs a name made of letters, digits and _")
        swhere = f"{where} source {sname!r}"
        unknown = set(raw) - {"name", "path", "paths", "bands", "nodata", "valid", "composite", "resampling", "ee"}
        if unknown:
            raise SpecError(f"{swhere}: unknown key(s) {', '.join(sorted(unknown))}")
        paths = raw.get("paths") or ([raw["path"]] if "path" in raw else [])
        if not paths and "ee" not in raw:
            raise SpecError(f"{swhere}: needs path, paths or an [sources.ee] section")
        source = Source(
            name=sname,
            paths=tuple(_expand(p, base, keep_unset="ee" in raw) for p in paths),
            bands=_bands(raw.get("bands"), swhere),
            nodata=raw.get("nodata"),
            valid=raw.get("valid"),
            composite=raw.get("composite", "median"),
            resampling=raw.get("resampling", "bilinear"),
            ee=dict(raw.get("ee", {})),
        )
        if source.composite not in COMPOSITES:
            raise SpecError(f"{swhere}: composite must be one of {COMPOSITES}")
        if source.resampling not in RESAMPLING:
            raise SpecError(f"{swhere}: resampling must be one of {RESAMPLING}")
        if source.valid:
            for ref in expressions.names(source.valid):
                source.band(ref)
        sources.append(source)
    if len({s.name for s in sources}) != len(sources):
        raise SpecError(f"{where}: source names repeat")

    spec = FeatureSpec(
        name=data.get("name", name),
        description=data.get("description", ""),
        grid=grid,
        footprint=footprint,
        sources=tuple(sources),
        features=(),
        path=path,
    )
    if grid.like is not None:
        spec.source(grid.like)

    features: list[Feature] = []
    for raw in data["features"]:
        fname = raw.get("name")
        if not fname or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", fname):
            raise SpecError(f"{where}: every feature needs a name made of letters, digits and _")
        unknown = set(raw) - {"name", "band", "expression", "terrain"}
        if unknown:
            raise SpecError(f"{where} feature {fname!r}: unknown key(s) {', '.join(sorted(unknown))}")
        feature = Feature(fname, raw.get("band"), raw.get("expression"), raw.get("terrain"))
        fwhere = f"{where} feature {fname!r}"
        if bool(feature.expression) == bool(feature.band) or (feature.expression and feature.terrain):
            raise SpecError(f"{fwhere}: give exactly one of band, expression, or terrain (with band)")
        if feature.terrain:
            if feature.terrain not in TERRAIN:
                raise SpecError(f"{fwhere}: terrain must be one of {TERRAIN}")
            if not feature.band:
                raise SpecError(f"{fwhere}: a terrain feature needs band = 'source.band' (the elevation)")
        if feature.band:
            spec.resolve(feature.band)
        if feature.expression:
            known = {f.name for f in features}
            for ref in expressions.names(feature.expression):
                if ref not in known:
                    try:
                        spec.resolve(ref)
                    except SpecError as exc:
                        raise SpecError(f"{fwhere}: expression names {ref!r}, which is neither an earlier feature nor a source band ({exc})") from None
        features.append(feature)
    if len({f.name for f in features}) != len(features):
        raise SpecError(f"{where}: feature names repeat")
    return FeatureSpec(spec.name, spec.grid, spec.footprint, spec.sources, tuple(features), spec.description, path)


def load_spec(path: str | os.PathLike) -> FeatureSpec:
    """Read a feature spec TOML file."""
    path = Path(path)
    return parse_spec(read_toml(path, "feature spec"), base=path.resolve().parent, name=path.stem, path=path)
