"""Crediting: creditable t CO2e per parcel and project from two synthetic carbon maps with known gain.

The world (UTM 48N, 30 m pixels): a first-epoch map of 20 Mg C/ha, a second epoch with +30 Mg C/ha
on the planted blocks and nothing elsewhere (small noise everywhere), a 90 % interval of ±5 Mg C/ha
in each epoch, an area outside the AOA in the second epoch; eligibility layers (forest history
2008-2024, wetland) a little larger than the maps. Parcels: planted, placebo, sub-pixel (400 m²),
partly beyond the maps' edge, outside the AOA, on forest (ineligible).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import jsonschema
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Polygon, box

from sinks.cli import main
from sinks.cog import cog_writer
from sinks.eligibility.crediting import credit, methodology_list, parse_term_overrides
from sinks.eligibility.report import to_dict, validate, write_report
from sinks.eligibility.rules import load_ruleset
from sinks.errors import InputError, SpecError
from sinks.mapping.change import CO2_PER_C
from sinks.stats import normal_quantile
from sinks.mapping.zonal import EqualArea
from tests.badinput import assert_refused

CRS = "EPSG:32648"
T = Affine(30, 0, 500_000, 0, -30, 3_300_000)
N = 60  # map: 60 x 60 pixels
GAIN = 30.0  # Mg C/ha on the planted blocks
HALF = 5.0  # half-width of each epoch's 90 % interval, Mg C/ha
YEARS = [str(y) for y in range(2008, 2025)]
Z90 = normal_quantile(0.9)
SHIPPED = Path(__file__).parents[1] / "sinks/eligibility/rulesets/ccer-14-001.toml"


def cells(col0, row0, col1, row1, transform=T):
    x0, y0 = transform @ (col0, row0)
    x1, y1 = transform @ (col1, row1)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def make_map(path, carbon, *, aoa=None, bundle="bundle-a", transform=T, half=HALF, tags=None, lower=None, upper=None):
    carbon = np.asarray(carbon, dtype=float)
    aoa = np.ones_like(carbon) if aoa is None else aoa
    lower = np.maximum(carbon - half, 0) if lower is None else lower
    upper = carbon + half if upper is None else upper
    text = "lower bound of the 90% prediction interval"
    band_tags = {"carbon": {"units": "Mg C/ha"}, "lower": {"units": "Mg C/ha", "description": text},
                 "upper": {"units": "Mg C/ha", "description": text.replace("lower", "upper")},
                 "di": {"units": "1"}, "aoa": {"units": "1"}}
    stack = [carbon, lower, upper, np.zeros_like(carbon), aoa]
    with cog_writer(path, crs=CRS, transform=transform, width=carbon.shape[1], height=carbon.shape[0],
                    band_names=["carbon", "lower", "upper", "di", "aoa"], blocksize=16,
                    tags={"sinks_bundle_id": bundle, "sinks_interval_level": "0.9", **(tags or {})},
                    band_tags=band_tags) as dst:
        dst.write(np.stack(stack).astype("float32"))
    return path


def layer(path, data, names, transform):
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype="uint8", crs=CRS, transform=transform, nodata=255) as dst:
        dst.write(data.astype("uint8"))
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    return path


PARCELS = {  # parcel: (geometry in map pixels, expected status)
    "planted": ((10, 10, 20, 20), "credited"),
    "placebo": ((30, 10, 40, 20), "no_net_removal"),
    "subpixel": ((24.7, 24.7, 24.7 + 2 / 3, 24.7 + 2 / 3), None),  # 20 m x 20 m = 400 m2, inside a planted block
    "edge": ((55, 42, 65, 48), "credited"),  # half beyond the maps' right edge
    "no_aoa": ((5, 40, 15, 50), "needs_field_measurement"),
    "forest": ((25, 40, 35, 50), "ineligible"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("credit")
    (root / "in").mkdir()
    (root / "out").mkdir()
    rng = np.random.default_rng(4)
    c1 = np.full((N, N), 20.0)
    gain = np.zeros((N, N))
    gain[5:29, 5:29] = GAIN      # planted block (planted + sub-pixel parcels)
    gain[40:50, 50:60] = GAIN    # planted at the maps' edge
    gain[40:50, 5:15] = GAIN     # planted, but outside the AOA in epoch 2
    gain[40:50, 25:35] = 10.0    # growth of the standing forest (credited only by forest management)
    c2 = c1 + gain + rng.normal(0, 0.5, (N, N))
    aoa2 = np.ones((N, N))
    aoa2[38:52, 3:17] = 0
    make_map(root / "in" / "c2020.tif", c1)
    make_map(root / "in" / "c2025.tif", c2, aoa=aoa2)
    # eligibility layers: 80 x 80 pixels from the same origin (they reach beyond the maps)
    history = np.zeros((len(YEARS), 80, 80))
    history[:, 38:52, 23:37] = 1  # standing forest
    layer(root / "in" / "history.tif", history, YEARS, T)
    layer(root / "in" / "wetland.tif", np.zeros((80, 80)), ["wetland"], T)
    parcels = gpd.GeoDataFrame({"parcel_id": list(PARCELS), "start_date": ["2020-03-01"] * len(PARCELS)},
                               geometry=[cells(*g) for g, _ in PARCELS.values()], crs=CRS)
    parcels.to_file(root / "in" / "parcels.gpkg")
    return {"root": root, "c1": c1, "c2": c2, "parcels": parcels,
            "maps": [root / "in" / "c2020.tif", root / "in" / "c2025.tif"],
            "layers": {"forest_history": root / "in" / "history.tif", "wetland": root / "in" / "wetland.tif"}}


def expected_change(world, geom_px) -> float:
    """Σ (C2 − C1) × 44/12 × exact pixel-part area (ha), by brute force over the pixels."""
    c1, c2 = world["c1"], world["c2"]
    c2 = c2.astype("float32").astype(float)
    c1 = c1.astype("float32").astype(float)
    ea = EqualArea(rasterio.crs.CRS.from_string(CRS), T)
    shape = cells(*geom_px)
    total = 0.0
    for r in range(N):
        for c in range(N):
            part = shape.intersection(cells(c, r, c + 1, r + 1)).area / 900
            if part > 0:
                total += (c2[r, c] - c1[r, c]) * part * float(ea.pixel_ha(np.array([r]), np.array([c]))[0])
    return total * CO2_PER_C


@pytest.fixture(scope="module")
def report(world):
    return credit(world["parcels"], "ccer-14-001", world["maps"], (2020, 2025), layers=world["layers"],
                  progress=False)


def by_id(report):
    return {p.parcel_id: p.creditable for p in report.parcels}


def test_statuses_and_known_gain(world, report):
    got = by_id(report)
    for pid, (_, status) in PARCELS.items():
        if status:
            assert got[pid]["status"] == status, (pid, got[pid]["reason"])
    planted = got["planted"]
    assert planted["stock_change_tco2e"] == pytest.approx(expected_change(world, PARCELS["planted"][0]), rel=1e-6)
    # about 30 Mg C/ha x 9 ha x 44/12 = 990 t CO2e
    assert planted["stock_change_tco2e"] == pytest.approx(GAIN * 9 * CO2_PER_C, rel=0.01)
    assert "ineligible" in got["forest"]["reason"] and got["forest"]["tco2e"] == 0
    assert "area of applicability" in got["no_aoa"]["reason"] and got["no_aoa"]["tco2e"] == 0
    assert got["no_aoa"]["outside_aoa_share"] == pytest.approx(1.0)


def test_subpixel_parcel_gets_its_real_share(world, report):
    sub = by_id(report)["subpixel"]
    assert sub["pixels"] == 4  # a 20 m square astride four 30 m pixels
    assert sub["mapped_area_ha"] == pytest.approx(0.04, rel=2e-3)
    assert sub["stock_change_tco2e"] == pytest.approx(expected_change(world, PARCELS["subpixel"][0]), rel=1e-6)
    assert sub["stock_change_tco2e"] == pytest.approx(GAIN * 0.04 * CO2_PER_C, rel=0.05)
    assert sub["tco2e"] <= sub["stock_change_tco2e"]


def test_partly_outside_credits_the_mapped_part_only(world, report):
    edge = by_id(report)["edge"]
    assert edge["outside_raster_share"] == pytest.approx(0.5, abs=1e-3)
    assert edge["stock_change_tco2e"] == pytest.approx(expected_change(world, PARCELS["edge"][0]), rel=1e-6)
    assert "no map data" in edge["reason"] and 0 < edge["tco2e"] < edge["stock_change_tco2e"]


def test_conservative_by_construction(report):
    for pid, c in by_id(report).items():
        if "stock_change_tco2e" in c:
            assert c["tco2e"] <= max(c["stock_change_tco2e"], 0.0) + 1e-9, pid
        assert c["tco2e"] >= 0
    # no rule in the methodology: creditable is the labelled lower bound of the 90 % interval
    planted = by_id(report)["planted"]
    assert planted["tco2e"] == pytest.approx(planted["net_tco2e"] - Z90 * planted["net_sd_tco2e"], rel=1e-12)
    assert "lower bound of the 90% interval" in planted["uncertainty_rule"]
    # fully correlated errors (no range given): sd = Σ area x sd_pixel, sd_pixel = sqrt(2) x HALF / z
    area = planted["mapped_area_ha"]
    sd = math.sqrt(2) * HALF / Z90 * area * CO2_PER_C
    assert planted["stock_change_sd_tco2e"] == pytest.approx(sd, rel=1e-4)


def test_placebo_credits_nothing_and_its_interval_holds_zero(report):
    placebo = by_id(report)["placebo"]
    assert placebo["tco2e"] == 0
    assert placebo["stock_change_lower_tco2e"] < 0 < placebo["stock_change_upper_tco2e"]
    assert abs(placebo["stock_change_tco2e"]) < 0.1 * placebo["stock_change_sd_tco2e"] * Z90 + 5


def test_totals_add_up_with_correlated_project_interval(report):
    parcels = by_id(report)
    project = report.crediting["project"]
    assert project["parcels_tco2e"] == pytest.approx(sum(c["tco2e"] for c in parcels.values()), rel=1e-12)
    credited = [c for c in parcels.values() if c["status"] in ("credited", "no_net_removal")]
    losses = sum(min(c["net_tco2e"], 0) for c in credited)
    assert project["netted_losses_tco2e"] == pytest.approx(losses, abs=1e-9)
    assert project["by_parcels_tco2e"] == pytest.approx(max(project["parcels_tco2e"] + losses, 0), rel=1e-12)
    # the project level: the same (lower-bound) deduction once, on the union's change and correlated sd
    union, union_sd = project["stock_change_union_tco2e"], project["stock_change_sd_tco2e"]
    assert project["project_level_tco2e"] == pytest.approx(max(union - Z90 * union_sd, 0), rel=1e-9)
    # the smaller binds: here the parcel that lost carbon and the one within its uncertainty pull the
    # project's bound below the parcels' netted sum
    assert project["tco2e"] == min(project["by_parcels_tco2e"], project["project_level_tco2e"])
    assert project["binding"] == "project_level" and project["tco2e"] < project["by_parcels_tco2e"]
    assert project["parcel_scale"] == pytest.approx(project["tco2e"] / project["parcels_tco2e"])
    # what a trading system sums: each parcel's issuable share, adding up to the project's issue
    assert sum(c["issuable_tco2e"] for c in parcels.values()) == pytest.approx(project["tco2e"], rel=1e-12)
    assert all(c["issuable_tco2e"] == 0 for c in parcels.values() if c["status"] != "credited")
    steps = ("baseline_tco2e", "leakage_tco2e", "uncertainty_deduction_tco2e", "buffer_tco2e")
    assert project["tco2e"] == pytest.approx(project["stock_change_tco2e"] - sum(project[k] for k in steps), rel=1e-9)
    assert project["lower_tco2e"] <= project["tco2e"] <= project["upper_tco2e"] <= project["stock_change_upper_tco2e"]
    change = sum(c["stock_change_tco2e"] for c in credited)
    assert project["stock_change_tco2e"] == pytest.approx(change, rel=1e-6)
    assert project["stock_change_union_tco2e"] == pytest.approx(change, rel=1e-6)  # union = sum (no overlaps)
    # fully correlated errors: the project's sd is the sum of the parcels' sds, not their root sum of squares
    assert project["stock_change_sd_tco2e"] == pytest.approx(sum(c["stock_change_sd_tco2e"] for c in credited),
                                                             rel=1e-6)
    assert project["statuses"]["ineligible"] == 1 and project["statuses"]["needs_field_measurement"] == 1


def test_methodology_rule_and_project_specific_terms(world):
    rules = load_ruleset("vm0047", terms={"baseline": {"tco2e_ha_yr": 0.0}, "leakage": {"fraction": 0.05},
                                          "buffer": {"fraction": 0.2}}, layer_values=None)
    got = by_id(credit(world["parcels"], rules, world["maps"], (2020, 2025),
                       layers={"forest_history": world["layers"]["forest_history"]}, progress=False))
    planted = got["planted"]
    net = planted["stock_change_tco2e"] * 0.95
    assert planted["leakage_tco2e"] == pytest.approx(planted["stock_change_tco2e"] * 0.05)
    relative = Z90 * planted["net_sd_tco2e"] / net
    share = max(0.0, relative - 0.1)
    assert planted["uncertainty_deduction_tco2e"] == pytest.approx(net * share, rel=1e-9)
    assert planted["tco2e"] == pytest.approx(net * (1 - share) * 0.8, rel=1e-9)
    assert "excess over threshold" in planted["uncertainty_rule"]
    # a baseline rate is deducted per mapped hectare and year
    rules = load_ruleset("vm0047", terms={"baseline": {"tco2e_ha_yr": 2.0}, "leakage": {"fraction": 0.0},
                                          "buffer": {"fraction": 0.1}})
    based = by_id(credit(world["parcels"], rules, world["maps"], (2020, 2025),
                         layers={"forest_history": world["layers"]["forest_history"]}, progress=False))["planted"]
    assert based["baseline_tco2e"] == pytest.approx(2.0 * based["mapped_area_ha"] * 5)


def test_methodologies_are_data_with_sources():
    listed = {m["id"]: m for m in methodology_list()}
    assert {"ccer-14-001", "ar-cm-001", "ar-cm-003", "vm0047"} <= set(listed)
    for m in listed.values():
        assert m["crediting"] and m["source"] and m["version"]
        terms = load_ruleset(m["id"]).crediting.terms
        assert set(terms) == {"period", "pools", "baseline", "leakage", "uncertainty", "buffer"}
        assert all(t.source and t.confidence for t in terms.values())
    assert load_ruleset("ccer-14-001").crediting.value("period", "max_years") == 40
    assert "unchecked" in load_ruleset("ccer-14-001").crediting["period"].confidence
    assert load_ruleset("vm0047").crediting.missing_project_values() == ["baseline.tco2e_ha_yr", "leakage.fraction",
                                                                          "buffer.fraction"]
    with pytest.raises(SpecError, match="buffer.*fraction"):
        load_ruleset("ccer-14-001", terms=parse_term_overrides(["buffer.fraction=1.5"]))
    with pytest.raises(SpecError, match="did you mean 'buffer'"):
        load_ruleset("ccer-14-001", terms=parse_term_overrides(["bufer.fraction=0.1"]))


def test_forest_management_needs_forest_and_a_baseline(world):
    rules = load_ruleset("ar-cm-003", terms={"baseline": {"tco2e_ha_yr": 1.0}})
    got = by_id(credit(world["parcels"], rules, world["maps"], (2020, 2025),
                       layers={"forest_history": world["layers"]["forest_history"]}, progress=False))
    assert got["planted"]["status"] == "ineligible" and "forest" in got["planted"]["reason"]
    assert got["forest"]["status"] == "credited"  # standing forest is what forest management credits
    with pytest.raises(SpecError, match="baseline.tco2e_ha_yr"):
        credit(world["parcels"], "ar-cm-003", world["maps"], (2020, 2025),
               layers={"forest_history": world["layers"]["forest_history"]}, progress=False)


def test_report_json_and_gpkg_together(world, report, tmp_path):
    document = write_report(report, tmp_path / "r.json", tmp_path / "r.gpkg")
    validate(document)
    assert document["schema_version"] == "5" and document["crediting"]["methodology"]["id"] == "ccer-14-001"
    assert document["crediting"]["methodology"]["terms"]["buffer"]["source"]
    assert json.loads((tmp_path / "r.json").read_text())["crediting"]["project"]["tco2e"] > 0
    table = gpd.read_file(tmp_path / "r.gpkg")
    assert list(table["credit_status"]) == [p.creditable["status"] for p in report.parcels]
    assert table["tco2e"].sum() == pytest.approx(document["crediting"]["project"]["parcels_tco2e"])
    assert table["issuable_tco2e"].sum() == pytest.approx(document["crediting"]["project"]["tco2e"])
    assert set(table["methodology"]) == {"ccer-14-001"} and set(table["credit_route"]) == {"maps"}
    assert set(table["report_schema_version"]) == {"5"}
    broken = to_dict(report)
    broken["parcels"][0]["creditable"]["tco2e"] = -5
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_parcels_in_another_crs_are_reprojected(world, report):
    lonlat = world["parcels"].to_crs("EPSG:4326")
    other = by_id(credit(lonlat, "ccer-14-001", world["maps"], (2020, 2025), layers=world["layers"],
                         progress=False))
    for pid, c in by_id(report).items():
        assert other[pid]["status"] == c["status"]
        if "stock_change_tco2e" in c:
            assert other[pid]["stock_change_tco2e"] == pytest.approx(c["stock_change_tco2e"], rel=1e-3, abs=1e-3)


# ---- the command and bad input --------------------------------------------------------------------

def argv(world, *extra, parcels=None, maps=None, methodology="ccer-14-001"):
    root = world["root"]
    m = maps or world["maps"]
    return ["credit", parcels or root / "in" / "parcels.gpkg", "--methodology", methodology, "--maps", *m,
            "--years", "2020", "2025", "--layer", f"forest_history={world['layers']['forest_history']}",
            "--layer", f"wetland={world['layers']['wetland']}", "--out", root / "out" / "r.json", "--quiet", *extra]


def test_a_rerun_writes_the_same_bytes_with_source_date_epoch(world, capsys, monkeypatch):
    """A registry comparing a resubmitted report: the same inputs give the same file."""
    out = world["root"] / "out" / "again.json"
    args = [str(a) for a in argv(world)]
    args[args.index("--out") + 1] = str(out)
    args.append("--overwrite")  # the options as given are in the report: the same both times
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    assert main(args) == 0, capsys.readouterr().err
    first = out.read_bytes()
    assert main(args) == 0, capsys.readouterr().err
    assert out.read_bytes() == first
    assert b'"generated": "2026-01-01T00:00:00+00:00"' in first
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    assert_refused(args, capsys, keywords=["SOURCE_DATE_EPOCH", "yesterday"], watch=out.parent)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "-5")
    assert_refused(args, capsys, keywords=["SOURCE_DATE_EPOCH", "'-5'"], watch=out.parent)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "")  # exported empty, as CI set-ups do: the time now
    assert main(args) == 0 and b'"generated": "2026-01-01' not in out.read_bytes()


def test_years_come_from_the_maps_when_they_state_them(world, capsys):
    """Maps of 'sinks map --year' need no --years; untagged maps still do, and the report says whose word it is."""
    import json

    out = world["root"] / "out" / "own_years.json"
    args = [str(a) for a in argv(world, **_maps_of_their_years(world))]
    args[args.index("--out") + 1] = str(out)
    del args[args.index("--years"):args.index("--years") + 3]
    assert main(args) == 0, capsys.readouterr().err
    crediting = json.loads(out.read_text())["crediting"]
    assert crediting["years"] == [2020.0, 2025.0]
    assert all(m["year_from"].startswith("map tag") for m in crediting["maps"])
    untagged = [str(a) for a in argv(world)]
    del untagged[untagged.index("--years"):untagged.index("--years") + 3]
    assert_refused(untagged, capsys, keywords=["give --years Y1 Y2", "c2020.tif"], watch=world["root"] / "out")
    asserted = [str(a) for a in argv(world)]
    asserted[asserted.index("--out") + 1] = str(out)
    assert main(asserted + ["--overwrite"]) == 0, capsys.readouterr().err
    assert all(m["year_from"] == "--years only: the map states no year"
               for m in json.loads(out.read_text())["crediting"]["maps"])


def test_cli_writes_both_and_lists_methodologies(world, capsys):
    root = world["root"]
    out, gpkg = root / "out" / "cli.json", root / "out" / "cli.gpkg"
    args = [str(a) for a in argv(world)]
    args[args.index("--out") + 1] = str(out)
    assert main(args + ["--gpkg", str(gpkg)]) == 0, capsys.readouterr().err
    assert "creditable" in capsys.readouterr().out and out.exists() and gpkg.exists()
    # a third party can rerun it: every input file hashed, the options as given
    import hashlib
    import json

    inputs = json.loads(out.read_text())["inputs"]
    parcels = root / "in" / "parcels.gpkg"
    assert inputs["files"]["parcels"] == {"path": str(parcels), "sha256": hashlib.sha256(parcels.read_bytes()).hexdigest()}
    assert set(inputs["files"]) == {"parcels", "layer forest_history", "layer wetland", "rule set"}
    assert inputs["files"]["rule set"]["sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert inputs["options"]["years"] == [2020.0, 2025.0] and inputs["options"]["methodology"] == "ccer-14-001"
    assert main(["methodologies"]) == 0
    listing = capsys.readouterr().out
    assert "vm0047" in listing and "ar-cm-003" in listing and "source:" in listing
    assert main(["methodologies", "--show", "vm0047"]) == 0
    assert "project-specific" in capsys.readouterr().out
    out.unlink()
    gpkg.unlink()


def _variant(world, name, geometry=None, **columns):
    parcels = world["parcels"].copy()
    if geometry is not None:
        parcels = parcels.set_geometry(geometry)
    for key, value in columns.items():
        parcels[key] = value
    path = world["root"] / "in" / name
    parcels.to_file(path)
    return path


def _bowtie(world):
    geoms = list(world["parcels"].geometry)
    x0, y0 = T @ (30, 30)
    geoms[1] = Polygon([(x0, y0), (x0 + 300, y0 - 300), (x0 + 300, y0), (x0, y0 - 300)])
    return {"parcels": _variant(world, "bowtie.gpkg", geometry=gpd.GeoSeries(geoms, crs=CRS))}


def _late_start(world):
    return {"parcels": _variant(world, "late.gpkg", start_date=["2030-01-01"] * len(PARCELS))}


def _start_between_the_maps(world):
    return {"parcels": _variant(world, "between.gpkg", start_date=["2022-06-01"] * len(PARCELS))}


def _soil_maps(world):
    return {"maps": [make_map(world["root"] / "in" / f"soil{y}.tif", c, tags={"sinks_pool": "soil"})
                     for y, c in ((2020, world["c1"]), (2025, world["c2"]))]}


def _other_bundle(world):
    return {"maps": [world["maps"][0], make_map(world["root"] / "in" / "b2025.tif", world["c2"], bundle="bundle-b")]}


def _other_grid(world):
    shifted = Affine(30, 0, 500_015, 0, -30, 3_300_000)
    return {"maps": [world["maps"][0], make_map(world["root"] / "in" / "g2025.tif", world["c2"], transform=shifted)]}


def _swapped_interval(world):
    """Lower and upper bands exchanged: read as no uncertainty, this doubled the planted parcel's credit."""
    c2 = world["c2"]
    return {"maps": [world["maps"][0], make_map(world["root"] / "in" / "s2025.tif", c2, lower=c2 + HALF,
                                                upper=np.maximum(c2 - HALF, 0))]}


def _maps_of_their_years(world):
    """Maps tagged with their years (sinks map --year): --years 2023 2025 would credit 2020-2023 growth."""
    return {"maps": [make_map(world["root"] / "in" / f"y{y}.tif", c, tags={"sinks_year": str(y)})
                     for y, c in ((2020, world["c1"]), (2025, world["c2"]))]}


def _rule_file(world, old, new, name):
    text = SHIPPED.read_text(encoding="utf-8")
    assert old in text, old
    path = world["root"] / "in" / name
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return {"methodology": path}


BAD = {
    "self-intersecting parcel": (_bowtie, [], ["placebo", "invalid", "self-intersection", "never repairs"]),
    "start date after the second epoch": (_late_start, [], ["start date", "2030-01-01", "2025"]),
    "start date after the first epoch": (_start_between_the_maps, [],
                                         ["first map's epoch 2020", "2022-06-01", "removals before the project started"]),
    "maps from different bundles": (_other_bundle, [], ["bundle-a", "bundle-b", "--allow-different-models"]),
    "soil carbon maps under an afforestation methodology": (
        _soil_maps, [], ["soil2020.tif", "soil carbon map", "soil_organic_carbon", "does not count"]),
    "maps on different grids": (_other_grid, [], ["different grids"]),
    "--years other than the maps' own": (_maps_of_their_years, ["--years", "2021", "2025"],
                                         ["y2020.tif", "shows 2020", "--years gives 2021"]),
    "lower and upper bands swapped": (_swapped_interval, [], ["s2025.tif", "lower band is above its value band",
                                                              "swapped"]),
    "unknown methodology": (lambda w: {"methodology": "ccer-14-01"}, [], ["ccer-14-01", "did you mean 'ccer-14-001'"]),
    "crediting term without its source": (
        lambda w: _rule_file(w, 'source = "CCER-14-001-V01, leakage', 'sourse = "CCER-14-001-V01, leakage', "nosource.toml"),
        [], ["[crediting.leakage]", "sourse", "did you mean 'source'"]),
    "rule set lacks its own source": (
        lambda w: _rule_file(w, 'source = "CCER-14-001-V01 full text as reproduced on renrendoc.com (the MEE PDF was '
                                'not reachable)"\n', "", "nosrc.toml"), [], ["nosrc.toml", "lacks source"]),
    "crediting term lacks source": (
        lambda w: _rule_file(w, 'source = "CCER-14-001-V01 as read: no non-permanence buffer deduction known"\n', "",
                             "lacks.toml"), [], ["[crediting.buffer]", "lacks source"]),
    "buffer out of range in a rule file": (
        lambda w: _rule_file(w, "fraction = 0.0\nsource = \"CCER-14-001-V01 as read",
                             "fraction = 1.5\nsource = \"CCER-14-001-V01 as read", "range.toml"),
        [], ["[crediting.buffer]", "fraction", "1.5", "< 1"]),
    "crediting period reversed": (
        lambda w: _rule_file(w, "min_years = 20\nmax_years = 40", "min_years = 50\nmax_years = 40", "period.toml"),
        [], ["min_years = 50", "max_years = 40"]),
    "unknown pool": (
        lambda w: _rule_file(w, 'counted = ["above_ground_biomass"', 'counted = ["above_ground_biomas"', "pool.toml"),
        [], ["above_ground_biomas", "did you mean 'above_ground_biomass'"]),
    "--term out of range": (lambda w: {}, ["--term", "buffer.fraction=2"], ["buffer", "fraction", "2"]),
    "--term unknown key": (lambda w: {}, ["--term", "buffer.fractoin=0.1"], ["fractoin", "did you mean 'fraction'"]),
    "project-specific term not given": (
        lambda w: {"methodology": "vm0047"}, [], ["vm0047", "baseline.tco2e_ha_yr", "leakage.fraction", "--term"]),
    "--epoch-correlation out of range": (lambda w: {}, ["--epoch-correlation", "1.5"], ["--epoch-correlation", "1.5"]),
}


@pytest.mark.parametrize("make, extra, keywords", BAD.values(), ids=BAD.keys())
def test_bad_input_is_refused(world, capsys, make, extra, keywords):
    kwargs = make(world)
    assert_refused(argv(world, *extra, **kwargs), capsys, keywords=keywords, watch=world["root"] / "out")


# ---- matched controls: a dynamic baseline --------------------------------------------------------

TREND = 2.0  # Mg C/ha over 2020-2025 on all land, project or not


@pytest.fixture(scope="module")
def trend(world):
    root = world["root"]
    rng = np.random.default_rng(9)
    gain = np.zeros((N, N))
    gain[10:20, 10:20] = GAIN  # planted inside the planted parcel only: the land around it follows the trend
    c2 = world["c1"] + TREND + gain + rng.normal(0, 0.5, (N, N))
    aoa2 = np.ones((N, N))
    aoa2[38:52, 3:17] = 0
    path = make_map(root / "in" / "t2025.tif", c2, aoa=aoa2)
    covariate = rng.uniform(0, 1, (N, N))
    good = layer_float(root / "in" / "cov_good.tif", covariate, "elevation")
    bad = covariate.copy()
    for r0, r1, q0, q1 in ((10, 20, 10, 20), (10, 20, 30, 40), (42, 48, 55, 60)):
        bad[r0:r1, q0:q1] += 5.0  # the project's land stands apart from all other land: no control like it
    badpath = layer_float(root / "in" / "cov_bad.tif", bad, "elevation")
    return {"maps": [world["maps"][0], path], "good": good, "bad": badpath}


def layer_float(path, data, name):
    with rasterio.open(path, "w", driver="GTiff", width=N, height=N, count=1, dtype="float32", crs=CRS,
                       transform=T, nodata=-9999) as dst:
        dst.write(data[None].astype("float32"))
        dst.set_band_description(1, name)
    return path


def test_matched_controls_remove_the_regional_trend(world, trend):
    naive = by_id(credit(world["parcels"], "ccer-14-001", trend["maps"], (2020, 2025), layers=world["layers"],
                         progress=False))
    assert naive["placebo"]["stock_change_tco2e"] == pytest.approx(TREND * 9 * CO2_PER_C, rel=0.05)
    report = credit(world["parcels"], "ccer-14-001", trend["maps"], (2020, 2025), layers=world["layers"],
                    controls_covariates=trend["good"], progress=False)
    controls = report.crediting["controls"]
    assert controls["passed"] and controls["matched"] == controls["project_pixels"] > 0
    assert all(abs(b["smd_after"]) <= 0.25 for b in controls["balance"])
    assert controls["baseline_tco2e_ha_yr"] == pytest.approx(TREND * CO2_PER_C / 5, rel=0.05)
    got = by_id(report)
    # the placebo's trend is the baseline: no credit; the planted parcel keeps its own gain
    assert got["placebo"]["tco2e"] == 0 and abs(got["placebo"]["net_tco2e"]) < 0.05 * naive["placebo"]["stock_change_tco2e"]
    assert got["planted"]["net_tco2e"] == pytest.approx(GAIN * got["planted"]["mapped_area_ha"] * CO2_PER_C, rel=0.02)
    assert got["planted"]["tco2e"] <= got["planted"]["stock_change_tco2e"]
    # the baseline's own uncertainty (map error of the controls + their sampling) widens the net's
    rate_sd = controls["baseline_sd_tco2e_ha_yr"]
    assert rate_sd > 0 and "fully correlated" in controls["baseline_sd_method"]
    planted = got["planted"]
    years, area = 5, planted["mapped_area_ha"]
    assert planted["baseline_sd_tco2e"] == pytest.approx(rate_sd * area * years)
    assert planted["net_sd_tco2e"] == pytest.approx(math.hypot(planted["stock_change_sd_tco2e"],
                                                               planted["baseline_sd_tco2e"]))
    assert planted["tco2e"] == pytest.approx(max(planted["net_tco2e"] - Z90 * planted["net_sd_tco2e"], 0))
    # the report says where the baseline came from: the controls, not the methodology's own term
    baseline = report.crediting["methodology"]["terms"]["baseline"]
    assert "matched control" in baseline["source"] and baseline["confidence"].startswith("measured on these maps")
    assert baseline["tco2e_ha_yr"] == controls["baseline_tco2e_ha_yr"]
    validate(to_dict(report))


def test_a_bad_control_pool_is_reported_not_used(world, trend):
    report = credit(world["parcels"], "ccer-14-001", trend["maps"], (2020, 2025), layers=world["layers"],
                    controls_covariates=trend["bad"], progress=False)
    controls = report.crediting["controls"]
    assert not controls["passed"] and controls["baseline_tco2e_ha_yr"] is None
    # the raised project pixels find no control within the caliper; balance compares the whole project
    assert controls["matched"] < controls["project_pixels"] and "balance failed: elevation SMD" in controls["reason"]
    # a wide caliper matches every pixel, and the balance table shows why the baseline is not used
    report = credit(world["parcels"], "ccer-14-001", trend["maps"], (2020, 2025), layers=world["layers"],
                    controls_covariates=trend["bad"], caliper=10, progress=False)
    controls = report.crediting["controls"]
    elevation = next(b for b in controls["balance"] if b["covariate"] == "elevation")
    assert not controls["passed"] and elevation["smd_after"] > 0.25 and not elevation["passed"]
    assert "balance failed: elevation SMD" in controls["reason"]
    got = by_id(report)
    assert got["planted"]["status"] == "no_baseline" and got["planted"]["tco2e"] == 0
    assert report.crediting["project"]["tco2e"] == 0
    validate(to_dict(report))


def test_cli_with_matched_controls(world, trend, capsys):
    out = world["root"] / "out" / "controls.json"
    args = [str(a) for a in argv(world, "--controls", trend["good"], maps=trend["maps"])]
    args[args.index("--out") + 1] = str(out)
    assert main(args) == 0, capsys.readouterr().err
    assert "balance passed" in capsys.readouterr().out
    assert json.loads(out.read_text())["crediting"]["controls"]["passed"] is True
    out.unlink()


def test_project_nets_the_losses_of_parcels_with_a_negative_net():
    """Per parcel a loss credits 0; the project deducts it (net removals of the whole project), so a
    project never credits more than its summed net; nor more than its own lower bound."""
    from sinks.eligibility.crediting import _project

    gain = {"status": "credited", "stock_change_tco2e": 100.0, "net_tco2e": 90.0, "tco2e": 80.0,
            "lower_tco2e": 70.0, "upper_tco2e": 95.0, "baseline_tco2e": 10.0, "uncertainty_deduction_tco2e": 10.0}
    loss = {"status": "no_net_removal", "stock_change_tco2e": -25.0, "net_tco2e": -30.0, "tco2e": 0.0,
            "lower_tco2e": 0.0, "upper_tco2e": 0.0, "baseline_tco2e": 5.0, "uncertainty_deduction_tco2e": 0.0}
    outside = {"status": "needs_field_measurement", "tco2e": 0.0, "lower_tco2e": 0.0, "upper_tco2e": 0.0,
               "net_tco2e": -1e6}  # not counted: its change is not the project's
    terms = load_ruleset("ccer-14-001", layer_values=None).crediting  # zero baseline, the 90 % lower bound
    kw = {"terms": terms, "years": 5.0, "area_ha": 10.0}
    project = _project([gain, loss, outside], 75.0, 8.0, "note", **kw)
    assert project["netted_losses_tco2e"] == -30.0 and project["parcels_tco2e"] == 80.0
    assert project["binding"] == "parcels" and project["project_level_tco2e"] == pytest.approx(75 - Z90 * 8)
    assert (project["tco2e"], project["lower_tco2e"], project["upper_tco2e"]) == (50.0, 40.0, 65.0)
    assert project["tco2e"] == project["stock_change_tco2e"] - project["baseline_tco2e"] \
        - project["uncertainty_deduction_tco2e"]
    big_loss = {**loss, "net_tco2e": -500.0}
    assert _project([gain, big_loss], 0.0, 8.0, "note", **kw)["tco2e"] == 0.0
    # a wide project interval: the deduction made once on the project binds, with its own terms
    wide = _project([gain, loss, outside], 75.0, 40.0, "note", **kw)
    assert wide["binding"] == "project_level" and wide["tco2e"] == pytest.approx(75 - Z90 * 40)
    assert wide["uncertainty_deduction_tco2e"] == pytest.approx(Z90 * 40) and wide["baseline_tco2e"] == 0.0
    assert wide["tco2e"] == pytest.approx(wide["stock_change_tco2e"] - wide["uncertainty_deduction_tco2e"])
    assert wide["parcel_scale"] == pytest.approx(wide["tco2e"] / 80.0)
    assert gain["issuable_tco2e"] == pytest.approx(wide["tco2e"]) and loss["issuable_tco2e"] == 0.0
    assert _project([gain, big_loss], 0.0, 8.0, "note", **kw)["tco2e"] == 0.0 == gain["issuable_tco2e"]


def test_settings_that_can_credit_more_are_flagged_for_a_trading_system(world, report):
    """Defaults: no departure, conservative. A lower uncertainty level or a looser AOA share can only
    credit more: listed with their effect, and the flag turns false."""
    assert report.crediting["departures"] == [] and report.crediting["conservative_as_methodology"] is True
    loose = credit(world["parcels"], "ccer-14-001", world["maps"], (2020, 2025), layers=world["layers"],
                   terms={"uncertainty": {"level": 0.3}, "buffer": {"fraction": 0.2}}, aoa_threshold=0.99,
                   progress=False)
    effects = {d["setting"]: d["effect"] for d in loose.crediting["departures"]}
    assert effects == {"--term uncertainty.level": "less conservative", "--term buffer.fraction": "more conservative",
                       "--aoa-threshold": "less conservative"}
    assert loose.crediting["conservative_as_methodology"] is False
    validate(to_dict(loose))


def test_rule_overrides_and_edited_copies_of_a_shipped_methodology_are_departures(world, tmp_path, monkeypatch):
    """--param and --layer-values loosen eligibility as surely as --term loosens crediting; a copy of a
    shipped rule file, edited but keeping its id, is not the methodology (it credited 198.6 t for
    70.1 t with an uncertainty level of 0.3 and no departure)."""
    loose = credit(world["parcels"], "ccer-14-001", world["maps"], (2020, 2025), layers=world["layers"],
                   params={"non_forest_before_start": {"max_forest_fraction": 1.0}},
                   layer_values={"forest_history": {"forest": [99], "non_forest": [0, 1]}}, progress=False)
    found = {d["setting"]: d for d in loose.crediting["departures"]}
    assert found["--param non_forest_before_start.max_forest_fraction"]["effect"] == "less conservative"
    assert found["--param non_forest_before_start.max_forest_fraction"]["default"] == 0.0
    assert found["--layer-values forest_history"]["effect"] == "changed"
    assert loose.crediting["conservative_as_methodology"] is False
    strict = credit(world["parcels"], "ccer-14-001", world["maps"], (2020, 2025), layers=world["layers"],
                    params={"min_area": {"min_area_ha": 1.0}}, progress=False)
    assert [(d["setting"], d["effect"]) for d in strict.crediting["departures"]] == [
        ("--param min_area.min_area_ha", "more conservative")]
    assert strict.crediting["conservative_as_methodology"] is True

    edited = tmp_path / "ccer-14-001.toml"  # same id (from the file), one value changed
    edited.write_text(SHIPPED.read_text(encoding="utf-8").replace("\nlevel = 0.9", "\nlevel = 0.3", 1), encoding="utf-8")
    copy = credit(world["parcels"], edited, world["maps"], (2020, 2025), layers=world["layers"], progress=False)
    assert copy.crediting["methodology"]["id"] == "ccer-14-001"
    (entry,) = copy.crediting["departures"]
    assert entry["setting"].endswith("[crediting] uncertainty.level") and "not the shipped ccer-14-001" in entry["setting"]
    assert (entry["value"], entry["default"], entry["effect"]) == (0.3, 0.9, "less conservative")
    assert copy.crediting["conservative_as_methodology"] is False
    validate(to_dict(copy))
    same = tmp_path / "same" / "ccer-14-001.toml"  # a byte-for-byte copy: the methodology
    same.parent.mkdir()
    same.write_bytes(SHIPPED.read_bytes())
    assert credit(world["parcels"], same, world["maps"], (2020, 2025), layers=world["layers"],
                  progress=False).crediting["departures"] == []
    # a bare id is the shipped rule set, whatever the working folder holds
    monkeypatch.chdir(tmp_path)
    assert load_ruleset("ccer-14-001").sha256 == load_ruleset(SHIPPED).sha256
    assert load_ruleset("./ccer-14-001.toml").sha256 != load_ruleset(SHIPPED).sha256


def test_copies_under_another_id_text_edits_and_own_methodologies_are_not_the_methodology(world, tmp_path):
    """An edited copy renamed 'ccer-14-001-v01' (or 'ccer-14-001 ') credited 1,448 t for 660 with no
    departure; a copy claiming every row 'verified' kept the flag true; a user's own methodology
    cannot be vouched for; a project-specific zero is a claim to see evidence for."""
    text = SHIPPED.read_text(encoding="utf-8")
    assert 'id = "ccer-14-001"' in text and "\nlevel = 0.9" in text

    def run(name, edited):
        path = tmp_path / name
        path.write_text(edited, encoding="utf-8")
        found = credit(world["parcels"], path, world["maps"], (2020, 2025), layers=world["layers"], progress=False)
        return {d["setting"].split(": ")[-1]: d["effect"] for d in found.crediting["departures"]}, \
            found.crediting["conservative_as_methodology"]

    renamed = text.replace('id = "ccer-14-001"', 'id = "ccer-14-001-v01"').replace("\nlevel = 0.9", "\nlevel = 0.5")
    assert run("mine.toml", renamed) == ({"[crediting] uncertainty.level": "less conservative"}, False)
    spaced = text.replace('id = "ccer-14-001"', 'id = " ccer-14-001 "')
    assert run("spaced.toml", spaced) == ({}, True)  # the id read without its spaces: the same values
    verified = text.replace('confidence = "unchecked', 'confidence = "verified')
    effects, flag = run("verified.toml", verified)
    assert flag is False and effects and set(effects.values()) == {"unchecked"}
    own = text.replace('id = "ccer-14-001"', 'id = "county-scheme"').replace(
        'title = "', 'title = "County scheme, after ').replace('methodology = "', 'methodology = "County scheme, after ')
    effects, flag = run("county.toml", own)
    assert flag is False and list(effects.values()) == ["unchecked"]
    vm = credit(world["parcels"], "vm0047", world["maps"], (2020, 2025), progress=False,
                layers={"forest_history": world["layers"]["forest_history"]},
                terms={"baseline": {"tco2e_ha_yr": 0.0}, "leakage": {"fraction": 0.1}, "buffer": {"fraction": 0.0}})
    effects = {d["setting"]: d["effect"] for d in vm.crediting["departures"]}
    assert effects == {"--term baseline.tco2e_ha_yr": "unchecked", "--term leakage.fraction": "project-specific",
                       "--term buffer.fraction": "unchecked"}
    assert vm.crediting["conservative_as_methodology"] is False


def test_a_period_longer_than_the_crediting_period_is_refused_without_start_dates(world):
    undated = world["parcels"].drop(columns=["start_date"])
    with pytest.raises(InputError, match="2020-2070 .50 years. is longer than the 40-year crediting period"):
        credit(undated, "ccer-14-001", world["maps"], (2020, 2070), layers=world["layers"], progress=False)


def test_an_override_is_cited_as_the_users_and_flagged_unchecked():
    """A --term value is not the methodology's: the report said the methodology's source for a
    number the methodology does not contain."""
    rules = load_ruleset("ccer-14-001", terms={"buffer": {"fraction": 0.2}}, layer_values=None)
    buffer = rules.crediting["buffer"]
    assert buffer.values["fraction"] == 0.2
    assert buffer.source.startswith("set by the user (--term buffer.fraction=0.2); the methodology's: CCER-14-001")
    assert buffer.confidence.startswith("unchecked: set by the user")
    cited = load_ruleset("ccer-14-001", layer_values=None, terms={"buffer": {
        "fraction": 0.2, "source": "project design document, section 7.3", "confidence": "as filed"}}).crediting["buffer"]
    assert (cited.source, cited.confidence) == ("project design document, section 7.3", "as filed")
    untouched = load_ruleset("ccer-14-001", layer_values=None).crediting["leakage"]
    assert not untouched.source.startswith("set by the user")
    # a confidence alone changes no value: the methodology's source stays
    noted = load_ruleset("ccer-14-001", layer_values=None, terms={"buffer": {"confidence": "as filed"}}).crediting["buffer"]
    assert noted.confidence == "as filed" and noted.source == untouched_buffer_source() and "overridden" not in noted.note
    from sinks.eligibility.crediting import parse_term_overrides
    from sinks.errors import SpecError

    with pytest.raises(SpecError, match=r"--term buffer.fraction is given twice \(0.1 and '0.2'\)"):
        parse_term_overrides(["buffer.fraction=0.1", "buffer.fraction=0.2"])


def test_a_rule_switched_by_term_drops_the_files_keys_of_the_old_rule():
    """vm0047's excess-over-threshold rule carries a threshold the lower-bound rule refuses."""
    rules = load_ruleset("vm0047", layer_values=None, terms={
        "uncertainty": {"rule": "lower_bound"}, "baseline": {"rule": "zero"}, "leakage": {"fraction": 0.0},
        "buffer": {"fraction": 0.1}})
    assert rules.crediting.value("uncertainty", "rule") == "lower_bound"
    assert "threshold" not in rules.crediting["uncertainty"].values
    assert rules.crediting.value("baseline", "rule") == "zero"


def untouched_buffer_source() -> str:
    return load_ruleset("ccer-14-001", layer_values=None).crediting["buffer"].source


def test_the_creditable_interval_is_at_the_uncertainty_rules_level(world):
    """At 95 % the lower bound credited lay below the reported 90 % interval's lower end."""
    rules = load_ruleset("ccer-14-001", terms={"uncertainty": {"level": 0.95}}, layer_values=None)
    report = credit(world["parcels"], rules, world["maps"], (2020, 2025), layers=world["layers"], progress=False)
    for record in [*by_id(report).values(), report.crediting["project"]]:
        if record.get("status", "credited") == "credited":
            assert record["lower_tco2e"] <= record["tco2e"] + 1e-9 <= record["upper_tco2e"] + 2e-9
            assert record["creditable_interval_level"] == 0.95
    planted = by_id(report)["planted"]
    assert planted["tco2e"] == pytest.approx(planted["lower_tco2e"])  # the lower-bound rule at its own level


def test_a_negative_baseline_rate_is_refused():
    from sinks.errors import SpecError

    with pytest.raises(SpecError, match="negative.*add credit"):
        load_ruleset("ccer-14-001", terms={"baseline": {"rule": "rate", "tco2e_ha_yr": -5.0}}, layer_values=None)


def _drop_uncertainty(document, _):
    """The tamper a verifier tried: every credited parcel's uncertainty deduction set to 0 and every
    total made to add up again (660 -> 1,996 t passed validate)."""
    total = 0.0
    for p in document["parcels"]:
        c = p.get("creditable") or {}
        if c.get("status") == "credited":
            c["uncertainty_deduction_tco2e"] = 0.0
            c["tco2e"] = c["issuable_tco2e"] = c["net_tco2e"] - c["buffer_tco2e"]
            total += c["tco2e"]
    document["crediting"]["project"].update(tco2e=total, by_parcels_tco2e=total, project_level_tco2e=total,
                                            parcel_scale=1.0)


def test_validate_catches_what_the_schema_cannot(report):
    """A registry's check: a credited parcel without its buffer, a tampered total, statuses or a
    verdict that disagree, an unknown key: each refused by validate()."""
    import copy

    document = to_dict(report)
    validate(document)
    credited = next(p for p in document["parcels"] if (p.get("creditable") or {}).get("status") == "credited")
    cases = {
        "buffer missing": lambda d, p: p["creditable"].pop("buffer_tco2e"),
        "terms without buffer": lambda d, p: d["crediting"]["methodology"]["terms"].pop("buffer"),
        "project total tampered": lambda d, p: d["crediting"]["project"].update(tco2e=1e9),
        "statuses off": lambda d, p: d["crediting"]["project"]["statuses"].update(credited=99),
        "credited but ineligible": lambda d, p: p.update(verdict="ineligible"),
        "net tampered": lambda d, p: p["creditable"].update(net_tco2e=p["creditable"]["net_tco2e"] + 5),
        "unknown key": lambda d, p: d.update(extra=1),
        "uncertainty deduction removed, totals made to agree": _drop_uncertainty,
    }
    for name, edit in cases.items():
        doc = copy.deepcopy(document)
        edit(doc, next(p for p in doc["parcels"] if p["parcel_id"] == credited["parcel_id"]))
        with pytest.raises(jsonschema.ValidationError):
            validate(doc)


def test_a_parcel_change_that_does_not_add_up_to_the_project_union_is_named(report):
    """A verifier raised one parcel's stock change by 100 t and made every number after it agree:
    the parcels' changes then no longer sum to the project's change over their union."""
    import copy

    from sinks.eligibility.report import inconsistencies

    document = to_dict(report)
    assert inconsistencies(document) == []
    doc = copy.deepcopy(document)
    credited = next(p for p in doc["parcels"] if (p.get("creditable") or {}).get("status") == "credited")
    credited["creditable"]["stock_change_tco2e"] += 100.0
    assert any("sum to" in m and "change over their union" in m for m in inconsistencies(doc))


def test_pools_are_set_from_the_command_line_as_a_comma_separated_list():
    """docs: every term can be overridden with --term; a list could not be written there."""
    rules = load_ruleset("ccer-14-001", terms=parse_term_overrides(["pools.counted=above_ground_biomass, below_ground_biomass"]))
    assert rules.crediting.value("pools", "counted") == ["above_ground_biomass", "below_ground_biomass"]
    with pytest.raises(SpecError, match="unknown pool 'stems'"):
        load_ruleset("ccer-14-001", terms=parse_term_overrides(["pools.counted=stems"]))


def test_the_cli_warns_when_a_run_is_not_conservative_as_the_methodology(world, tmp_path, capsys):
    out = tmp_path / "loose.json"
    args = [str(a) for a in argv(world, "--term", "uncertainty.level=0.3")]
    args[args.index("--out") + 1] = str(out)
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "warning: not conservative as the methodology" in err and "--term uncertainty.level (less conservative)" in err
    args[args.index("--out") + 1] = str(tmp_path / "plain.json")
    assert main(args[:-2]) == 0 and "not conservative" not in capsys.readouterr().err
