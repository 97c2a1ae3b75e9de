"""Ex-ante crediting from a growth-curve table (``sinks credit --growth``), against hand-computed truth.

The table below is a TEST FIXTURE: its numbers are invented for these tests, cite no real source
and must never be used to credit anything. The eligibility layers and their world (UTM 48N, 30 m
pixels, forest history 2008-2024 with a block of standing forest) are those of tests/test_crediting.py.
"""

from __future__ import annotations

import json
import math

import geopandas as gpd
import jsonschema
import pytest
from pyproj import Geod

from sinks.cli import main
from sinks.eligibility.crediting import credit
from sinks.eligibility.growth import load_growth_table
from sinks.eligibility.report import to_dict, validate, write_report
from sinks.eligibility.rules import load_ruleset
from sinks.errors import InputError, SpecError
from sinks.io import sha256_file
from sinks.mapping.change import CO2_PER_C
from sinks.stats import normal_quantile
from tests import test_crediting as shared
from tests.badinput import assert_refused
from tests.test_crediting import CRS, by_id, cells

world = shared.world  # the crediting tests' world (its eligibility layers), as a fixture of this module

Z90 = normal_quantile(0.9)
HEADER = "species_group,site_class,quantity,unit,age_yr,value,sd,ci_lower,ci_upper,ci_level,source,checked,confidence"
FIXTURE = [  # TEST FIXTURE: invented values
    "fir,I,stock,Mg C/ha,0,0,0,,,,test fixture row 1 (invented),false,invented for tests",
    "fir,I,stock,Mg C/ha,10,30,3,,,,test fixture row 2 (invented),false,invented for tests",
    "fir,I,stock,Mg C/ha,20,70,5,,,,test fixture row 3 (invented),false,invented for tests",
    "pine,II,increment,t CO2e/ha/yr,20,4,,3,5,0.9,test fixture row 4 (invented),false,invented for tests",
    "pine,II,increment,t CO2e/ha/yr,40,2,0.5,,,,test fixture row 5 (invented),false,invented for tests",
    "oak,III,stock,t CO2e/ha,0,0,,,,,test fixture row 6 (invented; no sd),false,invented for tests",
    "oak,III,stock,t CO2e/ha,30,90,,,,,test fixture row 7 (invented; no sd),false,invented for tests",
]
PARCELS = {  # parcel: (geometry in map pixels, species_group, site_class, planting_year, stand_age_yr at Y1)
    "fir_p": ((10, 10, 20, 20), "fir", "I", 2015, None),      # ages 5 -> 10
    "pine_p": ((30, 10, 40, 20), "pine", "II", None, 18),     # ages 18 -> 23: two increment bands
    "oak_p": ((10, 30, 20, 38), "oak", "III", 2010, None),    # rows without sd
    "forest_p": ((25, 40, 35, 50), "fir", "I", 2015, None),   # on standing forest: ineligible
}


def write_table(path, rows, header=HEADER):
    path.write_text("# TEST FIXTURE: invented values for tests only; never use them to credit\n"
                    + header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def geodesic_ha(geom) -> float:
    """Area (ha) on the WGS84 ellipsoid, independently of sinks' equal-area projection."""
    lonlat = gpd.GeoSeries([geom], crs=CRS).to_crs("EPSG:4326").iloc[0]
    return abs(Geod(ellps="WGS84").geometry_area_perimeter(lonlat.segmentize(1e-4))[0]) / 10_000


def parcel_frame(rows=None, **columns):
    rows = rows or PARCELS
    frame = gpd.GeoDataFrame({
        "parcel_id": list(rows), "start_date": ["2020-03-01"] * len(rows),
        "species_group": [v[1] for v in rows.values()], "site_class": [v[2] for v in rows.values()],
        "planting_year": [v[3] if v[3] is not None else math.nan for v in rows.values()],
        "stand_age_yr": [v[4] if v[4] is not None else math.nan for v in rows.values()],
    }, geometry=[cells(*v[0]) for v in rows.values()], crs=CRS)
    for key, value in columns.items():
        frame[key] = value
    return frame


@pytest.fixture(scope="module")
def gw(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("growth")
    (root / "in").mkdir()
    (root / "out").mkdir()
    table = write_table(root / "in" / "growth.csv", FIXTURE)
    parcels = parcel_frame()
    parcels.to_file(root / "in" / "parcels.gpkg")
    return {"root": root, "table": table, "parcels": parcels, "layers": world["layers"],
            "areas": {pid: geodesic_ha(g) for pid, g in zip(parcels["parcel_id"], parcels.geometry)}}


@pytest.fixture(scope="module")
def report(gw):
    return credit(gw["parcels"], "ccer-14-001", years=(2020, 2025), growth=gw["table"], layers=gw["layers"],
                  progress=False)


# ---- the table ------------------------------------------------------------------------------------

def test_table_loads_with_units_and_sds(gw):
    table = load_growth_table(gw["table"])
    assert sorted(table.curves) == [("fir", "I"), ("oak", "III"), ("pine", "II")]
    assert table.sha256 == sha256_file(gw["table"])
    pine = table.curves[("pine", "II")]
    assert pine.ages == (0.0, 40.0) and table.curves[("fir", "I")].ages == (0.0, 20.0)
    assert pine.rows[0].sd == pytest.approx(1 / Z90)  # the 90 % interval 3-5 -> its half-width / z
    assert table.row(6).sd is None and table.row(1).source == "test fixture row 1 (invented)"


def test_curves_interpolate_linearly_and_never_extrapolate(gw):
    table = load_growth_table(gw["table"])
    fir = table.curves[("fir", "I")].change(5, 15)
    # S(5) = 15, S(15) = 50 Mg C/ha; sd = |-0.5| x 0 + |0.5 - 0.5| x 3 + 0.5 x 5
    assert fir["stock_start_tco2e_ha"] == pytest.approx(15 * CO2_PER_C)
    assert fir["change_tco2e_ha"] == pytest.approx(35 * CO2_PER_C)
    assert fir["change_sd_tco2e_ha"] == pytest.approx(2.5 * CO2_PER_C)
    pine = table.curves[("pine", "II")].change(18, 23)
    assert pine["change_tco2e_ha"] == pytest.approx(2 * 4 + 3 * 2)
    assert pine["change_sd_tco2e_ha"] == pytest.approx(2 / Z90 + 3 * 0.5)
    assert [r["row"] for r in pine["rows"]] == [4, 5]


BAD_TABLES = {
    "missing source": ([FIXTURE[0], "fir,I,stock,Mg C/ha,10,30,3,,,,,true,"], ["growth.csv: row 2", "source"]),
    "negative value": ([FIXTURE[0], FIXTURE[1].replace(",30,3,", ",-30,3,")], ["row 2", "'value'", ">= 0"]),
    "negative sd": ([FIXTURE[0], FIXTURE[1].replace(",30,3,", ",30,-3,")], ["row 2", "'sd'", ">= 0"]),
    "non-monotone ages": ([FIXTURE[1], FIXTURE[0]], ["row 2", "ages must increase", "age 0 follows age 10"]),
    "duplicate key": ([FIXTURE[0], FIXTURE[1], FIXTURE[1]], ["rows 2 and 3", "duplicate", "fir / I", "age 10"]),
    "unknown unit": ([FIXTURE[0].replace("Mg C/ha", "Mg C/h"), FIXTURE[1]], ["unknown unit 'Mg C/h'",
                                                                            "did you mean 'Mg C/ha'"]),
    "increment unit on a stock row": ([FIXTURE[0].replace("Mg C/ha", "Mg C/ha/yr"), FIXTURE[1]],
                                      ["unknown unit", "stock row"]),
    "mixed units in a curve": ([FIXTURE[0], FIXTURE[1].replace("Mg C/ha", "t CO2e/ha")], ["one curve has one"]),
    "unknown quantity": ([FIXTURE[0].replace("stock", "stocks"), FIXTURE[1]], ["'quantity'", "did you mean 'stock'"]),
    "not a number": ([FIXTURE[0], FIXTURE[1].replace(",30,3,", ",thirty,3,")], ["'value' must be a number"]),
    "negative age": ([FIXTURE[0].replace(",0,0,0,", ",-1,0,0,"), FIXTURE[1]], ["'age_yr'", ">= 0"]),
    "above the documented maximum": ([FIXTURE[0], FIXTURE[1].replace(",30,3,", ",5000,3,")],
                                     ["row 2", "highest documented carbon density", "check the unit"]),
    "one-age stock curve": ([FIXTURE[0]], ["at least two ages"]),
    "interval without the value": ([FIXTURE[3].replace(",3,5,0.9,", ",4.5,5,0.9,")], ["does not contain"]),
    "incomplete interval": ([FIXTURE[3].replace(",3,5,0.9,", ",3,5,,")], ["missing ci_level"]),
    "sd and interval": ([FIXTURE[3].replace(",,3,5,0.9,", ",1,3,5,0.9,")], ["either 'sd' or the interval"]),
    "unchecked without a note": ([FIXTURE[0], FIXTURE[1].replace("false,invented for tests", "false,")],
                                 ["checked = false needs a 'confidence'"]),
    "bad checked flag": ([FIXTURE[0].replace("false,", "maybe,"), FIXTURE[1]], ["'checked' must be true or false"]),
    "no rows": ([], ["no rows"]),
}


@pytest.mark.parametrize("rows, words", BAD_TABLES.values(), ids=BAD_TABLES.keys())
def test_bad_tables_are_refused_naming_file_and_row(tmp_path, rows, words):
    path = write_table(tmp_path / "growth.csv", rows)
    with pytest.raises(SpecError) as info:
        load_growth_table(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, (word, message)


def test_bad_columns_are_refused(tmp_path):
    with pytest.raises(SpecError, match="unknown key 'sorce' \\(did you mean 'source'\\?\\)"):
        load_growth_table(write_table(tmp_path / "a.csv", [], header=HEADER.replace("source", "sorce")))
    with pytest.raises(SpecError, match="lacks column\\(s\\) checked"):
        load_growth_table(write_table(tmp_path / "b.csv", [], header=HEADER.replace(",checked", "")))
    with pytest.raises(SpecError, match="not found"):
        load_growth_table(tmp_path / "missing.csv")


# ---- crediting: known truth -----------------------------------------------------------------------

def test_known_truth_one_parcel_before_and_after_deductions(gw, report):
    got = by_id(report)["fir_p"]
    area = gw["areas"]["fir_p"]
    assert got["area_ha"] == pytest.approx(area, rel=1e-6)  # exact equal-area ha (about 9 ha in UTM)
    # ages 5 -> 10: S = 15 -> 30 Mg C/ha; 15 x 44/12 = 55 t CO2e/ha; sd 0.5 x 3 Mg C/ha = 5.5 t CO2e/ha
    assert got["stock_change_tco2e"] == pytest.approx(55 * area, rel=1e-6)
    assert got["stock_change_sd_tco2e"] == pytest.approx(5.5 * area, rel=1e-6)
    assert got["baseline_tco2e"] == 0 and got["leakage_tco2e"] == 0 and got["buffer_tco2e"] == 0
    assert "zero: the methodology's baseline term" in got["baseline_rule"]
    assert got["uncertainty_deduction_tco2e"] == pytest.approx(Z90 * 5.5 * area, rel=1e-6)
    assert got["tco2e"] == pytest.approx((55 - Z90 * 5.5) * area, rel=1e-6)
    assert got["status"] == "credited" and "ex ante" in got["reason"]
    assert got["growth"]["age_start_yr"] == 5 and got["growth"]["age_end_yr"] == 10
    assert {r["row"] for r in got["growth"]["rows"]} == {1, 2}


def test_known_truth_with_baseline_leakage_threshold_and_buffer(gw):
    rules = load_ruleset("vm0047", terms={"baseline": {"tco2e_ha_yr": 1.0}, "leakage": {"fraction": 0.1},
                                          "buffer": {"fraction": 0.2}})
    got = by_id(credit(gw["parcels"], rules, years=(2020, 2025), growth=gw["table"],
                       layers={"forest_history": gw["layers"]["forest_history"]}, progress=False))["fir_p"]
    a = gw["areas"]["fir_p"]
    baseline, leakage = 1.0 * a * 5, 0.1 * (55 * a - 1.0 * a * 5)
    net, net_sd = 55 * a - baseline - leakage, 5.5 * a * 0.9
    share = Z90 * net_sd / net - 0.1  # VM0047's rule as encoded: the excess over 10 % at 90 %
    after = net * (1 - share)
    assert got["baseline_tco2e"] == pytest.approx(baseline, rel=1e-6) and "rate 1 t CO2e/ha/yr" in got["baseline_rule"]
    assert got["leakage_tco2e"] == pytest.approx(leakage, rel=1e-6)
    assert got["net_tco2e"] == pytest.approx(net, rel=1e-6) and got["net_sd_tco2e"] == pytest.approx(net_sd, rel=1e-6)
    assert got["uncertainty_deduction_tco2e"] == pytest.approx(net * share, rel=1e-6)
    assert got["buffer_tco2e"] == pytest.approx(0.2 * after, rel=1e-6)
    assert got["tco2e"] == pytest.approx(0.8 * after, rel=1e-6)


def test_statuses_conservative_and_totals_add_up(gw, report):
    got = by_id(report)
    assert got["pine_p"]["stock_change_tco2e"] == pytest.approx(14 * gw["areas"]["pine_p"], rel=1e-6)
    assert got["oak_p"]["status"] == "no_uncertainty" and "row(s) 6, 7" in got["oak_p"]["reason"]
    assert got["oak_p"]["stock_change_tco2e"] > 0 and got["oak_p"]["tco2e"] == 0  # expected, reported, not credited
    assert got["forest_p"]["status"] == "ineligible" and got["forest_p"]["tco2e"] == 0
    for pid, c in got.items():
        assert 0 <= c["tco2e"]
        if "net_tco2e" in c:
            assert c["tco2e"] <= max(c["stock_change_tco2e"], 0)
            # no uncertainty rule in CCER-14-001 as encoded: creditable = the labelled lower bound
            assert c["tco2e"] == pytest.approx(c["net_tco2e"] - Z90 * c["net_sd_tco2e"], rel=1e-12)
            assert "lower bound of the 90% interval" in c["uncertainty_rule"]
    project = report.crediting["project"]
    credited = [got["fir_p"], got["pine_p"]]
    assert project["parcels_tco2e"] == pytest.approx(sum(c["tco2e"] for c in got.values()), rel=1e-12)
    assert project["tco2e"] == pytest.approx(max(project["parcels_tco2e"] + project["netted_losses_tco2e"], 0))
    assert project["stock_change_tco2e"] == pytest.approx(sum(c["stock_change_tco2e"] for c in credited))
    assert project["stock_change_sd_tco2e"] == pytest.approx(sum(c["stock_change_sd_tco2e"] for c in credited))
    assert project["statuses"]["credited"] == 2 and project["statuses"]["no_uncertainty"] == 1
    assert project["statuses"]["ineligible"] == 1


def test_report_records_route_table_and_sources(gw, report, tmp_path):
    document = write_report(report, tmp_path / "r.json", tmp_path / "r.gpkg")
    validate(document)
    crediting = document["crediting"]
    assert document["schema_version"] == "5" and crediting["route"] == "ex_ante_growth_table"
    assert crediting["growth_table"]["sha256"] == sha256_file(gw["table"])
    assert [r["row"] for r in crediting["growth_table"]["rows_used"]] == [1, 2, 4, 5]
    assert all(r["source"].startswith("test fixture") for r in crediting["growth_table"]["rows_used"])
    assert "maps" not in crediting
    broken = to_dict(report)
    del broken["crediting"]["growth_table"]
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)  # the ex-ante route must name its table


def test_parcel_problems_are_named_per_parcel(gw):
    frame = parcel_frame(species_group=["firr", "pine", "oak", "fir"])
    with pytest.raises(InputError, match="parcel fir_p: firr / I is not a key .*did you mean 'fir / I'"):
        credit(frame, "ccer-14-001", years=(2020, 2025), growth=gw["table"], layers=gw["layers"], progress=False)
    frame = parcel_frame(planting_year=[1990, math.nan, 2010, 2030])
    with pytest.raises(InputError) as info:
        credit(frame, "ccer-14-001", years=(2020, 2025), growth=gw["table"], layers=gw["layers"], progress=False)
    assert "parcel fir_p: stand ages 30-35" in str(info.value) and "not extrapolated" in str(info.value)
    assert "parcel forest_p: planted in 2030, after the first year 2020" in str(info.value)
    with pytest.raises(InputError, match="needs parcel column\\(s\\) site_class"):
        credit(parcel_frame().drop(columns="site_class"), "ccer-14-001", years=(2020, 2025), growth=gw["table"],
               layers=gw["layers"], progress=False)
    with pytest.raises(InputError, match="not both"):
        credit(gw["parcels"], "ccer-14-001", ["a.tif", "b.tif"], (2020, 2025), growth=gw["table"], progress=False)


# ---- the command ----------------------------------------------------------------------------------

def argv(gw, *extra, table=None, parcels=None):
    root = gw["root"]
    return ["credit", parcels or root / "in" / "parcels.gpkg", "--growth", table or gw["table"],
            "--years", "2020", "2025", "--layer", f"forest_history={gw['layers']['forest_history']}",
            "--layer", f"wetland={gw['layers']['wetland']}", "--out", root / "out" / "r.json", "--quiet", *extra]


def test_cli_writes_a_schema_valid_report(gw, capsys):
    out = gw["root"] / "out" / "cli.json"
    args = [str(a) for a in argv(gw)]
    args[args.index("--out") + 1] = str(out)
    assert main(args) == 0, capsys.readouterr().err
    assert "expected stock change (ex ante" in capsys.readouterr().out
    document = json.loads(out.read_text())
    validate(document)
    assert document["crediting"]["route"] == "ex_ante_growth_table"
    assert document["crediting"]["project"]["statuses"]["credited"] == 2
    out.unlink()


def _bad_table(gw):
    rows = [FIXTURE[0], "fir,I,stock,Mg C/ha,10,30,3,,,,,true,"]
    return {"table": write_table(gw["root"] / "in" / "nosource.csv", rows)}


def _unknown_key(gw):
    path = gw["root"] / "in" / "badkey.gpkg"
    parcel_frame(site_class=["1", "II", "III", "I"]).to_file(path)
    return {"parcels": path}


def _late_start(gw):
    path = gw["root"] / "in" / "late.gpkg"
    parcel_frame(start_date=["2030-01-01"] * len(PARCELS)).to_file(path)
    return {"parcels": path}


def _start_inside_the_period(gw):
    path = gw["root"] / "in" / "inside.gpkg"
    parcel_frame(start_date=["2022-01-01"] * len(PARCELS)).to_file(path)
    return {"parcels": path}


BAD = {
    "both --maps and --growth": (lambda gw: {}, ["--maps", "a.tif", "b.tif"],
                                 ["either --maps", "--growth", "not both"]),
    "table without a source": (_bad_table, [], ["nosource.csv", "row 2", "source"]),
    "table not found": (lambda gw: {"table": gw["root"] / "in" / "none.csv"}, [], ["none.csv", "not found"]),
    "parcel key not in the table": (_unknown_key, [], ["parcel fir_p", "fir / 1", "not a key"]),
    "start after the period": (_late_start, [], ["start date after the end 2025", "fir_p (2030-01-01)"]),
    "start inside the period": (_start_inside_the_period, [],
                                ["after the period's first year 2020", "2022-01-01", "before the project started"]),
    "a map-only option": (lambda gw: {}, ["--epoch-correlation", "0.5"], ["--epoch-correlation", "--maps", "--growth"]),
}


@pytest.mark.parametrize("make, extra, keywords", BAD.values(), ids=BAD.keys())
def test_bad_input_is_refused(gw, capsys, make, extra, keywords):
    kwargs = make(gw)
    assert_refused(argv(gw, *extra, **kwargs), capsys, keywords=keywords, watch=gw["root"] / "out")


def test_neither_maps_nor_growth_is_refused(gw, capsys):
    args = [a for a in argv(gw) if a not in ("--growth", gw["table"])]
    assert_refused(args, capsys, keywords=["either --maps", "--growth", "one of the two"], watch=gw["root"] / "out")
