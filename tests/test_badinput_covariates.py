"""Bad-input catalogue of ``sinks extract`` and ``sinks stack``: feature specs (typos with a
did-you-mean, types, ranges, a degree CRS with a metre resolution, too many pixels), rasters
(missing, corrupt, not covering the plots) and output paths. Every case is one clean line on stderr,
a non-zero exit, and the output folder byte-for-byte as before."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sinks.cli import main
from tests.badinput import assert_refused, tree_hash
from tests.test_covariates_local import CRS, ORIGIN, write_tif

X0, Y0 = ORIGIN
SPEC = f'''name = "t"
[grid]
crs = "{CRS}"
resolution = 10
like = "a"
[footprint]
kind = "point"
[[sources]]
name = "a"
path = "a.tif"
bands = ["red", {{name = "nir", index = 2, scale = 0.5, offset = 1}}]
resampling = "bilinear"
[[sources]]
name = "b"
path = "b.tif"
bands = ["elev"]
[[features]]
name = "red"
band = "a.red"
[[features]]
name = "ndvi"
expression = "(nir - red) / (nir + red)"
[[features]]
name = "elev"
band = "b.elev"
'''


@pytest.fixture
def ws(tmp_path):
    """A workspace: a.tif (8 x 6 pixels of 10 m, two bands), b.tif covering its left half, a spec,
    plots inside both rasters, and an output folder holding a user's file."""
    red = np.arange(48, dtype=float).reshape(6, 8)
    write_tif(tmp_path / "a.tif", [red, red * 2 + 10])
    write_tif(tmp_path / "b.tif", [np.full((6, 4), 100.0)])
    (tmp_path / "s.toml").write_text(SPEC)
    pd.DataFrame({"plot_id": ["p1", "p2"], "x": [X0 + 5, X0 + 25], "y": [Y0 - 5, Y0 - 35]}).to_csv(
        tmp_path / "plots.csv", index=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("a user's file")
    return tmp_path


def spec_with(ws, old: str, new: str, name: str = "bad.toml"):
    text = SPEC.replace(old, new)
    assert text != SPEC or old == new, f"{old!r} not in the spec"
    (ws / name).write_text(text)
    return ws / name


# (replace this, with that, key words of the error line)
SPEC_CASES = {
    "top-level typo": ('name = "t"', 'nmae = "t"', ["nmae", "did you mean 'name'"]),
    "grid typo": ("resolution = 10", "resolutoin = 10", ["[grid]", "resolutoin", "did you mean 'resolution'"]),
    "footprint typo": ('kind = "point"', 'knd = "point"', ["[footprint]", "did you mean 'kind'"]),
    "source typo": ('bands = ["elev"]', 'bnads = ["elev"]', ["source 'b'", "did you mean 'bands'"]),
    "band table typo": ("scale = 0.5", "scael = 0.5", ["band 'nir'", "did you mean 'scale'"]),
    "feature typo": ('expression = "(nir', 'expresion = "(nir', ["feature 'ndvi'", "did you mean 'expression'"]),
    "ee section typo": ('bands = ["elev"]', 'bands = ["elev"]\n[sources.ee]\ncolection = "X"',
                        ["[sources.ee]", "did you mean 'collection'"]),
    "resolution zero": ("resolution = 10", "resolution = 0", ["resolution", "> 0"]),
    "resolution negative": ("resolution = 10", "resolution = -10", ["resolution", "out of range"]),
    "resolution text": ("resolution = 10", 'resolution = "ten"', ["resolution", "must be a number"]),
    "resolution one-item list": ("resolution = 10", "resolution = [10]", ["resolution", "[xres, yres]"]),
    "resolution missing": ("resolution = 10", "", ["missing 'resolution'"]),
    "crs unknown": (f'crs = "{CRS}"', 'crs = "EPSG:99999"', ["EPSG:99999", "not a CRS"]),
    "crs not a string": (f'crs = "{CRS}"', "crs = 32650", ["crs", "string"]),
    "extent unordered": ('like = "a"', f"extent = [{X0 + 80}, {Y0 - 60}, {X0}, {Y0}]", ["extent", "not ordered"]),
    "extent three numbers": ('like = "a"', f"extent = [{X0}, {Y0 - 60}, {X0 + 80}]", ["extent", "[xmin, ymin, xmax, ymax]"]),
    "extent and like": ('like = "a"', f'like = "a"\nextent = [{X0}, {Y0 - 60}, {X0 + 80}, {Y0}]', ["extent or like"]),
    "like unknown source": ('like = "a"', 'like = "aa"', ["like", "did you mean 'a'"]),
    "footprint kind": ('kind = "point"', 'kind = "bufer"', ["kind", "did you mean 'buffer'"]),
    "footprint radius negative": ('kind = "point"', 'kind = "buffer"\nradius = -5', ["radius", ">= 0"]),
    "buffer without radius": ('kind = "point"', 'kind = "buffer"', ["buffer", "positive radius"]),
    "scale not a number": ("scale = 0.5", 'scale = "half"', ["band 'nir'", "scale", "number"]),
    "scale zero": ("scale = 0.5", "scale = 0", ["scale", "0"]),
    "offset boolean": ("offset = 1", "offset = true", ["offset", "number"]),
    "band index zero": ("index = 2", "index = 0", ["index", ">= 1"]),
    "band index fraction": ("index = 2", "index = 1.5", ["index", "integer"]),
    "resampling name": ('resampling = "bilinear"', 'resampling = "bilinaer"', ["resampling", "did you mean 'bilinear'"]),
    "composite name": ('resampling = "bilinear"', 'composite = "medain"', ["composite", "did you mean 'median'"]),
    "terrain name": ('band = "b.elev"', 'band = "b.elev"\nterrain = "slop"', ["terrain", "did you mean 'slope'"]),
    "nodata text": ('bands = ["elev"]', 'bands = ["elev"]\nnodata = "none"', ["nodata", "number"]),
    "band reference typo": ('band = "a.red"', 'band = "a.rde"', ["a.rde", "did you mean 'a.red'"]),
    "expression name typo": ("(nir - red) / (nir + red)", "(nir - red) / (nri + red)", ["nri", "did you mean 'nir'"]),
    "expression syntax": ("(nir - red) / (nir + red)", "(nir - red) / (nir + ", ["ndvi", "not valid"]),
    "valid names unknown band": ('bands = ["elev"]', 'bands = ["elev"]\nvalid = "elv > 0"', ["valid", "did you mean 'elev'"]),
    "feature names repeat": ('name = "elev"', 'name = "red"', ["feature names repeat"]),
    "feature named like a table column": ('[[features]]\nname = "elev"', '[[features]]\nname = "y"',
                                          ["feature 'y'", "column every feature table has", "another name"]),
    "path and paths": ('path = "b.tif"', 'path = "b.tif"\npaths = ["b.tif"]', ["path or paths"]),
    "description not a string": ('name = "t"', 'name = "t"\ndescription = 5', ["description", "string"]),
    "name not a string": ('name = "t"', "name = 5", ["'name'", "string"]),
    "degree CRS with a buffer radius in metres": (f'crs = "{CRS}"\nresolution = 10\nlike = "a"\n[footprint]\nkind = "point"',
                                                  'crs = "EPSG:4326"\nresolution = 0.0001\nlike = "a"\n[footprint]\n'
                                                  'kind = "buffer"\nradius = 15', ["radius = 15", "degrees", "EPSG:4326"]),
    "degree CRS with metre resolution": (f'crs = "{CRS}"\nresolution = 10', 'crs = "EPSG:4326"\nresolution = 30',
                                         ["resolution = 30", "degrees", "EPSG:4326", "UTM", "0.00027"]),
    "degree CRS with metre extent": (f'crs = "{CRS}"\nresolution = 10\nlike = "a"',
                                     f'crs = "EPSG:4326"\nresolution = 0.0001\nextent = [{X0}, {Y0 - 60}, {X0 + 80}, {Y0}]',
                                     ["extent", "not in degrees", "EPSG:4326"]),
    "too many pixels": ('like = "a"', f'extent = [{X0}, {Y0 - 400_000}, {X0 + 400_000}, {Y0}]',
                        ["pixels", "limit", "--max-pixels"]),
    "metric CRS with a resolution in degrees": ("resolution = 10", "resolution = 0.00027",
                                                ["resolution = 0.00027", "0.27 mm", "a resolution in degrees", "30 m"]),
}


@pytest.mark.parametrize("case", list(SPEC_CASES), ids=list(SPEC_CASES))
def test_bad_spec_is_refused_before_any_work(ws, capsys, case):
    old, new, keywords = SPEC_CASES[case]
    spec = spec_with(ws, old, new)
    assert_refused(["stack", spec, "--out", ws / "out" / "stack.tif"], capsys, keywords=keywords, watch=ws / "out")


def test_an_empty_plot_table_says_so(ws, capsys):
    (ws / "empty.csv").write_text("plot_id,x,y\n")
    assert_refused(["extract", ws / "s.toml", ws / "empty.csv", "--crs", CRS, "--out", ws / "out" / "f.csv"], capsys,
                   keywords=["the table has no rows"], watch=ws / "out")


def test_spec_errors_also_refuse_extract(ws, capsys):
    spec = spec_with(ws, "resolution = 10", "resolutoin = 10")
    assert_refused(["extract", spec, ws / "plots.csv", "--crs", CRS, "--out", ws / "out" / "f.csv"], capsys,
                   keywords=["did you mean 'resolution'"], watch=ws / "out")
    spec = spec_with(ws, "resolution = 10", "resolution = 0.0003", name="deg.toml")  # extract ran on it silently
    assert_refused(["extract", spec, ws / "plots.csv", "--crs", CRS, "--out", ws / "out" / "f.csv"], capsys,
                   keywords=["a resolution in degrees"], watch=ws / "out")


def _garbage(ws, name="a.tif"):
    (ws / name).write_bytes(b"II*\x00 garbage, not a GeoTIFF" * 10)


def _no_memory(monkeypatch):
    from sinks.covariates import local

    monkeypatch.setattr(local, "available_memory", lambda: 1024)


# argv after "sinks", with {ws} for the workspace; key words; an optional setup(ws, monkeypatch)
RUN_CASES = {
    "spec file missing": (["stack", "{ws}/nope.toml", "--out", "{ws}/out/s.tif"], ["nope.toml", "not found"], None),
    "spec not TOML": (["stack", "{ws}/plots.csv", "--out", "{ws}/out/s.tif"], ["not valid TOML"], None),
    "source raster missing": (["stack", "{ws}/s.toml", "--out", "{ws}/out/s.tif"], ["b.tif", "raster not found"],
                              lambda ws, mp: (ws / "b.tif").unlink()),
    "corrupt raster": (["stack", "{ws}/s.toml", "--out", "{ws}/out/s.tif"], ["a.tif", "cannot open raster"],
                       lambda ws, mp: _garbage(ws)),
    "corrupt raster at extract": (["extract", "{ws}/s.toml", "{ws}/plots.csv", "--crs", CRS, "--out", "{ws}/out/f.csv"],
                                  ["b.tif", "cannot open raster"], lambda ws, mp: _garbage(ws, "b.tif")),
    "max-pixels below the grid": (["stack", "{ws}/s.toml", "--out", "{ws}/out/s.tif", "--max-pixels", "10"],
                                  ["48 pixels", "limit of 10", "--max-pixels"], None),
    "max-pixels not positive": (["stack", "{ws}/s.toml", "--out", "{ws}/out/s.tif", "--max-pixels", "-1"],
                                ["--max-pixels", "positive"], None),
    "window beyond memory": (["stack", "{ws}/s.toml", "--out", "{ws}/out/s.tif"], ["memory", "--block"],
                             lambda ws, mp: _no_memory(mp)),
    "block 7": (["stack", "{ws}/s.toml", "--out", "{ws}/out/s.tif", "--block", "7"], ["--block", "multiple of 16"], None),
    "block 0": (["stack", "{ws}/s.toml", "--out", "{ws}/out/s.tif", "--block", "0"], ["--block", "multiple of 16"], None),
    "block text": (["stack", "{ws}/s.toml", "--out", "{ws}/out/s.tif", "--block", "big"], ["--block", "'big'"], None),
    "tile-pixels 0": (["stack", "{ws}/s.toml", "--out", "{ws}/out/s", "--engine", "ee", "--bucket", "b",
                       "--tile-pixels", "0"], ["--tile-pixels", "positive integer"], None),
    "stack output exists": (["stack", "{ws}/s.toml", "--out", "{ws}/out/keep.tif"], ["exists", "--overwrite"],
                            lambda ws, mp: (ws / "out" / "keep.tif").write_bytes(b"old map")),
    "stack output is a folder": (["stack", "{ws}/s.toml", "--out", "{ws}/out", "--overwrite"], ["is a folder"], None),
    "stack output ends in /": (["stack", "{ws}/s.toml", "--out", "{ws}/out/new/"], ["is a folder"], None),
    "stack output is a source raster": (["stack", "{ws}/s.toml", "--out", "{ws}/a.tif", "--overwrite"],
                                        ["a.tif", "also an input"], None),
    "stack output folder missing": (["stack", "{ws}/s.toml", "--out", "{ws}/out/no/such/s.tif"], ["does not exist"], None),
    "stack output extension": (["stack", "{ws}/s.toml", "--out", "{ws}/out/s.gpkg"], ["unknown output format", ".tif"], None),
    "plots outside a raster": (["extract", "{ws}/s.toml", "{ws}/far.csv", "--crs", CRS, "--out", "{ws}/out/f.csv"],
                               ["1 of 2 plot(s)", "outside raster b.tif", "source 'b'", "p2", "--allow-missing"],
                               lambda ws, mp: pd.DataFrame({"plot_id": ["p1", "p2"], "x": [X0 + 5, X0 + 65],
                                                            "y": [Y0 - 5, Y0 - 5]}).to_csv(ws / "far.csv", index=False)),
    "plots outside the grid": (["extract", "{ws}/s.toml", "{ws}/far.csv", "--crs", CRS, "--out", "{ws}/out/f.csv"],
                               ["outside the grid", "p2", "--allow-missing"],
                               lambda ws, mp: pd.DataFrame({"plot_id": ["p1", "p2"], "x": [X0 + 5, X0 + 5000],
                                                            "y": [Y0 - 5, Y0 - 5]}).to_csv(ws / "far.csv", index=False)),
    "invalid --crs": (["extract", "{ws}/s.toml", "{ws}/plots.csv", "--crs", "EPSG:99999", "--out", "{ws}/out/f.csv"],
                      ["--crs", "EPSG:99999"], None),
    "extract output exists": (["extract", "{ws}/s.toml", "{ws}/plots.csv", "--crs", CRS, "--out", "{ws}/out/f.csv"],
                              ["exists", "--overwrite"], lambda ws, mp: (ws / "out" / "f.csv").write_text("old")),
    "extract output is a folder": (["extract", "{ws}/s.toml", "{ws}/plots.csv", "--crs", CRS, "--out", "{ws}/out",
                                    "--overwrite"], ["is a folder"], None),
    "extract output ends in /": (["extract", "{ws}/s.toml", "{ws}/plots.csv", "--crs", CRS, "--out", "{ws}/out/t/"],
                                 ["is a folder"], None),
    "extract output is the plot table": (["extract", "{ws}/s.toml", "{ws}/out/plots.csv", "--crs", CRS, "--out",
                                          "{ws}/out/plots.csv", "--overwrite"], ["also an input"],
                                         lambda ws, mp: (ws / "out" / "plots.csv").write_bytes((ws / "plots.csv").read_bytes())),
    "extract output folder missing": (["extract", "{ws}/s.toml", "{ws}/plots.csv", "--crs", CRS, "--out",
                                       "{ws}/out/none/f.csv"], ["does not exist"], None),
    "extract output extension": (["extract", "{ws}/s.toml", "{ws}/plots.csv", "--crs", CRS, "--out", "{ws}/out/f.xlsx"],
                                 ["unknown output format", ".xlsx"], None),
    "allow-missing on Earth Engine": (["extract", "{ws}/s.toml", "{ws}/plots.csv", "--crs", CRS, "--out",
                                       "{ws}/out/f.csv", "--engine", "ee", "--allow-missing"], ["--allow-missing", "local"], None),
    "buffer larger than the grid": (["extract", "{ws}/big.toml", "{ws}/plots.csv", "--crs", CRS, "--out", "{ws}/out/f.csv"],
                                    ["radius 5000", "larger than the whole grid", "units"],
                                    lambda ws, mp: spec_with(ws, 'kind = "point"', 'kind = "buffer"\nradius = 5000', "big.toml")),
    "no plot with every feature": (["extract", "{ws}/s.toml", "{ws}/gaps.csv", "--crs", CRS, "--out", "{ws}/out/f.csv",
                                    "--allow-missing", "--quiet"], ["none of the 2 plots", "every feature", "nodata"],
                                   lambda ws, mp: pd.DataFrame({"plot_id": ["right", "far"], "x": [X0 + 65, X0 + 5000],
                                                                "y": [Y0 - 5, Y0 - 5]}).to_csv(ws / "gaps.csv", index=False)),
    "stack with no pixel of every feature": (["stack", "{ws}/nan.toml", "--out", "{ws}/out/s.tif", "--quiet"],
                                             ["no pixel of the 8 x 6 grid has every feature valid"],
                                             lambda ws, mp: (write_tif(ws / "nan.tif", [np.full((6, 4), np.nan)], nodata=np.nan),
                                                             spec_with(ws, 'path = "b.tif"', 'path = "nan.tif"', "nan.toml"))),
    "undeclared nodata -9999 in a source": (
        ["extract", "{ws}/s.toml", "{ws}/plots.csv", "--crs", CRS, "--out", "{ws}/out/f.csv"],
        ["b.tif", "band 1 (elev) of source 'b'", "holds -9999", "declares no nodata", "gdal_edit.py -a_nodata -9999"],
        lambda ws, mp: write_tif(ws / "b.tif", [np.where(np.arange(24).reshape(6, 4) == 0, -9999.0, 100.0)])),
    "undeclared nodata -32768 in a map source": (
        ["stack", "{ws}/s.toml", "--out", "{ws}/out/s.tif", "--quiet"], ["b.tif", "holds -32768", "nodata = -32768"],
        lambda ws, mp: write_tif(ws / "b.tif", [np.where(np.arange(24).reshape(6, 4) == 5, -32768, 100)], dtype="int16")),
    "plot without an id": (["extract", "{ws}/s.toml", "{ws}/noid.csv", "--crs", CRS, "--out", "{ws}/out/f.csv"],
                           ["plot_id missing in row(s) 2"],
                           lambda ws, mp: pd.DataFrame({"plot_id": ["p1", None], "x": [X0 + 5, X0 + 25],
                                                        "y": [Y0 - 5, Y0 - 35]}).to_csv(ws / "noid.csv", index=False)),
}


@pytest.mark.parametrize("case", list(RUN_CASES), ids=list(RUN_CASES))
def test_bad_run_is_refused(ws, capsys, monkeypatch, case):
    argv, keywords, setup = RUN_CASES[case]
    if setup is not None:
        setup(ws, monkeypatch)
    argv = [a.replace("{ws}", str(ws)) for a in argv]
    assert_refused(argv, capsys, keywords=keywords, watch=ws / "out")


def test_a_nodata_value_declared_in_the_spec_or_masked_by_valid_passes(ws, capsys):
    from sinks.cli import main

    write_tif(ws / "b.tif", [np.where(np.arange(24).reshape(6, 4) == 0, -9999.0, 100.0)])
    for name, (old, new) in {"declared.toml": ('bands = ["elev"]', 'bands = ["elev"]\nnodata = -9999'),
                             "masked.toml": ('bands = ["elev"]', 'bands = ["elev"]\nvalid = "elev > -1000"')}.items():
        spec = spec_with(ws, old, new, name)
        assert main(["stack", str(spec), "--out", str(ws / f"{name}.tif"), "--quiet"]) == 0, capsys.readouterr().err


def test_allow_missing_keeps_plots_and_says_why(ws, capsys):
    pd.DataFrame({"plot_id": ["in", "right", "far"], "x": [X0 + 5, X0 + 65, X0 + 5000], "y": [Y0 - 5, Y0 - 5, Y0 - 5]}
                 ).to_csv(ws / "mixed.csv", index=False)
    out = ws / "out" / "f.csv"
    code = main(["extract", str(ws / "s.toml"), str(ws / "mixed.csv"), "--crs", CRS, "--out", str(out),
                 "--allow-missing", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sinks extract: warning: 2 of 3 plot(s)"), err
    assert "outside raster b.tif" in lines[0] and "outside the grid" in lines[0]
    table = pd.read_csv(out, keep_default_na=False, na_values=[""]).set_index("plot_id")
    assert table.loc["in", "elev"] == 100.0 and pd.isna(table.loc["in", "missing_reason"])
    assert pd.isna(table.loc["right", "elev"]) and table.loc["right", "red"] == 6.0  # a.tif still read
    assert "outside raster b.tif (source 'b')" in table.loc["right", "missing_reason"]
    assert table.loc["far", ["red", "ndvi", "elev"]].isna().all()
    assert table.loc["far", "missing_reason"] == "outside the grid of spec 't'"


def test_allow_missing_names_nodata(ws):
    from sinks.covariates.extract import extract
    from sinks.covariates.spec import load_spec
    from tests.test_covariates_local import points

    write_tif(ws / "b.tif", [np.where(np.arange(4) < 2, -1.0, 7.0)[None].repeat(6, 0)], nodata=-1)
    table = extract(load_spec(ws / "s.toml"), points([(X0 + 5, Y0 - 5), (X0 + 35, Y0 - 5)]), progress=False,
                    allow_missing=True)
    assert list(table["missing_reason"]) == ["nodata in elev", ""]


def test_overwrite_replaces_a_stack_and_good_specs_load(ws, capsys, repo):
    out = ws / "out" / "s.tif"
    out.write_bytes(b"old")
    assert main(["stack", str(ws / "s.toml"), "--out", str(out), "--overwrite", "--quiet"]) == 0
    assert out.read_bytes()[:2] in (b"II", b"MM")
    before = tree_hash(ws / "out")
    assert "keep.txt" in before
    from sinks.covariates.spec import load_spec

    for path in sorted((repo / "features").glob("*.toml")):
        load_spec(path)  # every shipped spec passes the full validation
