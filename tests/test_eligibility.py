"""Eligibility rules, verdicts, evidence, the report schema and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import jsonschema
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Polygon, box

from sinks.cli import main
from sinks.eligibility.engine import assess, equal_area_ha
from sinks.eligibility.report import to_dict, validate, write_report
from sinks.eligibility.rules import load_ruleset, parse_overrides
from sinks.errors import InputError, SpecError

CRS = "EPSG:32648"
T = Affine(30, 0, 500_000, 0, -30, 3_300_000)  # 100 x 100 pixels of 30 m
YEARS = list(range(2003, 2026))


def _cell(col0, row0, col1, row1):
    """A polygon covering pixel columns col0..col1-1 and rows row0..row1-1."""
    x0, y0 = T @ (col0, row0)
    x1, y1 = T @ (col1, row1)
    return box(x0, y1, x1, y0)


@pytest.fixture()
def layers(tmp_path):
    history = np.zeros((len(YEARS), 100, 100), np.uint8)
    history[:, 0:20, 0:20] = 1                            # forest every year
    history[YEARS.index(2015):YEARS.index(2018), 0:20, 40:60] = 1  # forest 2015-2017 only
    history[YEARS.index(2010), 60:80, 60:80] = 255        # unknown in 2010
    wetland = np.zeros((100, 100), np.uint8)
    wetland[80:100, 0:20] = 1
    paths = {}
    for name, data, names in (("forest_history", history, [str(y) for y in YEARS]), ("wetland", wetland[None], ["wetland"])):
        path = tmp_path / f"{name}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=100, height=100, count=data.shape[0], dtype="uint8",
                           crs=CRS, transform=T, nodata=255) as dst:
            dst.write(data)
            for i, n in enumerate(names, start=1):
                dst.set_band_description(i, n)
        paths[name] = path
    return paths


@pytest.fixture()
def parcels():
    return gpd.GeoDataFrame(
        {"parcel_id": ["open", "forest", "recent", "wet", "tiny", "nodata", "outside", "edge"],
         "start_date": ["2025-01-01"] * 8},
        geometry=[_cell(30, 30, 40, 40), _cell(5, 5, 10, 10), _cell(45, 5, 50, 10), _cell(5, 85, 10, 90),
                  _cell(70, 30, 70.5, 30.5), _cell(65, 65, 70, 70), _cell(200, 200, 210, 210),
                  _cell(95, 50, 105, 55)],
        crs=CRS,
    )


def test_each_rule_outcome_and_verdict(parcels, layers):
    # the 2013 methodology: non-forest every year since 2005-02-16, at least 1 mu, optional organic soil
    report = assess(parcels, load_ruleset("ar-cm-001"), layers, progress=False)
    got = {p.parcel_id: p for p in report.parcels}
    assert got["open"].verdict == "eligible"
    assert got["forest"].verdict == "ineligible" and got["forest"].rules["non_forest_since"].status == "fail"
    recent = got["recent"].rules["non_forest_since"]
    assert recent.status == "fail" and "2015, 2016, 2017" in recent.reason
    assert recent.evidence["years"]["2016"]["forest_fraction"] == 1.0
    assert got["wet"].rules["not_wetland"].status == "fail" and got["wet"].verdict == "ineligible"
    tiny = got["tiny"]
    assert tiny.rules["min_area"].status == "fail" and tiny.area_ha == pytest.approx(0.0225, rel=1e-3)
    # a parcel of a quarter pixel: its real area share of the one pixel it lies on, not "no pixels"
    year = tiny.rules["non_forest_since"].evidence["years"]["2010"]
    assert year["pixels"] == 1 and year["area_with_data_ha"] == pytest.approx(0.0225, rel=1e-3)
    assert year["nodata_share"] == 0 and year["forest_fraction"] == 0
    assert got["nodata"].verdict == "undetermined" and "2010" in got["nodata"].rules["non_forest_since"].reason
    assert got["outside"].verdict == "undetermined" and "outside" in got["outside"].rules["not_wetland"].reason
    assert got["edge"].verdict == "undetermined"  # half the parcel is off the rasters: nodata there
    assert all(p.rules["not_organic_soil"].status == "not_checked" for p in report.parcels)
    assert report.counts() == {"eligible": 1, "ineligible": 4, "undetermined": 3}


def test_year_bands_named_with_stray_spaces_read_as_their_years(parcels, layers):
    """'2017 ' passed the layer's year check but every rule said the year was missing."""
    with rasterio.open(layers["forest_history"], "r+") as ds:
        for i, year in enumerate(YEARS, start=1):
            ds.set_band_description(i, f" {year} ")
    report = assess(parcels, load_ruleset("ar-cm-001"), layers, progress=False)
    assert {p.parcel_id: p.verdict for p in report.parcels}["open"] == "eligible"
    assert report.counts() == {"eligible": 1, "ineligible": 4, "undetermined": 3}


def test_start_date_and_cut_off_decide_the_years(parcels, layers):
    # a project starting in 2015 only looks at 2005-2014: the 2015-2017 forest does not count
    parcels = parcels.assign(start_date="2015-06-01")
    report = assess(parcels, load_ruleset("ar-cm-001"), layers, progress=False)
    assert {p.parcel_id: p.verdict for p in report.parcels}["recent"] == "eligible"
    # a cut-off before the history begins is refused at layer level, naming the missing years
    early = load_ruleset("ar-cm-001", parse_overrides(["non_forest_since.since=2001-01-01"]))
    with pytest.raises(InputError, match=r"needs the years 2001-2014 .* has 2003-2025; missing 2001, 2002"):
        assess(parcels, early, layers, progress=False)


def test_a_start_in_the_cut_off_year_or_before_it_is_not_a_pass(parcels, layers):
    """Standing forest passed 'non-forest since 2005-02-16' for a 2004 start: no year was required."""
    for start in ("2004-06-01", "2005-06-01"):
        report = assess(parcels.assign(start_date=start), load_ruleset("ar-cm-001"), layers, progress=False)
        got = {p.parcel_id: p for p in report.parcels}
        rule = got["forest"].rules["non_forest_since"]
        assert rule.status == "unknown" and "cannot be checked" in rule.reason, (start, rule)
        assert got["forest"].verdict == "undetermined"


def test_ccer_14_001_three_years_before_start(parcels, layers):
    rules = load_ruleset("ccer-14-001")
    got = {p.parcel_id: p for p in assess(parcels, rules, layers, progress=False).parcels}
    # start 2025-01-01: only 2022-2024 count, so forest in 2015-2017 and nodata in 2010 do not matter
    assert got["recent"].verdict == "eligible" and got["nodata"].verdict == "eligible"
    window = got["forest"].rules["non_forest_before_start"]
    assert window.status == "fail" and "2022, 2023, 2024" in window.reason and "3 years before" in window.reason
    assert window.evidence["required_years"] == [2022, 2024]
    assert "not_organic_soil" not in got["open"].rules  # not a CCER-14-001 condition
    # a project started in 2018 looks at 2015-2017: the recent forest now fails it
    early = {p.parcel_id: p for p in assess(parcels.assign(start_date="2018-03-01"), rules, layers,
                                                 progress=False).parcels}
    assert early["recent"].rules["non_forest_before_start"].status == "fail"


def test_ccer_14_001_minimum_area_depends_on_start_year(layers):
    rules = load_ruleset("ccer-14-001")
    side = 22.0  # a 484 m2 parcel: above 400 m2, below 1 mu (667 m2)
    x0, y0 = T @ (30, 30)
    small = gpd.GeoDataFrame({"parcel_id": ["new", "old", "undated"],
                              "start_date": ["2024-05-01", "2019-06-01", None]},
                             geometry=[box(x0 + k, y0 - side, x0 + k + side, y0) for k in (0, 30, 60)], crs=CRS)
    got = {p.parcel_id: p.rules["min_area"] for p in assess(small, rules, layers, progress=False).parcels}
    assert got["new"].status == "pass" and got["new"].evidence["applied_min_area_ha"] == 0.04
    assert got["old"].status == "fail" and "0.0667" in got["old"].reason
    assert got["undated"].status == "unknown" and "no start date" in got["undated"].reason


def test_the_minimum_area_is_of_contiguous_land_not_of_scattered_pieces(layers):
    """Eleven 15 m squares apart, one MultiPolygon of 0.25 ha, are not a parcel of 0.25 ha (连续面积)."""
    from shapely.geometry import MultiPolygon

    rules = load_ruleset("ccer-14-001")
    x0, y0 = T @ (30, 30)
    scattered = MultiPolygon([box(x0 + 40 * k, y0 - 15, x0 + 40 * k + 15, y0) for k in range(11)])
    frame = gpd.GeoDataFrame({"parcel_id": ["scattered", "whole"], "start_date": "2024-05-01"},
                             geometry=[scattered, box(x0, y0 - 60, x0 + 25, y0 - 35)], crs=CRS)
    got = {p.parcel_id: p.rules["min_area"] for p in assess(frame, rules, layers, progress=False).parcels}
    assert got["scattered"].status == "fail" and got["scattered"].evidence["pieces"] == 11
    assert "smallest of 11 contiguous pieces" in got["scattered"].reason
    assert got["scattered"].evidence["area_ha"] > 0.04 > got["scattered"].evidence["smallest_piece_ha"]
    assert got["whole"].status == "pass" and got["whole"].evidence["pieces"] == 1


def test_rule_files_are_checked_for_their_parameters(tmp_path):
    shipped = (Path(__file__).parents[1] / "sinks/eligibility/rulesets/ccer-14-001.toml").read_text()
    both = tmp_path / "both.toml"
    both.write_text(shipped.replace('years_before_start = 3', 'years_before_start = 3\nsince = "2005-02-16"'))
    with pytest.raises(SpecError, match="exactly one of since, years_before_start"):
        load_ruleset(both)
    half = tmp_path / "half.toml"
    half.write_text(shipped.replace('legacy_until = "2019-12-31"\n', ""))
    with pytest.raises(SpecError, match="legacy_min_area_ha and legacy_until together"):
        load_ruleset(half)


def test_area_is_equal_area_whatever_the_crs():
    square = gpd.GeoSeries([Polygon([(0, 0), (1000, 0), (1000, 1000), (0, 1000)])], crs=CRS)
    square = square.translate(500_000, 3_300_000)
    in_degrees = square.to_crs("EPSG:4326")
    assert equal_area_ha(square)[0] == pytest.approx(100.0, rel=1e-3)  # UTM scale error < 0.1 % here
    assert equal_area_ha(in_degrees)[0] == pytest.approx(equal_area_ha(square)[0], rel=1e-6)


def test_report_validates_and_schema_rejects_bad_documents(parcels, layers, tmp_path):
    report = assess(parcels, load_ruleset("ccer-14-001"), layers, progress=False)
    document = write_report(report, tmp_path / "r.json", tmp_path / "r.gpkg")
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["eligible"] == 3
    assert len(document["layers"]["forest_history"]["sha256"]) == 64
    table = gpd.read_file(tmp_path / "r.gpkg")
    assert list(table["verdict"]) == [p.verdict for p in report.parcels]
    assert "rule_non_forest_before_start" in table.columns
    broken = to_dict(report)
    broken["parcels"][0]["verdict"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_bad_input_is_named(parcels, layers):
    rules = load_ruleset("ccer-14-001")
    with pytest.raises(InputError, match="duplicate parcel_id"):
        assess(parcels.assign(parcel_id="a"), rules, layers, progress=False)
    with pytest.raises(InputError, match="not an ISO date"):
        assess(parcels.assign(start_date="next spring"), rules, layers, progress=False)
    with pytest.raises(InputError, match="needs layer"):
        assess(parcels, rules, {"wetland": layers["wetland"]}, progress=False)
    with pytest.raises(InputError, match="not used by rule set"):
        assess(parcels, rules, {**layers, "roads": layers["wetland"]}, progress=False)
    points = parcels.assign(geometry=parcels.geometry.centroid)
    with pytest.raises(InputError, match="not polygons"):
        assess(points, rules, layers, progress=False)
    with pytest.raises(SpecError, match="no parameter"):
        load_ruleset("ccer-14-001", parse_overrides(["min_area.bogus=1"]))
    with pytest.raises(SpecError, match="not found"):
        load_ruleset("no-such-methodology")


def test_cli_writes_report_and_fails_cleanly(parcels, layers, tmp_path, capsys):
    parcels.to_file(tmp_path / "parcels.gpkg")
    out = tmp_path / "report.json"
    args = ["eligibility", str(tmp_path / "parcels.gpkg"), "--layer", f"forest_history={layers['forest_history']}",
            "--layer", f"wetland={layers['wetland']}", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "3 eligible" in capsys.readouterr().out
    import hashlib
    import json

    inputs = json.loads(out.read_text())["inputs"]  # the parcels a verifier can check it was run on
    assert inputs["files"]["parcels"]["sha256"] == hashlib.sha256((tmp_path / "parcels.gpkg").read_bytes()).hexdigest()
    assert set(inputs["files"]) == {"parcels", "layer forest_history", "layer wetland", "rule set"}
    assert inputs["options"]["rules"] == "ccer-14-001"
    out.unlink()
    assert main(args[:4] + ["--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert "needs layer(s) wetland" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_evidence_is_exact_area_shares_not_pixel_centres(layers):
    """A 400 m2 parcel (20 m x 20 m) astride four 30 m pixels, one of them wetland, and a parcel
    half on wetland whose pixel centres all miss the wetland."""
    rules = load_ruleset("ccer-14-001")
    x, y = T @ (19, 79)  # the corner of the wetland block (rows 80-99, cols 0-19) is at pixel (80, 20)
    x20, y80 = T @ (20, 80)
    sub = box(x20 - 10, y80 - 10, x20 + 10, y80 + 10)  # a quarter in pixel (80, 19): wetland
    # 45 m wide over cols 18.5..20: pixel 19 (wetland) and the left half of pixel 20 (dry); wide enough
    # only when measured exactly
    x185, _ = T @ (18.5, 0)
    x21, _ = T @ (21.5, 0)
    astride = box(x185, y80 - 60, x21, y80 - 30)
    parcels = gpd.GeoDataFrame({"parcel_id": ["sub", "astride"], "start_date": ["2025-01-01"] * 2},
                               geometry=[sub, astride], crs=CRS)
    got = {p.parcel_id: p for p in assess(parcels, rules, layers, progress=False).parcels}
    wet = got["sub"].rules["not_wetland"]
    assert got["sub"].area_ha == pytest.approx(0.04, rel=2e-3)  # UTM scale at x = 500 km
    assert wet.status == "fail" and wet.evidence["pixels"] == 4
    assert wet.evidence["fraction"] == pytest.approx(0.25, abs=1e-6)
    assert wet.evidence["wetland_area_ha"] == pytest.approx(0.01, rel=2e-3)
    assert wet.evidence["area_with_data_ha"] == pytest.approx(got["sub"].area_ha, rel=1e-6)
    share = got["astride"].rules["not_wetland"].evidence
    # cols 18.5-20 wetland (1.5 px), col 20-21.5 dry (1.5 px): half the parcel
    assert share["fraction"] == pytest.approx(0.5, abs=1e-6) and got["astride"].verdict == "ineligible"
