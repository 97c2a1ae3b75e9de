"""The Earth Engine engine: a feature spec compiled to an Earth Engine graph.

Each source's ``[sources.ee]`` section says where its pixels live on Earth Engine::

    [sources.ee]
    collection = "COPERNICUS/S2_SR_HARMONIZED"   # or image = "USGS/SRTMGL1_003"; a list merges collections
    start = "2023-01-01"                         # filterDate(start, end), end exclusive
    end = "2024-01-01"
    bands = { B4 = "red", B8 = "nir", SCL = "scl" }   # EE band name -> spec band name
    filters = [{ property = "CLOUDY_PIXEL_PERCENTAGE", op = "lt", value = 60 }]
    link = { collection = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED", bands = ["cs_cdf"] }  # optional

The graph mirrors :class:`sinks.covariates.local.LocalEngine` step by step: per scene, the EE
bands are selected and renamed to the spec's band names, cast to float, masked by the source's
``nodata`` and ``valid`` expression on the *raw* values (cloud masks: Sentinel-2 SCL classes,
Landsat QA_PIXEL bits), rescaled by each band's ``scale``/``offset``; only then are the scenes
composited (``map(updateMask)`` before ``median()``). Feature expressions are compiled from the
same :mod:`ast` tree the local engine evaluates (:func:`sinks.covariates.expressions.parse`), with
the local engine's nodata rules (division by zero and log/sqrt outside their domain give nodata;
a comparison with nodata is false). Terrain uses ``ee.Terrain`` (4-connected neighbours, not
Horn's 3 x 3 weights: see ``docs/earthengine.md``).

Nothing here calls Earth Engine at import time; ``earthengine-api`` is imported on first use and a
missing package raises :class:`sinks.errors.MissingDependencyError` naming ``sinks[ee]``.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sinks.covariates import expressions
from sinks.covariates.spec import FeatureSpec, Source
from sinks.errors import InputError, SpecError, require

#: Keys a ``[sources.ee]`` section may hold.
EE_KEYS = ("collection", "image", "start", "end", "bands", "filters", "link")
#: Filter operators of ``[sources.ee] filters`` and the ee.Filter method each calls.
FILTER_OPS = {"lt": "lt", "lte": "lte", "gt": "gt", "gte": "gte", "eq": "eq", "neq": "neq",
              "contains": "listContains"}
#: Plots per reduceRegions request (Earth Engine answers at most 5000 features per getInfo).
PLOTS_PER_REQUEST = 5000
_EE_RESAMPLE = {"bilinear": "bilinear", "cubic": "bicubic"}


def _ee(initialized: bool = True):
    """The ``ee`` module (MissingDependencyError without it), checked to be initialized."""
    ee = require("ee", "ee")
    if initialized and not ee.data.is_initialized():
        raise InputError("Earth Engine is not initialized: call sinks.covariates.earthengine.initialize(project) "
                         "first (CLI: --ee-project PROJECT)")
    return ee


def require_project(project: str | None) -> None:
    """Earth Engine needs a Google Cloud project (checked before anything else about a job)."""
    if not project:
        raise InputError("Earth Engine needs a Google Cloud project: pass --ee-project PROJECT")


def initialize(project: str) -> None:
    """Initialize Earth Engine for a Google Cloud ``project`` (run ``earthengine authenticate`` first)."""
    ee = _ee(initialized=False)
    require_project(project)
    try:
        ee.Initialize(project=project)
    except Exception as exc:  # ee raises plain Exceptions for missing/expired credentials
        reason = " ".join(str(exc).split())  # one line: Earth Engine's own message has line breaks
        raise InputError(
            f"cannot initialize Earth Engine for project {project!r} ({reason}); run "
            "'earthengine authenticate' and check that the project has the Earth Engine API enabled"
        ) from exc


# -- grid -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EEGrid:
    """Where Earth Engine computes: the grid CRS, its pixel grid as an EE ``crsTransform`` and (when
    known) the grid extent."""

    crs: str
    xres: float
    yres: float
    transform: tuple[float, float, float, float, float, float]  # EE crsTransform
    bounds: tuple[float, float, float, float] | None = None  # xmin, ymin, xmax, ymax (grid CRS)


def ee_grid(spec: FeatureSpec) -> EEGrid:
    """The spec's grid for Earth Engine: the local target grid when its extent is known (``extent``,
    or a ``like`` source with a local file), else pixels of the grid's size aligned with the CRS
    origin (as the local grid snaps its extent to multiples of the resolution), with no extent."""
    from pyproj import CRS

    from sinks.covariates.local import target_grid

    crs = CRS.from_user_input(spec.grid.crs)
    code = crs.to_authority()
    crs_text = f"{code[0]}:{code[1]}" if code else crs.to_wkt()
    xres, yres = spec.grid.resolution
    like = spec.source(spec.grid.like) if spec.grid.like else None
    if spec.grid.extent is None and (like is None or not like.paths or not Path(like.paths[0]).exists()):
        return EEGrid(crs_text, xres, yres, (xres, 0.0, 0.0, 0.0, -yres, 0.0))
    grid = target_grid(spec)
    t = grid.transform
    return EEGrid(crs_text, xres, yres, (t.a, t.b, t.c, t.d, t.e, t.f), grid.bounds)


def _grid_bounds(grid: EEGrid):
    """The grid's extent, which an export needs."""
    if grid.bounds is None:
        raise SpecError("the spec's grid has no extent: give [grid] extent = [xmin, ymin, xmax, ymax] "
                        "(or like = a source with a local file) to export a stack")
    return grid.bounds


def _region(ee, grid: EEGrid, bounds=None):
    return ee.Geometry.Rectangle(list(bounds or _grid_bounds(grid)), grid.crs, False)


def _on_grid(image, grid: EEGrid):
    return image.reproject(crs=grid.crs, crsTransform=list(grid.transform))


# -- sources ----------------------------------------------------------------------------------
def _band_map(source: Source) -> dict[str, str]:
    """EE band name -> spec band name (default: the same names), checked against the spec."""
    raw = source.ee.get("bands")
    names = [b.name for b in source.bands]
    if raw is None:
        return {n: n for n in names}
    if isinstance(raw, list):
        if len(raw) != len(names):
            raise SpecError(f"source {source.name!r}: [sources.ee] bands lists {len(raw)} names for {len(names)} bands")
        return dict(zip(raw, names))
    if not isinstance(raw, dict):
        raise SpecError(f"source {source.name!r}: [sources.ee] bands must map EE band names to band names")
    missing = [n for n in names if n not in raw.values()]
    if missing:
        raise SpecError(f"source {source.name!r}: [sources.ee] bands gives no EE band for {', '.join(missing)}")
    return {k: v for k, v in raw.items() if v in names}


def _check_ee(source: Source) -> None:
    where = f"source {source.name!r}"
    if not source.ee:
        raise SpecError(f"{where} has no [sources.ee] section: add collection or image (see docs/earthengine.md)")
    unknown = set(source.ee) - set(EE_KEYS)
    if unknown:
        raise SpecError(f"{where}: [sources.ee] has unknown key(s) {', '.join(sorted(unknown))}")
    if ("collection" in source.ee) == ("image" in source.ee):
        raise SpecError(f"{where}: [sources.ee] needs exactly one of collection or image")
    if "image" in source.ee and ("start" in source.ee or "filters" in source.ee):
        raise SpecError(f"{where}: [sources.ee] start/end/filters apply to a collection, not an image")
    if ("start" in source.ee) != ("end" in source.ee):
        raise SpecError(f"{where}: [sources.ee] needs both start and end (end exclusive)")
    for f in source.ee.get("filters", []):
        if not isinstance(f, dict) or set(f) != {"property", "op", "value"} or f["op"] not in FILTER_OPS:
            raise SpecError(f"{where}: each [sources.ee] filter is {{property, op, value}} with op in "
                            f"{', '.join(FILTER_OPS)}")
    link = source.ee.get("link")
    if link is not None:
        if "collection" not in source.ee or not isinstance(link, dict) or set(link) != {"collection", "bands"} \
                or not isinstance(link["bands"], list) or not link["bands"]:
            raise SpecError(f"{where}: [sources.ee] link = {{collection = ID, bands = [EE band, ...]}} adds bands "
                            "of a collection with the same system:index (e.g. Cloud Score+) to a collection")
        unused = [b for b in link["bands"] if b not in _band_map(source)]
        if unused:
            raise SpecError(f"{where}: linked band(s) {', '.join(unused)} are not in [sources.ee] bands; map them "
                            "to spec band names there (e.g. cs_cdf = \"cs\")")


def _prepare_scene(ee, source: Source, band_map: dict[str, str]):
    """The per-scene function: select/rename, float, nodata and ``valid`` masks on raw values, rescale."""

    def prepare(scene):
        image = ee.Image(scene).select(list(band_map), list(band_map.values())).toFloat()
        if source.nodata is not None:
            image = image.updateMask(image.neq(float(source.nodata)))  # per band, as the local engine
        if source.valid:
            raw = {b.name: image.select(b.name) for b in source.bands}
            # a nodata result of the expression keeps the pixel, as numpy's bool(NaN) is True
            image = image.updateMask(compile_expression(source.valid, raw).unmask(1, True).neq(0))
        if any(b.scale != 1.0 or b.offset != 0.0 for b in source.bands):
            image = ee.Image.cat([
                image.select(b.name).multiply(b.scale).add(b.offset) if (b.scale, b.offset) != (1.0, 0.0)
                else image.select(b.name)
                for b in source.bands
            ])
        return image

    return prepare


def source_image(source: Source, region=None):
    """One source as an ``ee.Image`` with the spec's band names: masked, rescaled, composited.

    ``region`` (an ``ee.Geometry``) restricts a collection with ``filterBounds``.
    """
    ee = _ee()
    _check_ee(source)
    band_map = _band_map(source)
    prepare = _prepare_scene(ee, source, band_map)
    if "image" in source.ee:
        image = prepare(ee.Image(source.ee["image"]))
    else:
        ids = source.ee["collection"]
        ids = [ids] if isinstance(ids, str) else list(ids)
        collection = ee.ImageCollection(ids[0])
        for other in ids[1:]:
            collection = collection.merge(ee.ImageCollection(other))
        if "start" in source.ee:
            collection = collection.filterDate(str(source.ee["start"]), str(source.ee["end"]))
        if region is not None:
            collection = collection.filterBounds(region)
        for f in source.ee.get("filters", []):
            collection = collection.filter(getattr(ee.Filter, FILTER_OPS[f["op"]])(f["property"], f["value"]))
        if "link" in source.ee:  # bands of a companion collection, matched on system:index
            link = source.ee["link"]
            collection = collection.linkCollection(ee.ImageCollection(link["collection"]), list(link["bands"]))
        collection = collection.map(prepare)  # masks before compositing
        if source.composite == "first":
            image = collection.reduce(ee.Reducer.firstNonNull()).rename([b.name for b in source.bands])
        else:
            image = getattr(collection, source.composite)()
    if source.resampling in _EE_RESAMPLE:
        image = image.resample(_EE_RESAMPLE[source.resampling])
    return image


# -- expressions ------------------------------------------------------------------------------
def compile_expression(expression: str, values: dict):
    """Compile an expression (the local engine's grammar) over ``ee.Image`` values to an ``ee.Image``.

    Nodata rules follow :func:`sinks.covariates.expressions.evaluate`: arithmetic on nodata is
    nodata; ``/`` and ``%`` by zero, ``sqrt`` of a negative and ``log``/``log10`` of a non-positive
    value are nodata; comparisons give 0/1 with nodata comparing false (but ``!=`` true, as NaN does); in ``& | ~ and or not``
    nodata counts as true (numpy's NaN is truthy); ``min``/``max`` ignore a nodata image operand
    but keep nodata where every image operand is nodata (a constant fills no pixel);
    ``bit(x, n)`` reads nodata as 0.
    """
    ee = _ee()
    tree = expressions.parse(expression)

    def img(value):
        return value if isinstance(value, ee.Image) else ee.Image.constant(float(value))

    def truth(value):
        return img(value).unmask(1, True).neq(0)

    def ev(node):
        dotted = expressions._dotted(node)
        if dotted is not None:
            if dotted not in values:
                raise SpecError(f"expression {expression!r}: unknown name {dotted!r}; known: {', '.join(sorted(values))}")
            return values[dotted]
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.BinOp):
            left, right = ev(node.left), ev(node.right)
            if not isinstance(left, ee.Image) and not isinstance(right, ee.Image):
                return float(expressions.evaluate(ast.unparse(node), {}))
            op = type(node.op)
            if op in (ast.BitAnd, ast.BitOr):
                return getattr(truth(left), "And" if op is ast.BitAnd else "Or")(truth(right))
            name = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide",
                    ast.Pow: "pow", ast.Mod: "mod"}[op]
            result = getattr(img(left), name)(right)
            if op in (ast.Div, ast.Mod):  # EE gives 0 for x / 0; the local engine gives nodata
                result = result.updateMask(img(right).neq(0))
            return result
        if isinstance(node, ast.UnaryOp):
            operand = ev(node.operand)
            if isinstance(node.op, ast.UAdd):
                return operand
            if isinstance(node.op, ast.USub):
                return -operand if not isinstance(operand, ee.Image) else operand.multiply(-1)
            return truth(operand).Not()
        if isinstance(node, ast.BoolOp):
            result = truth(ev(node.values[0]))
            for value in node.values[1:]:
                result = getattr(result, "And" if isinstance(node.op, ast.And) else "Or")(truth(ev(value)))
            return result
        if isinstance(node, ast.Compare):
            result, left = None, ev(node.left)
            for op, comparator in zip(node.ops, node.comparators):
                right = ev(comparator)
                name = {ast.Lt: "lt", ast.LtE: "lte", ast.Gt: "gt", ast.GtE: "gte", ast.Eq: "eq",
                        ast.NotEq: "neq"}.get(type(op))
                if name is None:
                    raise SpecError(f"expression {expression!r}: comparison {type(op).__name__} is not allowed")
                part = getattr(img(left), name)(right).unmask(1 if name == "neq" else 0, True)
                result = part if result is None else result.And(part)
                left = right
            return result
        if isinstance(node, ast.Call):
            fname, args = node.func.id, [ev(a) for a in node.args]
            if fname == "bit":
                if len(args) != 2 or isinstance(args[1], ee.Image):
                    raise SpecError(f"expression {expression!r}: bit(value, n) needs a constant bit number n")
                return img(args[0]).unmask(0, True).toInt64().rightShift(int(args[1])).bitwiseAnd(1)
            if fname in ("min", "max"):  # as the local engine: a nodata image operand is ignored,
                images = [a for a in args if isinstance(a, ee.Image)]  # but a constant fills no pixel
                constants = [float(a) for a in args if not isinstance(a, ee.Image)]
                if not images:
                    return (min if fname == "min" else max)(constants)
                result = images[0]
                for b in images[1:]:
                    result = getattr(result.unmask(b, True), fname)(b.unmask(result, True))
                for c in constants:
                    result = getattr(result, fname)(c)  # keeps the image's mask
                return result
            x = img(args[0])
            result = getattr(x, fname)()
            if fname == "sqrt":
                result = result.updateMask(x.gte(0))
            elif fname in ("log", "log10"):
                result = result.updateMask(x.gt(0))
            return result
        raise SpecError(f"expression {expression!r}: {type(node).__name__} is not allowed")

    return img(ev(tree.body))


# -- terrain ----------------------------------------------------------------------------------
def _terrain(ee, kind: str, elevation, grid: EEGrid):
    """A terrain derivative with ``ee.Terrain`` on the spec grid (degrees; northness/eastness unitless)."""
    z = _on_grid(elevation, grid)
    if kind == "slope":
        return ee.Terrain.slope(z)
    if kind in ("aspect", "northness", "eastness"):
        aspect = ee.Terrain.aspect(z)
        if kind == "aspect":
            return aspect
        radians = aspect.multiply(math.pi / 180)
        trig = radians.cos() if kind == "northness" else radians.sin()
        return trig.multiply(ee.Terrain.slope(z).gt(0))  # 0 on flat ground, as terrain.py
    if kind == "tpi":  # Weiss (2001): elevation minus the mean of its 8 neighbours
        ring = ee.Kernel.fixed(3, 3, [[1, 1, 1], [1, 0, 1], [1, 1, 1]], -1, -1, True)
        return z.subtract(z.convolve(ring))
    raise SpecError(
        f"terrain {kind!r} is not available on Earth Engine in sinks (curvature and twi need the local "
        "engine's 3 x 3 / flow-accumulation code); add a precomputed band instead (e.g. a TWI asset)"
    )


def _needed_sources(spec: FeatureSpec) -> set[str]:
    """Names of the sources the spec's features read."""
    names = {f.name for f in spec.features}
    refs: list[str] = []
    for feature in spec.features:
        refs += [feature.band] if feature.band else [r for r in expressions.names(feature.expression) if r not in names]
    return {spec.resolve(r)[0].name for r in refs}


def feature_image(spec: FeatureSpec, *, region=None):
    """All features of ``spec`` as one float ``ee.Image`` whose bands are the features, in order.

    ``region`` (an ``ee.Geometry``) only limits which scenes are read (``filterBounds``).
    """
    ee = _ee()
    grid = ee_grid(spec) if any(f.terrain for f in spec.features) else None
    needed = _needed_sources(spec)
    values: dict = {}
    short: dict[str, list[str]] = {}
    for source in spec.sources:
        if source.name not in needed:
            continue
        image = source_image(source, region)
        for band in source.bands:
            values[f"{source.name}.{band.name}"] = image.select(band.name)
            short.setdefault(band.name, []).append(f"{source.name}.{band.name}")
    for name, keys in short.items():
        if len(keys) == 1:
            values.setdefault(name, values[keys[0]])
    bands = []
    for feature in spec.features:
        if feature.terrain:
            source, band = spec.resolve(feature.band)
            result = _terrain(ee, feature.terrain, values[f"{source.name}.{band.name}"], grid)
        elif feature.expression:
            result = compile_expression(feature.expression, values)
        else:
            source, band = spec.resolve(feature.band)
            result = values[f"{source.name}.{band.name}"]
        result = ee.Image(result).toFloat().rename([feature.name])
        values[feature.name] = result
        bands.append(result)
    return ee.Image.cat(bands)


# -- sampling ---------------------------------------------------------------------------------
def _plot_features(ee, kind: str, radius: float, shapes, crs: str):
    """Footprints as an ``ee.FeatureCollection`` in the grid CRS (planar geometry), ``_row`` = position."""
    feats = []
    for i, shape in enumerate(shapes):
        if kind == "polygon":
            geom = ee.Geometry(shape.__geo_interface__, crs, False)
        else:
            geom = ee.Geometry.Point([shape.x, shape.y], crs)
            if kind == "buffer":
                geom = geom.buffer(radius, 0.01, ee.Projection(crs))
        feats.append(ee.Feature(geom, {"_row": i}))
    return ee.FeatureCollection(feats)


def sample_plots(spec: FeatureSpec, shapes, *, image=None, kind: str | None = None) -> list:
    """The ``reduceRegions`` requests for footprints (a list of ``ee.FeatureCollection``, one per
    :data:`PLOTS_PER_REQUEST` plots), unevaluated.

    ``shapes`` are the footprint geometries in the grid CRS (points for ``point``/``buffer``,
    polygons for ``polygon``; ``kind`` overrides the spec's footprint kind). Each footprint is
    reduced with an unweighted mean + count at the spec grid's CRS and ``crsTransform``: features give ``<name>_mean``, the constant band ``_one`` the footprint's pixel
    count and ``_valid`` (1 where every feature is valid) the valid count.
    """
    ee = _ee()
    grid = ee_grid(spec)
    kind = kind or spec.footprint.kind
    image = image if image is not None else feature_image(spec)
    all_valid = ee.Image.constant(1).updateMask(image.mask().reduce(ee.Reducer.min())).rename(["_valid"])
    stack = image.addBands(ee.Image.constant(1).rename(["_one"])).addBands(all_valid)
    # unweighted: a pixel counts, with weight 1, when its centre is in the footprint (as the local
    # extract); the default weighted mean would give partly covered edge pixels fractional weights
    # (Earth Engine guide "Weighted reductions" and reduceRegion "pixels in the region")
    reducer = ee.Reducer.mean().combine(ee.Reducer.count(), None, True).unweighted()
    where = {"crs": grid.crs, "crsTransform": list(grid.transform)}
    shapes = list(shapes)
    requests = []
    for start in range(0, len(shapes), PLOTS_PER_REQUEST):
        fc = _plot_features(ee, kind, spec.footprint.radius, shapes[start:start + PLOTS_PER_REQUEST], grid.crs)
        requests.append(stack.reduceRegions(collection=fc, reducer=reducer, **where))
    return requests


def _evaluate(ee, spec: FeatureSpec, requests: list, n: int):
    """Run ``requests`` (getInfo) and read the answers: feature means (n, features), pixel counts."""
    values = np.full((n, len(spec.features)), np.nan)
    n_pixels = np.zeros(n, dtype=np.int64)
    n_valid = np.zeros(n, dtype=np.int64)
    for start, request in zip(range(0, n, PLOTS_PER_REQUEST), requests):
        try:
            answer = request.getInfo()
        except ee.EEException as exc:
            raise InputError(f"Earth Engine could not sample the plots for spec {spec.name!r}: {exc}") from exc
        for feat in answer.get("features", []):
            props = feat.get("properties", {})
            i = start + int(props["_row"])
            for j, name in enumerate(spec.feature_names):
                v = props.get(f"{name}_mean")
                values[i, j] = np.nan if v is None else float(v)
            n_pixels[i] = int(props.get("_one_count") or 0)
            n_valid[i] = int(props.get("_valid_count") or 0)
    return values, n_pixels, n_valid


def extract_ee(spec: FeatureSpec, plots) -> pd.DataFrame:
    """Feature table at plots computed on Earth Engine; the columns of :func:`sinks.covariates.extract.extract`.

    ``plots`` is a GeoDataFrame with ``plot_id`` and a CRS. Footprints follow the spec: ``point``
    (the pixel under the centroid), ``buffer`` (pixels whose centres fall in a circle of
    ``radius`` grid-CRS units around the centroid), ``polygon`` (pixels whose centres fall in the
    polygon); a buffer or polygon holding no pixel centre falls back to the pixel under the
    centroid, as the local engine. Each feature is the mean of its valid pixels (NaN if none).
    ``x``/``y`` are centroids in the grid CRS. Call :func:`initialize` first; one request per
    :data:`PLOTS_PER_REQUEST` plots (plus one for fallbacks).
    """
    from types import SimpleNamespace

    from pyproj import CRS

    from sinks.covariates.extract import FEATURE_TABLE_KEYS, _check_plots, _footprints

    ee = _ee()
    _check_plots(spec, plots)
    grid = ee_grid(spec)
    plots_g, shapes = _footprints(spec, plots, SimpleNamespace(crs=CRS.from_user_input(grid.crs)))
    pad = max(spec.footprint.radius, grid.xres, grid.yres) * 2
    boxes = shapes.bounds.to_numpy() + np.array([-1, -1, 1, 1]) * (spec.footprint.radius if spec.footprint.kind == "buffer" else 0)
    if grid.bounds is not None:
        left, bottom, right, top = grid.bounds
        outside = (boxes[:, 2] < left) | (boxes[:, 0] > right) | (boxes[:, 3] < bottom) | (boxes[:, 1] > top)
        if outside.any():
            ids = plots_g["plot_id"][outside]
            raise InputError(
                f"{outside.sum()} of {len(plots_g)} plot(s) lie outside the grid of spec {spec.name!r} "
                f"(plot_id {', '.join(map(str, ids.head(5)))}{', ...' if outside.sum() > 5 else ''}; grid "
                f"bounds {tuple(round(v, 3) for v in grid.bounds)} in {grid.crs}); check the plots' CRS "
                f"({plots.crs.to_string()})"
            )
    xmin, ymin = boxes[:, 0].min(), boxes[:, 1].min()
    xmax, ymax = boxes[:, 2].max(), boxes[:, 3].max()
    region = ee.Geometry.Rectangle([xmin - pad, ymin - pad, xmax + pad, ymax + pad], grid.crs, False)
    image = feature_image(spec, region=region)
    values, n_pixels, n_valid = _evaluate(ee, spec, sample_plots(spec, shapes, image=image), len(plots_g))
    empty = np.flatnonzero(n_pixels == 0)
    if spec.footprint.kind != "point" and empty.size:  # no pixel centre inside: the centroid's pixel
        centres = shapes.iloc[empty].centroid
        requests = sample_plots(spec, centres, image=image, kind="point")
        values[empty], n_pixels[empty], n_valid[empty] = _evaluate(ee, spec, requests, empty.size)

    out = pd.DataFrame({"plot_id": plots_g["plot_id"].to_numpy()})
    centroids = plots_g.geometry.centroid
    out["x"], out["y"] = centroids.x.to_numpy(), centroids.y.to_numpy()
    for j, name in enumerate(spec.feature_names):
        out[name] = values[:, j]
    out["footprint_pixels"], out["valid_pixels"] = n_pixels, n_valid
    for column in [c for c in plots.columns if c not in (*FEATURE_TABLE_KEYS, plots.geometry.name)]:
        out[column] = plots[column].to_numpy()
    out.attrs.update(crs=plots_g.crs.to_string(), spec=spec.name, spec_fingerprint=spec.fingerprint(), engine="ee")
    return out


# -- export -----------------------------------------------------------------------------------
def export_stack_ee(spec: FeatureSpec, *, bucket: str | None = None, folder: str | None = None,
                    description: str | None = None, file_prefix: str | None = None,
                    max_pixels: float = 1e10, tile_pixels: int | None = None, start: bool = False):
    """An Earth Engine export task writing the feature stack as cloud-optimized GeoTIFF tile(s).

    Exactly one of ``bucket`` (Google Cloud Storage: ``Export.image.toCloudStorage``) or ``folder``
    (Google Drive: ``Export.image.toDrive``). The export is on the spec grid: explicit ``crs``,
    ``crsTransform`` and ``region`` (the grid extent), float32 with nodata
    :data:`sinks.cog.FLOAT_NODATA`, at most ``max_pixels`` pixels. Earth Engine splits a large
    export into several files named ``<prefix>-<row offset>-<column offset>.tif``; ``tile_pixels``
    (a multiple of 256, Earth Engine's shard size) sets each file's width and height in pixels
    (``fileDimensions``), and fully masked tiles are skipped. The task is returned unstarted unless
    ``start``; follow it with ``task.status()`` or the Earth Engine task list.
    """
    return export_image(spec, lambda region: feature_image(spec, region=region), bucket=bucket, folder=folder,
                        description=description or f"sinks_{spec.name}",
                        file_prefix=file_prefix or f"sinks_{spec.name}", max_pixels=max_pixels,
                        tile_pixels=tile_pixels, start=start, what="export_stack_ee")


def check_export(spec: FeatureSpec, *, bucket: str | None, folder: str | None, tile_pixels: int | None,
                 what: str = "the export") -> EEGrid:
    """Everything about an export that can be checked without Earth Engine (so before signing in):
    one destination, the tile size, a grid with an extent, the ``[sources.ee]`` of every source
    the features read. Returns the grid."""
    if (bucket is None) == (folder is None):
        raise InputError(f"{what} needs exactly one of bucket (Cloud Storage) or folder (Drive)")
    if tile_pixels is not None and (tile_pixels <= 0 or tile_pixels % 256):
        raise InputError(f"tile size {tile_pixels} pixels: give a positive multiple of 256 (Earth Engine's shard size)")
    grid = ee_grid(spec)
    _grid_bounds(grid)
    needed = _needed_sources(spec)
    for source in spec.sources:
        if source.name in needed:
            _check_ee(source)
    return grid


def export_image(spec: FeatureSpec, make_image, *, bucket: str | None, folder: str | None, description: str,
                 file_prefix: str, max_pixels: float = 1e10, tile_pixels: int | None = None,
                 start: bool = False, what: str = "the export"):
    """An unstarted (unless ``start``) export of ``make_image(region)`` on ``spec``'s grid (``region``:
    its extent) as cloud-optimized GeoTIFF(s): float32, nodata :data:`sinks.cog.FLOAT_NODATA`, to
    Cloud Storage (``bucket``) or Drive (``folder``), exactly one; the arguments are checked before
    the image is built."""
    from sinks.cog import FLOAT_NODATA

    grid = check_export(spec, bucket=bucket, folder=folder, tile_pixels=tile_pixels, what=what)
    ee = _ee()
    region = _region(ee, grid)
    image = make_image(region).unmask(FLOAT_NODATA, False).toFloat()
    common = dict(image=image, description=description, fileNamePrefix=file_prefix, region=region,
                  crs=grid.crs, crsTransform=list(grid.transform), maxPixels=int(max_pixels),
                  fileFormat="GeoTIFF", formatOptions={"cloudOptimized": True, "noData": FLOAT_NODATA},
                  skipEmptyTiles=True)
    if tile_pixels is not None:
        common["fileDimensions"] = int(tile_pixels)
    if bucket is not None:
        task = ee.batch.Export.image.toCloudStorage(bucket=bucket, **common)
    else:
        task = ee.batch.Export.image.toDrive(folder=folder, **common)
    if start:
        task.start()
    return task
