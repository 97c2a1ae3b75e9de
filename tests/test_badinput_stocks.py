"""Bad-input catalogue of ``sinks stocks forest|soil|wetland|gedi``.

Each case runs the command on small synthetic data with one mistake and asserts a clean one-line
refusal naming the key words, a non-zero exit, no traceback, and every file under the test folder
(inputs and outputs) byte-for-byte unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.badinput import assert_refused
from tests.test_gedi import beam_arrays, write_granule


def _trees(n_plots: int = 3, per_plot: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = n_plots * per_plot
    dbh = rng.uniform(8, 45, n).round(1)
    return pd.DataFrame({
        "plot_id": np.repeat([f"P{i}" for i in range(n_plots)], per_plot),
        "tree_id": np.tile(np.arange(1, per_plot + 1), n_plots),
        "species": "Cunninghamia lanceolata",
        "dbh_cm": dbh,
        "height_m": (1.3 + 0.6 * dbh).round(1),
    })


def _plots(area: float = 0.04, n_plots: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"plot_id": [f"P{i}" for i in range(n_plots)], "area_ha": area,
                         "x": 400000.0 + 100 * np.arange(n_plots), "y": 3300000.0})


def _horizons() -> pd.DataFrame:
    rows = []
    for p in range(4):
        for (top, bottom), soc, bd in zip([(0, 10), (10, 30), (30, 60), (60, 100)], [28, 16, 8, 4],
                                          [1.1, 1.25, 1.4, 1.5]):
            rows.append({"profile_id": f"S{p}", "top_cm": top, "bottom_cm": bottom,
                         "soc_g_kg": soc + p, "bulk_density_g_cm3": bd})
    return pd.DataFrame(rows)


def _intervals() -> pd.DataFrame:
    rows = []
    for c in range(3):
        for top in (0, 25, 50, 75):
            rows.append({"core_id": f"C{c}", "top_cm": top, "bottom_cm": top + 25,
                         "dry_bulk_density_g_cm3": 0.6 + 0.05 * c, "fraction_carbon": 0.04 - 0.005 * (top / 25)})
    return pd.DataFrame(rows)


@pytest.fixture
def data(tmp_path):
    """Good inputs in ``tmp_path``, an ``out/`` folder with one existing output, and a sub-folder."""
    _trees().to_csv(tmp_path / "trees.csv", index=False)
    _plots().to_csv(tmp_path / "plots.csv", index=False)
    _horizons().to_csv(tmp_path / "horizons.csv", index=False)
    _intervals().to_csv(tmp_path / "intervals.csv", index=False)
    write_granule(tmp_path / "GEDI04_A_2020036151358_O06515_02_T00198_02_002_01_V002.h5",
                  {"BEAM0101": beam_arrays(6)})
    out = tmp_path / "out"
    out.mkdir()
    (out / "existing.csv").write_text("plot_id,carbon_mg_ha\nP0,1.0\n")
    (out / "afolder").mkdir()
    (out / "afolder" / "keep.txt").write_text("the user's file")
    return tmp_path


def _write(folder, name: str, frame: pd.DataFrame) -> str:
    frame.to_csv(folder / name, index=False)
    return str(folder / name)


def _trees_with(folder, name: str, **changes) -> str:
    frame = _trees()
    for column, transform in changes.items():
        frame[column] = transform(frame[column])
    return _write(folder, name, frame)


def _height_sample_case(d, *, height_scale=1.0, dbh_scale=1.0, extra=(), sample_plots=None) -> list:
    """Trees without heights and a height sample of 30 trees in other units (or of other plots)."""
    _write(d, "t_noh.csv", _trees().drop(columns="height_m"))
    sample = _trees().head(30)
    sample = sample.assign(height_m=sample["height_m"] * height_scale, dbh_cm=sample["dbh_cm"] * dbh_scale)
    if sample_plots is not None:
        sample = sample.assign(plot_id=sample_plots)
    _write(d, "hs.csv", sample)
    return forest_args(d, d / "t_noh.csv", None, None, "--height-sample", d / "hs.csv", *extra)


GRANULE = "GEDI04_A_2020036151358_O06515_02_T00198_02_002_01_V002.h5"

# each case: id -> (function of the data folder giving argv, keywords)
FOREST = "stocks forest".split()


def forest_args(d, trees=None, plots=None, out=None, *extra):
    return [*FOREST, trees or d / "trees.csv", "--plots", plots or d / "plots.csv",
            "--out", out or d / "out" / "plots_out.csv", "--draws", "0", "--quiet", *extra]


def soil_args(d, horizons=None, out=None, *extra):
    return ["stocks", "soil", horizons or d / "horizons.csv", "--out", out or d / "out" / "soil_out.csv", *extra]


def wetland_args(d, intervals=None, out=None, *extra):
    return ["stocks", "wetland", intervals or d / "intervals.csv", "--out", out or d / "out" / "wet_out.csv", *extra]


def gedi_args(d, *extra, out=None):
    return ["stocks", "gedi", d / GRANULE, "--out", out or d / "out" / "gedi_out.csv", *extra]


CASES = {
    # ---- forest: files and columns
    "forest-missing-trees": (lambda d: forest_args(d, trees=d / "nope.csv"), ["nope.csv", "not found"]),
    "forest-missing-plots": (lambda d: forest_args(d, plots=d / "nope.csv"), ["nope.csv", "not found"]),
    "forest-no-dbh-column": (lambda d: forest_args(d, trees=_write(d, "t.csv", _trees().drop(columns="dbh_cm"))),
                             ["dbh_cm"]),
    "forest-no-area-column": (lambda d: forest_args(d, plots=_write(d, "p.csv", _plots().drop(columns="area_ha"))),
                              ["area_ha"]),
    "forest-no-plot-areas": (lambda d: [*FOREST, d / "trees.csv", "--out", d / "out" / "o.csv"], ["--plots"]),
    "forest-plots-lat-long-with-crs": (
        lambda d: forest_args(d, None, _write(d, "p.csv", _plots().rename(columns={"x": "long", "y": "lat"})),
                              None, "--crs", "EPSG:32650"),
        ["p.csv", "--crs EPSG:32650", "no x and y", "long, lat", "--rename"]),
    # degrees labelled as UTM: as metres the plots land on the equator, thousands of km away
    "forest-plots-degrees-as-projected-crs": (
        lambda d: forest_args(d, None, _write(d, "p.csv", _plots().assign(x=[113.5, 113.6, 113.7], y=28.1)),
                              d / "out" / "o.gpkg", "--crs", "EPSG:32649"),
        ["p.csv", "fits a longitude and latitude", "EPSG:32649", "--crs EPSG:4326"]),
    "forest-gpkg-without-locations": (
        lambda d: [*FOREST, d / "trees.csv", "--area-ha", "0.04", "--out", d / "out" / "o.gpkg", "--draws", "50"],
        ["o.gpkg", "GeoPackage needs the plots' locations", "--area-ha"]),
    "forest-rename-in-no-table": (lambda d: forest_args(d, None, None, None, "--rename", "nothere=plot_id"),
                                  ["--rename", "nothere", "neither"]),
    # ---- forest: unit slips
    "forest-dbh-mm": (lambda d: forest_args(d, trees=_trees_with(d, "t.csv", dbh_cm=lambda v: v * 10)),
                      ["t.csv", "dbh_cm", "mm"]),
    "forest-dbh-mm-drop-invalid": (lambda d: forest_args(d, _trees_with(d, "t.csv", dbh_cm=lambda v: v * 10), None,
                                                         None, "--drop-invalid"), ["dbh_cm", "mm"]),
    "forest-height-cm": (lambda d: forest_args(d, trees=_trees_with(d, "t.csv", height_m=lambda v: v * 100)),
                         ["height_m", "in cm"]),
    "forest-height-dm": (lambda d: forest_args(d, trees=_trees_with(d, "t.csv", height_m=lambda v: v * 10)),
                         ["height_m", "in dm"]),
    "forest-area-m2": (lambda d: forest_args(d, plots=_write(d, "p.csv", _plots(area=400.0))),
                       ["p.csv", "area_ha", "m²"]),
    "forest-area-m2-100": (lambda d: forest_args(d, plots=_write(d, "p.csv", _plots(area=100.0))),
                           ["area_ha", "m²"]),
    "forest-area-mu-as-ha": (lambda d: forest_args(d, plots=_write(d, "p.csv", _plots(area=1.0))),
                             ["area_ha", "mu"]),
    "forest-area-ha-option-m2": (lambda d: [*FOREST, d / "trees.csv", "--area-ha", "600", "--out",
                                            d / "out" / "o.csv", "--draws", "0"], ["area_ha", "m²"]),
    "forest-rename-mm": (lambda d: forest_args(d, _write(d, "t.csv", _trees().rename(columns={"dbh_cm": "DBH_mm"})),
                                               None, None, "--rename", "DBH_mm=dbh_cm"), ["rename", "mm"]),
    # ---- forest: implausible outputs
    "forest-allometry-x1000": (lambda d: forest_args(d, None, None, None,
                                                     "--allometry=1000*0.0673*(WD*D**2*H)**0.976"),
                               ["carbon_mg_ha", "maximum", "Keith"]),
    "forest-allometry-negative": (lambda d: forest_args(d, None, None, None,
                                                        "--allometry=-0.0673*(WD*D**2*H)**0.976"),
                                  ["negative", "sign"]),
    "forest-bad-e-low": (lambda d: forest_args(d, _write(d, "t.csv", _trees().drop(columns="height_m")), None, None,
                                               "--e", "40"), ["agb_mg", "--e"]),
    "forest-bad-e-high": (lambda d: forest_args(d, _write(d, "t.csv", _trees().drop(columns="height_m")), None, None,
                                                "--e", "-40"), ["maximum"]),
    # ---- forest: numeric options
    "forest-draws-negative": (lambda d: forest_args(d, None, None, None, "--draws", "-1"), ["--draws"]),
    "forest-draws-text": (lambda d: forest_args(d, None, None, None, "--draws", "many"), ["--draws"]),
    "forest-jobs-zero": (lambda d: forest_args(d, None, None, None, "--jobs", "0"), ["--jobs"]),
    "forest-area-ha-zero": (lambda d: [*FOREST, d / "trees.csv", "--area-ha", "0", "--out", d / "out" / "o.csv"],
                            ["--area-ha"]),
    "forest-area-ha-text": (lambda d: [*FOREST, d / "trees.csv", "--area-ha", "ten", "--out", d / "out" / "o.csv"],
                            ["--area-ha"]),
    "forest-height-sd-negative": (lambda d: forest_args(d, None, None, None, "--height-sd", "-1"), ["--height-sd"]),
    "forest-bad-crs": (lambda d: forest_args(d, None, None, None, "--crs", "EPSG:99999"), ["--crs", "EPSG:99999"]),
    # ---- forest: outputs
    "forest-out-exists": (lambda d: forest_args(d, out=d / "out" / "existing.csv"), ["existing.csv", "--overwrite"]),
    "forest-trees-out-exists": (lambda d: forest_args(d, None, None, None, "--trees-out", d / "out" / "existing.csv"),
                                ["existing.csv", "--overwrite"]),
    "forest-out-folder": (lambda d: forest_args(d, out=d / "out" / "afolder"), ["afolder", "folder"]),
    "forest-out-slash": (lambda d: forest_args(d, out=f"{d / 'out' / 'new'}/"), ["folder"]),
    "forest-out-is-input": (lambda d: forest_args(d, None, None, d / "trees.csv", "--overwrite"), ["input"]),
    "forest-out-equals-trees-out": (lambda d: forest_args(d, None, None, None, "--trees-out",
                                                          d / "out" / "plots_out.csv"), ["two outputs"]),
    "forest-out-folder-missing": (lambda d: forest_args(d, out=d / "out" / "missing" / "o.csv"), ["does not exist"]),
    "forest-out-unknown-extension": (lambda d: forest_args(d, out=d / "out" / "o.xlsx"), [".xlsx"]),
    "forest-height-sample-in-dm": (lambda d: _height_sample_case(d, height_scale=10), ["hs.csv", "height_m", "in dm"]),
    "forest-height-sample-dbh-in-mm": (lambda d: _height_sample_case(d, dbh_scale=10), ["hs.csv", "dbh_cm", "in mm"]),
    # passed as real, a sample in dm still holds heights no tree has (it gave 392.7 Mg C/ha instead of 41.5)
    "forest-hd-per-plot-of-other-plots": (
        lambda d: _height_sample_case(d, extra=("--hd-per-plot",), sample_plots="H1"),
        ["t_noh.csv", "no height model for plot(s) P0, P1, P2", "plot(s) H1", "--hd-per-plot"]),
    "forest-height-sample-in-dm-passed": (
        lambda d: _height_sample_case(d, height_scale=10, extra=("--allow-implausible",)),
        ["hs.csv", "exceed the largest known (130 m)"]),
    "forest-allometry-partly-negative": (lambda d: forest_args(d, None, None, None, "--allometry",
                                                        "0.0673*(WD*D**2*H)**0.976 - 500"),
                                  ["negative biomass", "tree(s)"]),
    "forest-diameter-error-nan": (lambda d: forest_args(d, None, None, None, "--diameter-error", "nan"),
                                  ["--diameter-error", "finite", "'nan'"]),
    "forest-diameter-error-negative": (lambda d: forest_args(d, None, None, None, "--diameter-error", "-0.5"),
                                       ["--diameter-error", "above 0"]),
    # a stand volume per plot (m3, not m3/ha) once went to the tree route: "needs plot areas"
    "forest-stand-volume-not-per-ha": (
        lambda d: [*FOREST, _write(d, "stands.csv", pd.DataFrame({"plot_id": ["A"], "species_group": ["杉木"],
                                                                  "volume_m3": [9.6]})), "--out", d / "out" / "s.csv"],
        ["stands.csv", "'volume_m3'", "neither dbh_cm", "--rename volume_m3=volume_m3_ha", "divide it by"]),
    # ---- soil
    "soil-missing-file": (lambda d: soil_args(d, horizons=d / "nope.csv"), ["nope.csv", "not found"]),
    "soil-no-soc-column": (lambda d: soil_args(d, _write(d, "h.csv", _horizons().drop(columns="soc_g_kg"))),
                           ["soc_g_kg"]),
    # one profile's coarse fragments as fractions among others in %: its 0.5 (50 %) read as 0.5 %
    "soil-one-profile-coarse-fragments-as-fractions": (lambda d: soil_args(d, _write(d, "h.csv", _horizons().assign(
        coarse_fragments_pct=[0.1, 0.2, 0.5, 0.6] + [5.0, 10.0, 20.0, 35.0] * 3))),
        ["h.csv", "coarse_fragments_pct", "of profile S0", "a fraction of 1"]),
    # one organic topsoil of 15 % once hid the rest of a table in %, every stock 10 x low
    "soil-soc-percent-with-an-organic-topsoil": (lambda d: soil_args(d, _write(d, "h.csv", _horizons().assign(
        soc_g_kg=lambda f: (f["soc_g_kg"] / 10).where(f.index != 0, 15.0)))), ["h.csv", "soc_g_kg", "SOC in %"]),
    "soil-soc-percent": (lambda d: soil_args(d, _write(d, "h.csv", _horizons().assign(
        soc_g_kg=lambda f: f["soc_g_kg"] / 10))), ["h.csv", "soc_g_kg", "%"]),
    "soil-depths-m": (lambda d: soil_args(d, _write(d, "h.csv", _horizons().assign(
        top_cm=lambda f: f["top_cm"] / 100, bottom_cm=lambda f: f["bottom_cm"] / 100))), ["bottom_cm", "in m"]),
    "soil-bd-kg-m3": (lambda d: soil_args(d, _write(d, "h.csv", _horizons().assign(
        bulk_density_g_cm3=lambda f: f["bulk_density_g_cm3"] * 1000))), ["bulk_density_g_cm3", "kg/m³"]),
    "soil-rename-percent": (lambda d: soil_args(d, _write(d, "h.csv", _horizons().rename(
        columns={"soc_g_kg": "SOC_pct"})), None, "--rename", "SOC_pct=soc_g_kg"), ["rename", "%"]),
    # pure organic matter at quartz's density: above the stock bound too, refused first as off the mixing curve
    "soil-stock-above-bound": (lambda d: soil_args(d, _write(d, "h.csv", _horizons().assign(
        soc_g_kg=590.0, bulk_density_g_cm3=2.6))), ["soc_g_kg", "denser than 0.8", "organic-rich material is light"]),
    "soil-soc-x10": (lambda d: soil_args(d, _write(d, "h.csv", _horizons().assign(
        soc_g_kg=lambda f: f["soc_g_kg"] * 10))), ["h.csv", "soc_g_kg", "denser than 0.8", "10 x too high"]),
    "soil-one-horizon-soc-x10": (lambda d: soil_args(d, _write(d, "h.csv", _horizons().assign(
        soc_g_kg=lambda f: f["soc_g_kg"].where(f.index != 5, 346.0)))), ["row(s) 6", "346", "wrong bulk density"]),
    "soil-lambda-negative": (lambda d: soil_args(d, None, None, "--lambda", "-1"), ["--lambda"]),
    "soil-lambda-text": (lambda d: soil_args(d, None, None, "--lambda", "smooth"), ["--lambda"]),
    "soil-bad-crs": (lambda d: soil_args(d, None, None, "--crs", "EPSG:99999"), ["--crs"]),
    "soil-out-equals-horizons-out": (lambda d: soil_args(d, None, None, "--horizons-out", d / "out" / "soil_out.csv"),
                                     ["two outputs"]),
    "soil-horizons-out-exists": (lambda d: soil_args(d, None, None, "--horizons-out", d / "out" / "existing.csv"),
                                 ["existing.csv", "--overwrite"]),
    "soil-out-is-input": (lambda d: soil_args(d, None, d / "horizons.csv", "--overwrite"), ["input"]),
    # ---- wetland
    "wetland-missing-file": (lambda d: wetland_args(d, intervals=d / "nope.csv"), ["nope.csv", "not found"]),
    "wetland-no-dbd-column": (lambda d: wetland_args(d, _write(d, "i.csv", _intervals().drop(
        columns="dry_bulk_density_g_cm3"))), ["dry_bulk_density_g_cm3"]),
    "wetland-fraction-percent": (lambda d: wetland_args(d, _write(d, "i.csv", _intervals().assign(
        fraction_carbon=lambda f: f["fraction_carbon"] * 100))), ["i.csv", "fraction_carbon", "%"]),
    "wetland-fraction-percent-below-1": (lambda d: wetland_args(d, _write(d, "i.csv", _intervals().assign(
        fraction_carbon=lambda f: f["fraction_carbon"] * 25, dry_bulk_density_g_cm3=1.2))),  # a mineral sediment in %
        ["i.csv", "fraction_carbon", "denser than 0.8 g/cm3 hold more than 0.1 carbon", "in %", "divide % by 100"]),
    "wetland-depths-m": (lambda d: wetland_args(d, _write(d, "i.csv", _intervals().assign(
        top_cm=lambda f: f["top_cm"] / 100, bottom_cm=lambda f: f["bottom_cm"] / 100))), ["bottom_cm", "in m"]),
    "wetland-dbd-kg-m3": (lambda d: wetland_args(d, _write(d, "i.csv", _intervals().assign(
        dry_bulk_density_g_cm3=lambda f: f["dry_bulk_density_g_cm3"] * 1000))), ["dry_bulk_density", "kg/m³"]),
    "wetland-depth-zero": (lambda d: wetland_args(d, None, None, "--depth-cm", "0"), ["--depth-cm"]),
    "wetland-depth-text": (lambda d: wetland_args(d, None, None, "--depth-cm", "1m"), ["--depth-cm"]),
    "wetland-out-equals-intervals-out": (lambda d: wetland_args(d, None, None, "--intervals-out",
                                                                d / "out" / "wet_out.csv"), ["two outputs"]),
    "wetland-out-folder": (lambda d: wetland_args(d, None, d / "out" / "afolder"), ["folder"]),
    "wetland-out-exists": (lambda d: wetland_args(d, None, d / "out" / "existing.csv"), ["--overwrite"]),
    # ---- gedi
    "gedi-missing-granule": (lambda d: ["stocks", "gedi", d / "nope.h5", "--out", d / "out" / "g.csv"], ["nope.h5"]),
    "gedi-carbon-fraction-percent": (lambda d: gedi_args(d, "--carbon-fraction", "47"), ["--carbon-fraction"]),
    "gedi-min-sensitivity-out-of-range": (lambda d: gedi_args(d, "--min-sensitivity", "95"), ["--min-sensitivity"]),
    "gedi-out-exists": (lambda d: gedi_args(d, out=d / "out" / "existing.csv"), ["--overwrite"]),
    "gedi-out-unknown-extension": (lambda d: gedi_args(d, out=d / "out" / "g.txt"), [".txt"]),
    "gedi-agbd-x1000": (lambda d: ["stocks", "gedi", write_granule(d / "big.h5", {"BEAM0101": beam_arrays(
        4, agbd=np.full(4, 1e5, dtype=np.float32))}), "--out", d / "out" / "g.csv"], ["carbon_mg_ha", "maximum"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stocks_refuses_bad_input(case, data, capsys):
    build, keywords = CASES[case]
    argv = build(data)
    assert_refused(argv, capsys, keywords=keywords, watch=data)


def test_catalogue_size():
    assert len(CASES) >= 35


def test_good_inputs_run(data, capsys):
    """The catalogue's inputs are good as given: every refusal above is caused by its one mistake."""
    from sinks.cli import main

    out = data / "out"
    assert main([str(a) for a in forest_args(data, None, None, None, "--trees-out", out / "t.csv")]) == 0
    assert main([str(a) for a in soil_args(data, None, None, "--horizons-out", out / "h.csv")]) == 0
    assert main([str(a) for a in wetland_args(data)]) == 0
    assert main([str(a) for a in gedi_args(data)]) == 0
    for name in ("plots_out.csv", "t.csv", "soil_out.csv", "h.csv", "wet_out.csv", "gedi_out.csv"):
        assert (out / name).is_file(), name


def test_a_rename_applies_to_the_plot_table_too(data):
    """The plot list's own names (PlotID, area) are renamed like the tree list's."""
    from sinks.cli import main

    _write(data, "p2.csv", _plots().rename(columns={"plot_id": "PlotID", "area_ha": "size_ha"}))
    _write(data, "t2.csv", _trees().rename(columns={"plot_id": "plotId"}))
    out = data / "out" / "renamed.csv"
    args = forest_args(data, data / "t2.csv", data / "p2.csv", out, "--rename", "PlotID=plot_id",
                       "--rename", "plotId=plot_id", "--rename", "size_ha=area_ha")
    assert main([str(a) for a in args]) == 0
    assert list(pd.read_csv(out)["plot_id"]) == ["P0", "P1", "P2"]


def test_plots_mixing_trees_with_and_without_roots_are_said(data, capsys):
    """A tree outside the species groups gets no root:shoot ratio: the plot's share says so, with a warning."""
    from sinks.cli import main

    trees = _trees()
    trees.loc[:4, "species"] = "Unknownia incognita"  # five trees of plot P0
    _write(data, "t3.csv", trees)
    out = data / "out" / "roots.csv"
    assert main([str(a) for a in forest_args(data, data / "t3.csv", None, out)]) == 0
    assert "roots are counted for only part of the trees: in 1 of 3 plots" in capsys.readouterr().err
    share = pd.read_csv(out).set_index("plot_id")["roots_counted_share"]
    assert 0 < share["P0"] < 1 and share["P1"] == share["P2"] == 1


@pytest.mark.parametrize("ids", [("007", "7"), ("1.1", "1.10")])
def test_plot_ids_that_read_alike_as_numbers_stay_two_plots(data, ids):
    """Read as numbers, plots '007' and '7' (or '1.1' and '1.10') were one plot with both plots' trees."""
    from sinks.cli import main

    trees = _trees(n_plots=2).assign(plot_id=lambda f: np.where(f["plot_id"] == "P0", ids[0], ids[1]))
    _write(data, "t_ids.csv", trees)
    out = data / "out" / "ids.csv"
    assert main([*FOREST, str(data / "t_ids.csv"), "--area-ha", "0.04", "--out", str(out), "--draws", "0",
                 "--quiet"]) == 0
    plots = pd.read_csv(out, dtype={"plot_id": str})
    assert sorted(plots["plot_id"]) == sorted(ids) and (plots["n_trees"] == 20).all()
    # the same ids in a GeoPackage plot table (numbers there) still match the CSV's text
    import geopandas as gpd

    if ids == ("007", "7"):
        gpd.GeoDataFrame({"plot_id": [7], "area_ha": [0.04]}, geometry=gpd.points_from_xy([400000.0], [3300000.0]),
                         crs=32648).to_file(data / "p7.gpkg")
        _write(data, "t7.csv", trees[trees["plot_id"] == "7"])
        assert main([str(a) for a in forest_args(data, data / "t7.csv", data / "p7.gpkg", data / "out" / "p7.csv")]) == 0


@pytest.mark.parametrize("sites_as", ["gpkg", "renamed csv"])
def test_soil_sites_join_whatever_file_holds_the_ids(data, sites_as):
    """Profiles joined to their sites when one file holds the ids as numbers (a GeoPackage) or under
    another name (ProfileNo, renamed): both once failed to merge text ids with numbers."""
    import geopandas as gpd

    from sinks.cli import main

    horizons = _horizons().assign(profile_id=lambda f: f["profile_id"].str[1:])  # "0".."3"
    _write(data, "h_ids.csv", horizons)
    extra = ["--crs", "EPSG:32648"]
    if sites_as == "gpkg":
        gpd.GeoDataFrame({"profile_id": [0, 1, 2, 3], "x": 400000.0 + np.arange(4), "y": 3300000.0},
                         geometry=gpd.points_from_xy(400000.0 + np.arange(4), [3300000.0] * 4),
                         crs=32648).to_file(data / "sites.gpkg")
        sites = data / "sites.gpkg"
    else:
        _write(data, "sites.csv", pd.DataFrame({"ProfileNo": ["0", "1", "2", "3"], "x": 400000.0 + np.arange(4),
                                                "y": 3300000.0}))
        sites = data / "sites.csv"
        extra += ["--rename", "ProfileNo=profile_id"]
    out = data / "out" / f"soil_{sites_as.replace(' ', '_')}.gpkg"
    assert main(["stocks", "soil", str(data / "h_ids.csv"), "--sites", str(sites), "--out", str(out), *extra]) == 0
    placed = gpd.read_file(out)
    assert len(placed) == 4 and placed.geometry.notna().all()


def test_hd_per_plot_matches_a_parquet_tree_list_to_a_csv_sample(data):
    """Numbers in the Parquet tree list, text in the CSV sample: no plot got its height model."""
    from sinks.cli import main

    trees = _trees().drop(columns="height_m").assign(plot_id=lambda f: f["plot_id"].str[1:].astype(int))
    trees.to_parquet(data / "t.parquet")
    sample = _trees().assign(plot_id=lambda f: f["plot_id"].str[1:])
    _write(data, "hs_plots.csv", sample)
    out = data / "out" / "hd.csv"
    assert main([*FOREST, str(data / "t.parquet"), "--area-ha", "0.04", "--height-sample", str(data / "hs_plots.csv"),
                 "--hd-per-plot", "--out", str(out), "--draws", "0", "--quiet"]) == 0
    assert len(pd.read_csv(out)) == 3
