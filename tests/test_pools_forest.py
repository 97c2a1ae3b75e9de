"""Forest pools: parity with the BIOMASS R package on Nouragues, H-D models, wood density,
allometries, Monte Carlo, the stand-volume route, bad input and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sinks.cli import main
from sinks.errors import InputError
from sinks.pools import forest, height, montecarlo
from sinks.pools.allometry import ExpressionAllometry, chave2014_eq4, chave2014_eq7, read_allometry_table
from sinks.pools.wood_density import lookup_wood_density, read_wood_density_table
from tests.badinput import assert_refused

#: BIOMASS vignette plot totals (Mg), REFERENCE_tree_agb_biomass_vignette.csv, per the data README.
PLOT_TOTALS = {201: 456.39, 204: 541.97, 213: 386.52, 223: 284.95}
#: Chave 2014 stress index the reference AGB_Chave and H_chave used (data MANIFEST note).
E_NOURAGUES = -0.1290056


@pytest.fixture(scope="module")
def nouragues(shared_data):
    folder = shared_data / "forest" / "nouragues"
    return {
        "ref": pd.read_csv(folder / "REFERENCE_tree_agb_biomass_vignette.csv"),
        "hd": pd.read_csv(folder / "height_diameter.csv"),
        "draws": pd.read_csv(folder / "REFERENCE_agb_simu_4plots.csv.gz"),
        "wsg": shared_data / "forest" / "wood_density" / "wsg_estimates.csv.gz",
        "gwdd": shared_data / "forest" / "wood_density" / "gwdd_wdData.csv.gz",
    }


def _rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, float) / np.asarray(b, float) - 1)))


PLOTS = pd.DataFrame({"plot_id": [201, 204, 213, 223], "area_ha": 1.0})


# --- parity with BIOMASS ----------------------------------------------------------------------


def test_heights_and_agb_match_biomass(nouragues):
    ref, hd = nouragues["ref"], nouragues["hd"]
    model = height.fit_height_model(hd["D"], hd["H"], "log2", weighted=True)
    assert model.n == int(hd["H"].notna().sum()) == 888
    assert _rel(model.predict(ref["D"]), ref["H_model"]) < 1e-6
    assert _rel(height.feldpausch_model("GuianaShield").predict(ref["D"]), ref["H_feldspausch"]) < 1e-6
    assert _rel(height.chave_e_model(E_NOURAGUES).predict(ref["D"]), ref["H_chave"]) < 1e-6
    # AGB with the reference's WD as given (its WD column is row-slipped, see the data README)
    trees = pd.DataFrame({"plot_id": ref["Plot"], "tree_id": ref["rownames"], "dbh_cm": ref["D"],
                          "wood_density_g_cm3": ref["WD"]})
    stocks = forest.forest_stocks(trees, PLOTS, forest.TreeOptions(height_model=model))
    plot_table, tree_table = stocks.plots, stocks.trees
    assert _rel(tree_table["height_used_m"], ref["H_model"]) < 1e-6
    assert _rel(tree_table["agb_mg"], ref["AGB"]) < 1e-6
    totals = dict(zip(plot_table["plot_id"], plot_table["agb_mg_ha"]))  # 1-ha plots: Mg/ha = Mg
    for plot_id, total in PLOT_TOTALS.items():
        assert totals[plot_id] == pytest.approx(total, abs=0.01)
    assert _rel(chave2014_eq7(ref["D"], ref["WD"], E_NOURAGUES), ref["AGB_Chave"]) < 1e-6
    # the same through the eq. 7 route of the tree table (no heights, E given)
    stocks = forest.forest_stocks(trees, PLOTS, forest.TreeOptions(e=E_NOURAGUES))
    eq7_trees, info = stocks.trees, stocks.info
    assert info["route"] == "eq7" and set(eq7_trees["height_source"]) == {"none"}
    assert _rel(eq7_trees["agb_mg"], ref["AGB_Chave"]) < 1e-6


def test_wood_density_lookup_reproduces_biomass(nouragues):
    ref = nouragues["ref"]
    trees = pd.DataFrame({"plot_id": ref["Plot"], "genus": ref["GenusCorrected"], "species": ref["SpeciesCorrected"]})
    result = lookup_wood_density(trees, table=nouragues["wsg"])
    # BIOMASS getWoodDensity(genus, species, stand = Plot) gave the reference's WD values; the
    # reference table has them in slipped row order, so compare them as a multiset
    assert np.max(np.abs(np.sort(result.wd_g_cm3) - np.sort(ref["WD"]))) < 1e-9
    assert result.counts() == {"species": 1635, "genus": 246, "plot": 169}
    assert "labatia fimbriata" in result.unmatched_names  # reported, not dropped
    with_family = lookup_wood_density(trees.assign(family=ref["family"]), table=nouragues["wsg"])
    assert with_family.counts()["family"] == 61
    assert np.all(with_family.wd_sd_g_cm3 >= 0) and np.all(np.isfinite(with_family.wd_sd_g_cm3))


def test_monte_carlo_matches_biomass_draws(nouragues):
    ref, hd = nouragues["ref"], nouragues["hd"]
    # as in BIOMASS's Vignette_predict_map_AGBD: log2 H-D model without weights, family given,
    # chave2004 diameter errors, WD sd from the lookup
    model = height.fit_height_model(hd["D"], hd["H"], "log2")
    trees = pd.DataFrame({"plot_id": ref["Plot"], "tree_id": ref["rownames"], "dbh_cm": ref["D"],
                          "genus": ref["GenusCorrected"], "species": ref["SpeciesCorrected"], "family": ref["family"]})
    options = forest.TreeOptions(height_model=model, wood_density_table=nouragues["wsg"])
    plot_table = forest.forest_stocks(trees, PLOTS, options, n_draws=1000, seed=7).plots
    totals = nouragues["draws"].groupby(ref["Plot"].to_numpy()).sum()
    ref_stats = montecarlo.summarise(totals.to_numpy())
    assert _rel(plot_table["agb_mc_mean_mg_ha"], ref_stats["mean"]) < 0.02
    assert _rel(plot_table["agb_mc_q025_mg_ha"], ref_stats["q025"]) < 0.10
    assert _rel(plot_table["agb_mc_q975_mg_ha"], ref_stats["q975"]) < 0.10
    assert np.all(plot_table["carbon_sd_mg_ha"] > 0)


# --- height models -----------------------------------------------------------------------------


@pytest.mark.parametrize("method, truth", [("michaelis", (45.0, 30.0)), ("weibull", (40.0, 35.0, 0.9))])
def test_nonlinear_height_models_recover_known_curves(method, truth):
    rng = np.random.default_rng(0)
    dbh = rng.uniform(5, 120, 400)
    curve = height.HeightModel(method, truth, 0.0)
    noisy = curve.predict(dbh) + rng.normal(0, 0.5, dbh.size)
    fitted = height.fit_height_model(dbh, noisy, method)
    assert np.allclose(fitted.coefficients, truth, rtol=0.05)
    assert fitted.rse_m == pytest.approx(0.5, rel=0.15)


def test_compare_models_and_too_few_heights(nouragues):
    hd = nouragues["hd"]
    table = height.compare_height_models(hd["D"], hd["H"], weighted=True)
    assert list(table["method"]) == list(height.FITTED_METHODS)
    assert table.loc[table["method"] == "log2", "rse_log"].iloc[0] < table.loc[table["method"] == "log1", "rse_log"].iloc[0]
    with pytest.raises(InputError, match="at least 15"):
        height.fit_height_model(hd["D"][:30], hd["H"][:30].where(hd.index[:30] < 10), "log1")
    with pytest.raises(InputError, match="unknown height-diameter model"):
        height.fit_height_model(hd["D"], hd["H"], "cubic")


# --- allometries and wood density tables -------------------------------------------------------


def test_user_allometry_equals_builtin_and_checks_names():
    dbh, h, wd = np.array([10.0, 35.0, 80.0]), np.array([12.0, 25.0, 38.0]), np.array([0.5, 0.6, 0.7])
    user = ExpressionAllometry("0.0673 * (WD * D**2 * H)**0.976")
    assert np.allclose(user.agb_mg(dbh, h, wd), chave2014_eq4(dbh, h, wd), rtol=1e-12)
    with pytest.raises(InputError, match="unknown name"):
        ExpressionAllometry("a * D**b")
    trees = pd.DataFrame({"plot_id": 1, "tree_id": [1, 2, 3], "dbh_cm": dbh, "height_m": h,
                          "species": ["杉木", "马尾松", "Quercus variabilis"]})
    table = pd.DataFrame({"species_group": ["chinese_fir"], "equation": ["a * D**b"], "a": [0.1], "b": [2.0],
                          "source": ["test coefficients"]})
    tree_table = forest.forest_stocks(trees, pd.DataFrame({"plot_id": [1], "area_ha": [0.06]}),
                                      forest.TreeOptions(allometry=read_allometry_table(table))).trees
    assert tree_table["agb_mg"].iloc[0] == pytest.approx(0.1 * 10.0**2 / 1000)
    assert tree_table["allometry"].tolist()[1:] == ["chave2014_eq4", "chave2014_eq4"]
    assert tree_table["wood_density_level"].tolist() == ["species_group"] * 3
    assert tree_table["species_group"].tolist() == ["chinese_fir", "masson_pine", "oaks"]


def test_gwdd_records_aggregate_by_level(nouragues):
    table = read_wood_density_table(nouragues["gwdd"])
    assert set(table["level"]) == {"species", "genus", "family"}
    assert table["wd_g_cm3"].between(0.05, 1.5).all() and (table["wd_sd_g_cm3"] >= 0).all()
    assert (table.loc[table["level"] == "family", "wd_sd_g_cm3"] > 0).mean() > 0.9
    own = pd.DataFrame({"genus": ["Cunninghamia"], "species": [None], "wood_density_g_cm3": [0.31]})
    trees = pd.DataFrame({"plot_id": [1, 1], "species": ["Cunninghamia lanceolata", "Unknown thing"]})
    result = lookup_wood_density(trees, table=own)
    assert result.level.tolist() == ["genus", "plot"] and np.allclose(result.wd_g_cm3, 0.31)


# --- Monte Carlo mechanics -------------------------------------------------------------------


def _draw_inputs(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return montecarlo.TreeDraws(
        plot_code=rng.integers(0, 7, n), dbh_cm=rng.uniform(5, 80, n), wd_g_cm3=rng.uniform(0.3, 0.9, n),
        wd_sd_g_cm3=np.full(n, 0.08), height_m=rng.uniform(5, 35, n), height_sd_m=np.full(n, 1.0),
        height_mode=np.full(n, 2), height_model_index=np.full(n, -1), carbon_factor=np.full(n, 0.6))


def test_monte_carlo_is_reproducible_and_thread_independent():
    trees = _draw_inputs()
    a = montecarlo.propagate(trees, 7, n_draws=200, diameter_error="chave2004", seed=5, chunk_trees=64, n_jobs=1)
    b = montecarlo.propagate(trees, 7, n_draws=200, diameter_error="chave2004", seed=5, chunk_trees=64, n_jobs=2)
    assert np.array_equal(a.agb_mg, b.agb_mg)
    assert np.allclose(a.carbon_mg, a.agb_mg * 0.6)
    c = montecarlo.propagate(trees, 7, n_draws=200, diameter_error="chave2004", seed=6, chunk_trees=64)
    assert not np.array_equal(a.agb_mg, c.agb_mg)


def test_monte_carlo_without_errors_is_the_deterministic_value():
    trees = _draw_inputs()
    trees.wd_sd_g_cm3[:] = 0.0
    trees.height_sd_m[:] = 0.0
    user = ExpressionAllometry("0.0673 * (WD * D**2 * H)**0.976")
    result = montecarlo.propagate(trees, 7, allometry=user, n_draws=20, diameter_error=None, seed=1)
    expected = np.bincount(trees.plot_code, weights=chave2014_eq4(trees.dbh_cm, trees.height_m, trees.wd_g_cm3),
                           minlength=7)
    assert np.allclose(result.agb_mg, expected[:, None], rtol=1e-12)


def test_truncated_normal_stays_in_bounds():
    rng = np.random.default_rng(3)
    draws = montecarlo.truncated_normal(rng, np.array([0.1, 0.7, 1.35]), np.array([0.3, 0.1, 0.5]), 0.08, 1.39, (3, 20000))
    assert draws.min() >= 0.08 and draws.max() <= 1.39
    assert draws[1].mean() == pytest.approx(0.7, abs=0.005)


# --- stand-volume route ------------------------------------------------------------------------


def test_volume_route_by_hand():
    stands = pd.DataFrame({"plot_id": ["A", "A", "B"], "species_group": ["杉木", "马尾松", "Eucalyptus"],
                           "volume_m3_ha": [100.0, 50.0, 80.0], "volume_sd_m3_ha": [10.0, 5.0, 8.0]})
    out = forest.volume_stocks(stands).set_index("plot_id")
    groups = forest.species_groups().set_index("group")

    def by_hand(group, volume):
        g = groups.loc[group]
        return volume * g["wood_density_g_cm3"] * g["bef"] * (1 + g["root_shoot"]) * g["carbon_fraction"]

    a = by_hand("chinese_fir", 100.0) + by_hand("masson_pine", 50.0)
    assert out.loc["A", "carbon_mg_ha"] == pytest.approx(a)
    assert out.loc["B", "carbon_mg_ha"] == pytest.approx(by_hand("eucalyptus", 80.0))
    assert out.loc["A", "co2e_mg_ha"] == pytest.approx(a * 44 / 12)
    assert out.loc["B", "carbon_sd_mg_ha"] == pytest.approx(by_hand("eucalyptus", 8.0))
    assert out.loc["A", "species_groups"] == "chinese_fir;masson_pine"
    with pytest.raises(InputError, match="no volume-route factors for group.*bamboo: Bamboo stands have no stem volume"):
        forest.volume_stocks(pd.DataFrame({"plot_id": [1], "species_group": ["竹"], "volume_m3_ha": [10.0]}))
    with pytest.raises(InputError, match=r"not in the table in row\(s\) 1"):
        forest.volume_stocks(pd.DataFrame({"plot_id": [1], "species_group": ["teak"], "volume_m3_ha": [10.0]}))
    # a row copied with padded text ('杉木' and ' 杉木 ') was summed twice
    with pytest.raises(InputError, match=r"row\(s\) 1, 2 repeat another row"):
        forest.volume_stocks(pd.DataFrame({"plot_id": ["A", "A"], "species_group": ["杉木", " chinese_fir "],
                                           "volume_m3_ha": [120.0, 120.0]}))
    with pytest.raises(InputError, match=r"volume_sd_m3_ha negative in row\(s\) 3"):
        forest.volume_stocks(stands.assign(volume_sd_m3_ha=[10.0, 5.0, -8.0]))


@pytest.mark.parametrize("column, value, words", [("bef", 0.9, "at least 1"),
                                                  ("root_shoot", -0.246, "at least 0"),
                                                  ("carbon_fraction", 52.0, "at most 1"),
                                                  ("wood_density_g_cm3", 307.0, "at most 1.5")])
def test_species_table_factors_outside_their_definition_are_refused(tmp_path, column, value, words):
    table = forest.species_groups()
    table.loc[0, column] = value
    table.to_csv(tmp_path / "groups.csv", index=False)
    with pytest.raises(InputError, match=f"groups.csv: {column} must be .*{words}.*chinese_fir {value:g}"):
        forest.species_groups(tmp_path / "groups.csv")


def test_species_group_table_cites_every_value():
    table = forest.species_groups()
    assert table["source"].notna().all() and table["confidence"].notna().all()
    assert {"杉木", "马尾松", "柏木", "栎类", "桉树", "竹"} <= set(table["group_zh"])


# --- bad input ---------------------------------------------------------------------------------


def _trees(**changes):
    trees = pd.DataFrame({"plot_id": [1, 1, 1, 2], "tree_id": [1, 2, 3, 1], "dbh_cm": [12.0, 20.0, 31.0, 15.0],
                          "height_m": [10.0, 14.0, 18.0, 12.0], "species": ["杉木"] * 4})
    for column, (row, value) in changes.items():
        trees.loc[row, column] = value
    return trees


@pytest.mark.parametrize("column, value, message", [
    ("dbh_cm", -3.0, r"dbh_cm missing, non-positive .* row\(s\) 2"),
    ("height_m", 1.0, r"below breast height .* row\(s\) 2"),
    ("tree_id", 1, r"duplicate \(plot_id, tree_id\) in row\(s\) 1-2|duplicate \(plot_id, tree_id\) in row\(s\) 1, 2"),
])
def test_impossible_trees_are_named_or_dropped(column, value, message):
    trees = _trees(**{column: (1, value)})
    with pytest.raises(InputError, match=message):
        forest.tree_biomass(trees)
    table, dropped, _ = forest.tree_biomass(trees, drop_invalid=True)
    assert len(table) == 4 - len(dropped.rows) and dropped.rows and dropped.reasons


def test_units_in_column_names():
    trees = _trees().rename(columns={"dbh_cm": "dbh_mm"})
    trees["dbh_mm"] *= 10
    table, _, _ = forest.tree_biomass(trees)
    assert np.allclose(table["dbh_cm"], _trees()["dbh_cm"])
    with pytest.raises(InputError, match="unknown units for column"):
        forest.tree_biomass(_trees().rename(columns={"dbh_cm": "dbh"}))


def test_missing_height_needs_a_model_or_e():
    trees = _trees(height_m=(2, np.nan))
    with pytest.raises(InputError, match=r"height_m missing in row\(s\) 3"):
        forest.tree_biomass(trees)


# --- command line --------------------------------------------------------------------------


def test_cli_tree_route_with_height_sample(nouragues, tmp_path, capsys):
    ref, hd = nouragues["ref"], nouragues["hd"]
    trees = pd.DataFrame({"Plot": ref["Plot"], "tree": ref["rownames"], "D": ref["D"], "wd": ref["WD"]})
    trees.to_csv(tmp_path / "trees.csv", index=False)
    hd.to_csv(tmp_path / "hd.csv", index=False)  # D and H: each --rename applies to whichever file has the column
    PLOTS.to_csv(tmp_path / "plots.csv", index=False)
    code = main(["stocks", "forest", str(tmp_path / "trees.csv"), "--plots", str(tmp_path / "plots.csv"),
                 "--rename", "Plot=plot_id", "--rename", "tree=tree_id", "--rename", "D=dbh_cm",
                 "--rename", "H=height_m",
                 "--rename", "wd=wood_density_g_cm3", "--height-sample", str(tmp_path / "hd.csv"),
                 "--hd-weighted", "--draws", "200", "--quiet", "--out", str(tmp_path / "plots_out.csv"),
                 "--trees-out", str(tmp_path / "trees_out.csv")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "log2 H-D model" in out and "Monte Carlo (200 draws)" in out
    plots = pd.read_csv(tmp_path / "plots_out.csv")
    assert plots["plot_id"].tolist() == [201, 204, 213, 223]
    assert np.allclose(plots["agb_mg_ha"], list(PLOT_TOTALS.values()), atol=0.01)
    assert (plots["carbon_sd_mg_ha"] > 0).all()
    per_tree = pd.read_csv(tmp_path / "trees_out.csv")
    assert _rel(per_tree["agb_mg"], ref["AGB"]) < 1e-6
    assert {"height_used_m", "height_source", "wood_density_used", "wood_density_level", "agb_mg",
            "carbon_mg"} <= set(per_tree.columns)
    assert main(["stocks", "forest", str(tmp_path / "trees.csv"), "--plots", str(tmp_path / "plots.csv"),
                 "--rename", "Hgt=height_m", "--height-sample", str(tmp_path / "hd.csv"), "--quiet",
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "names columns in neither" in capsys.readouterr().err


def test_cli_volume_route_and_bad_rows(tmp_path, capsys):
    pd.DataFrame({"plot_id": ["s1", "s2"], "species_group": ["柏木", "栎类"], "volume_m3_ha": [120.0, 60.0]}).to_csv(
        tmp_path / "stands.csv", index=False)
    assert main(["stocks", "forest", str(tmp_path / "stands.csv"), "--out", str(tmp_path / "v.csv")]) == 0
    assert pd.read_csv(tmp_path / "v.csv")["plot_id"].tolist() == ["s1", "s2"]
    capsys.readouterr()
    _trees(dbh_cm=(1, -3.0)).to_csv(tmp_path / "bad.csv", index=False)
    argv = ["stocks", "forest", str(tmp_path / "bad.csv"), "--area-ha", "0.04", "--draws", "0", "--out", str(tmp_path / "o.csv")]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "row(s) 2" in err and "Traceback" not in err and not (tmp_path / "o.csv").exists()
    assert main(argv + ["--drop-invalid"]) == 0
    assert "row 2: dbh_cm missing" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "o.csv")) == 2


def test_stand_volume_table_refuses_tree_options_and_repeated_groups_and_places_stands(tmp_path, capsys):
    """--plots/--area-ha/--draws were accepted and ignored; two rows of one plot's group were summed
    (97.5 Mg C/ha for 48.75); x/y with --crs gave 'a .gpkg needs geometry'."""
    stands = pd.DataFrame({"plot_id": ["s1", "s2"], "species_group": ["杉木", "杉木"], "volume_m3_ha": [150.0, 10.0],
                           "x": [400000.0, 401000.0], "y": [3300000.0, 3300500.0]})
    stands.to_csv(tmp_path / "st.csv", index=False)
    base = ["stocks", "forest", str(tmp_path / "st.csv")]
    assert_refused(base + ["--area-ha", "7", "--draws", "10", "--out", str(tmp_path / "a.csv")], capsys,
                   keywords=["--area-ha, --draws are for a tree list", "stand-volume table"], watch=tmp_path)
    assert main(base + ["--crs", "EPSG:32648", "--out", str(tmp_path / "st.gpkg"), "--quiet"]) == 0
    import geopandas as gpd

    placed = gpd.read_file(tmp_path / "st.gpkg")
    assert placed.crs.to_epsg() == 32648 and placed.geometry.x.tolist() == [400000.0, 401000.0]
    pd.concat([stands, stands.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    assert_refused(["stocks", "forest", str(tmp_path / "dup.csv"), "--out", str(tmp_path / "d.csv")], capsys,
                   keywords=["row(s) 1, 3 repeat another row in every column", "plot s1"], watch=tmp_path)
    # two species of one group in a stand, listed apart (or one species in two layers): summed
    two = pd.concat([stands, stands.iloc[:1].assign(species_group="chinese_fir", volume_m3_ha=50.0)])
    summed = forest.volume_stocks(two.drop(columns=["x", "y"]))
    one = forest.volume_stocks(stands.drop(columns=["x", "y"]).assign(volume_m3_ha=[200.0, 10.0]))
    assert summed["carbon_mg_ha"].iloc[0] == pytest.approx(one["carbon_mg_ha"].iloc[0])
    pd.DataFrame({"plot_id": ["s1"], "species_group": ["杉木"], "Volume_m3_ha": [120.0]}).to_csv(tmp_path / "v.csv",
                                                                                               index=False)
    assert_refused(["stocks", "forest", str(tmp_path / "v.csv"), "--out", str(tmp_path / "v_out.csv")], capsys,
                   keywords=["did you mean 'Volume_m3_ha'", "--rename Volume_m3_ha=volume_m3_ha"], watch=tmp_path)


def test_cli_tree_list_is_its_own_height_sample(tmp_path, capsys):
    """Heights measured on some trees fit the H-D model that fills the others; measured ones stay."""
    rng = np.random.default_rng(3)
    dbh = rng.uniform(8, 45, 40)
    height = np.exp(0.9 + 0.55 * np.log(dbh)) * np.exp(rng.normal(0, 0.05, 40))
    height[::2] = np.nan  # every other tree unmeasured
    trees = pd.DataFrame({"plot_id": np.repeat(["a", "b"], 20), "tree_id": np.tile(np.arange(20), 2),
                          "dbh_cm": dbh, "height_m": height, "species": "杉木"})
    trees.to_csv(tmp_path / "trees.csv", index=False)
    assert main(["stocks", "forest", str(tmp_path / "trees.csv"), "--area-ha", "0.0667", "--hd-model", "log1",
                 "--height-sample", str(tmp_path / "trees.csv"), "--draws", "0", "--quiet",
                 "--out", str(tmp_path / "plots.csv"), "--trees-out", str(tmp_path / "out.csv")]) == 0
    out = pd.read_csv(tmp_path / "out.csv")
    measured = np.isfinite(height)
    assert (out["height_source"][measured] == "measured").all() and (out["height_source"][~measured] == "log1").all()
    assert np.allclose(out["height_used_m"][measured], height[measured])
    expected = np.exp(0.9 + 0.55 * np.log(dbh[~measured]))
    assert np.allclose(out["height_used_m"][~measured], expected, rtol=0.05)  # the fitted curve, not the noise
    assert (out["allometry"] == "chave2014_eq4").all()


def test_the_python_monte_carlo_is_reproducible_by_default():
    """The CLI's --seed defaults to 1; Python's seed was None, so carbon_sd changed run to run."""
    trees = _trees()
    plots = pd.DataFrame({"plot_id": sorted(trees["plot_id"].unique()), "area_ha": 0.1})
    one, two = (forest.forest_stocks(trees, plots, n_draws=50).plots["carbon_sd_mg_ha"] for _ in range(2))
    pd.testing.assert_series_equal(one, two)


def test_ids_of_a_csv_match_a_geopackage_s_numbers():
    """Text ids (a CSV's, read as text) against numbers (a GeoPackage's integers, a float column)."""
    from sinks.io import matching_ids

    text, numbers = matching_ids(pd.Series(["201", "201.0", "007", "1.10"]), pd.Series([201, 7.0, 3.5]))
    assert text.tolist() == ["201", "201", "007", "1.10"] and numbers.tolist() == ["201", "7", "3.5"]
    same = pd.Series(["a", "b"])
    assert matching_ids(same, same)[0] is same  # both text: as they are
