"""Bad-input catalogue of ``sinks map``: options, output paths, bundles that are corrupt or do not
match the spec, specs and rasters, resource limits, and a map with no valid pixel. Every case is one
clean line on stderr, a non-zero exit, and the output folder (and the inputs) byte-for-byte as
before. A map wholly outside the area of applicability is written with a one-line warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sinks.cli import main
from sinks.demo.run import run_demo
from tests.badinput import assert_refused, tree_hash


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("map_demo"), size=150, seed=3, progress=False)


@pytest.fixture
def ws(demo, tmp_path):
    """Paths of one case: the demo's bundle, spec and data, and an output folder with a user's file."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("a user's file")
    return {"tmp": tmp_path, "out": tmp_path / "out", "bundle": demo.outputs["model"],
            "spec": demo.out / "features" / "demo_county.toml", "data": demo.out / "data", "demo": demo.out}


def _spec(ws, old: str = "", new: str = "", data=None) -> str:
    """A copy of the demo spec with absolute data paths (``data``: another data folder) and one edit."""
    text = ws["spec"].read_text().replace('"../data/', f'"{data or ws["data"]}/')
    if old:
        assert old in text, old
        text = text.replace(old, new)
    path = ws["tmp"] / "spec.toml"
    path.write_text(text)
    return str(path)


def _bundle_copy(ws) -> str:
    copy = ws["tmp"] / "bundle"
    shutil.copytree(ws["bundle"], copy)
    return str(copy)


def _write_like(src, dst, fill) -> None:
    with rasterio.open(src) as ds:
        profile, shape = ds.profile, (ds.count, ds.height, ds.width)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(np.full(shape, fill, dtype=profile["dtype"]))


def _data_copy(ws, **fills) -> str:
    """The demo's dem and reflectance in a new folder; ``name=value`` fills a raster with one value."""
    folder = ws["tmp"] / "data"
    folder.mkdir()
    for name in ("dem", "surface_reflectance"):
        if name in fills:
            _write_like(ws["data"] / f"{name}.tif", folder / f"{name}.tif", fills[name])
        else:
            shutil.copy(ws["data"] / f"{name}.tif", folder / f"{name}.tif")
    return str(folder)


def _edit_metadata(bundle: str) -> None:
    path = f"{bundle}/metadata.json"
    meta = json.loads(open(path).read())
    meta["target"]["units"] = "t/ha"
    open(path, "w").write(json.dumps(meta))


def _no_memory(monkeypatch):
    from sinks.covariates import local

    monkeypatch.setattr(local, "available_memory", lambda: 1024)


def _argv(ws, bundle=None, spec=None, out=None, *extra):
    return ["map", bundle or ws["bundle"], spec or ws["spec"], "--out", out or ws["out"] / "carbon.tif", *extra]


def _stack_without_nodata(ws) -> list:
    """The demo's covariate stack, a corner set to -9999 and its nodata removed (a re-saved file)."""
    stack = ws["tmp"] / "stack.tif"
    assert main(["stack", str(ws["spec"]), "--out", str(stack), "--quiet"]) == 0
    with rasterio.open(stack, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        data = ds.read(2)
        data[:5, :5] = -9999
        ds.write(data, 2)
        ds.nodata = None
    return ["map", ws["bundle"], "--stack", stack, "--out", ws["out"] / "carbon.tif", "--quiet"]


def _stack_filled_with_zeros(ws) -> list:
    """The demo's covariate stack with its nodata pixels filled with 0 and no nodata declared (a
    reflectance product's usual fill): mapped as a place, they added carbon outside the data."""
    stack = ws["tmp"] / "stack0.tif"
    assert main(["stack", str(ws["spec"]), "--out", str(stack), "--quiet"]) == 0
    with rasterio.open(stack, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        data = ds.read()
        data[:, (data == ds.nodata).any(axis=0)] = 0
        data[:, :4, :6] = 0
        ds.write(data)
        ds.nodata = None
    return ["map", ws["bundle"], "--stack", stack, "--out", ws["out"] / "carbon.tif", "--quiet"]


def _stack_resampled(ws) -> list:
    """The demo's stack at 60 m, its tags (spec fingerprint included) copied: slope and indices of
    another pixel size, mapped with a model of 30 m features."""
    from rasterio.enums import Resampling

    stack = ws["tmp"] / "stack.tif"
    assert main(["stack", str(ws["spec"]), "--out", str(stack), "--quiet"]) == 0
    with rasterio.open(stack) as ds:
        data = ds.read(out_shape=(ds.count, ds.height // 2, ds.width // 2), resampling=Resampling.average)
        profile, tags, names = ds.profile, ds.tags(), ds.descriptions
        t = ds.transform
    profile.update(width=data.shape[2], height=data.shape[1], transform=t * t.scale(2, 2), driver="GTiff")
    with rasterio.open(ws["tmp"] / "stack60.tif", "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags)
        dst.descriptions = names
    return ["map", ws["bundle"], "--stack", ws["tmp"] / "stack60.tif", "--out", ws["out"] / "carbon.tif", "--quiet"]


# case: (function of (ws, monkeypatch) giving argv, key words)
CASES = {
    "block 7": (lambda ws, mp: _argv(ws, None, None, None, "--block", "7"), ["--block", "multiple of 16", "'7'"]),
    "block 0": (lambda ws, mp: _argv(ws, None, None, None, "--block", "0"), ["--block", "multiple of 16"]),
    "block 100": (lambda ws, mp: _argv(ws, None, None, None, "--block", "100"), ["--block", "multiple of 16"]),
    "block text": (lambda ws, mp: _argv(ws, None, None, None, "--block", "512px"), ["--block", "'512px'"]),
    "block 100000": (lambda ws, mp: _argv(ws, None, None, None, "--block", "100000"), ["--block", "to 4096"]),
    "jobs 0": (lambda ws, mp: _argv(ws, None, None, None, "--jobs", "0"), ["--jobs", "positive integer"]),
    "jobs negative": (lambda ws, mp: _argv(ws, None, None, None, "--jobs", "-2"), ["--jobs", "positive integer"]),
    "jobs text": (lambda ws, mp: _argv(ws, None, None, None, "--jobs", "all"), ["--jobs", "'all'"]),
    "max-pixels below the grid": (lambda ws, mp: _argv(ws, None, None, None, "--max-pixels", "100"),
                                  ["150 x 150", "limit of 100", "--max-pixels"]),
    "max-pixels zero": (lambda ws, mp: _argv(ws, None, None, None, "--max-pixels", "0"), ["--max-pixels", "positive"]),
    "window beyond memory": (lambda ws, mp: (_no_memory(mp), _argv(ws, None, None, None, "--jobs", "4"))[1],
                             ["memory", "--block", "--jobs"]),
    "output exists": (lambda ws, mp: ((ws["out"] / "carbon.tif").write_bytes(b"old map"), _argv(ws))[1],
                      ["carbon.tif", "exists", "--overwrite"]),
    "output is a folder with files": (lambda ws, mp: _argv(ws, None, None, ws["out"], "--overwrite"),
                                      ["is a folder", "never replaces a folder"]),
    "output ends in /": (lambda ws, mp: _argv(ws, None, None, f"{ws['out']}/maps/"), ["is a folder"]),
    "output is an input raster": (lambda ws, mp: _argv(ws, None, _spec(ws), ws["data"] / "dem.tif", "--overwrite"),
                                  ["dem.tif", "also an input"]),
    "STAC item inside the bundle": (lambda ws, mp: _argv(ws, None, None, None, "--stac",
                                                         ws["bundle"] / "metadata.json", "--overwrite"),
                                    ["metadata.json", "lies inside", "an input"]),
    "output folder missing": (lambda ws, mp: _argv(ws, None, None, ws["out"] / "no" / "m.tif"), ["does not exist"]),
    "output extension": (lambda ws, mp: _argv(ws, None, None, ws["out"] / "carbon.png"),
                         ["unknown output format", ".png", ".tif"]),
    "spec defines features differently": (
        lambda ws, mp: _argv(ws, None, _spec(ws, "(nir - red) / (nir + red)", "(nir - red) / (nir + red + 0.5)")),
        ["defines its features differently", "retrain"]),
    "spec with other features": (lambda ws, mp: _argv(ws, None, _spec(ws, 'name = "ndmi"', 'name = "ndwi"')),
                                 ["trained on features", "ndwi"]),
    "spec on another grid": (lambda ws, mp: _argv(ws, None, _spec(ws, "resolution = 30", "resolution = 60")),
                             ["defines its features differently"]),
    "spec typo": (lambda ws, mp: _argv(ws, None, _spec(ws, "resolution = 30", "resoluton = 30")),
                  ["resoluton", "did you mean 'resolution'"]),
    "spec in degrees": (lambda ws, mp: _argv(ws, None, _spec(ws, 'crs = "EPSG:32648"', 'crs = "EPSG:4326"')),
                        ["resolution = 30", "degrees", "EPSG:32648"]),
    "spec missing": (lambda ws, mp: _argv(ws, None, ws["tmp"] / "none.toml"), ["none.toml", "not found"]),
    "source raster missing": (lambda ws, mp: _argv(ws, None, _spec(ws, "dem.tif", "dem_v2.tif")),
                              ["dem_v2.tif", "raster not found"]),
    "source raster corrupt": (
        lambda ws, mp: (ws["tmp"].joinpath("bad.tif").write_bytes(b"\x00garbage" * 64),
                        _argv(ws, None, _spec(ws, f'"{ws["data"]}/dem.tif"', f'"{ws["tmp"]}/bad.tif"')))[1],
        ["bad.tif", "cannot open raster"]),
    "no valid pixel": (lambda ws, mp: _argv(ws, None, _spec(ws, data=_data_copy(ws, surface_reflectance=0)), None, "--quiet"),
                       ["no valid pixel", "nodata"]),
    "stack that lost its nodata": (lambda ws, mp: _stack_without_nodata(ws),
                                   ["stack.tif", "-9999", "a common nodata value", "declares no nodata", "gdal_edit.py -a_nodata"]),
    "stack at another resolution": (lambda ws, mp: _stack_resampled(ws),
                                    ["stack60.tif", "60 x 60", "30 x 30", "rebuild the stack"]),
    "stack filled with 0 and no nodata": (lambda ws, mp: _stack_filled_with_zeros(ws),
                                          ["stack0.tif", "hold 0 in every one", "row 0, column 0",
                                           "gdal_edit.py -a_nodata 0"]),
    "bundle folder is not a bundle": (lambda ws, mp: _argv(ws, ws["out"]), ["not a model bundle"]),
    "a folder that is not a bundle, and no spec": (lambda ws, mp: ["map", ws["data"], "--out", ws["out"] / "c.tif"],
                                                  ["not a model bundle", "takes BUNDLE, then the feature SPEC"]),
    "no spec nor stack": (lambda ws, mp: ["map", ws["bundle"], "--out", ws["out"] / "c.tif"],
                          ["sinks map: error: give the feature SPEC or --stack"]),
    "bundle is missing": (lambda ws, mp: _argv(ws, ws["tmp"] / "models" / "nothing"), ["not a model bundle"]),
    "bundle metadata corrupt": (
        lambda ws, mp: (b := _bundle_copy(ws), open(f"{b}/metadata.json", "w").write("{ not json"), _argv(ws, b))[-1],
        ["metadata.json", "corrupt metadata"]),
    "bundle file missing": (lambda ws, mp: (b := _bundle_copy(ws), (ws["tmp"] / "bundle" / "aoa.npz").unlink(),
                                            _argv(ws, b))[-1], ["aoa.npz", "missing"]),
    "bundle file altered": (lambda ws, mp: (b := _bundle_copy(ws), open(f"{b}/model.json", "a").write(" "),
                                            _argv(ws, b))[-1], ["model.json", "checksum"]),
    "bundle metadata replaced": (lambda ws, mp: (b := _bundle_copy(ws), Path(b, "metadata.json").write_text("{}"),
                                                  _argv(ws, b))[-1], ["metadata.json", "not a bundle's metadata"]),
    "bundle metadata incomplete": (lambda ws, mp: (b := _bundle_copy(ws),
                                                    Path(b, "metadata.json").write_text('{"format_version": 2}'),
                                                    _argv(ws, b))[-1],
                                   ["metadata.json", "not a bundle's metadata", "no bundle_id or files"]),
    "bundle metadata edited": (lambda ws, mp: (b := _bundle_copy(ws), _edit_metadata(b), _argv(ws, b))[-1],
                               ["bundle id mismatch"]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_map_is_refused(ws, capsys, monkeypatch, case):
    make_argv, keywords = CASES[case]
    argv = make_argv(ws, monkeypatch)
    inputs = tree_hash(ws["demo"])
    assert_refused(argv, capsys, keywords=keywords, watch=ws["out"])
    assert tree_hash(ws["demo"]) == inputs  # the bundle, spec and rasters are untouched too


def test_map_outside_the_area_of_applicability_warns(ws, capsys):
    spec = _spec(ws, data=_data_copy(ws, surface_reflectance=9000, dem=4000))
    out = ws["out"] / "carbon.tif"
    code = main(["map", str(ws["bundle"]), spec, "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sinks map: warning: none of the"), captured.err
    assert "area of applicability" in lines[0]
    with rasterio.open(out) as ds:
        aoa = ds.read(5, masked=True)
    assert aoa.count() > 0 and aoa.max() == 0


def test_good_map_has_no_warning_and_overwrite_replaces(ws, capsys):
    out = ws["out"] / "carbon.tif"
    out.write_bytes(b"old")
    code = main(["map", str(ws["bundle"]), str(ws["spec"]), "--out", str(out), "--overwrite", "--quiet",
                 "--block", "64", "--jobs", "2"])
    captured = capsys.readouterr()
    assert code == 0 and "warning" not in captured.err, captured.err
    with rasterio.open(out) as ds:
        assert ds.count == 5 and ds.read(5, masked=True).max() == 1
