"""Bad input to ``sinks eligibility``: each case is refused in one line, before anything is written.

Also the other side: a layer coded otherwise, once its encoding is declared (``--layer-values`` or
the Python API), gives the right verdicts; outputs are written together or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from sinks.cli import main
from sinks.eligibility.engine import assess
from sinks.eligibility.report import write_report
from sinks.eligibility.rules import load_ruleset, parse_layer_values
from sinks.errors import InputError, OutputError, SpecError
from tests.badinput import assert_refused

CRS = "EPSG:32648"
T = Affine(30, 0, 500_000, 0, -30, 3_300_000)  # 40 x 40 pixels of 30 m
YEARS = list(range(2018, 2026))
SHIPPED = Path(__file__).parents[1] / "sinks/eligibility/rulesets/ccer-14-001.toml"
TRUTH = {"open": "eligible", "forest": "ineligible", "recent": "ineligible", "wet": "ineligible"}


def _cell(col0, row0, col1, row1):
    x0, y0 = T @ (col0, row0)
    x1, y1 = T @ (col1, row1)
    return box(x0, y1, x1, y0)


def write_raster(path, data, *, names=None, nodata=255, dtype="uint8", transform=T):
    data = np.asarray(data)
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=dtype, crs=CRS, transform=transform, nodata=nodata) as dst:
        dst.write(data.astype(dtype))
        for i, name in enumerate(names or [], start=1):
            dst.set_band_description(i, name)
    return path


def history(forest=1, open_=0):
    """Forest history coded ``forest`` / ``open_``: forest always at the top left, forest in 2023 only at
    the top right."""
    data = np.full((len(YEARS), 40, 40), open_, np.uint8)
    data[:, 0:10, 0:10] = forest
    data[YEARS.index(2023), 0:10, 30:40] = forest
    return data


def wetland(wet=1, dry=0):
    data = np.full((40, 40), dry, np.uint8)
    data[30:40, 0:10] = wet
    return data


@pytest.fixture()
def world(tmp_path):
    """Parcels, a forest history 2018-2025, a wetland layer; outputs go to ``out/``."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (tmp_path / "out").mkdir()
    parcels = gpd.GeoDataFrame(
        {"parcel_id": list(TRUTH), "start_date": ["2025-01-01"] * 4},
        geometry=[_cell(15, 15, 25, 25), _cell(2, 2, 8, 8), _cell(32, 2, 38, 8), _cell(2, 32, 8, 38)], crs=CRS)
    parcels.to_file(inputs / "parcels.gpkg")
    write_raster(inputs / "forest_history.tif", history(), names=[str(y) for y in YEARS])
    write_raster(inputs / "wetland.tif", wetland(), names=["wetland"])
    return tmp_path


def base(world, *extra, layers=None):
    inputs = world / "in"
    layers = layers or {"forest_history": inputs / "forest_history.tif", "wetland": inputs / "wetland.tif"}
    argv = ["eligibility", inputs / "parcels.gpkg", "--out", world / "out" / "r.json", "--quiet"]
    for name, path in layers.items():
        argv += ["--layer", f"{name}={path}"]
    return argv + list(extra)


def verdicts(path) -> dict[str, str]:
    return {p["parcel_id"]: p["verdict"] for p in json.loads(Path(path).read_text())["parcels"]}


# ---- layers coded otherwise than declared -----------------------------------------------------------

def _history_0_100(w):
    return {"forest_history": write_raster(w / "in" / "h100.tif", history(100, 0), names=[str(y) for y in YEARS]),
            "wetland": w / "in" / "wetland.tif"}


def _history_classes(w):  # a land-cover product: 10 forest, 20 cropland, 30 built-up
    data = history(10, 20)
    data[:, 20:25, 0:5] = 30
    return {"forest_history": write_raster(w / "in" / "lc.tif", data, names=[str(y) for y in YEARS]),
            "wetland": w / "in" / "wetland.tif"}


def _wetland_0_255(w):
    return {"forest_history": w / "in" / "forest_history.tif",
            "wetland": write_raster(w / "in" / "w255.tif", wetland(255, 0), names=["wetland"], nodata=None)}


def _wetland_classes(w):
    data = wetland(1, 0)
    data[0:5, 20:30] = 2  # open water
    return {"forest_history": w / "in" / "forest_history.tif",
            "wetland": write_raster(w / "in" / "w3.tif", data, names=["wetland"])}


def _wetland_probability(w):
    data = wetland(1, 0).astype("float32")
    data[30:40, 0:10] = 0.7
    return {"forest_history": w / "in" / "forest_history.tif",
            "wetland": write_raster(w / "in" / "wp.tif", data, names=["wetland"], dtype="float32", nodata=-1)}


def _history_missing_years(w):  # 2024-2025 only: a 2025 start needs 2022-2024
    return {"forest_history": write_raster(w / "in" / "short.tif", history()[-2:], names=["2024", "2025"]),
            "wetland": w / "in" / "wetland.tif"}


def _history_unnamed_bands(w):
    return {"forest_history": write_raster(w / "in" / "unnamed.tif", history()), "wetland": w / "in" / "wetland.tif"}


def _wetland_many_bands(w):
    return {"forest_history": w / "in" / "forest_history.tif", "wetland": w / "in" / "forest_history.tif"}


def _history_elsewhere(w):  # the right values, the wrong place (a CRS or file mix-up)
    far = Affine(30, 0, 700_000, 0, -30, 3_500_000)
    return {"forest_history": write_raster(w / "in" / "far.tif", history(), names=[str(y) for y in YEARS],
                                           transform=far),
            "wetland": w / "in" / "wetland.tif"}


LAYER_CASES = {
    "history coded 0/100": (_history_0_100, ["forest_history", "h100.tif", "100", "forest=1", "--layer-values"]),
    "history with class codes": (_history_classes, ["forest_history", "10", "20", "30", "px"]),
    "wetland coded 0/255": (_wetland_0_255, ["wetland", "w255.tif", "255", "wetland=1;dry_land=0"]),
    "wetland with a third class": (_wetland_classes, ["wetland", "value(s) 2 ", "declared"]),
    "wetland as a probability": (_wetland_probability, ["wetland", "0.7"]),
    "history lacks required years": (_history_missing_years, ["forest_history", "2022-2024", "missing 2022, 2023"]),
    "history bands not named by year": (_history_unnamed_bands, ["forest_history", "named by its year", "'1'"]),
    "wetland layer with many bands": (_wetland_many_bands, ["wetland", "8 bands", "one-band"]),
    "layer covers no parcel": (_history_elsewhere, ["forest_history", "no parcel overlaps", "crs"]),
}


@pytest.mark.parametrize("make, keywords", LAYER_CASES.values(), ids=LAYER_CASES.keys())
def test_badly_coded_layers_are_refused(world, capsys, make, keywords):
    assert_refused(base(world, layers=make(world)), capsys, keywords=keywords, watch=world)


# ---- rule parameters, rule files, names ---------------------------------------------------------------

def _rule_file(world, old, new, name="mine.toml"):
    text = SHIPPED.read_text(encoding="utf-8")
    assert old in text, old
    path = world / "in" / name
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


RULE_FILE_EDITS = {
    "max_fraction = 7": ("max_fraction = 0.0", "max_fraction = 7", ["mine.toml", "not_wetland", "max_fraction", "7"]),
    "years_before_start = -3": ("years_before_start = 3", "years_before_start = -3",
                                ["years_before_start", "-3", ">= 1"]),
    "min_area_ha = -5": ("min_area_ha = 0.04", "min_area_ha = -5", ["min_area", "min_area_ha", "-5"]),
    "years_before_start = 2.5": ("years_before_start = 3", "years_before_start = 2.5", ["years_before_start", "integer"]),
    "max_fraction as text": ("max_fraction = 0.0", 'max_fraction = "none"', ["max_fraction", "number"]),
    "unknown rule key": ("max_fraction = 0.0", "max_fractoin = 0.0", ["max_fractoin", "did you mean 'max_fraction'"]),
    "unknown top-level key": ('version = "2"', 'version = "2"\nmethodolgy = "x"', ["methodolgy", "did you mean 'methodology'"]),
    "unknown layer key": ("values = { wetland = [1], dry_land = [0] }",
                          "values = { wetland = [1], dry_land = [0] }\nnodat = [255]", ["[layers.wetland]", "nodat", "did you mean 'nodata'"]),
    "not an ISO date": ('legacy_until = "2019-12-31"', 'legacy_until = "31/12/2019"', ["legacy_until", "ISO date"]),
    "rule without a source": ('source = "CCER-14-001-V01 section 2 (适用条件) d)', 'sourse = "CCER-14-001-V01 section 2 (适用条件) d)',
                              ["sourse", "did you mean 'source'"]),
    "rule lacks its source": ('source = "CCER-14-001-V01 section 2 (适用条件) d): project land is not wetland (不属于湿地)"\n',
                              "", ["not_wetland", "lacks source", "cites its source"]),
    "unknown check": ('check = "raster_fraction_max"', 'check = "raster_fraction"', ["raster_fraction", "raster_fraction_max"]),
    "no encoding for a layer": ('[layers.wetland]\ndescription = "wetland map, one band"\nvalues = { wetland = [1], dry_land = [0] }\n',
                                "", ["layer 'wetland'", "no declared encoding", "--layer-values"]),
    "class not declared": ('class = "wetland"', 'class = "wet"', ["'wet'", "declares classes wetland, dry_land"]),
    "value in two classes": ("values = { wetland = [1], dry_land = [0] }", "values = { wetland = [1], dry_land = [0, 1] }",
                             ["value 1", "'wetland'", "'dry_land'"]),
    "encoding of a layer no rule reads": ("[layers.wetland]", "[layers.wetlands]", ["wetlands", "did you mean 'wetland'"]),
}


@pytest.mark.parametrize("old, new, keywords", RULE_FILE_EDITS.values(), ids=RULE_FILE_EDITS.keys())
def test_bad_rule_files_are_refused(world, capsys, old, new, keywords):
    rules = _rule_file(world, old, new)
    assert_refused(base(world, "--rules", rules), capsys, keywords=keywords, watch=world)


OPTION_CASES = {
    "--param max_fraction=7": (["--param", "not_wetland.max_fraction=7"], ["--param not_wetland", "max_fraction", "7", "<= 1"]),
    "--param years_before_start=-3": (["--param", "non_forest_before_start.years_before_start=-3"],
                                      ["years_before_start", "-3", ">= 1"]),
    "--param min_area_ha=-5": (["--param", "min_area.min_area_ha=-5"], ["min_area_ha", "-5"]),
    "--param non-numeric": (["--param", "min_area.min_area_ha=big"], ["min_area_ha", "must be a number", "big"]),
    "--param unknown parameter": (["--param", "min_area.min_aera_ha=1"], ["min_aera_ha", "did you mean 'min_area_ha'"]),
    "--param unknown rule": (["--param", "not_wetlands.max_fraction=0.1"], ["not_wetlands", "did you mean 'not_wetland'"]),
    "--param without RULE.": (["--param", "max_fraction=0.1"], ["--param", "RULE.PARAM=VALUE"]),
    "--param bad date": (["--param", "min_area.legacy_until=2019-02-30"], ["legacy_until", "ISO date"]),
    "--param both year rules": (["--param", "non_forest_before_start.since=2005-02-16"],
                                ["exactly one of since, years_before_start"]),
    "unknown rule set": (["--rules", "ccer-14-01"], ["ccer-14-01", "did you mean 'ccer-14-001'"]),
    "rule file not found": (["--rules", "my_rules.toml"], ["my_rules.toml", "not found"]),
    "garbage --start-date": (["--start-date", "next spring"], ["--start-date", "next spring", "YYYY-MM-DD"]),
    "invalid --crs": (["--crs", "EPSG:999999"], ["--crs", "EPSG:999999"]),
    "--crs not the parcels' CRS": (["--crs", "EPSG:4326"], ["CRS", "EPSG:32648", "EPSG:4326"]),
    "--layer-values bad syntax": (["--layer-values", "forest_history=1"], ["--layer-values", "NAME:CLASS=V1,V2"]),
    "--layer-values unknown layer": (["--layer-values", "forest:forest=1;non_forest=0"],
                                     ["forest", "did you mean 'forest_history'"]),
    "--layer-values lacks a class": (["--layer-values", "forest_history:forest=100"], ["forest_history", "'non_forest'"]),
    "--layer-values not a number": (["--layer-values", "forest_history:forest=yes;non_forest=0"], ["'yes'", "not a number"]),
    "--layer-values value twice": (["--layer-values", "wetland:wetland=1;dry_land=1"], ["value 1", "'wetland'", "'dry_land'"]),
    "--layer-values class twice": (["--layer-values", "wetland:wetland=1;wetland=2"], ["class 'wetland' given twice"]),
}


@pytest.mark.parametrize("extra, keywords", OPTION_CASES.values(), ids=OPTION_CASES.keys())
def test_bad_options_are_refused(world, capsys, extra, keywords):
    assert_refused(base(world, *extra), capsys, keywords=keywords, watch=world)


def test_garbage_start_date_column_names_row_and_parcel(world, capsys):
    parcels = gpd.read_file(world / "in" / "parcels.gpkg")
    parcels.loc[2, "start_date"] = "sometime in 2024"
    parcels.to_file(world / "in" / "dated.gpkg")
    argv = base(world)
    argv[1] = world / "in" / "dated.gpkg"
    assert_refused(argv, capsys, keywords=["start_date", "row 3", "parcel recent", "sometime in 2024"], watch=world)


def _layers_of(world, **replace):
    layers = {"forest_history": world / "in" / "forest_history.tif", "wetland": world / "in" / "wetland.tif"}
    return {**layers, **replace}


LAYER_OPTION_CASES = {
    "unknown layer name": (lambda w: _layers_of(w, wetlands=w / "in" / "wetland.tif"),
                           ["--layer wetlands", "did you mean 'wetland'"]),
    "layer file missing": (lambda w: _layers_of(w, wetland=w / "in" / "nowhere.tif"), ["wetland", "nowhere.tif", "not found"]),
    "layer is not a raster": (lambda w: _layers_of(w, wetland=w / "in" / "parcels.gpkg"), ["wetland", "parcels.gpkg"]),
    "required layer not given": (lambda w: {"forest_history": w / "in" / "forest_history.tif"},
                                 ["needs layer(s) wetland", "--layer"]),
}


@pytest.mark.parametrize("make, keywords", LAYER_OPTION_CASES.values(), ids=LAYER_OPTION_CASES.keys())
def test_bad_layer_options_are_refused(world, capsys, make, keywords):
    assert_refused(base(world, layers=make(world)), capsys, keywords=keywords, watch=world)


def test_layer_option_without_name_is_refused(world, capsys):
    assert_refused(base(world, "--layer", "wetland.tif"), capsys, keywords=["--layer", "NAME=RASTER"], watch=world)


# ---- outputs ------------------------------------------------------------------------------------------

def _existing(world):
    (world / "out" / "r.json").write_text("{}")
    return []


OUTPUT_CASES = {
    "existing report without --overwrite": (_existing, ["r.json", "exists", "--overwrite"]),
    "--out equal to --gpkg": (lambda w: ["--out", w / "out" / "r.gpkg", "--gpkg", w / "out" / "r.gpkg"], ["r.gpkg"]),
    "--gpkg equal to --out": (lambda w: ["--gpkg", w / "out" / "r.json"], ["r.json"]),
    "--out is a folder": (lambda w: ["--out", w / "out"], ["out", "is a folder"]),
    "--out ends with /": (lambda w: ["--out", f"{w / 'out' / 'reports'}/"], ["reports", "is a folder"]),
    "--out in a missing folder": (lambda w: ["--out", w / "out" / "no" / "r.json"], ["does not exist"]),
    "--gpkg is the parcels file": (lambda w: ["--gpkg", w / "in" / "parcels.gpkg", "--overwrite"],
                                   ["parcels.gpkg", "input"]),
    "--out without .json": (lambda w: ["--out", w / "out" / "r.txt"], ["r.txt", ".json"]),
}


@pytest.mark.parametrize("make, keywords", OUTPUT_CASES.values(), ids=OUTPUT_CASES.keys())
def test_bad_outputs_are_refused_before_any_work(world, capsys, monkeypatch, make, keywords):
    import sinks.eligibility.engine as engine

    def no_work(*args, **kwargs):
        raise AssertionError("the assessment ran before the outputs were checked")

    monkeypatch.setattr(engine, "assess", no_work)
    assert_refused(base(world, *make(world)), capsys, keywords=keywords, watch=world)


# ---- declared encodings give the right verdicts -------------------------------------------------------

def test_default_encoding_gives_the_truth(world, capsys):
    assert main([str(a) for a in base(world, "--gpkg", world / "out" / "r.gpkg")]) == 0
    assert verdicts(world / "out" / "r.json") == TRUTH
    document = json.loads((world / "out" / "r.json").read_text())
    layer = document["layers"]["forest_history"]
    assert layer["encoding"]["classes"] == {"forest": [1], "non_forest": [0]}
    assert set(layer["values_found"]) == {"0", "1"}
    assert list(gpd.read_file(world / "out" / "r.gpkg")["verdict"]) == list(TRUTH.values())


def test_layer_values_option_declares_another_coding(world, capsys):
    layers = {**_history_0_100(world), "wetland": _wetland_0_255(world)["wetland"]}
    argv = base(world, "--layer-values", "forest_history:forest=100;non_forest=0;nodata=255",
                "--layer-values", "wetland:wetland=255;dry_land=0", layers=layers)
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    assert verdicts(world / "out" / "r.json") == TRUTH
    document = json.loads((world / "out" / "r.json").read_text())
    assert document["layers"]["wetland"]["encoding"]["classes"] == {"wetland": [255], "dry_land": [0]}


def test_class_codes_through_the_python_api(world):
    data = history(10, 20)
    data[:, 20:25, 0:5] = 30          # built-up, counted as non-forest
    data[YEARS.index(2024), 0:10, 0:10] = 11  # another forest code
    path = write_raster(world / "in" / "lc.tif", data, names=[str(y) for y in YEARS])
    parcels = gpd.read_file(world / "in" / "parcels.gpkg")
    rules = load_ruleset("ccer-14-001")
    layers = {"forest_history": path, "wetland": world / "in" / "wetland.tif"}
    with pytest.raises(InputError, match="not in the declared encoding"):
        assess(parcels, rules, layers, progress=False)
    values = {"forest_history": {"forest": [10, 11], "non_forest": [20, 30]}}
    report = assess(parcels, rules, layers, layer_values=values, progress=False)
    assert {p.parcel_id: p.verdict for p in report.parcels} == TRUTH
    # the same through load_ruleset, and the option syntax parses to the same mapping
    parsed = parse_layer_values(["forest_history:forest=10,11;non_forest=20,30"])
    assert parsed == values
    report = assess(parcels, load_ruleset("ccer-14-001", layer_values=parsed), layers, progress=False)
    assert {p.parcel_id: p.verdict for p in report.parcels} == TRUTH


def test_declared_nodata_values_make_parcels_undetermined(world):
    data = history()
    data[:, 15:25, 15:25] = 254  # a cloud code on the open parcel
    path = write_raster(world / "in" / "cloud.tif", data, names=[str(y) for y in YEARS])
    parcels = gpd.read_file(world / "in" / "parcels.gpkg")
    layers = {"forest_history": path, "wetland": world / "in" / "wetland.tif"}
    values = {"forest_history": {"forest": [1], "non_forest": [0], "nodata": [254]}}
    got = {p.parcel_id: p for p in assess(parcels, load_ruleset("ccer-14-001"), layers, layer_values=values,
                                          progress=False).parcels}
    assert got["open"].verdict == "undetermined" and "nodata" in got["open"].rules["non_forest_before_start"].reason
    assert got["forest"].verdict == "ineligible"


def test_parcels_in_another_crs_get_the_same_verdicts(world, capsys):
    parcels = gpd.read_file(world / "in" / "parcels.gpkg").to_crs("EPSG:4326")
    parcels.to_file(world / "in" / "lonlat.gpkg")
    argv = base(world)
    argv[1] = world / "in" / "lonlat.gpkg"
    assert main([str(a) for a in argv]) == 0
    assert verdicts(world / "out" / "r.json") == TRUTH


def test_rule_files_accept_toml_dates_and_normalize_them(world):
    rules = load_ruleset(_rule_file(world, 'legacy_until = "2019-12-31"', "legacy_until = 2019-12-31"))
    assert rules.rules[0].params["legacy_until"] == "2019-12-31"


def test_overwrite_replaces_and_outputs_come_together(world, capsys, monkeypatch):
    out, gpkg = world / "out" / "r.json", world / "out" / "r.gpkg"
    argv = [str(a) for a in base(world, "--gpkg", gpkg)]
    assert main(argv) == 0
    before = out.read_bytes(), gpkg.read_bytes()
    assert main(argv) != 0 and "--overwrite" in capsys.readouterr().err
    # the GeoPackage fails half-way: neither output changes, no staging file is left
    import geopandas

    def broken(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(geopandas.GeoDataFrame, "to_file", broken)
    capsys.readouterr()
    assert main(argv + ["--overwrite"]) != 0
    err = capsys.readouterr().err  # the error names what was being written
    assert f"writing {out}, {gpkg}: No space left on device; free some space" in err
    assert (out.read_bytes(), gpkg.read_bytes()) == before
    assert sorted(p.name for p in (world / "out").iterdir()) == ["r.gpkg", "r.json"]
    monkeypatch.undo()
    assert main(argv + ["--overwrite"]) == 0 and verdicts(out) == TRUTH


def test_write_report_refuses_one_path_for_both(world):
    parcels = gpd.read_file(world / "in" / "parcels.gpkg")
    report = assess(parcels, load_ruleset("ccer-14-001"),
                    {"forest_history": world / "in" / "forest_history.tif", "wetland": world / "in" / "wetland.tif"},
                    progress=False)
    with pytest.raises(OutputError):
        write_report(report, world / "out" / "r.gpkg", world / "out" / "r.gpkg")
    assert not any((world / "out").iterdir())
    with pytest.raises(SpecError, match="max_fraction"):
        load_ruleset("ccer-14-001", {"not_wetland": {"max_fraction": 7}})


def _parcels_variant(world, name, change):
    parcels = change(gpd.read_file(world / "in" / "parcels.gpkg"))
    parcels.to_file(world / "in" / name)
    return world / "in" / name


PARCEL_CASES = {
    "start_date as a number": (lambda p: p.assign(start_date=[2025, 2025, 2025, 2025]), ["start_date", "row 1", "parcel open"]),
    "start date in year 20225": (lambda p: p.assign(start_date="20225-01-01"), ["start_date", "20225"]),
    "no parcels": (lambda p: p.iloc[:0], ["parcels", "no rows"]),
    "duplicate parcel ids": (lambda p: p.assign(parcel_id="a"), ["duplicate parcel_id"]),
    "blank parcel id": (lambda p: p.assign(parcel_id=["a", " ", "c", "d"]), ["parcel_id", "blank", "row(s) 2"]),
    "parcel ids differing in case and spaces": (
        lambda p: p.assign(parcel_id=["P1", "b", "p1 ", "d"]),
        ["'P1' (row 1) and 'p1 ' (row 3)", "differ only in case or surrounding spaces"]),
    "overlapping parcels": (lambda p: p.set_geometry(p.geometry.where(p.index != 1, p.geometry.iloc[0].buffer(-1))),
                            ["parcels overlap", "counted twice"]),
}


@pytest.mark.parametrize("change, keywords", PARCEL_CASES.values(), ids=PARCEL_CASES.keys())
def test_bad_parcels_are_refused(world, capsys, change, keywords):
    argv = base(world)
    argv[1] = _parcels_variant(world, "bad.gpkg", change)
    assert_refused(argv, capsys, keywords=keywords, watch=world)
