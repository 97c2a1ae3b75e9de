"""Tile-by-tile prediction into COGs: spec or stack inputs, band choice, STAC Item, mismatches and
failures refused or leaving nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sinks.covariates.spec import load_spec
from sinks.errors import ModelMismatchError
from sinks.mapping.predict import AOAWarning, predict_map
from tests.badinput import assert_refused


def mapping_demo(tmp_path_factory):
    """The 150-pixel demo county (bundle, spec, data) and its covariate stack, built once per session
    and shared by the mapping test modules (tests/test_executors.py, tests/test_resume.py)."""
    from sinks.covariates.extract import build_stack
    from sinks.demo.run import run_demo

    root = tmp_path_factory.getbasetemp() / "mapping-demo"
    marker = root / "done"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        run_demo(root / "ws", size=150, seed=5, progress=False)
        build_stack(load_spec(root / "ws" / "features" / "demo_county.toml"), root / "stack.tif", block=64,
                    progress=False)
        marker.write_text("ok")
    ws = root / "ws"
    return {"bundle": ws / "models" / "demo_county", "spec": ws / "features" / "demo_county.toml",
            "data": ws / "data", "stack": root / "stack.tif", "ws": ws}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return mapping_demo(tmp_path_factory)


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), list(ds.descriptions)


def test_threads_give_the_same_map(demo, tmp_path):
    a = predict_map(demo["bundle"], demo["spec"], tmp_path / "a.tif", block=64, progress=False)
    b = predict_map(demo["bundle"], demo["spec"], tmp_path / "b.tif", block=64, n_jobs=2, progress=False)
    assert a.read_bytes() == b.read_bytes()
    with rasterio.open(a) as ds:
        assert ds.descriptions == ("carbon", "lower", "upper", "di", "aoa")
        assert ds.units[0] == "Mg C/ha" and ds.nodata == -9999
        assert ds.tags()["sinks_bundle_id"] and ds.tags(1)["units"] == "Mg C/ha"


def test_the_map_year_is_tagged_and_checked(demo, tmp_path):
    """--year goes into the tags, where change and credit read it; a year that is none is refused first."""
    from sinks.errors import InputError
    from sinks.mapping.change import read_map_info

    path = predict_map(demo["bundle"], demo["spec"], tmp_path / "y.tif", bands="carbon", block=64, progress=False,
                       year=2021)
    assert read_map_info(path).year == 2021.0
    assert read_map_info(predict_map(demo["bundle"], demo["spec"], tmp_path / "n.tif", bands="carbon", block=64,
                                     progress=False)).year is None
    for bad in (20210, "2021a", float("nan")):
        with pytest.raises(InputError, match="--year"):
            predict_map(demo["bundle"], demo["spec"], tmp_path / "bad.tif", progress=False, year=bad)
    assert not (tmp_path / "bad.tif").exists()


def test_stack_gives_the_same_values_as_the_spec(demo, tmp_path):
    from_spec = predict_map(demo["bundle"], demo["spec"], tmp_path / "a.tif", block=32, progress=False)
    from_stack = predict_map(demo["bundle"], None, tmp_path / "b.tif", stack=demo["stack"], block=32, progress=False)
    both = predict_map(demo["bundle"], demo["spec"], tmp_path / "c.tif", stack=demo["stack"], block=32, progress=False)
    a, names_a = _read(from_spec)
    for other in (from_stack, both):
        b, names_b = _read(other)
        assert names_a == names_b
        np.testing.assert_array_equal(a, b)


def test_stack_bands_matched_by_name_in_any_order(demo, tmp_path):
    with rasterio.open(demo["stack"]) as src:
        profile, data, names = src.profile, src.read(), list(src.descriptions)
    order = list(reversed(range(len(names))))
    shuffled = tmp_path / "shuffled.tif"
    with rasterio.open(shuffled, "w", **{**profile, "driver": "GTiff"}) as dst:
        dst.write(data[order])
        for i, k in enumerate(order, start=1):
            dst.set_band_description(i, names[k])
    a = predict_map(demo["bundle"], None, tmp_path / "a.tif", stack=demo["stack"], block=64, progress=False)
    b = predict_map(demo["bundle"], None, tmp_path / "b.tif", stack=shuffled, block=64, progress=False)
    np.testing.assert_array_equal(_read(a)[0], _read(b)[0])


@pytest.mark.parametrize("dtype,nodata,scale", [("float64", 1e20, 1.0), ("float64", -3.4e38, 1.0),
                                                 ("int32", 2**31 - 1, 1e-3)])
def test_stack_nodata_is_compared_in_the_bands_own_type(demo, tmp_path, dtype, nodata, scale):
    """A nodata value float32 cannot hold exactly (1e20 in a float64 band, 2^31 - 1 in an int32 one)
    masks its pixels, as GDAL compares it, instead of being mapped as data."""
    with rasterio.open(demo["stack"]) as src:
        profile, data, names = src.profile, src.read(), list(src.descriptions)
    gap = (data == src.nodata) | np.isnan(data)
    assert gap.any()
    values = np.round(data.astype(np.float64) / scale) if dtype == "int32" else data.astype(dtype)
    values = np.where(gap, nodata, values).astype(dtype)
    other = tmp_path / "other.tif"
    with rasterio.open(other, "w", **{**profile, "driver": "GTiff", "dtype": dtype, "nodata": nodata}) as dst:
        dst.write(values)
        dst.descriptions = names
        dst.scales = [scale] * len(names)
    a = _read(predict_map(demo["bundle"], None, tmp_path / "a.tif", stack=demo["stack"], bands="carbon",
                          block=64, progress=False))[0][0]
    b = _read(predict_map(demo["bundle"], None, tmp_path / "b.tif", stack=other, bands="carbon", block=64,
                          progress=False))[0][0]
    np.testing.assert_array_equal(a == -9999, b == -9999)
    if dtype == "float64":
        np.testing.assert_array_equal(a, b)


def test_prediction_is_held_at_the_stock_lower_bound(demo):
    """A regressor extrapolating a stock below 0 gives 0, and lower <= prediction <= upper."""
    from sinks.bundle import load_bundle

    bundle = load_bundle(demo["bundle"])
    with rasterio.open(demo["stack"]) as src:
        X = src.read(window=rasterio.windows.Window(0, 0, 40, 40)).reshape(src.count, -1).T
    X = X[(X != -9999).all(axis=1)]
    model = bundle.model

    class Shifted:  # the bundle's model, 1000 Mg C/ha lower: every prediction below 0
        def predict(self, rows):
            return model.predict(rows) - 1000.0

    bundle.model = Shifted()
    out = bundle.predict(X)
    assert len(X) and (out["prediction"] == 0).all()
    assert (out["lower"] <= out["prediction"]).all() and (out["prediction"] <= out["upper"]).all()
    np.testing.assert_array_equal(bundle.predict_target(X), out["prediction"])


def test_bundle_predict_matches_columns_by_name_and_leaves_missing_rows_unpredicted(demo):
    import pandas as pd

    from sinks.bundle import load_bundle

    bundle = load_bundle(demo["bundle"])
    with rasterio.open(demo["stack"]) as src:
        X = src.read(window=rasterio.windows.Window(0, 0, 30, 30)).reshape(src.count, -1).T
    X = X[(X != -9999).all(axis=1)][:50].astype(np.float64)
    names = bundle.feature_names
    ref = bundle.predict(X)
    table = pd.DataFrame(X, columns=names)
    shuffled = bundle.predict(table[names[::-1]])  # columns by name, not position
    for key in ref:
        np.testing.assert_array_equal(shuffled[key], ref[key])
    with pytest.raises(ModelMismatchError, match=f"lacks feature column.*{names[0]}"):
        bundle.predict(table.drop(columns=names[0]))
    X[3, 0], X[7, 1] = np.nan, 1e300  # missing, and beyond float32
    out = bundle.predict(X)
    assert np.isnan(out["prediction"][[3, 7]]).all() and (out["aoa"][[3, 7]] == 0).all()
    assert np.isnan(bundle.predict_target(X)[[3, 7]]).all()
    np.testing.assert_array_equal(np.delete(out["prediction"], [3, 7]), np.delete(ref["prediction"], [3, 7]))
    assert all(len(v) == 0 for v in bundle.predict(X[:0]).values())
    with pytest.raises(ModelMismatchError, match="got a 0-D array"):
        bundle.predict(np.float64(3))
    with pytest.raises(ModelMismatchError, match="got an array with 2 columns"):
        bundle.predict_target(X[:, :2])
    assert repr(bundle).startswith(f"Bundle({bundle.bundle_id}, ") and len(repr(bundle)) < 300
    assert bundle.at_level(np.float32(0.8)).interval.level == pytest.approx(0.8)


def test_a_calibration_that_does_not_fit_its_bundle_is_refused(demo, tmp_path):
    import json as _json

    from sinks.bundle import load_bundle
    from sinks.io import sha256_file

    folder = tmp_path / "b"
    shutil.copytree(demo["bundle"], folder)
    with np.load(folder / "calibration.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["plot_s"] = arrays["plot_s"][:-3]
    np.savez_compressed(folder / "calibration.npz", **arrays)
    meta = _json.loads((folder / "metadata.json").read_text())  # rehashed, as anyone could
    meta["files"]["calibration.npz"] = sha256_file(folder / "calibration.npz")
    stripped = {k: v for k, v in meta.items() if k != "bundle_id"}
    from sinks.bundle import _digest

    meta["bundle_id"] = _digest(meta["files"], stripped)
    (folder / "metadata.json").write_text(_json.dumps(meta))
    with pytest.raises(ModelMismatchError, match="plot difficulties for the .* training plots"):
        load_bundle(folder)


def test_band_subsets(demo, tmp_path):
    full, _ = _read(predict_map(demo["bundle"], demo["spec"], tmp_path / "full.tif", block=64, progress=False))
    carbon, names = _read(predict_map(demo["bundle"], demo["spec"], tmp_path / "c.tif", block=64, bands="carbon",
                                      progress=False))
    assert names == ["carbon"]
    np.testing.assert_array_equal(carbon[0], full[0])  # the model alone gives the bundle's prediction
    pick, names = _read(predict_map(demo["bundle"], demo["spec"], tmp_path / "p.tif", block=64,
                                    bands=["aoa", "carbon", "upper"], progress=False))
    assert names == ["aoa", "carbon", "upper"]
    np.testing.assert_array_equal(pick, full[[4, 0, 2]])


def test_error_band_only_when_asked(demo, tmp_path):
    from sinks.bundle import load_bundle
    from sinks.mapping.predict import available_bands

    if "error" not in available_bands(load_bundle(demo["bundle"])):
        pytest.skip("this bundle has no error profile")
    data, names = _read(predict_map(demo["bundle"], demo["spec"], tmp_path / "e.tif", block=64,
                                    bands="carbon,error", progress=False))
    assert names == ["carbon", "error"]
    assert np.isfinite(data[1][data[1] != -9999]).all()


def test_stac_item(demo, tmp_path):
    out = predict_map(demo["bundle"], demo["spec"], tmp_path / "carbon.tif", block=64, progress=False)
    item = json.loads((tmp_path / "carbon.stac.json").read_text())
    assert item["type"] == "Feature" and item["stac_version"] == "1.0.0"
    assert any("raster" in e for e in item["stac_extensions"]) and any("/eo/" in e for e in item["stac_extensions"])
    props, asset = item["properties"], item["assets"]["map"]
    bundle_id = json.loads((demo["bundle"] / "metadata.json").read_text())["bundle_id"]
    assert props["sinks:bundle_id"] == bundle_id and props["datetime"]
    assert props["proj:epsg"] == 32648 and props["proj:shape"] == [150, 150]
    assert asset["href"] == "./carbon.tif" and "cloud-optimized" in asset["type"]
    assert [b["name"] for b in asset["raster:bands"]] == ["carbon", "lower", "upper", "di", "aoa"]
    assert asset["raster:bands"][0]["unit"] == "Mg C/ha" and asset["raster:bands"][0]["nodata"] == -9999
    import hashlib

    assert asset["file:checksum"] == "1220" + hashlib.sha256(out.read_bytes()).hexdigest()
    inputs = props["sinks:inputs"]
    dem = str((demo["data"] / "dem.tif").resolve())
    assert inputs[dem] == hashlib.sha256(Path(dem).read_bytes()).hexdigest()
    assert inputs["bundle_id"] == bundle_id and any(k.startswith("bundle/model") for k in inputs)
    lon, lat = item["bbox"][0], item["bbox"][1]
    assert 103 < lon < 106 and 29 < lat < 31  # the demo county, near Chengdu-Chongqing, in WGS 84
    (tmp_path / "maps").mkdir()
    (tmp_path / "catalog").mkdir()
    predict_map(demo["bundle"], demo["spec"], tmp_path / "maps" / "c.tif", block=64, bands="carbon", progress=False,
                stac=tmp_path / "catalog" / "item.json")
    elsewhere = json.loads((tmp_path / "catalog" / "item.json").read_text())
    assert elsewhere["assets"]["map"]["href"] == "../maps/c.tif"  # relative to the item, where STAC reads it
    pystac = pytest.importorskip("pystac")
    assert pystac.Item.from_dict(item).assets["map"].href == "./carbon.tif"


def test_spec_that_differs_from_training_is_refused(demo, tmp_path):
    changed = tmp_path / "changed.toml"
    changed.write_text(demo["spec"].read_text().replace("(nir - red) / (nir + red)", "(nir - red) / (nir + red + 0.5)")
                       .replace('"../data/', f'"{demo["data"]}/'))
    with pytest.raises(ModelMismatchError, match="defines its features differently"):
        predict_map(demo["bundle"], load_spec(changed), tmp_path / "m.tif", progress=False)
    assert list(tmp_path.iterdir()) == [changed]


def test_failure_midway_leaves_no_map(demo, tmp_path, monkeypatch):
    """A tile that fails: no map, no staging; the finished tiles are kept for the rerun (see
    tests/test_resume.py), hidden in .m.tif.resume-KEY/."""
    from sinks.mapping import executors

    calls = {"n": 0}
    original = executors.compute_tile

    def failing(job, index, window):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return original(job, index, window)

    monkeypatch.setattr(executors, "compute_tile", failing)
    with pytest.raises(RuntimeError):
        predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=64, progress=False)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".m.tif.resume-"), left
    assert sorted(p.name for p in (tmp_path / left[0]).glob("*.tif")) == ["0000000.tif", "0000001.tif"]


def test_guards_before_anything_is_written(demo, tmp_path):
    from sinks.errors import InputError, ResourceError

    spec, bundle = demo["spec"], demo["bundle"]
    for bad in (7, 0, 100, 8.0):
        with pytest.raises(InputError, match="multiple of 16"):
            predict_map(bundle, spec, tmp_path / "m.tif", block=bad, progress=False)
    with pytest.raises(InputError, match="n_jobs"):
        predict_map(bundle, spec, tmp_path / "m.tif", n_jobs=0, progress=False)
    with pytest.raises(ResourceError, match="150 x 150 = 22,500 pixels"):
        predict_map(bundle, spec, tmp_path / "m.tif", max_pixels=1000, progress=False)
    with pytest.raises(InputError, match="unknown band"):
        predict_map(bundle, spec, tmp_path / "m.tif", bands="carbon,biomass", progress=False)
    with pytest.raises(InputError, match="unknown band.*Carbon.*did you mean 'carbon'"):
        predict_map(bundle, spec, tmp_path / "m.tif", bands="Carbon", progress=False)
    with pytest.raises(InputError, match="spec or a covariate stack"):
        predict_map(bundle, None, tmp_path / "m.tif", progress=False)
    assert list(tmp_path.iterdir()) == []


def _copy_with(demo, tmp_path, **fills):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("dem", "surface_reflectance"):
        src = demo["data"] / f"{name}.tif"
        if name not in fills:
            shutil.copy(src, data / src.name)
            continue
        with rasterio.open(src) as ds:
            profile, shape = ds.profile, (ds.count, ds.height, ds.width)
        with rasterio.open(data / src.name, "w", **profile) as out:
            out.write(np.full(shape, fills[name], dtype=profile["dtype"]))
    text = demo["spec"].read_text().replace('"../data/', f'"{data}/')
    (tmp_path / "spec.toml").write_text(text)
    return tmp_path / "spec.toml"


def test_no_valid_pixel_is_an_error_and_leaves_no_file(demo, tmp_path):
    from sinks.errors import InputError

    spec = _copy_with(demo, tmp_path, surface_reflectance=0)  # 0 = the reflectance's nodata
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="no valid pixel"):
        predict_map(demo["bundle"], spec, tmp_path / "out" / "m.tif", block=64, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_map_wholly_outside_the_aoa_warns(demo, tmp_path):
    spec = _copy_with(demo, tmp_path, surface_reflectance=9000, dem=4000)
    with pytest.warns(AOAWarning, match="area of applicability"):
        out = predict_map(demo["bundle"], spec, tmp_path / "m.tif", block=64, progress=False)
    with rasterio.open(out) as ds:
        assert ds.read(5, masked=True).max() == 0


# ---- bad --stack inputs: one line, nothing written ----------------------------------------------

def _stack_like(demo, tmp_path, *, names=None, drop=(), add=None, shift=0.0, crs=None, tags=None, name="bad.tif"):
    with rasterio.open(demo["stack"]) as src:
        profile, data, descriptions, src_tags = src.profile, src.read(), list(src.descriptions), src.tags()
    keep = [i for i, d in enumerate(descriptions) if d not in drop]
    data, descriptions = data[keep], [descriptions[i] for i in keep]
    if add:
        data = np.concatenate([data, data[:1]])
        descriptions.append(add)
    names = names or descriptions
    t = profile["transform"]
    profile = {**profile, "driver": "GTiff", "count": len(names), "crs": crs or profile["crs"],
               "transform": rasterio.Affine(t.a, t.b, t.c + shift, t.d, t.e, t.f)}
    path = tmp_path / name
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, n in enumerate(names, start=1):
            if n:
                dst.set_band_description(i, n)
        dst.update_tags(**(src_tags if tags is None else tags))
    return path


def _renamed(demo, old, new):
    with rasterio.open(demo["stack"]) as src:
        return [new if d == old else d for d in src.descriptions]


STACK_CASES = {
    "band missing": (lambda d, t: ["--stack", _stack_like(d, t, drop=("slope",))], ["missing band(s) slope"]),
    "band extra": (lambda d, t: ["--stack", _stack_like(d, t, add="cloud")], ["extra band(s) cloud"]),
    "band misnamed": (lambda d, t: ["--stack", _stack_like(d, t, names=_renamed(d, "ndvi", "NDVI"))],
                      ["missing band(s) ndvi", "NDVI", "did you mean 'ndvi'"]),
    "band unnamed": (lambda d, t: ["--stack", _stack_like(d, t, names=_renamed(d, "ndvi", ""), tags={})],
                     ["no description", "ndvi"]),
    "band twice": (lambda d, t: ["--stack", _stack_like(d, t, names=_renamed(d, "ndvi", "slope"))],
                   ["slope", "more than once"]),
    "grid shifted from the spec's": (lambda d, t: [d["spec"], "--stack", _stack_like(d, t, shift=30.0)],
                                     ["grid", "differs from the spec's grid"]),
    "another CRS": (lambda d, t: ["--stack", _stack_like(d, t, crs="EPSG:32649")], ["EPSG:32649", "CRS"]),
    "another spec": (lambda d, t: ["--stack", _stack_like(d, t, tags={"sinks_spec": "other",
                                                                       "sinks_spec_fingerprint": "ab" * 32})],
                     ["built from spec 'other'", "defines its features differently"]),
    "stack missing": (lambda d, t: ["--stack", t / "none.tif"], ["none.tif", "not found"]),
    "stack corrupt": (lambda d, t: (t.joinpath("junk.tif").write_bytes(b"\x00junk" * 50), ["--stack", t / "junk.tif"])[1],
                      ["junk.tif", "cannot open"]),
    "no spec and no stack": (lambda d, t: [], ["SPEC", "--stack"]),
    "unknown band": (lambda d, t: ["--stack", d["stack"], "--bands", "carbon,biomass"], ["--bands", "biomass"]),
    "scheduler without dask": (lambda d, t: ["--stack", d["stack"], "--scheduler", "tcp://x:1"], ["--scheduler", "dask"]),
}


@pytest.mark.parametrize("case", list(STACK_CASES), ids=list(STACK_CASES))
def test_bad_stack_is_refused(demo, tmp_path, capsys, case):
    make, keywords = STACK_CASES[case]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("a user's file")
    extra = make(demo, tmp_path)
    argv = ["map", demo["bundle"], *extra, "--out", tmp_path / "out" / "carbon.tif", "--quiet"]
    assert_refused(argv, capsys, keywords=keywords, watch=tmp_path / "out")


def test_cli_stack_carbon_only(demo, tmp_path, capsys):
    from sinks.cli import main

    out = tmp_path / "carbon.tif"
    code = main(["map", str(demo["bundle"]), "--stack", str(demo["stack"]), "--bands", "carbon", "--out", str(out),
                 "--quiet", "--block", "64", "--no-stac"])
    assert code == 0, capsys.readouterr().err
    assert _read(out)[1] == ["carbon"] and not (tmp_path / "carbon.stac.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["carbon.tif"]
