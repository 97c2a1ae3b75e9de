"""Adaptive conformal intervals: held-out-fold coverage, widths that follow the noise, bundles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression

from sinks.bundle import load_bundle
from sinks.learn import cv
from sinks.learn.aoa import TrainingNeighbours, fit_aoa, training_neighbours
from sinks.learn.intervals import (calibrate_adaptive, conformal_quantile, location_difficulty, nested_check,
                                   plot_difficulty)
from sinks.learn.knndm import knndm_folds


def _world(n_clusters=40, per=30, seed=0):
    """Clustered plots; y = 10 + 3 x1 + 2 x2 + noise whose sd grows with x3 (0.5 to 5.5)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 30_000, (n_clusters, 2))
    xy = np.concatenate([c + rng.normal(0, 500, (per, 2)) for c in centres])
    n = len(xy)
    X = rng.normal(size=(n, 3))
    X[:, 2] = rng.uniform(0, 1, n)
    noise_sd = 0.5 + 5 * X[:, 2]
    y = 10 + 3 * X[:, 0] + 2 * X[:, 1] + rng.normal(0, noise_sd)
    gx, gy = np.meshgrid(np.arange(500, 30_000, 1000.0), np.arange(500, 30_000, 1000.0))
    return xy, X, y, noise_sd, np.column_stack([gx.ravel(), gy.ravel()])


@pytest.fixture(scope="module")
def world_check():
    xy, X, y, noise_sd, pred = _world()
    folds = knndm_folds(xy, pred, 5, seed=0).folds
    _, oof = cv.cross_validate(LinearRegression(), X, y, folds, scheme="knndm", progress=False)
    aoa = fit_aoa(X, np.ones(3) / 3, folds)
    nbrs = training_neighbours(aoa, folds, 40)
    inside = nbrs.other_distance[:, 0] / aoa.mean_distance <= aoa.threshold
    checks = {m: nested_check(y, oof, nbrs, inside, level=0.9, method=m, neighbours=10, lower_bound=None)
              for m in ("normalized", "mondrian", "split")}
    return noise_sd, folds, checks


def test_normalized_intervals_cover_held_out_folds_at_their_level(world_check):
    _, folds, checks = world_check
    ch = checks["normalized"]
    assert abs(ch["coverage"] - 0.9) <= 0.05, ch["coverage"]
    assert sum(f["n"] for f in ch["per_fold"]) == len(folds) == ch["n"]
    assert ch["inside_aoa"]["n"] + ch["outside_aoa"]["n"] == ch["n"]
    assert sum(b["n"] for b in ch["by_di_bin"]) == ch["n"]
    for method in ("mondrian", "split"):
        assert abs(checks[method]["coverage"] - 0.9) <= 0.05


def test_normalized_widths_vary_with_the_true_noise(world_check):
    noise_sd, _, checks = world_check
    width = checks["normalized"]["arrays"]["width"]
    assert width.std() > 0.2 * width.mean()
    assert spearmanr(width, noise_sd).statistic > 0.3
    # the one-width method does not adapt, and is wider where the noise is small
    split = checks["split"]["arrays"]["width"]
    assert split.std() < 0.05 * split.mean()
    low = noise_sd < np.quantile(noise_sd, 0.25)
    assert width[low].mean() < split[low].mean()


def test_conformal_quantile_and_mondrian_bins():
    assert conformal_quantile(np.arange(1.0, 11), 0.9) == 10.0  # ceil(11 * 0.9) = 10th of 10
    assert conformal_quantile(np.arange(1.0, 6), 0.9) == np.inf  # too few for 90 %
    rng = np.random.default_rng(1)
    di = rng.uniform(0, 1, 400)
    r = np.abs(rng.normal(0, 1 + 4 * di))
    iv = calibrate_adaptive(r, np.zeros(400), di, level=0.9, method="mondrian", bins=4)
    assert len(iv.quantiles) == 4 and iv.quantiles[-1] > 2 * iv.quantiles[0]
    few = calibrate_adaptive(r[:30], np.zeros(30), di[:30], level=0.9, method="mondrian", bins=4)
    assert len(few.quantiles) == 3 and min(few.bin_counts) >= 9  # fewer bins, each enough for 90 %


def test_quantiles_agree_with_crepes():
    crepes = pytest.importorskip("crepes")
    rng = np.random.default_rng(0)
    r, s, di = np.abs(rng.normal(size=1000)), rng.uniform(0.5, 2, 1000), rng.uniform(0, 1, 1000)
    iv = calibrate_adaptive(r, s, di, level=0.9, method="normalized")
    sigma = iv.sigma(s, di)
    ref = crepes.ConformalRegressor().fit(r, sigmas=sigma).predict_int(np.zeros(5), sigmas=sigma[:5], confidence=0.9)
    np.testing.assert_allclose(iv.half_width(s[:5], di[:5]), ref[:, 1])


def test_difficulty_comes_from_the_nearest_plot_and_skips_own_and_held_out_folds():
    """Four plots in folds 0, 1, 2, 2 with hand-made neighbour lists; s and DI worked out by hand."""
    r = np.array([1.0, 2.0, 4.0, 8.0])
    nbrs = TrainingNeighbours(
        folds=np.array([0, 1, 2, 2]),
        other_index=np.array([[1, 2, 3], [2, 0, 3], [1, 0, -1], [0, 1, -1]]),
        other_distance=np.array([[1.0, 2.0, 3.0], [1.5, 2.5, 3.0], [1.5, 2.0, np.inf], [3.0, 4.0, np.inf]]),
        all_index=np.array([[0, 1, 2], [1, 2, 0], [2, 3, 1], [3, 2, 0]]),
        mean_distance=2.0)
    # maps: a plot's own neighbourhood mean, itself included (k = 2)
    np.testing.assert_allclose(plot_difficulty(r, nbrs, 2), [1.5, 3.0, 6.0, 6.0])
    # as locations: nearest other-fold plot j, then j's neighbours outside the plot's own fold
    s, di = location_difficulty(r, nbrs, 2)
    # plot 0 -> j=1, whose list [1, 2, 0] minus fold 0 -> (2 + 4) / 2; plot 2 -> j=1: [1, 0] (2 skipped)
    np.testing.assert_allclose(s, [3.0, 6.0, 1.5, 1.5])
    np.testing.assert_allclose(di, [0.5, 0.75, 0.75, 1.5])
    # fold 1 held out: plot 0's nearest usable is plot 2 (fold 2), whose list skips folds 0 and 1
    s, di = location_difficulty(r, nbrs, 2, rows=nbrs.folds != 1, exclude=1)
    np.testing.assert_allclose(s, [6.0, 1.0, 1.0])
    np.testing.assert_allclose(di, [1.0, 1.0, 1.5])


def test_trained_bundle_has_varying_intervals_error_band_and_held_out_coverage(tmp_path):
    from tests.test_badinput_train import base_recipe, base_table

    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train

    table = base_table(n=120)
    recipe = parse_recipe(base_recipe(), base=tmp_path, path=tmp_path / "r.toml")
    folder = train(recipe, table, tmp_path / "model", progress=False)
    meta = json.loads((folder / "metadata.json").read_text())
    assert "interval_coverage" not in meta  # no coverage on the calibration residuals
    check = meta["interval_check"]["normalized"]
    oof = pd.read_csv(folder / "oof.csv")
    assert check["coverage"] == pytest.approx(oof["heldout_covered"].mean())
    assert set(meta["interval_check"]) == {"normalized", "mondrian", "split"}
    bundle = load_bundle(folder)
    out = bundle.predict(table[bundle.feature_names].to_numpy())
    assert {"prediction", "lower", "upper", "di", "aoa", "error"} <= set(out)
    width = out["upper"] - out["lower"]
    assert np.ptp(width) > 0 and np.all(width > 0) and np.all(out["lower"] >= 0)
    assert np.all(np.diff(out["error"][np.argsort(out["di"])]) >= -1e-4)  # monotone in DI
    assert "Coverage measured on held-out folds only" in (folder / "MODEL_CARD.md").read_text()


def _predict_reference(bundle, X):
    """Bundle.predict by brute force: every distance to every training plot, on the AOA's own axes."""
    from scipy.spatial.distance import cdist

    X = np.asarray(X, dtype=np.float32)
    prediction = bundle.model.predict(X).astype(np.float32)
    D = cdist(bundle.aoa._transform(X), bundle.aoa.train)
    di64 = D.min(axis=1) / bundle.aoa.mean_distance
    s = bundle.plot_difficulty[D.argmin(axis=1)]
    lower, upper = bundle.interval.apply(prediction.astype(np.float64), s, di64)
    di = di64.astype(np.float32)
    return {"prediction": prediction, "lower": np.asarray(lower, dtype=np.float32),
            "upper": np.asarray(upper, dtype=np.float32), "di": di,
            "aoa": (di <= bundle.aoa.threshold).astype(np.float32),
            "error": bundle.error_profile(di64).astype(np.float32)}


def test_nearest_plot_equals_brute_force():
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 5))
    X[:, 1] += 2 * X[:, 0]  # correlated predictors: the rotated search space differs from the original
    ref = fit_aoa(X, np.array([0.3, 0.25, 0.2, 0.15, 0.1]), rng.integers(0, 5, 500))
    new = np.vstack([rng.normal(size=(300, 5)), rng.normal(size=(100, 5)) + 4])
    di, index = ref.nearest(new, workers=2)
    D = cdist(ref._transform(new), ref.train)
    np.testing.assert_array_equal(index, D.argmin(axis=1))
    np.testing.assert_allclose(di, D.min(axis=1) / ref.mean_distance, rtol=1e-12)


def test_bundle_predict_unchanged_by_the_fast_di(tmp_path):
    from tests.test_badinput_train import base_recipe, base_table

    from sinks.learn.estimators import set_n_jobs
    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train

    table = base_table(n=120)
    recipe = parse_recipe(base_recipe(), base=tmp_path, path=tmp_path / "r.toml")
    bundle = load_bundle(train(recipe, table, tmp_path / "model", progress=False))
    X = table[bundle.feature_names].to_numpy()
    rng = np.random.default_rng(0)
    X = np.vstack([X, X + rng.normal(0, 1, X.shape) * X.std(axis=0) * 3])  # many rows outside the AOA
    ref = _predict_reference(bundle, X)
    assert 0 < ref["aoa"].mean() < 1
    for threads in (1, 2):
        set_n_jobs(bundle.model, threads)
        assert bundle.query_workers() == threads
        out = bundle.predict(X)
        assert set(out) == set(ref)
        for key in ref:
            np.testing.assert_allclose(out[key], ref[key], rtol=1e-6, atol=1e-6, err_msg=key)
        assert np.array_equal(out["aoa"], ref["aoa"])


def test_nested_check_with_precomputed_difficulties_is_the_same():
    from sinks.learn.intervals import fold_difficulties

    xy, X, y, _, pred = _world(n_clusters=10, per=20, seed=4)
    folds = knndm_folds(xy, pred, 5, seed=0).folds
    _, oof = cv.cross_validate(LinearRegression(), X, y, folds, scheme="knndm", progress=False)
    aoa = fit_aoa(X, np.ones(3) / 3, folds)
    nbrs = training_neighbours(aoa, folds, 20)
    inside = nbrs.other_distance[:, 0] / aoa.mean_distance <= aoa.threshold
    shared = fold_difficulties(y, oof, nbrs, 5)
    for method in ("normalized", "mondrian", "split"):
        for level in (0.8, 0.95):
            own = nested_check(y, oof, nbrs, inside, level=level, method=method, neighbours=5)
            given = nested_check(y, oof, nbrs, inside, level=level, method=method, neighbours=5,
                                 difficulties=shared)
            np.testing.assert_array_equal(own["arrays"]["width"], given["arrays"]["width"])
            assert own["coverage"] == given["coverage"]


def test_cqr_from_a_quantile_model_covers_held_out_plots_and_follows_the_noise(tmp_path):
    """Conformalised quantile regression (Romano et al. 2019) on heteroscedastic synthetic plots."""
    from tests.test_badinput_train import FEATURES, base_recipe, base_table

    from sinks.errors import ModelMismatchError
    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train

    table = base_table(n=400, seed=2)
    noise_sd = 2 + 8 * (table[FEATURES[1]] > 0)  # two noise levels, told by a feature
    table["carbon_mg_ha"] = 80 + 20 * table[FEATURES[0]] + np.random.default_rng(3).normal(0, 1, 400) * noise_sd
    raw = {**base_recipe(), "estimator": {"kind": "xgboost_quantile",
                                          "params": {"n_estimators": 300, "max_depth": 2, "learning_rate": 0.1,
                                                     "n_jobs": 1}},
           "intervals": {"level": 0.9, "method": "cqr"}}
    folder = train(parse_recipe(raw, base=tmp_path, path=tmp_path / "r.toml"), table, tmp_path / "m", progress=False)
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["interval"]["method"] == "cqr" and meta["interval"]["quantiles"] == [0.05, 0.95]
    check = meta["interval_check"]["cqr"]
    assert abs(check["coverage"] - 0.9) < 0.05  # held-out folds only
    assert set(meta["interval_check"]) == {"normalized", "mondrian", "split", "cqr"}
    bundle = load_bundle(folder)
    out = bundle.predict(table[bundle.feature_names].to_numpy())
    width = out["upper"] - out["lower"]
    noisy = (noise_sd > 2).to_numpy()
    assert width[noisy].mean() > 1.3 * width[~noisy].mean()  # wider where the noise is (one width: 1.0)
    assert np.all(out["lower"] <= out["prediction"] + 1e-3) and np.all(out["prediction"] <= out["upper"] + 1e-3)
    with pytest.raises(ModelMismatchError, match="CQR"):
        bundle.at_level(0.8)
    assert "conformalised quantile regression" in (folder / "MODEL_CARD.md").read_text()


def test_cqr_recipe_needs_a_quantile_model_with_the_levels_quantiles(tmp_path):
    from tests.test_badinput_train import base_recipe

    from sinks.errors import SpecError
    from sinks.learn.recipe import parse_recipe

    def recipe(estimator, **intervals):
        return {**base_recipe(), "estimator": estimator, "intervals": {"level": 0.9, "method": "cqr", **intervals}}

    with pytest.raises(SpecError, match="quantile estimator"):
        parse_recipe(recipe({"kind": "xgboost"}), base=tmp_path, path=tmp_path / "r.toml")
    with pytest.raises(SpecError, match="lacks 0.05"):
        parse_recipe(recipe({"kind": "xgboost_quantile", "params": {"quantile_alpha": [0.1, 0.5, 0.9]}}),
                     base=tmp_path, path=tmp_path / "r.toml")
    ok = parse_recipe(recipe({"kind": "xgboost_quantile", "params": {"quantile_alpha": [0.1, 0.5, 0.9]}}, level=0.8),
                      base=tmp_path, path=tmp_path / "r.toml")
    assert ok.interval_method == "cqr"


def test_mondrian_recalibrated_at_another_level_makes_the_bins_that_level_was_checked_with(tmp_path):
    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train
    from tests.test_badinput_train import base_recipe, base_table

    raw = {**base_recipe(), "validation": {"folds": 3, "schemes": ["random"], "scheme": "random"},
           "intervals": {"level": 0.95, "method": "mondrian", "bins": 4}}
    folder = train(parse_recipe(raw, base=tmp_path, path=tmp_path / "r.toml"), base_table(n=60), tmp_path / "m",
                   progress=False)
    bundle = load_bundle(folder)
    assert len(bundle.interval.quantiles) == 3 and bundle.interval.bins == 4  # 60 plots: 3 bins of >= 19 at 0.95
    at_80 = bundle.at_level(0.8)
    assert len(at_80.interval.quantiles) == 4  # as a bundle trained at 0.8, and as the 0.8 check measured
    assert at_80.at_level(0.95).interval.quantiles == bundle.interval.quantiles
