"""The Earth Engine engine, offline: graph structure, and parity with the local engine on arrays."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from sinks.covariates.local import LocalEngine
from sinks.covariates.spec import load_spec, parse_spec
from sinks.io import read_toml

ee_api = pytest.importorskip("ee")

from sinks.covariates import earthengine as eng  # noqa: E402
from tests.ee_offline import NetworkCall, encode, function_names, inline, invocations, offline_ee, run_graph  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CRS = "EPSG:32650"
ORIGIN = (500000.0, 3000000.0)


@pytest.fixture()
def ee():
    with offline_ee() as module:
        yield module


def _write(path: Path, bands: list[np.ndarray], res: float, crs: str = CRS, origin=ORIGIN) -> str:
    data = np.stack(bands).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=len(bands),
                       dtype="float32", crs=crs, transform=Affine(res, 0, origin[0], 0, -res, origin[1])) as dst:
        dst.write(data)
    return str(path)


def _parity(raw: dict, tmp_path: Path, scenes: dict[str, list[dict[str, np.ndarray]]], origin=ORIGIN,
            terrain: bool = False):
    """Local engine vs the interpreted EE graph for one spec mapping; scenes: source -> [{band: raw}].

    Terrain features are dropped unless ``terrain`` (the engines' gradients differ by design: Horn
    3 x 3 vs 4-connected, equal only on planes). Returns (spec, local, ee) arrays.
    """
    raw = copy.deepcopy(raw)
    if not terrain:
        raw["features"] = [f for f in raw["features"] if "terrain" not in f]
    res = float(raw["grid"]["resolution"])
    images, collections = {}, {}
    for source in raw["sources"]:
        spec_bands = [b if isinstance(b, str) else b["name"] for b in source["bands"]]
        paths = []
        for k, scene in enumerate(scenes[source["name"]]):
            paths.append(_write(tmp_path / f"{source['name']}_{k}.tif", [scene[b] for b in spec_bands], res,
                                raw["grid"]["crs"], origin))
        source.pop("path", None)
        source["paths"] = paths
        band_map = source["ee"].get("bands") or {b: b for b in spec_bands}
        to_ee = {v: k for k, v in band_map.items()}
        ee_scenes = [{to_ee[b]: scene[b] for b in spec_bands} for scene in scenes[source["name"]]]
        if "image" in source["ee"]:
            images[source["ee"]["image"]] = ee_scenes[0]
        else:
            ids = source["ee"]["collection"]
            ids = [ids] if isinstance(ids, str) else ids
            linked = source["ee"].get("link", {}).get("bands", [])
            collections[ids[0]] = [{b: v for b, v in scene.items() if b not in linked} for scene in ee_scenes]
            for other in ids[1:]:
                collections[other] = []
            if linked:  # the companion collection holds only the linked bands
                collections[source["ee"]["link"]["collection"]] = [{b: scene[b] for b in linked} for scene in ee_scenes]
    spec = parse_spec(raw, base=tmp_path, name=raw.get("name", "t"))
    shape = next(iter(next(iter(scenes.values()))[0].values())).shape
    with LocalEngine(spec) as engine:
        local = engine.compute(Window(0, 0, shape[1], shape[0]))
    result = run_graph(eng.feature_image(spec), shape, images=images, collections=collections)
    assert list(result) == spec.feature_names
    return spec, local, np.stack([result[n] for n in spec.feature_names])


def _assert_same(spec, local, remote):
    for i, name in enumerate(spec.feature_names):
        np.testing.assert_array_equal(np.isnan(local[i]), np.isnan(remote[i]), err_msg=f"mask of {name}")
        np.testing.assert_allclose(local[i], remote[i], rtol=2e-5, atol=2e-6, equal_nan=True, err_msg=name)


# -- offline harness ----------------------------------------------------------------------
def test_offline_initialize_and_network_refused(ee):
    image = ee.Image("USGS/SRTMGL1_003")
    with pytest.raises(NetworkCall):
        image.getInfo()


def test_no_ee_call_at_import():
    import subprocess
    import sys

    code = ("import sys, sinks.covariates.earthengine as m; print('ee' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_missing_earthengine_api_is_a_clear_error(monkeypatch):
    import builtins

    from sinks.errors import MissingDependencyError

    real = builtins.__import__

    def no_ee(name, *args, **kwargs):
        if name == "ee" or name.startswith("ee."):
            raise ImportError("no ee")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ee)
    monkeypatch.delitem(__import__("sys").modules, "ee")
    with pytest.raises(MissingDependencyError, match=r"sinks\[ee\]"):
        eng.feature_image(load_spec(REPO / "features" / "dem.toml"))


# -- structure ----------------------------------------------------------------------------
def test_sentinel2_graph_masks_before_median(ee):
    spec = load_spec(REPO / "features" / "sentinel2_l2a.toml")
    region = ee.Geometry.Rectangle([0, 0, 100, 100], CRS, False)
    graph = encode(eng.feature_image(spec, region=region))
    text = json.dumps(graph)
    assert '"COPERNICUS/S2_SR_HARMONIZED"' in text
    names = function_names(graph)
    assert "Filter.dateRangeContains" in names and "Filter.intersects" in names and "Filter.lessThan" in names
    dates = invocations(graph, "DateRange")[0]
    assert dates["start"]["constantValue"] == "2023-01-01" and dates["end"]["constantValue"] == "2024-01-01"
    # the median reduces a collection produced by map(), whose body holds updateMask
    median = list({json.dumps(m, sort_keys=True): m for m in invocations(graph, "reduce.median")}.values())
    assert len(median) == 1  # one composite, shared by all features
    assert median[0]["collection"]["functionInvocationValue"]["functionName"] == "Collection.map"
    inner = json.dumps(median[0])
    assert "Collection.map" in inner
    bodies = [a["baseAlgorithm"]["functionDefinitionValue"]["body"] for a in invocations(median[0], "Collection.map")]
    assert any("Image.updateMask" in json.dumps(body) for body in bodies)
    masks = {json.dumps(a, sort_keys=True) for a in invocations(median[0], "Image.updateMask")}
    assert len(masks) == 2  # nodata = 0, then the SCL valid expression, both on raw scene values


def test_landsat_merges_collections_and_uses_qa_bits(ee):
    spec = load_spec(REPO / "features" / "landsat89_c2l2.toml")
    assert spec.source("landsat").band("red").scale == 0.0000275 and spec.source("landsat").band("red").offset == -0.2
    graph = encode(eng.feature_image(spec))
    text = json.dumps(graph)
    assert "LANDSAT/LC08/C02/T1_L2" in text and "LANDSAT/LC09/C02/T1_L2" in text
    names = function_names(graph)
    assert "ImageCollection.merge" in names and "Image.rightShift" in names and "Image.bitwiseAnd" in names


def test_terrain_and_image_sources(ee):
    spec = load_spec(REPO / "features" / "dem.toml")
    graph = encode(eng.feature_image(spec))
    names = function_names(graph)
    assert "Image.load" in names and "Terrain.slope" in names and "Terrain.aspect" in names
    reproject = invocations(graph, "Image.reproject")
    assert reproject and all("crs" in r and ("scale" in r or "crsTransform" in r) for r in reproject)
    with pytest.raises(eng.SpecError, match="twi"):
        raw = read_toml(REPO / "features" / "dem.toml", "spec")
        raw["features"].append({"name": "twi", "terrain": "twi", "band": "dem.elevation"})
        eng.feature_image(parse_spec(raw, base=REPO / "features"))


def test_bad_ee_section_is_a_spec_error(ee):
    raw = read_toml(REPO / "features" / "climate.toml", "spec")
    raw["sources"][0]["ee"]["start"] = "2020-01-01"
    with pytest.raises(eng.SpecError, match="collection"):
        eng.feature_image(parse_spec(raw, base=REPO / "features"))
    raw["sources"][0]["ee"] = {"image": "X", "bands": {"b": "bio01"}}
    with pytest.raises(eng.SpecError, match="bio12"):
        eng.feature_image(parse_spec(raw, base=REPO / "features"))


def test_export_options(ee, tmp_path):
    raw = read_toml(REPO / "features" / "sentinel1_grd.toml", "spec")
    raw["grid"].pop("like")
    raw["grid"]["extent"] = [500000, 3000000, 500100, 3000050]
    spec = parse_spec(raw, base=REPO / "features")
    task = eng.export_stack_ee(spec, bucket="my-bucket", file_prefix="stacks/s1")
    config = task.config
    options = config["fileExportOptions"]
    assert options["cloudStorageDestination"] == {"bucket": "my-bucket", "filenamePrefix": "stacks/s1"}
    assert options["geoTiffOptions"]["cloudOptimized"] is True
    assert int(config["maxPixels"]["value"]) == 10_000_000_000
    # the export's crs/crsTransform/region become Image.clip(Image.reproject(stack)) at the top
    top = inline(encode(config["expression"]))["functionInvocationValue"]
    assert top["functionName"] == "Image.clip"
    assert top["arguments"]["geometry"]["functionInvocationValue"]["arguments"]["coordinates"]["constantValue"] == [
        500000.0, 3000000.0, 500100.0, 3000050.0]
    reproject = top["arguments"]["input"]["functionInvocationValue"]
    assert reproject["functionName"] == "Image.reproject"
    assert reproject["arguments"]["crsTransform"]["constantValue"] == [10.0, 0.0, 500000.0, 0.0, -10.0, 3000050.0]
    assert "EPSG:32650" in json.dumps(reproject["arguments"]["crs"])
    assert "tileDimensions" not in options["geoTiffOptions"]  # Earth Engine's default file size
    drive = eng.export_stack_ee(spec, folder="sinks", tile_pixels=512)
    assert drive.config["fileExportOptions"]["driveDestination"]["folder"] == "sinks"
    assert drive.config["fileExportOptions"]["geoTiffOptions"]["tileDimensions"] == {"width": 512, "height": 512}
    assert drive.config["fileExportOptions"]["geoTiffOptions"]["skipEmptyFiles"] is True
    with pytest.raises(eng.InputError, match="multiple of 256"):
        eng.export_stack_ee(spec, folder="sinks", tile_pixels=500)
    with pytest.raises(eng.InputError):
        eng.export_stack_ee(spec)
    no_extent = load_spec(REPO / "features" / "sentinel1_grd.toml")
    with pytest.raises(eng.SpecError, match="extent"):
        eng.export_stack_ee(no_extent, bucket="b")


@pytest.mark.parametrize("kind", ["point", "buffer", "polygon"])
def test_extract_builds_reduce_regions_and_reads_answer(ee, monkeypatch, kind):
    import geopandas as gpd
    from shapely.geometry import Point

    raw = read_toml(REPO / "features" / "sentinel2_l2a.toml", "spec")
    raw["grid"].pop("like")
    raw["grid"]["extent"] = [500000, 3000000, 500200, 3000200]
    raw["footprint"] = {"kind": kind, "radius": 15} if kind == "buffer" else {"kind": kind}
    spec = parse_spec(raw, base=REPO / "features")
    points = [Point(500050, 3000050), Point(500150, 3000150)]
    geometry = [p.buffer(20) for p in points] if kind == "polygon" else points
    plots = gpd.GeoDataFrame({"plot_id": ["a", "b"], "stratum": [1, 2]}, geometry=geometry, crs=CRS).to_crs(4326)
    seen = []

    def answer(obj, *args, **kwargs):
        seen.append(encode(obj))
        if len(seen) == 2:  # the fallback request: plot b's centroid pixel only
            props = {"_row": 0, "_one_count": 1, "_valid_count": 1, **{f"{n}_mean": 0.5 for n in spec.feature_names}}
            return {"type": "FeatureCollection", "features": [{"properties": props}]}
        props_a = {"_row": 0, "_one_count": 9, "_valid_count": 7, **{f"{n}_mean": 0.25 for n in spec.feature_names}}
        # b: a point whose pixel is masked; a buffer/polygon holding no pixel centre
        props_b = {"_row": 1, "_one_count": 1 if kind == "point" else 0, "_valid_count": 0,
                   **{f"{n}_mean": None for n in spec.feature_names}}
        return {"type": "FeatureCollection", "features": [{"properties": props_a}, {"properties": props_b}]}

    monkeypatch.setattr(ee.data, "computeValue", answer)
    table = eng.extract_ee(spec, plots)
    assert list(table.columns) == ["plot_id", "x", "y", *spec.feature_names, "footprint_pixels", "valid_pixels", "stratum"]
    assert table.attrs["spec_fingerprint"] == spec.fingerprint() and table.attrs["crs"] == CRS
    assert table["x"].round(6).tolist() == [500050.0, 500150.0]  # grid CRS, as the local extract
    assert table["ndvi"].tolist()[0] == 0.25
    if kind == "point":
        assert len(seen) == 1 and np.isnan(table["ndvi"].tolist()[1])
        assert table["footprint_pixels"].tolist() == [9, 1] and table["valid_pixels"].tolist() == [7, 0]
    else:  # fell back to the pixel under b's centroid, as the local engine
        assert len(seen) == 2 and table["ndvi"].tolist()[1] == 0.5
        assert table["footprint_pixels"].tolist() == [9, 1] and table["valid_pixels"].tolist() == [7, 1]
        fallback = invocations(seen[1], "Image.reduceRegions")[0]
        points = invocations(fallback["collection"], "GeometryConstructors.Point")
        assert len(points) == 1 and "Geometry.buffer" not in function_names(fallback["collection"])
        assert [round(v, 6) for v in points[0]["coordinates"]["constantValue"]] == [500150.0, 3000150.0]
    call = invocations(seen[0], "Image.reduceRegions")[0]
    assert "EPSG:32650" in json.dumps(call["crs"])
    assert call["crsTransform"]["constantValue"] == [10.0, 0.0, 500000.0, 0.0, -10.0, 3000200.0]
    names = function_names(seen[0])
    assert "Reducer.combine" in names and "Reducer.unweighted" in names and "Filter.intersects" in names
    # unweighted wraps the combined reducer: every pixel whose centre is in the footprint weighs 1
    assert call["reducer"]["functionInvocationValue"]["functionName"] == "Reducer.unweighted"
    geometry_calls = {"point": "GeometryConstructors.Point", "buffer": "Geometry.buffer",
                      "polygon": "GeometryConstructors.Polygon"}
    assert geometry_calls[kind] in names


def test_extract_refuses_plots_outside_the_grid(ee):
    import geopandas as gpd
    from shapely.geometry import Point

    raw = read_toml(REPO / "features" / "dem.toml", "spec")
    raw["grid"].pop("like")
    raw["grid"]["extent"] = [500000, 3000000, 500300, 3000300]
    spec = parse_spec(raw, base=REPO / "features")
    plots = gpd.GeoDataFrame({"plot_id": ["in", "far"]}, geometry=[Point(500100, 3000100), Point(600000, 3000100)], crs=CRS)
    with pytest.raises(eng.InputError, match=r"1 of 2 plot\(s\) lie outside.*far"):
        eng.extract_ee(spec, plots)
    with pytest.raises(eng.InputError, match="plot_id"):
        eng.extract_ee(spec, plots.drop(columns="plot_id"))


def test_initialize_needs_a_project(ee):
    with pytest.raises(eng.InputError, match="project"):
        eng.initialize("")


def test_initialize_failure_is_a_clear_error(monkeypatch):
    def no_credentials(*args, **kwargs):
        raise ee_api.EEException("Please authorize access to your Earth Engine account")

    monkeypatch.setattr(ee_api, "Initialize", no_credentials)
    with pytest.raises(eng.InputError, match="earthengine authenticate"):
        eng.initialize("my-project")


def test_not_initialized_is_a_clear_error():
    ee_api.Reset()
    with pytest.raises(eng.InputError, match="initialize"):
        eng.feature_image(load_spec(REPO / "features" / "dem.toml"))


# -- parity with the local engine --------------------------------------------------------
def _rng():
    return np.random.default_rng(7)


def test_parity_sentinel2(ee, tmp_path):
    rng = _rng()
    shape = (6, 5)
    scenes = []
    for _ in range(3):
        scene = {b: rng.integers(1, 6000, shape).astype(np.float32) for b in ("blue", "green", "red", "nir", "swir1", "swir2")}
        scene["scl"] = rng.choice([3, 4, 5, 6, 7, 8, 9], shape).astype(np.float32)
        scene["red"][0, :2] = 0  # nodata
        scenes.append(scene)
    raw = read_toml(REPO / "features" / "sentinel2_l2a.toml", "spec")
    spec, local, remote = _parity(raw, tmp_path, {"s2": scenes})
    assert np.isnan(local).any() and np.isfinite(local).any()
    _assert_same(spec, local, remote)


def test_parity_sentinel2_cloud_score_plus(ee, tmp_path):
    """The Cloud Score+ variant in docs/earthengine.md: cs_cdf linked on system:index, masked by the
    same ``valid`` expression in both engines (locally the file holds the exported cs_cdf band)."""
    rng = _rng()
    shape = (5, 6)
    scenes = []
    for _ in range(3):
        scene = {b: rng.integers(1, 6000, shape).astype(np.float32) for b in ("blue", "green", "red", "nir", "swir1", "swir2")}
        scene["scl"] = np.full(shape, 4, dtype=np.float32)
        scene["cs"] = rng.uniform(0, 1, shape).astype(np.float32)
        scenes.append(scene)
    raw = read_toml(REPO / "features" / "sentinel2_l2a.toml", "spec")
    source = raw["sources"][0]
    source["bands"].append({"name": "cs", "index": 8})
    source["valid"] = "cs >= 0.6"
    source["ee"]["bands"]["cs_cdf"] = "cs"
    source["ee"]["link"] = {"collection": "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED", "bands": ["cs_cdf"]}
    spec, local, remote = _parity(raw, tmp_path, {"s2": scenes})
    assert np.isnan(local).any() and np.isfinite(local).any()
    _assert_same(spec, local, remote)
    graph = encode(eng.feature_image(spec))
    link = invocations(graph, "Image.linkCollection")
    assert link and "cs_cdf" in json.dumps(link[0]["linkedBands"])
    assert "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED" in json.dumps(link[0]["imageCollection"])
    source["ee"]["link"]["bands"] = ["cs"]
    with pytest.raises(eng.SpecError, match="linked band"):
        eng.feature_image(parse_spec(raw, base=tmp_path))


def test_parity_landsat(ee, tmp_path):
    rng = _rng()
    shape = (5, 7)
    scenes = []
    for _ in range(4):
        scene = {b: rng.integers(7273, 43636, shape).astype(np.float32) for b in ("blue", "green", "red", "nir", "swir1", "swir2")}
        scene["qa"] = rng.choice([21824, 21952, 22280, 23888, 1, 55052], shape).astype(np.float32)
        scenes.append(scene)
    raw = read_toml(REPO / "features" / "landsat89_c2l2.toml", "spec")
    spec, local, remote = _parity(raw, tmp_path, {"landsat": scenes})
    assert np.isnan(local).any() and np.isfinite(local).any()
    _assert_same(spec, local, remote)


@pytest.mark.parametrize("name", ["sentinel1_grd", "dem", "climate"])
def test_parity_other_shipped_specs(ee, tmp_path, name):
    rng = _rng()
    raw = read_toml(REPO / "features" / f"{name}.toml", "spec")
    scenes = {}
    for source in raw["sources"]:
        bands = [b if isinstance(b, str) else b["name"] for b in source["bands"]]
        count = 1 if "image" in source["ee"] else 3
        scenes[source["name"]] = [{b: rng.normal(-12, 4, (4, 6)).astype(np.float32) for b in bands} for _ in range(count)]
        if source.get("nodata") is not None:
            scenes[source["name"]][0][bands[0]][1, 1] = source["nodata"]
    spec, local, remote = _parity(raw, tmp_path, scenes)
    _assert_same(spec, local, remote)


@pytest.mark.parametrize("composite", ["first", "mean", "min", "max"])
def test_parity_composites(ee, tmp_path, composite):
    rng = _rng()
    raw = read_toml(REPO / "features" / "sentinel1_grd.toml", "spec")
    raw["sources"][0]["composite"] = composite
    scenes = [{b: rng.normal(-12, 4, (4, 6)).astype(np.float32) for b in ("vv", "vh")} for _ in range(3)]
    scenes[0]["vv"][0, :3] = np.nan  # masked in the first scene: "first" takes the second
    scenes[1]["vv"][0, 0] = np.nan
    scenes[2]["vv"][0, 0] = np.nan  # masked everywhere: nodata
    spec, local, remote = _parity(raw, tmp_path, {"s1": scenes})
    assert np.isnan(local[0, 0, 0]) and np.isfinite(local[0, 0, 1])
    _assert_same(spec, local, remote)


EXPRESSIONS = [
    "(nir - red) / (nir + red)",
    "nir / (red - red)",
    "sqrt(nir - 0.3) + log(red - 0.2) - log10(nir)",
    "min(nir, red) + max(nir, 0.5) * abs(red - nir)",
    "max(min(nir, 0.8), 0.05)",
    "max(nir, red, 0.3)",
    "(nir > red) & (red > 0.2) | ~(nir < 0.1)",
    "(nir >= 0.4) and not (red == 0.5) or (nir != red)",
    "nir % 0.3 + nir ** 2 - exp(-nir)",
    "bit(qa, 2) + bit(qa, 0) * 10",
    "-nir + 2 * 3",
    "0.1 < nir < 0.6",
]


def test_parity_expressions_with_nodata(ee, tmp_path):
    rng = _rng()
    shape = (8, 8)
    scene = {"nir": rng.uniform(0, 1, shape).astype(np.float32), "red": rng.uniform(0, 1, shape).astype(np.float32),
             "qa": rng.integers(0, 16, shape).astype(np.float32)}
    scene["red"][scene["red"] < 0.15] = np.nan
    scene["nir"][0, 0] = np.nan
    scene["red"][1, 1] = 0.5
    raw = {"name": "expr", "grid": {"crs": CRS, "resolution": 10, "like": "img"},
           "sources": [{"name": "img", "path": "x.tif", "bands": ["nir", "red", "qa"], "ee": {"image": "TEST/IMG"}}],
           "features": [{"name": f"f{i}", "expression": e} for i, e in enumerate(EXPRESSIONS)]}
    spec, local, remote = _parity(raw, tmp_path, {"img": [scene]})
    _assert_same(spec, local, remote)


@pytest.mark.parametrize("valid", ["b - 1", "(a - 100) * (b - 1) > 0", "bit(b, 1) == 0", "(a > 100) | (b > 2)", "not (a < 50)"])
def test_parity_valid_mask_with_nodata(ee, tmp_path, valid):
    """A ``valid`` expression on raw values that is itself nodata (a nodata band, division by 0)
    keeps the pixel in both engines (numpy reads NaN as true); it masks every band otherwise."""
    rng = _rng()
    shape = (6, 6)
    scene = {"a": rng.integers(1, 300, shape).astype(np.float32), "b": rng.integers(0, 5, shape).astype(np.float32)}
    scene["a"][0, :] = 0  # nodata in a only
    raw = {"name": "valid", "grid": {"crs": CRS, "resolution": 10, "like": "img"},
           "sources": [{"name": "img", "path": "x.tif", "bands": [{"name": "a", "scale": 0.5, "offset": 1},
                                                                 "b"],
                        "nodata": 0, "valid": valid, "ee": {"image": "TEST/VALID"}}],
           "features": [{"name": "a", "band": "img.a"}, {"name": "b", "band": "img.b"}]}
    spec, local, remote = _parity(raw, tmp_path, {"img": [scene]})
    assert np.isnan(local).any() and np.isfinite(local).any()
    _assert_same(spec, local, remote)


def test_parity_terrain_on_a_plane(ee, tmp_path):
    """On a tilted plane Horn's 3 x 3 gradient and Earth Engine's 4-connected one are exact, so
    slope, aspect, northness, eastness and TPI (0) agree, edges (masked in both) included."""
    raw = read_toml(REPO / "features" / "dem.toml", "spec")
    rows, cols = np.mgrid[0:7, 0:9]
    plane = (250.0 + 3.0 * cols - 2.0 * rows).astype(np.float32)  # down toward west and south
    spec, local, remote = _parity(raw, tmp_path, {"dem": [{"elevation": plane}]}, terrain=True)
    assert spec.feature_names == ["elevation", "slope", "aspect", "northness", "eastness", "tpi"]
    _assert_same(spec, local, remote)
    inner = local[:, 1:-1, 1:-1]
    assert np.isfinite(inner).all() and np.isnan(local[1:, 0, :]).all()
    slope_expected = np.degrees(np.arctan(np.hypot(3.0, 2.0) / 30.0))
    np.testing.assert_allclose(inner[1], slope_expected, rtol=1e-5)
    assert 180 < inner[2].mean() < 270  # faces south-west


def test_terrain_engines_differ_off_planes(ee, tmp_path):
    """Documented difference: on rough ground the gradients differ (TPI, a fixed kernel, does not)."""
    raw = read_toml(REPO / "features" / "dem.toml", "spec")
    rough = np.random.default_rng(3).normal(300, 10, (8, 8)).astype(np.float32)
    rough[4, 4] = -32768  # the SRTM void: masked, so its neighbours' terrain is nodata in both
    spec, local, remote = _parity(raw, tmp_path, {"dem": [{"elevation": rough}]}, terrain=True)
    i = {n: k for k, n in enumerate(spec.feature_names)}
    for name in ("elevation", "tpi"):
        np.testing.assert_allclose(local[i[name]], remote[i[name]], rtol=2e-5, atol=1e-4, equal_nan=True)
    both = np.isfinite(local[i["slope"]]) & np.isfinite(remote[i["slope"]])
    assert both.sum() >= 20
    assert np.abs(local[i["slope"]] - remote[i["slope"]])[both].max() > 1.0  # degrees


def test_parity_meuse(ee, tmp_path):
    """features/meuse.toml on its vendored rasters: each source given an EE image of the same pixels."""
    raw = read_toml(REPO / "features" / "meuse.toml", "spec")
    scenes = {}
    for source in raw["sources"]:
        path = source["path"].replace("${SINKS_DATASETS}", str(REPO / "sinks" / "datasets"))
        with rasterio.open(path) as ds:
            scenes[source["name"]] = [{source["bands"][0]: ds.read(1, masked=True).astype(np.float32).filled(np.nan)}]
        source["ee"] = {"image": f"meuse/{source['name']}"}
    raw["features"].append({"name": "wet", "expression": "twi * (flood_frequency > 1) + log(chnl_dist + 1)"})
    spec, local, remote = _parity(raw, tmp_path, scenes, origin=(178440.0, 333760.0))
    _assert_same(spec, local, remote)


# -- live ---------------------------------------------------------------------------------
live = pytest.mark.skipif(not os.environ.get("SINKS_EE_PROJECT"),
                          reason="set SINKS_EE_PROJECT (and run earthengine authenticate) for the live Earth Engine suite")


@pytest.mark.ee_live
@live
def test_live_terrain_on_a_plane():
    """The offline interpreter's model of ee.Terrain (exact on planes, 0=N 90=E) against the server."""
    eng.initialize(os.environ["SINKS_EE_PROJECT"])
    ee = ee_api
    proj = ee.Projection(CRS).atScale(30)
    xy = ee.Image.pixelCoordinates(proj)
    plane = xy.select("x").multiply(0.1).add(xy.select("y").multiply(-0.05)).reproject(proj)
    point = ee.Geometry.Point([ORIGIN[0] + 15, ORIGIN[1] + 15], CRS)
    got = ee.Terrain.slope(plane).addBands(ee.Terrain.aspect(plane)).reduceRegion(
        ee.Reducer.first(), point, crs=proj, scale=30).getInfo()
    # dz/dx = 0.1 (east), dz/dy = +0.05 toward south: downslope toward west-north-west
    assert got["slope"] == pytest.approx(np.degrees(np.arctan(np.hypot(0.1, 0.05))), abs=0.01)
    assert got["aspect"] == pytest.approx(np.degrees(np.arctan2(-0.1, 0.05)) % 360, abs=0.1)


@pytest.mark.ee_live
@live
def test_live_extract_dem():
    import geopandas as gpd
    from shapely.geometry import Point

    eng.initialize(os.environ["SINKS_EE_PROJECT"])
    spec = load_spec(REPO / "features" / "dem.toml")
    plots = gpd.GeoDataFrame({"plot_id": [1]}, geometry=[Point(116.39, 39.91)], crs="EPSG:4326")
    table = eng.extract_ee(spec, plots)
    assert 0 < table["elevation"].iloc[0] < 200 and table["valid_pixels"].iloc[0] == 1


def test_unset_path_variable_only_allowed_with_an_ee_section(tmp_path, monkeypatch):
    monkeypatch.delenv("SINKS_S2_DIR", raising=False)
    spec = load_spec(REPO / "features" / "sentinel2_l2a.toml")
    assert "${SINKS_S2_DIR}" in spec.source("s2").paths[0]
    with pytest.raises(eng.InputError, match="not found"):
        LocalEngine(spec)
    raw = read_toml(REPO / "features" / "sentinel2_l2a.toml", "spec")
    del raw["sources"][0]["ee"]
    with pytest.raises(eng.SpecError, match="SINKS_S2_DIR"):
        parse_spec(raw, base=tmp_path)
    monkeypatch.setenv("SINKS_S2_DIR", str(tmp_path))
    assert load_spec(REPO / "features" / "sentinel2_l2a.toml").source("s2").paths[0] == str(tmp_path / "s2_l2a.tif")


def test_parity_demo_county_spec(ee, tmp_path):
    """The demo's spec (reflectance x 10000, nodata 0, indices) with its sources given EE images."""
    import tomllib
    from importlib import resources

    raw = tomllib.loads(resources.files("sinks.demo").joinpath("demo_county.features.toml").read_text())
    rng = _rng()
    scenes = {}
    for source in raw["sources"]:
        source["ee"] = {"image": f"demo/{source['name']}"}
        source["nodata"] = 0
        bands = [b if isinstance(b, str) else b["name"] for b in source["bands"]]
        scenes[source["name"]] = [{b: rng.integers(0, 5000, (5, 5)).astype(np.float32) for b in bands}]
    scenes["sr"][0]["red"][2, :] = 0
    scenes["sr"][0]["nir"][:, 3] = 0
    spec, local, remote = _parity(raw, tmp_path, scenes)
    assert np.isnan(local[spec.feature_names.index("ndvi")]).sum() >= 9
    _assert_same(spec, local, remote)


def test_map_export_task_from_a_bundle_and_its_spec(ee, tmp_path):
    """A bundle's map as an Earth Engine export: the spec's feature graph, classified by the model's
    tree strings, exported on the spec grid; built offline, never started."""
    import pandas as pd

    from sinks.errors import InputError, ModelMismatchError
    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train
    from sinks.mapping.ee_export import export_map_ee
    from sinks.mapping.ee_trees import ee_tree_strings

    raw = read_toml(REPO / "features" / "sentinel1_grd.toml", "spec")
    raw["grid"].pop("like")
    raw["grid"]["extent"] = [500000, 3000000, 500100, 3000050]
    spec_path = tmp_path / "s1.toml"  # the shipped spec on an explicit extent instead of a local raster
    text = (REPO / "features" / "sentinel1_grd.toml").read_text(encoding="utf-8")
    spec_path.write_text(text.replace('like = "s1"', "extent = [500000, 3000000, 500100, 3000050]"), encoding="utf-8")
    spec = load_spec(spec_path)
    rng = np.random.default_rng(0)
    n = 60
    table = pd.DataFrame({"plot_id": range(n), "x": rng.uniform(500000, 500100, n), "y": rng.uniform(3000000, 3000050, n),
                          **{name: rng.normal(size=n) for name in spec.feature_names}})
    table["carbon_mg_ha"] = 50 + 10 * table[spec.feature_names[0]] + rng.normal(0, 2, n)
    recipe = parse_recipe({"name": "s1", "features": str(spec_path),
                           "target": {"column": "carbon_mg_ha", "units": "Mg C/ha"},
                           "estimator": {"kind": "xgboost", "params": {"n_estimators": 5, "max_depth": 2, "n_jobs": 1}},
                           "validation": {"folds": 3, "schemes": ["random"], "scheme": "random"}},
                          base=tmp_path, path=tmp_path / "r.toml")
    bundle = train(recipe, table, tmp_path / "bundle", progress=False)
    task = export_map_ee(bundle, spec, bucket="maps-bucket", file_prefix="maps/carbon")
    config = task.config
    assert config["fileExportOptions"]["cloudStorageDestination"] == {"bucket": "maps-bucket", "filenamePrefix": "maps/carbon"}
    graph = inline(encode(config["expression"]))
    names = function_names(graph)
    assert "Classifier.decisionTreeEnsemble" in names and "Image.classify" in names
    trees = invocations(graph, "Classifier.decisionTreeEnsemble")[0]["treeStrings"]["constantValue"]
    from sinks.bundle import load_bundle

    assert trees == ee_tree_strings(load_bundle(bundle).model, spec.feature_names)  # the oracle-checked strings
    classify = invocations(graph, "Image.classify")[0]
    assert classify["outputName"]["constantValue"] == "carbon"
    # the same grid as a stack export: Image.reproject with the spec's crsTransform
    assert invocations(graph, "Image.reproject")[0]["crsTransform"]["constantValue"] == [
        10.0, 0.0, 500000.0, 0.0, -10.0, 3000050.0]
    with pytest.raises(InputError, match="exactly one of bucket"):
        export_map_ee(bundle, spec)
    other = dict(raw, features=raw["features"][:-1])
    with pytest.raises(ModelMismatchError):
        export_map_ee(bundle, parse_spec(other, base=tmp_path))
