"""The demo county end to end: the map recovers the hidden truth, outputs are complete."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio

from sinks.cli import main
from sinks.demo.world import make_world
from sinks.pools.forest import forest_stocks


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    return out


def test_world_is_deterministic(tmp_path):
    a, b = make_world(tmp_path / "a", size=150, seed=7), make_world(tmp_path / "b", size=150, seed=7)
    pd.testing.assert_frame_equal(pd.read_csv(a.trees), pd.read_csv(b.trees))
    with rasterio.open(a.reflectance) as ra, rasterio.open(b.reflectance) as rb:
        np.testing.assert_array_equal(ra.read(), rb.read())


def test_plot_carbon_is_hidden_truth_times_the_known_measurement_noise(tmp_path):
    import geopandas as gpd

    from sinks.demo.world import NOISE_SD_LOG, PLOTS_PER_CLUSTER

    world = make_world(tmp_path, size=200, seed=11)
    plots = gpd.read_file(world.plots)
    plot_table = forest_stocks(pd.read_csv(world.trees), plots).plots
    with rasterio.open(world.carbon_truth) as src:
        truth = np.array([v[0] for v in src.sample(zip(plot_table.geometry.x, plot_table.geometry.y))])
    forested = truth > 0
    assert np.all(plot_table["carbon_mg_ha"].fillna(0).to_numpy()[~forested] == 0)
    log_ratio = np.log(plot_table["carbon_mg_ha"].to_numpy()[forested] / truth[forested])
    level = plots["noise_level"].to_numpy()[forested]
    for name, sigma in NOISE_SD_LOG.items():  # mean-preserving lognormal noise of the crew's level
        part = log_ratio[level == name]
        assert len(part) > 30
        assert abs(part.std() - sigma) < 0.3 * sigma + 0.02, (name, part.std())
        assert abs(np.mean(np.exp(part)) - 1) < 0.06
    # clustered: every cluster holds its plots, each with one crew (noise level)
    assert (plots.groupby("cluster")["plot_id"].count() <= PLOTS_PER_CLUSTER).all()
    assert (plots.groupby("cluster")["noise_level"].nunique() == 1).all()


def test_test_plots_reach_the_region_no_plot_samples(tmp_path):
    import geopandas as gpd

    from sinks.demo.world import REMOTE_CENTRE, REMOTE_RADIUS, simulate_test_plots

    size = 200
    world = make_world(tmp_path, size=size, seed=3)
    test_plots, trees = simulate_test_plots(world, 400, seed=1)
    with rasterio.open(world.dem) as src:
        transform = src.transform

    def in_remote(frame):
        cols, rows = ~transform @ (frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy())
        return ((rows - REMOTE_CENTRE[0] * size) ** 2 + (cols - REMOTE_CENTRE[1] * size) ** 2
                <= (REMOTE_RADIUS * size) ** 2)

    assert not in_remote(gpd.read_file(world.plots)).any()
    assert in_remote(test_plots).sum() > 10
    assert set(trees["plot_id"]) <= set(test_plots["plot_id"])
    assert {"carbon_truth_mg_ha", "noise_level", "measurement_sd_mg_ha"} <= set(test_plots.columns)


def test_demo_writes_every_output(demo):
    for path in ("maps/carbon_2025.tif", "models/demo_county/metadata.json", "models/demo_county/model.json",
                 "plots/plot_stocks.gpkg", "plots/features.csv", "features/demo_county.toml",
                 "training/demo_county.toml", "reports/demo_check.json", "data/README.txt",
                 "reports/eligibility.json", "reports/eligibility.gpkg"):
        assert (demo / path).exists(), path
    assert not list(demo.rglob("*.partial*"))


def test_demo_map_is_a_cog_with_named_bands_and_provenance(demo):
    with rasterio.open(demo / "maps" / "carbon_2025.tif") as src:
        assert src.descriptions == ("carbon", "lower", "upper", "di", "aoa")
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.tags(1)["units"] == "Mg C/ha"
        assert src.nodata == -9999.0
        assert src.tags()["sinks_bundle_id"] == json.loads((demo / "models/demo_county/metadata.json").read_text())["bundle_id"]
        assert src.profile["tiled"]


def test_demo_map_recovers_hidden_truth(demo):
    checks = json.loads((demo / "reports" / "demo_check.json").read_text())["checks"]
    truth = checks["map_vs_truth"]
    # measured on seed 2025: R2 0.93 (all pixels), 0.79 (forest pixels), coverage 0.95
    assert truth["r2"] > 0.80
    assert truth["r2_forest_pixels"] > 0.55
    assert 0.85 <= truth["interval_coverage"] <= 0.97
    assert abs(truth["map_total_mg_c"] / truth["truth_total_mg_c"] - 1) < 0.10
    assert truth["pixels_nodata"] > 0  # the simulated cloud stays nodata
    assert checks["validation"]["spatial"]["r2"] > 0.7


def test_demo_eligibility_verdicts_match_known_truth(demo):
    checks = json.loads((demo / "reports" / "demo_check.json").read_text())["checks"]["eligibility"]
    assert checks["n"] == 23 and checks["agree"] == 23, checks["disagree"]
    assert checks["verdicts"] == {"eligible": 10, "ineligible": 13, "undetermined": 0}


def test_demo_intervals_cover_independent_test_plots_at_their_level(demo):
    """Issue must-show: independent test plots with the demo's own measurement noise.

    Measured (seed 2025, 1,980 test plots; seeds 2, 3 and 4 in brackets): inside the AOA 82 (79, 77,
    81) % at 80 %, 92 (90, 88, 92) % at 90 %, 96 (96, 93, 95) % at 95 %; the noiseless truth 90, 97,
    99 %; width-DI rank correlation 0.22 (0.42, 0.29, 0.43).
    """
    test = json.loads((demo / "reports" / "demo_check.json").read_text())["checks"]["intervals_vs_test_plots"]
    assert test["n"] > 1900
    for key, got in test["levels"].items():
        level = float(key)
        assert got["n_inside"] > 1500 and got["n_outside"] > 50
        assert abs(got["inside_aoa"] - level) <= 0.03, (level, got["inside_aoa"])
        assert got["truth_inside_aoa"] >= level - 0.01  # the noiseless field: at or above nominal
        # outside the AOA there is no guarantee, and it shows
        assert got["outside_aoa"] < got["inside_aoa"]
        assert got["mean_width_outside"] > got["mean_width_inside"]
        # high-noise plots are covered less often than low-noise ones (reported, not corrected)
        assert got["inside_by_noise"]["high"] < got["inside_by_noise"]["low"]
        assert got["width_di_spearman"] > 0.1  # the target is 0.3; see the docstring


def test_plot_weights_from_the_known_measurement_sd_bring_the_map_closer_to_the_truth(demo, tmp_path):
    """Issue 9 item 5 on the demo county: inverse-variance weights (sinks.learn.weights).

    Measured against the noiseless truth at 2,000 independent test plots inside the AOA: RMSE 13.1
    -> 11.6 Mg C/ha (seed 2025), 14.2 -> 12.7 (seed 2); 90 % coverage of measured plots stays
    within 2 points of nominal.
    """
    from sinks.bundle import load_bundle
    from sinks.covariates.extract import extract
    from sinks.covariates.spec import load_spec
    from sinks.demo.world import simulate_test_plots, world_files
    from sinks.io import read_toml
    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train

    table = pd.read_csv(demo / "plots" / "features.csv")
    recipe_path = demo / "training" / "demo_county.toml"
    raw = read_toml(recipe_path, "recipe")
    plots, trees = simulate_test_plots(world_files(demo / "data"), 2000, seed=5)
    test = extract(load_spec(demo / "features" / "demo_county.toml"), forest_stocks(trees, plots).plots,
                   progress=False, allow_missing=True)
    rmse, coverage = {}, {}
    for label, extra in (("plain", {}), ("weighted", {"weights": "measurement_sd_mg_ha"})):
        recipe = parse_recipe({**raw, "target": {**raw["target"], **extra}}, base=recipe_path.parent, path=recipe_path)
        bundle = load_bundle(train(recipe, table, tmp_path / label, progress=False))
        X = test[bundle.feature_names].to_numpy(float)
        ok = np.isfinite(X).all(axis=1)
        p = bundle.predict(X[ok])
        inside = p["aoa"] == 1
        truth = test["carbon_truth_mg_ha"].to_numpy()[ok]
        observed = test["carbon_mg_ha"].fillna(0).to_numpy()[ok]
        rmse[label] = np.sqrt(np.mean((p["prediction"] - truth)[inside] ** 2))
        coverage[label] = np.mean(((observed >= p["lower"]) & (observed <= p["upper"]))[inside])
        if extra:
            meta = bundle.metadata["weights"]
            assert meta["column"] == "measurement_sd_mg_ha" and meta["tau2"] > 0
            assert "weight" in pd.read_csv(tmp_path / label / "oof.csv").columns
    assert rmse["weighted"] < rmse["plain"], rmse
    assert abs(coverage["weighted"] - 0.9) <= 0.03, coverage


def test_bad_plot_weights_are_refused(demo, tmp_path):
    from sinks.errors import InputError, SpecError
    from sinks.io import read_toml
    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train

    table = pd.read_csv(demo / "plots" / "features.csv")
    recipe_path = demo / "training" / "demo_county.toml"
    raw = read_toml(recipe_path, "recipe")

    def recipe(**target):
        return parse_recipe({**raw, "target": {**raw["target"], **target}}, base=recipe_path.parent, path=recipe_path)

    with pytest.raises(InputError, match="no column 'sd_nowhere'"):
        train(recipe(weights="sd_nowhere"), table, tmp_path / "a", progress=False)
    bad = table.assign(measurement_sd_mg_ha=table["measurement_sd_mg_ha"].where(table.index != 3, -1.0))
    with pytest.raises(InputError, match="row.* 4 .*negative"):
        train(recipe(weights="measurement_sd_mg_ha"), bad, tmp_path / "b", progress=False)
    with pytest.raises(SpecError, match="weights"):
        parse_recipe({**raw, "target": {**raw["target"], "weights": "measurement_sd_mg_ha"},
                      "tuning": {"search": "grid", "params": {"max_depth": [2, 3]}}},
                     base=recipe_path.parent, path=recipe_path)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
