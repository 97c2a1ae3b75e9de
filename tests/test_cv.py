"""Validation schemes side by side: variogram block size, kNNDM vs random W, per-fold metrics, recipes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sinks.errors import SpecError
from sinks.learn import cv
from sinks.learn.knndm import fold_wasserstein, knndm_folds, prediction_to_sample_distances


def _spherical_field(n=800, a=2000.0, seed=2):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 10_000, n), rng.uniform(0, 10_000, n)
    d = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
    r = np.minimum(d / a, 1.0)
    cov = 1 - (1.5 * r - 0.5 * r**3) + 1e-8 * np.eye(n)
    return x, y, np.linalg.cholesky(cov) @ rng.normal(size=n) + 0.2 * rng.normal(size=n)


def test_variogram_recovers_a_known_range():
    x, y, z = _spherical_field()
    vg = cv.fit_variogram(x, y, z)
    assert vg.model in ("spherical", "exponential")
    assert 2000 / 1.5 <= vg.range <= 2000 * 1.5, vg.range
    assert len(vg.lags) == len(vg.gamma) == len(vg.pairs) and vg.n_points == 800


def test_suggested_block_size_is_the_range_and_leaves_enough_blocks():
    x, y, z = _spherical_field()
    size, vg, note = cv.suggest_block_size(x, y, z, folds=5)
    assert size == pytest.approx(vg.range) and "range" in note
    assert len(np.unique(cv.spatial_blocks(x, y, size))) >= 10
    # a target with a range as large as the area: shrunk until 2 blocks per fold remain
    size2, _, note2 = cv.suggest_block_size(x[:60] / 10, y[:60] / 10, z[:60], folds=5)
    assert len(np.unique(cv.spatial_blocks(x[:60] / 10, y[:60] / 10, size2))) >= 10 or "shrunk" in note2


def test_knndm_w_is_smaller_than_random_w_on_clustered_plots():
    rng = np.random.default_rng(4)
    centres = rng.uniform(0, 20_000, (12, 2))
    xy = np.concatenate([c + rng.normal(0, 300, (25, 2)) for c in centres])
    gx, gy = np.meshgrid(np.arange(250, 20_000, 500.0), np.arange(250, 20_000, 500.0))
    pred = np.column_stack([gx.ravel(), gy.ravel()])
    gij = prediction_to_sample_distances(xy, pred)
    kn = knndm_folds(xy, pred, 5, seed=0)
    w_random = fold_wasserstein(xy, cv.fold_ids(len(xy), folds=5, seed=0), gij)
    assert kn.method == "kNNDM"
    assert fold_wasserstein(xy, kn.folds, gij) < w_random / 2


def test_per_fold_metrics_add_up_to_the_pooled_ones():
    rng = np.random.default_rng(0)
    y = rng.uniform(10, 100, 203)
    pred = y + rng.normal(2, 8, 203)
    folds = cv.fold_ids(203, folds=5, seed=1)
    rows = cv.fold_scores(y, pred, folds)
    pooled = cv.score(y, pred, scheme="x", folds=5)
    n = np.array([r["n"] for r in rows])
    assert n.sum() == pooled.n == 203
    assert np.sum(n * np.array([r["rmse"] for r in rows]) ** 2) / n.sum() == pytest.approx(pooled.rmse**2)
    assert np.sum(n * np.array([r["mae"] for r in rows])) / n.sum() == pytest.approx(pooled.mae)
    assert np.sum(n * np.array([r["bias"] for r in rows])) / n.sum() == pytest.approx(pooled.bias)
    assert pooled.rel_rmse == pytest.approx(pooled.rmse / y.mean())
    constant = cv.fold_scores(np.ones(4), np.arange(4.0), np.array([0, 0, 1, 1]))
    assert all(math.isnan(r["r2"]) for r in constant)


def _recipe(tmp_path, **validation):
    from tests.test_badinput_train import base_recipe

    from sinks.learn.recipe import parse_recipe

    data = base_recipe()
    data["validation"] = {"folds": 3, **validation}
    return parse_recipe(data, base=tmp_path, path=tmp_path / "r.toml")


def test_recipe_schemes_defaults_and_errors(tmp_path):
    recipe = _recipe(tmp_path)
    assert recipe.schemes == ("random", "blocks", "knndm") and recipe.scheme == "knndm"
    assert recipe.block_size is None and recipe.interval_method == "normalized"
    assert _recipe(tmp_path, schemes=["random"], scheme="blocks").schemes == ("random", "blocks")
    with pytest.raises(SpecError, match=r"\[validation\]: 'schemes' names 'knnd'.*did you mean 'knndm'"):
        _recipe(tmp_path, schemes=["random", "knnd"])
    with pytest.raises(SpecError, match=r"'scheme' = 'spatial' is not one of random, blocks, knndm"):
        _recipe(tmp_path, scheme="spatial")
    with pytest.raises(SpecError, match="'schemes' must be a list"):
        _recipe(tmp_path, schemes="random")


def test_train_reports_every_scheme_with_w_and_a_data_driven_block_size(tmp_path):
    from tests.test_badinput_train import base_recipe, base_table

    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train

    data = base_recipe()
    data["validation"] = {"folds": 3, "seed": 0}
    recipe = parse_recipe(data, base=tmp_path, path=tmp_path / "r.toml")
    folder = train(recipe, base_table(), tmp_path / "model", progress=False)
    meta = json.loads((folder / "metadata.json").read_text())
    setup = meta["validation_setup"]
    assert setup["block_size_from"].startswith("data") and setup["block_size"] > 0
    assert setup["variogram"]["model"] in ("spherical", "exponential", "none")
    for scheme in ("random", "blocks", "knndm"):
        s = meta["validation"][scheme]
        assert {"r2", "rmse", "rel_rmse", "mae", "bias", "W"} <= set(s)
        assert sum(r["n"] for r in meta["validation_folds"][scheme]) == meta["training"]["n"]
    assert meta["validation"]["spatial"] == meta["validation"]["knndm"]  # the old key: the chosen scheme
    card = (folder / "MODEL_CARD.md").read_text()
    assert "| knndm (chosen) |" in card and "### Per fold: blocks" in card


def test_xgboost_folds_side_by_side_give_the_same_oof_as_one_after_another(monkeypatch):
    from sinks.learn.estimators import make_estimator

    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 6))
    y = X[:, 0] * 3 + np.sin(X[:, 1] * 2) + rng.normal(0, 0.3, 600)
    folds = rng.integers(0, 5, 600)
    est = make_estimator("xgboost", {"n_estimators": 30, "n_jobs": 2})
    assert cv._fold_threads(est, 5) == (2, 1)
    side, oof_side = cv.cross_validate(est, X, y, folds, scheme="random", progress=False)
    monkeypatch.setattr(cv, "_fold_threads", lambda estimator, n: (1, 0))
    one, oof_one = cv.cross_validate(est, X, y, folds, scheme="random", progress=False)
    np.testing.assert_array_equal(oof_side, oof_one)
    assert side == one
    assert est.get_params()["n_jobs"] == 2  # the caller's estimator is left as it was
