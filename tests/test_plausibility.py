"""Plausibility guards: the table and its sources, each unit-slip check, the output bounds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sinks.cli import main
from sinks.errors import ImplausibleValueError, InputError
from sinks.pools import forest, plausibility, soil, wetland
from sinks.pools.tables import table_path


def test_table_has_a_source_and_confidence_for_every_row():
    ranges = plausibility.plausible_ranges()
    assert list(ranges.columns) == list(plausibility.RANGE_COLUMNS)
    for column in ("quantity", "pool", "units", "likely_slip", "source", "confidence"):
        assert ranges[column].notna().all() and (ranges[column].astype(str).str.strip() != "").all(), column
    # a bound is a number on at least one side, and min < max where both are given
    assert (ranges["minimum"].notna() | ranges["maximum"].notna()).all()
    both = ranges.dropna(subset=["minimum", "maximum"])
    assert (both["minimum"] < both["maximum"]).all()
    # every number not checked says so
    assert ranges["confidence"].str.match(r"^(checked|unchecked|upper checked)").all()
    assert not ranges.duplicated(["quantity", "pool"]).any()


def test_max_stock_per_pool():
    value, source = plausibility.max_stock_mg_ha("forest")
    assert value == 1867 and "Keith" in source and "PNAS" in source
    assert plausibility.max_stock_mg_ha("gedi") == (value, source)
    soil_max, soil_source = plausibility.max_stock_mg_ha("soil")
    assert soil_max == pytest.approx(87 * 100) and "per cm" in soil_source
    assert plausibility.max_stock_mg_ha("wetland", depth_cm=30)[0] == pytest.approx(87 * 30)
    with pytest.raises(InputError, match="pool"):
        plausibility.max_stock_mg_ha("ocean")


def test_user_table_overrides_the_shipped_one(tmp_path):
    ranges = pd.read_csv(table_path("plausible_ranges.csv"))
    ranges.loc[(ranges["quantity"] == "carbon_stock") & (ranges["pool"] == "forest"), "maximum"] = 500
    ranges.loc[(ranges["quantity"] == "carbon_stock") & (ranges["pool"] == "forest"), "source"] = "my own survey"
    path = tmp_path / "ranges.csv"
    ranges.to_csv(path, index=False)
    assert plausibility.max_stock_mg_ha("forest", table=path) == (500, "my own survey")
    assert plausibility.max_stock_mg_ha("forest", table=ranges)[0] == 500
    with pytest.raises(ImplausibleValueError, match="my own survey"):
        plausibility.check_stocks([600.0], "forest", table=path)
    with pytest.raises(InputError, match="lacks column"):
        plausibility.plausible_ranges(ranges.drop(columns="confidence"))
    with pytest.raises(InputError, match="not found"):
        plausibility.plausible_ranges(tmp_path / "none.csv")


def test_check_stocks_bounds_and_override():
    plausibility.check_stocks([0.0, 100.0, 1867.0, np.nan], "forest")
    with pytest.raises(ImplausibleValueError, match=r"negative stock in id\(s\) b"):
        plausibility.check_stocks([1.0, -1.0], "forest", ids=["a", "b"], source="x.csv")
    with pytest.raises(ImplausibleValueError, match="1867"):
        plausibility.check_stocks([2000.0], "forest")
    plausibility.check_stocks([-1.0, 1e9], "forest", allow_implausible=True)
    plausibility.check_stocks([87 * 30.0], "soil", depth_cm=30)
    with pytest.raises(ImplausibleValueError, match="2610"):
        plausibility.check_stocks([87 * 30.0 + 1], "soil", depth_cm=30)


def _trees(n: int = 40, **columns) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    dbh = rng.uniform(8, 45, n)
    frame = pd.DataFrame({"plot_id": np.repeat(["A", "B"], n // 2), "tree_id": np.arange(n),
                          "species": "Pinus massoniana", "dbh_cm": dbh, "height_m": 1.3 + 0.6 * dbh})
    return frame.assign(**columns)


def test_tree_unit_slips():
    plausibility.check_tree_units(_trees())
    with pytest.raises(ImplausibleValueError, match="dbh in mm"):
        plausibility.check_tree_units(_trees().assign(dbh_cm=lambda f: f["dbh_cm"] * 10), "t.csv")
    with pytest.raises(ImplausibleValueError, match="heights in cm"):
        plausibility.check_tree_units(_trees().assign(height_m=lambda f: f["height_m"] * 100))
    with pytest.raises(ImplausibleValueError, match="heights in dm"):
        plausibility.check_tree_units(_trees().assign(height_m=lambda f: f["height_m"] * 10))
    # a genuine list of giant trees passes with allow_implausible, while impossible values do not
    giants = _trees().assign(dbh_cm=lambda f: f["dbh_cm"] * 4)
    with pytest.raises(ImplausibleValueError):
        plausibility.check_tree_units(giants)
    plausibility.check_tree_units(giants, allow_implausible=True)
    with pytest.raises(ImplausibleValueError, match="largest known"):
        plausibility.check_tree_units(_trees().assign(dbh_cm=lambda f: f["dbh_cm"] * 50), allow_implausible=True)


def test_young_stems_in_mm_are_caught_by_their_slenderness():
    """6-11 cm Chinese fir in mm read 60-110 'cm', under the median bound: 886 Mg C/ha for 9.9. Open-grown
    olive and cork oak (height/diameter 11-17) are real trees, not a unit slip."""
    dbh_mm = 60 + 0.5 * np.arange(100)
    young = pd.DataFrame({"plot_id": "Q1", "tree_id": np.arange(100), "dbh_cm": dbh_mm,
                          "height_m": 1.3 + 0.07 * dbh_mm, "species": "杉木"})
    with pytest.raises(ImplausibleValueError, match=r"height-to-diameter ratio .* is 8\.53.*below 10.*dbh in mm"):
        plausibility.check_tree_units(young, "fir.csv")
    plausibility.check_tree_units(young.assign(dbh_cm=dbh_mm / 10), "fir.csv")  # in cm: ratio 77
    plausibility.check_tree_units(young, "fir.csv", allow_implausible=True)
    stout = pd.DataFrame({"plot_id": "O1", "tree_id": np.arange(9),
                          "dbh_cm": [38, 42, 35, 45, 40, 55, 60, 48, 70], "height_m": [5, 5.5, 4.8, 6, 5.2, 9, 10, 8.5, 11]})
    plausibility.check_tree_units(stout, "olive.csv")
    snags = young.assign(plot_id="Q2", dbh_cm=dbh_mm / 2, height_m=3.0, status="dead")  # broken tops: short, not mm
    plausibility.check_tree_units(snags, "snags.csv", dead=np.ones(len(snags), bool))
    forest.check_trees(pd.concat([young.assign(dbh_cm=dbh_mm / 10), snags], ignore_index=True))


def test_a_single_bad_tree_stays_a_per_row_error():
    """One diameter typo is not a unit slip: the per-row check (and --drop-invalid) handle it."""
    trees = _trees()
    trees.loc[3, "dbh_cm"] = 2000.0
    plausibility.check_tree_units(trees)
    with pytest.raises(InputError, match="dbh_cm missing, non-positive or above"):
        forest.check_trees(trees)
    kept, dropped = forest.check_trees(trees, drop_invalid=True)
    assert len(kept) == len(trees) - 1 and dropped.rows == [4]


def test_plot_area_slips():
    plots = pd.DataFrame({"plot_id": ["A", "B"], "area_ha": [0.04, 0.04]})
    plausibility.check_plot_area(plots, n_trees=[20, 20])
    with pytest.raises(ImplausibleValueError, match="m²"):
        plausibility.check_plot_area(plots.assign(area_ha=400.0), n_trees=[20, 20])
    with pytest.raises(ImplausibleValueError, match="m²"):
        plausibility.check_plot_area(plots.assign(area_ha=100.0), n_trees=[20, 20])
    with pytest.raises(ImplausibleValueError, match="every plot is 100 ha or larger.*m²"):
        plausibility.check_plot_area(plots.assign(area_ha=100.0), n_trees=[131, 110])  # 1.1-1.3 stems/ha
    plausibility.check_plot_area(plots.assign(area_ha=100.0), n_trees=[131, 110], allow_implausible=True)
    plausibility.check_plot_area(plots.assign(area_ha=[50.0, 100.0]), n_trees=[25000, 42000])  # ForestGEO-like
    with pytest.raises(ImplausibleValueError, match="mu"):
        plausibility.check_plot_area(plots.assign(area_ha=1.0), n_trees=[20, 20])
    # 1-ha plots with a forest's stem density are fine; so are open plots with allow_implausible
    plausibility.check_plot_area(plots.assign(area_ha=1.0), n_trees=[500, 650])
    plausibility.check_plot_area(plots.assign(area_ha=1.0), n_trees=[20, 20], allow_implausible=True)
    # an area above the largest plots is refused even then
    with pytest.raises(ImplausibleValueError, match="150"):
        plausibility.check_plot_area(plots.assign(area_ha=666.7), allow_implausible=True)


def test_forest_stocks_guards_and_override():
    trees = _trees()
    plots = pd.DataFrame({"plot_id": ["A", "B"], "area_ha": [0.04, 0.04]})
    good = forest.forest_stocks(trees, plots)
    assert (good.plots["carbon_mg_ha"] > 0).all()
    options = forest.TreeOptions(allometry=forest.ExpressionAllometry("1000*0.0673*(WD*D**2*H)**0.976"))
    with pytest.raises(ImplausibleValueError, match="Keith"):
        forest.forest_stocks(trees, plots, options, n_draws=50)
    big = forest.forest_stocks(trees, plots, options, allow_implausible=True)
    np.testing.assert_allclose(big.plots["carbon_mg_ha"], 1000 * good.plots["carbon_mg_ha"], rtol=1e-3)
    negative = forest.TreeOptions(allometry=forest.ExpressionAllometry("-0.0673*(WD*D**2*H)**0.976"))
    with pytest.raises(ImplausibleValueError, match="negative"):
        forest.forest_stocks(trees, plots, negative)
    with pytest.raises(ImplausibleValueError, match="trunk below breast height"):
        forest.forest_stocks(trees.drop(columns="height_m"), plots, forest.TreeOptions(e=40.0))


def test_guards_run_before_the_monte_carlo(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the Monte Carlo ran before the guards")

    monkeypatch.setattr(forest.montecarlo, "propagate", boom)
    plots = pd.DataFrame({"plot_id": ["A", "B"], "area_ha": [400.0, 400.0]})
    with pytest.raises(ImplausibleValueError, match="m²"):
        forest.forest_stocks(_trees(), plots, n_draws=100)
    options = forest.TreeOptions(allometry=forest.ExpressionAllometry("1000*0.0673*(WD*D**2*H)**0.976"))
    with pytest.raises(ImplausibleValueError, match="maximum"):
        forest.forest_stocks(_trees(), plots.assign(area_ha=0.04), options, n_draws=100)


def test_volume_route_bound():
    stands = pd.DataFrame({"plot_id": ["S1"], "species_group": ["chinese_fir"], "volume_m3_ha": [150.0]})
    assert forest.volume_stocks(stands)["carbon_mg_ha"].iloc[0] > 0
    table = forest.species_groups().copy()
    table["bef"] = table["bef"] * 1000
    with pytest.raises(ImplausibleValueError, match="species-table"):
        forest.volume_stocks(stands, species_table=table)
    forest.volume_stocks(stands, species_table=table, allow_implausible=True)


def _horizons(scale: float = 1.0, depth_scale: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"profile_id": ["S1"] * 3 + ["S2"] * 3,
                         "top_cm": np.array([0, 10, 30] * 2) * depth_scale,
                         "bottom_cm": np.array([10, 30, 100] * 2) * depth_scale,
                         "soc_g_kg": np.array([30, 15, 5, 25, 12, 4.0]) * scale,
                         "bulk_density_g_cm3": [1.1, 1.3, 1.5] * 2})


def test_soil_unit_slips():
    soil.soil_stocks(_horizons())
    with pytest.raises(ImplausibleValueError, match="SOC in %"):
        soil.soil_stocks(_horizons(scale=0.1))
    # a carbon-poor dryland set passes when the user says it is real
    soil.soil_stocks(_horizons(scale=0.1), allow_implausible=True)
    with pytest.raises(ImplausibleValueError, match="depths in m"):
        soil.soil_stocks(_horizons(depth_scale=0.01), allow_implausible=True)
    with pytest.raises(ImplausibleValueError, match="deepest bottom is 1000 cm.*depths in mm"):
        soil.soil_stocks(_horizons(depth_scale=10))
    soil.soil_stocks(_horizons(depth_scale=10), allow_implausible=True)  # a deep core, said to be real
    with pytest.raises(ImplausibleValueError, match="kg/m³"):
        soil.soil_stocks(_horizons().assign(bulk_density_g_cm3=1300.0))
    # pure organic matter at quartz's density: off the mixing curve, and above the stock bound when let through
    with pytest.raises(ImplausibleValueError, match="denser than 0.8 g/cm3 hold more than 0.15 carbon"):
        soil.soil_stocks(_horizons().assign(soc_g_kg=590.0, bulk_density_g_cm3=2.6))
    with pytest.raises(ImplausibleValueError, match="maximum"):
        plausibility.check_stocks([590 * 2.6 * 10 * 30], "soil", depth_cm=30)


def test_soil_coarse_fragments_as_fraction():
    in_pct = [0, 5, 10, 20, 35, 50.0]
    stocks = soil.soil_stocks(_horizons().assign(coarse_fragments_pct=in_pct))
    with pytest.raises(ImplausibleValueError, match=r"coarse_fragments_pct, row\(s\) 2, 3, 4, 5, 6.*fraction of 1.*by 100"):
        soil.soil_stocks(_horizons().assign(coarse_fragments_pct=np.array(in_pct) / 100))
    # stone-free profiles recorded as 0 and whole percents of 1 are not fractions
    soil.soil_stocks(_horizons().assign(coarse_fragments_pct=[0, 0, 1, 0, 1, 1.0]))
    soil.soil_stocks(_horizons().assign(coarse_fragments_pct=[0, 0.5, 0, 0, 0, 0]))
    passed = soil.soil_stocks(_horizons().assign(coarse_fragments_pct=np.array(in_pct) / 100),
                              allow_implausible=True)  # a near stone-free set, said to be real
    assert (passed.plots["carbon_mg_ha"].to_numpy() > stocks.plots["carbon_mg_ha"].to_numpy()).all()


def _cores(**changes) -> pd.DataFrame:
    return pd.DataFrame({"core_id": ["C1", "C1", "C2", "C2"], "top_cm": [0, 50, 0, 50],
                         "bottom_cm": [50, 100, 50, 100], "dry_bulk_density_g_cm3": [0.5, 0.6, 0.7, 0.8],
                         "fraction_carbon": [0.05, 0.04, 0.03, 0.02]}).assign(**changes)


def test_wetland_unit_slips():
    wetland.wetland_stocks(_cores())
    with pytest.raises(ImplausibleValueError, match="fraction_carbon in %"):
        wetland.wetland_stocks(_cores(fraction_carbon=[5.0, 4.0, 3.0, 2.0]))
    with pytest.raises(ImplausibleValueError, match="depths in m"):
        wetland.wetland_stocks(_cores(top_cm=[0, 0.5, 0, 0.5], bottom_cm=[0.5, 1, 0.5, 1]))
    with pytest.raises(ImplausibleValueError, match="kg/m³"):
        wetland.wetland_stocks(_cores(dry_bulk_density_g_cm3=[500.0, 600, 700, 800]))
    in_mm = _cores(top_cm=[0, 500, 0, 500], bottom_cm=[500, 1000, 500, 1000])  # a 1 m core in mm
    with pytest.raises(ImplausibleValueError, match=r"bottom_cm.*deepest bottom is 1000 cm.*depths in mm.*by 10"):
        wetland.wetland_stocks(in_mm)
    deep = wetland.wetland_stocks(in_mm, allow_implausible=True)  # a 10 m peat core, said to be real
    assert deep.plots["flag"].eq("complete").all()


def test_rename_units():
    plausibility.check_rename_units({"DBH": "dbh_cm", "SOC": "soc_g_kg", "depth_top": "top_cm"})
    for old, new in (("DBH_mm", "dbh_cm"), ("SOC_pct", "soc_g_kg"), ("area_m2", "area_ha"), ("面积_亩", "area_ha"),
                     ("height_cm", "height_m"), ("depth_m", "bottom_cm"), ("C_percent", "fraction_carbon")):
        with pytest.raises(ImplausibleValueError, match="--rename"):
            plausibility.check_rename_units({old: new})


def test_cli_allow_implausible_and_tables_written_together(tmp_path, capsys):
    trees, plots = tmp_path / "trees.csv", tmp_path / "plots.csv"
    _trees().to_csv(trees, index=False)
    pd.DataFrame({"plot_id": ["A", "B"], "area_ha": [0.04, 0.04]}).to_csv(plots, index=False)
    base = ["stocks", "forest", str(trees), "--plots", str(plots), "--draws", "0", "--quiet",
            "--allometry=1000*0.0673*(WD*D**2*H)**0.976"]
    assert main([*base, "--out", str(tmp_path / "o.csv")]) != 0
    assert "maximum" in capsys.readouterr().err and not (tmp_path / "o.csv").exists()
    assert main([*base, "--out", str(tmp_path / "o.csv"), "--allow-implausible"]) == 0
    assert (tmp_path / "o.csv").exists()
    # a tree table that cannot be written (no geometry for .gpkg): neither output appears
    code = main(["stocks", "forest", str(trees), "--plots", str(plots), "--draws", "0", "--quiet",
                 "--out", str(tmp_path / "p2.csv"), "--trees-out", str(tmp_path / "t2.gpkg")])
    assert code != 0
    assert not (tmp_path / "p2.csv").exists() and not (tmp_path / "t2.gpkg").exists()


def test_demo_world_passes_every_guard(tmp_path):
    from sinks.demo.world import make_world

    world = make_world(tmp_path / "w", size=150, seed=3)
    import geopandas as gpd

    result = forest.forest_stocks(pd.read_csv(world.trees), gpd.read_file(world.plots))
    assert result.plots["carbon_mg_ha"].max() < plausibility.max_stock_mg_ha("forest")[0]


def test_tree_status_dead_live_or_refused():
    plots = pd.DataFrame({"plot_id": ["A", "B"], "area_ha": [0.04, 0.04]})
    alive = forest.forest_stocks(_trees(), plots).plots.set_index("plot_id")["agb_mg_ha"]
    status = ["dead", "枯死", "standing dead"] + ["live", "", None, "活"] * 9 + ["Alive"]
    trees = _trees(status=status)
    mixed = forest.forest_stocks(trees, plots).plots.set_index("plot_id")["agb_mg_ha"]
    assert mixed["A"] < alive["A"] and mixed["B"] == pytest.approx(alive["B"])  # the dead are in plot A
    with pytest.raises(InputError, match=r"status 'cut', 'missing' in row\(s\) 2, 5 is neither dead"):
        forest.forest_stocks(_trees(status=["live", "cut", "live", "live", "missing"] + ["live"] * 35), plots)
    # a dead tree needs no height (it counts 0); a live one without it still does
    no_height = trees.assign(height_m=trees["height_m"].where(trees.index >= 3))
    same = forest.forest_stocks(no_height, plots, n_draws=50).plots.set_index("plot_id")["agb_mg_ha"]
    assert same["A"] == pytest.approx(mixed["A"])
    with pytest.raises(InputError, match=r"height_m missing in row\(s\) 4"):
        forest.forest_stocks(trees.assign(height_m=trees["height_m"].where(trees.index != 3)), plots)


def test_text_in_a_number_column_is_named_as_text():
    trees = _trees().astype({"dbh_cm": object, "height_m": object})
    trees.loc[2, "dbh_cm"] = "abc"
    with pytest.raises(InputError, match=r"non-numeric dbh_cm in row\(s\) 3 "):
        forest.check_trees(trees)
    trees = _trees().astype({"height_m": object})
    trees.loc[4, "height_m"] = "tall"  # was read as a missing height, and modelled
    with pytest.raises(InputError, match=r"non-numeric height_m in row\(s\) 5 "):
        forest.check_trees(trees)


def test_a_species_column_under_another_name_gets_a_hint():
    plots = pd.DataFrame({"plot_id": ["A", "B"], "area_ha": [0.04, 0.04]})
    trees = _trees().rename(columns={"species": "species_zh"}).assign(species_zh="马尾松")
    with pytest.raises(InputError, match="--rename species_zh=species"):
        forest.forest_stocks(trees, plots)


def test_every_shipped_table_has_as_many_fields_in_each_row_as_in_its_header():
    """A stray comma in an unquoted note shifts a row's columns (pandas then takes the first as an
    index, silently: the wetland conversion table lost its names so)."""
    import csv
    from pathlib import Path

    import sinks

    tables = sorted(Path(sinks.__file__).parent.rglob("*.csv"))
    assert len(tables) >= 10
    for path in tables:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
        widths = {len(row) for row in rows}
        assert widths == {len(rows[0])}, f"{path.name}: rows of {sorted(widths)} fields"


def test_heights_a_model_predicts_above_the_tallest_tree_are_refused():
    """A height model fitted on small trees and applied to giants (or on a sample in dm)."""
    from sinks.pools import height

    dbh = np.linspace(5, 20, 20)
    model = height.fit_height_model(dbh, 1.3 + 2.5 * dbh, "log1")  # steep: 51 m at 20 cm
    plausibility.check_predicted_heights(model.predict(dbh), dbh, np.arange(20), model, "trees")
    giants = np.array([30.0, 400.0])
    with pytest.raises(ImplausibleValueError, match=r"trees: column height_m, row\(s\) 8: the height model \(log1"):
        plausibility.check_predicted_heights(model.predict(giants), giants, np.array([3, 7]), model, "trees")


@pytest.mark.parametrize("soc, bd", [([115.0], [0.82]), ([105.0, 112.0], [0.83, 0.81]),
                                     ([140.0, 130.0, 120.0], [0.85, 0.88, 0.9])])
def test_organic_rich_dense_horizons_of_real_soils_pass(soc, bd):
    """A peat's mineral transition, an andic topsoil survey: carbon-rich at up to 0.9 g/cm3, real."""
    n = len(soc)
    horizons = pd.DataFrame({"profile_id": [f"A{i}" for i in range(n)], "top_cm": 0.0, "bottom_cm": 20.0,
                             "soc_g_kg": soc, "bulk_density_g_cm3": bd})
    plausibility.check_soil_units(horizons, "andic")
