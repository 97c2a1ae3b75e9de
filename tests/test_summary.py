"""The one-page HTML summary of a crediting report, checked against the JSON report.

A small world (30 x 30 pixels of 30 m, the maps of tests/test_crediting.py): a planted parcel, a
placebo, a parcel on standing forest (ineligible), one outside the AOA, and a planted parcel whose
id is markup (escaped everywhere).
"""

from __future__ import annotations

import base64
import json
import sys
from html.parser import HTMLParser

import geopandas as gpd
import numpy as np
import pytest

from sinks.cli import main
from sinks.eligibility.crediting import credit
from sinks.eligibility.report import to_dict
from sinks.eligibility.summary import project_summary, write_summary
from sinks.errors import OutputError
from tests.badinput import assert_refused
from tests.test_crediting import CRS, T, YEARS, cells, layer, make_map

N = 30
NASTY = '<script>alert("a&b")</script>'
PARCELS = {"planted": (3, 3, 9, 9), "placebo": (18, 3, 24, 9), "forest": (18, 18, 24, 24),
           "no_aoa": (3, 18, 9, 24), NASTY: (10, 3, 14, 7)}
VOID = {"meta", "br", "img", "hr", "link", "input", "col", "wbr"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("summary")
    rng = np.random.default_rng(2)
    c1 = np.full((N, N), 20.0)
    gain = np.zeros((N, N))
    gain[2:10, 2:15] = 30.0   # planted (planted, NASTY)
    gain[17:25, 2:10] = 30.0  # planted, outside the AOA in epoch 2
    gain[17:25, 17:25] = 10.0  # standing forest
    c2 = c1 + gain + rng.normal(0, 0.5, (N, N))
    aoa2 = np.ones((N, N))
    aoa2[16:26, 1:11] = 0
    maps = [make_map(root / "c2020.tif", c1), make_map(root / "c2025.tif", c2, aoa=aoa2)]
    history = np.zeros((len(YEARS), N, N))
    history[:, 16:26, 16:26] = 1
    layers = {"forest_history": layer(root / "history.tif", history, YEARS, T),
              "wetland": layer(root / "wetland.tif", np.zeros((N, N)), ["wetland"], T)}
    covariates = layer_float_n(root / "cov.tif", rng.uniform(0, 1, (N, N)))
    parcels = gpd.GeoDataFrame({"parcel_id": list(PARCELS), "start_date": ["2020-03-01"] * len(PARCELS)},
                               geometry=[cells(*g) for g in PARCELS.values()], crs=CRS)
    parcels.to_file(root / "parcels.gpkg")
    (root / "out").mkdir()
    return {"root": root, "maps": maps, "layers": layers, "parcels": parcels, "covariates": covariates}


def layer_float_n(path, data):
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=N, height=N, count=1, dtype="float32", crs=CRS,
                       transform=T, nodata=-9999) as dst:
        dst.write(data[None].astype("float32"))
        dst.set_band_description(1, "elevation")
    return path


@pytest.fixture(scope="module")
def report(world):
    return credit(world["parcels"], "ccer-14-001", world["maps"], (2020, 2025), layers=world["layers"],
                  progress=False)


@pytest.fixture(scope="module")
def page(report):
    return project_summary(report, title="county A")


class Page(HTMLParser):
    """The page's tables (rows with their attributes and cells), images, text; checks nesting."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.stack, self.rows, self.images, self.text, self.tags, self.links = [], [], [], [], [], []
        self.row = self.cell = None
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed: {self.stack}"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        self.links += [v for k, v in attrs.items() if k in ("src", "href")]
        if tag == "img":
            self.images.append(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "tr":
            self.row = {"attrs": attrs, "cells": []}
            self.rows.append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.cell = {"tag": tag, "attrs": attrs, "text": ""}
            self.row["cells"].append(self.cell)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("td", "th"):
            self.cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self.cell is not None:
            self.cell["text"] += data

    def row_by(self, key, value):
        found = [r for r in self.rows if r["attrs"].get(key) == value]
        assert len(found) == 1, (key, value, len(found))
        return found[0]

    def values(self, row):
        return [float(c["attrs"]["data-value"]) if c["attrs"].get("data-value") else None
                for c in row["cells"] if "data-value" in c["attrs"]]


def test_page_parses_with_the_reports_totals_and_every_parcel(report, page):
    doc = to_dict(report)
    parsed = Page(page)
    text = " ".join(parsed.text)
    assert "Crediting summary: county A" in text and "ccer-14-001" in text
    assert doc["ruleset"]["version"] in text and doc["ruleset"]["source"] in text
    assert doc["software"]["version"] in text and doc["generated"] in text
    for m in doc["crediting"]["maps"]:
        assert m["sha256"] in text and m["path"] in text and m["bundle_id"] in text
    project = doc["crediting"]["project"]
    assert project["tco2e"] > 0
    for key in ("stock_change_tco2e", "baseline_tco2e", "leakage_tco2e", "uncertainty_deduction_tco2e",
                "buffer_tco2e", "tco2e"):
        assert parsed.values(parsed.row_by("data-key", key))[0] == project[key], key
    assert parsed.values(parsed.row_by("data-key", "tco2e"))[1:] == [project["lower_tco2e"], project["upper_tco2e"]]
    assert parsed.values(parsed.row_by("data-key", "stock_change_tco2e"))[1:] == [
        project["stock_change_lower_tco2e"], project["stock_change_upper_tco2e"]]
    uncertainty = parsed.row_by("data-key", "uncertainty_deduction_tco2e")
    assert "lower bound of the 90 % interval" in uncertainty["cells"][-1]["text"]
    for status, n in project["statuses"].items():
        if n:
            assert parsed.values(parsed.row_by("data-key", f"status.{status}")) == [n]
    assert parsed.values(parsed.row_by("data-key", "verdict.ineligible")) == [doc["summary"]["ineligible"]]
    for p in doc["parcels"]:
        row = parsed.row_by("data-parcel", p["parcel_id"])
        assert row["cells"][0]["text"] == p["parcel_id"]
        c = p["creditable"]
        assert parsed.values(row)[0] == p["area_ha"]
        assert parsed.values(row)[1:] == [c.get("stock_change_tco2e"), c["tco2e"], c["lower_tco2e"], c["upper_tco2e"]]
        assert c["status"].replace("_", " ") in row["cells"][3]["text"]
    assert parsed.row_by("data-parcel", "forest")["cells"][2]["text"] == "ineligible"


def test_unchecked_terms_and_rules_are_flagged(report, page):
    parsed = Page(page)
    terms = report.crediting["methodology"]["terms"]
    assert any("unchecked" in t["confidence"] for t in terms.values())
    for name, term in terms.items():
        row = parsed.row_by("data-term", name)
        flagged = "unchecked" in term["confidence"].lower()
        assert ("unchecked" in row["attrs"].get("class", "")) == flagged, name
        assert ("UNCHECKED" in "".join(c["text"] for c in row["cells"])) == flagged, name
        assert term["source"] in row["cells"][2]["text"]
    assert "lower bound of the 90 % interval" in "".join(c["text"] for c in parsed.row_by("data-term", "uncertainty")["cells"])
    assert not [r for r in parsed.rows if "data-covariate" in r["attrs"]]  # no controls, no balance table
    assert "Matched controls" not in page


def test_departures_and_the_conservative_flag_are_on_the_page(world, page):
    text = " ".join(Page(page).text)
    assert "Departures" in text and "none" in text and "conservative as the methodology: yes" in text
    loose = credit(world["parcels"], "ccer-14-001", world["maps"], (2020, 2025), layers=world["layers"],
                   params={"not_wetland": {"max_fraction": 1.0}}, progress=False)
    text = " ".join(Page(project_summary(loose, title="county A")).text)
    assert "--param not_wetland.max_fraction = 1.0 (methodology or default: 0.0): less conservative" in text
    assert "conservative as the methodology: <strong>no</strong>" in project_summary(loose, title="county A")


def test_user_strings_are_escaped(page):
    parsed = Page(page)
    assert NASTY not in page and "&lt;script&gt;" in page
    assert "script" not in [tag for tag, _ in parsed.tags]
    assert parsed.row_by("data-parcel", NASTY)["cells"][0]["text"] == NASTY


def test_the_figure_is_an_embedded_png_and_nothing_is_external(page):
    parsed = Page(page)
    assert all(link.startswith("data:") for link in parsed.links) and "<link" not in page
    (image,) = parsed.images
    assert image["src"].startswith("data:image/png;base64,")
    png = base64.b64decode(image["src"].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "over the second-epoch carbon map" in page


def test_balance_table_with_matched_controls(world):
    report = credit(world["parcels"], "ccer-14-001", world["maps"], (2020, 2025), layers=world["layers"],
                    controls_covariates=world["covariates"], progress=False)
    controls = report.crediting["controls"]
    page = project_summary(report, map_path=False)
    parsed = Page(page)
    for b in controls["balance"]:
        row = parsed.row_by("data-covariate", b["covariate"])
        values = parsed.values(row)
        assert values[3] == b["smd_after"] and values[4] == 0.25
        assert row["cells"][-1]["text"] == ("pass" if b["passed"] else "FAIL")
    assert {b["covariate"] for b in controls["balance"]} == {"elevation", "starting_stock", "forest_history_share"}
    assert ("balance passed" if controls["passed"] else "BALANCE FAILED") in page
    assert str(controls["covariates_sha256"]) in page
    assert "drawn without a carbon map" in page and parsed.images  # parcels only, said so


def test_without_matplotlib_the_page_is_written_with_a_note(report, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    path = write_summary(report, tmp_path / "s.html", title="no plot")
    page = path.read_text(encoding="utf-8")
    parsed = Page(page)
    assert not parsed.images and "matplotlib is not installed" in page and "sinks[plot]" in page
    assert parsed.values(parsed.row_by("data-key", "tco2e"))[0] == report.crediting["project"]["tco2e"]
    assert [p.name for p in tmp_path.iterdir()] == ["s.html"]


def test_a_missing_or_other_map_is_said_not_drawn(report, world, tmp_path):
    doc = json.loads(json.dumps(to_dict(report)))  # the JSON as a verifier loads it
    page = project_summary(doc, world["parcels"], tmp_path / "gone.tif")
    assert "gone.tif was not found" in page and Page(page).images
    page = project_summary(doc, world["parcels"], world["maps"][0])  # the first epoch: not the credited second
    assert "sha256 differs" in page
    page = project_summary(doc)  # no geometries: no figure, said so
    assert "no parcel geometries" in page and not Page(page).images
    with pytest.raises(OutputError, match=".html"):
        write_summary(doc, tmp_path / "s.txt")


def argv(world, *extra):
    root = world["root"]
    return ["credit", root / "parcels.gpkg", "--methodology", "ccer-14-001", "--maps", *world["maps"],
            "--years", "2020", "2025", "--layer", f"forest_history={world['layers']['forest_history']}",
            "--layer", f"wetland={world['layers']['wetland']}", "--out", root / "out" / "r.json", "--quiet", *extra]


def test_cli_summary_with_the_report_refused_over_an_existing_one(world, capsys, monkeypatch):
    out = world["root"] / "out"
    summary = out / "project.html"
    assert main([str(a) for a in argv(world, "--summary", summary)]) == 0, capsys.readouterr().err
    assert "summary ->" in capsys.readouterr().out
    doc = json.loads((out / "r.json").read_text(encoding="utf-8"))
    parsed = Page(summary.read_text(encoding="utf-8"))
    assert parsed.values(parsed.row_by("data-key", "tco2e"))[0] == doc["crediting"]["project"]["tco2e"]
    assert "parcels.gpkg" in " ".join(parsed.text) and parsed.images
    (out / "r.json").unlink()
    summary.write_text("the verifier's copy", encoding="utf-8")
    assert_refused(argv(world, "--summary", summary), capsys, keywords=["project.html", "exists", "--overwrite"],
                   watch=out)
    assert_refused(argv(world, "--summary", out / "project.txt"), capsys, keywords=["project.txt", ".html"], watch=out)
    # a failure while writing the report leaves neither the report nor the summary, nor any staging
    import sinks.eligibility.report as report_module

    def broken(document):
        raise OutputError("disk full (simulated)")

    monkeypatch.setattr(report_module, "validate", broken)
    assert_refused(argv(world, "--summary", summary, "--overwrite"), capsys, keywords=["disk full"], watch=out)
    assert summary.read_text(encoding="utf-8") == "the verifier's copy"
    monkeypatch.undo()
    assert main([str(a) for a in argv(world, "--summary", summary, "--overwrite")]) == 0, capsys.readouterr().err
    assert summary.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in out.iterdir()) == ["project.html", "r.json"]
    (out / "r.json").unlink()
    summary.unlink()
