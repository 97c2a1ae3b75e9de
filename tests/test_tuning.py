"""Hyperparameter search and forward feature selection nested in the chosen CV scheme
(sinks.learn.tuning): no leak across folds, selection finds the signal, the optimism of the
non-nested score is visible, the bundle uses the selected features at predict and map time, and
bad [tuning] / [selection] sections are refused when the recipe is loaded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import Ridge

from sinks.bundle import load_bundle
from sinks.errors import SpecError
from sinks.covariates.extract import extract
from sinks.covariates.spec import load_spec
from sinks.learn import tuning
from sinks.learn.estimators import make_estimator
from sinks.learn.recipe import parse_recipe
from sinks.learn.train import train
from sinks.mapping.predict import predict_map
from tests.badinput import assert_refused
from tests import test_badinput_train
from tests.test_badinput_train import _argv, base_recipe, base_table, to_toml
from tests.test_covariates_local import ORIGIN, points, write_spec, write_tif

work = test_badinput_train.work  # the fixture: a good recipe and table in a fresh folder

LOG: list[tuple[np.ndarray, np.ndarray]] = []


class RecordingRidge(RegressorMixin, BaseEstimator):
    """Ridge on columns 1.. that logs the row ids (column 0) it is fitted on and predicts."""

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def fit(self, X, y):
        self.train_ids_ = X[:, 0].astype(int)
        self.model_ = Ridge(alpha=self.alpha).fit(X[:, 1:], y)
        return self

    def predict(self, X):
        LOG.append((self.train_ids_, X[:, 0].astype(int)))
        return self.model_.predict(X[:, 1:])


def _data(n=90, p=4, seed=0, signal=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = (2 * X[:, 0] - 1.5 * X[:, 1] if signal else 0) + rng.normal(0, 0.5 if signal else 1, n)
    return X, y, np.arange(n) % 4


def _pooled_rmse(X, y, folds, inner, alpha):
    rows = np.isin(folds, inner)
    oof = np.full(len(y), np.nan)
    for j in inner:
        test, train_ = folds == j, rows & (folds != j)
        oof[test] = Ridge(alpha=alpha).fit(X[train_][:, 1:], y[train_]).predict(X[test][:, 1:])
    return float(np.sqrt(np.mean((oof[rows] - y[rows]) ** 2)))


def test_the_choice_for_fold_k_never_sees_fold_k():
    X, y, folds = _data()
    X = np.column_stack([np.arange(len(y)), X])  # column 0: the row id the estimator logs
    grid = tuning.Tuning(params={"alpha": (0.01, 10.0, 300.0)}, budget=3)
    LOG.clear()
    result = tuning.nested_search(X, y, folds, make=lambda p: RecordingRidge(**p), params={}, tuning=grid,
                                  progress=False)
    ids = np.unique(folds)
    table = result.table
    for outer in result.outer:
        k, inner = outer["fold"], [j for j in ids if j != outer["fold"]]
        rows = table[table.outer_fold == k]
        # scored on the other folds only, and the same scores recomputed independently
        assert rows[f"fold_{k}"].isna().all()
        expected = [_pooled_rmse(X, y, folds, inner, a) for a in grid.params["alpha"]]
        np.testing.assert_allclose(rows.score.to_numpy(), expected, rtol=1e-10)
        assert outer["choice"].params == {"alpha": grid.params["alpha"][int(np.argmin(expected))]}
        assert outer["choice"].inner_folds == tuple(inner)
    # every fit: inner fits leave out fold k and one other, predicting that other fold; no fit made
    # while choosing fold k's model trains on or predicts a row of fold k
    fold_of = folds
    two_out, one_out = 0, 0
    for train_ids, pred_ids in LOG:
        excluded = set(ids) - set(fold_of[train_ids])
        predicted = set(fold_of[pred_ids])
        assert len(predicted) == 1 and predicted <= excluded
        two_out += len(excluded) == 2
        one_out += len(excluded) == 1
    k = len(ids)
    assert two_out == k * (k - 1) * 3             # inner fits of the k outer folds
    assert one_out == k * 3 + k                   # the final choice's CV, and the k outer fits
    assert result.fits == len(LOG)


def test_forward_selection_finds_the_informative_features():
    X, y, folds = _data(n=120, p=6, seed=1)
    names = list("abcdef")
    result = tuning.nested_search(X, y, folds, make=lambda p: make_estimator("ridge", p), params={},
                                  selection=tuning.Selection(min_features=2), names=names, progress=False)
    # the best pair is the two informative features; noise features are added only while they
    # improve the inner score, and the first of them by little
    assert set(result.final.added[:2]) == {0, 1} and all(set(o["choice"].added[:2]) == {0, 1} for o in result.outer)
    final = result.table[result.table.outer_fold == "all"]
    pairs = final[final.features.str.count(";") == 1]
    assert pairs.score.idxmin() == pairs.index[pairs.features == "a;b"][0]
    chosen = final[final.chosen]
    assert len(chosen) == 1 and chosen.features.iloc[0] == ";".join(names[i] for i in result.final.features)
    assert chosen.score.iloc[0] > 0.97 * pairs.score.min()
    # with tuning too: features first, then the params on them
    both = tuning.nested_search(X, y, folds, make=lambda p: make_estimator("ridge", p), params={},
                                selection=tuning.Selection(min_features=2, max_features=3),
                                tuning=tuning.Tuning(params={"alpha": (0.1, 100.0)}), names=names, progress=False)
    assert both.final.features[:2] == (0, 1) and len(both.final.features) <= 3
    stages = both.table[both.table.outer_fold == "all"].stage.tolist()
    assert stages.index("tuning") > max(i for i, s in enumerate(stages) if s == "selection")
    final_tuning = both.table[(both.table.outer_fold == "all") & (both.table.stage == "tuning")]
    assert set(final_tuning.features) == {";".join(names[i] for i in both.final.features)}


def test_nested_score_shows_the_optimism_on_pure_noise():
    X, y, folds = _data(n=80, p=8, seed=2, signal=False)
    result = tuning.nested_search(X, y, folds, make=lambda p: make_estimator("ridge", p), params={},
                                  selection=tuning.Selection(min_features=1, max_features=4),
                                  tuning=tuning.Tuning(params={"alpha": (0.01, 1.0, 100.0, 1e4)}),
                                  progress=False)
    nested = result.extra["nested_score"]
    assert nested == pytest.approx(float(np.sqrt(np.mean((result.oof - y) ** 2))))
    assert nested > result.final.score  # the non-nested best inner score is optimistic


def test_random_search_draws_budget_distinct_combinations():
    t = tuning.Tuning(params={"a": (1, 2, 3), "b": (0.1, 0.2), "c": ("x", "y")}, search="random", budget=5)
    draws = t.candidates(seed=3)
    assert len(draws) == 5 and len({json.dumps(d, sort_keys=True) for d in draws}) == 5
    assert draws == t.candidates(seed=3) and draws != t.candidates(seed=4)
    assert len(tuning.Tuning(params=t.params, budget=12).candidates()) == 12


# ---- the bundle: selected features at predict and map time ---------------------------------------

def _workspace(tmp_path, n_plots=60, seed=0):
    rng = np.random.default_rng(seed)
    bands = [rng.normal(size=(40, 40)) for _ in range(4)]
    write_tif(tmp_path / "a.tif", bands, res=30.0)
    spec_path = write_spec(tmp_path / "s.toml", """
[[sources]]
name = "a"
path = "a.tif"
bands = ["b1", "b2", "b3", "b4"]
[[features]]
name = "f1"
band = "a.b1"
[[features]]
name = "f2"
band = "a.b2"
[[features]]
name = "f3"
band = "a.b3"
[[features]]
name = "f4"
band = "a.b4"
""", res=30.0)
    cells = rng.choice(1600, n_plots, replace=False)
    xy = [(ORIGIN[0] + (c % 40 + 0.5) * 30, ORIGIN[1] - (c // 40 + 0.5) * 30) for c in cells]
    table = extract(load_spec(spec_path), points(xy), progress=False)
    table["carbon_mg_ha"] = 80 + 10 * table["f2"] - 6 * table["f4"] + rng.normal(0, 1, n_plots)
    return spec_path, table


def test_bundle_keeps_the_selection_and_maps_use_it(tmp_path):
    spec_path, table = _workspace(tmp_path)
    recipe = parse_recipe({
        "features": str(spec_path), "target": {"column": "carbon_mg_ha", "units": "Mg C/ha"},
        "estimator": {"kind": "ridge"},
        "validation": {"folds": 3, "block_size": 300, "schemes": ["random", "blocks"], "scheme": "blocks"},
        "tuning": {"params": {"alpha": [0.1, 10.0]}, "budget": 2, "metric": "mae"},
        "selection": {"min_features": 2},
    }, base=tmp_path, path=tmp_path / "r.toml")
    folder = train(recipe, table, tmp_path / "bundle", progress=False)
    bundle = load_bundle(folder)
    meta = bundle.metadata
    assert meta["features"]["names"] == ["f1", "f2", "f3", "f4"]
    assert bundle.model_features == meta["features"]["selected"] == ["f2", "f4"]
    assert bundle.model.n_features_in_ == 2 and bundle.aoa.train.shape[1] == 2
    tu = meta["tuning"]
    assert tu["scheme"] == "blocks" and len(tu["outer"]) == 3 and tu["final"]["features"] == ["f2", "f4"]
    assert meta["validation"]["blocks"]["tuning"] == "nested"
    assert meta["validation"]["random"]["tuning"].startswith("not nested")
    assert "tuning.csv" in meta["files"] and "## Tuning and feature selection" in (folder / "MODEL_CARD.md").read_text()
    csv = pd.read_csv(folder / "tuning.csv")
    assert set(csv.stage) == {"selection", "tuning"} and csv.chosen.sum() == 2 * 4  # 3 outer + final, 2 stages
    oof = pd.read_csv(folder / "oof.csv")
    np.testing.assert_allclose(oof["oof_blocks"], oof["oof_spatial"])

    # predict: the spec's columns in, only the selected ones reach the model (and the AOA)
    X = table[["f1", "f2", "f3", "f4"]].to_numpy(np.float32)
    out = bundle.predict(X)
    np.testing.assert_allclose(out["prediction"], bundle.model.predict(X[:, [1, 3]]), rtol=1e-6)
    shuffled = X.copy()
    shuffled[:, [0, 2]] = 1e3  # the unused features change nothing
    np.testing.assert_allclose(bundle.predict(shuffled)["prediction"], out["prediction"])
    np.testing.assert_allclose(bundle.predict(shuffled)["di"], out["di"])

    # the map computes all the spec's features and predicts from the selected ones
    for bands in (None, "carbon"):  # all bands, and the model-only fast path
        path = predict_map(folder, load_spec(spec_path), tmp_path / f"m{bands}.tif", block=16, bands=bands,
                           progress=False)
        with rasterio.open(path) as ds:
            rows, cols = rasterio.transform.rowcol(ds.transform, table["x"].to_numpy(), table["y"].to_numpy())
            carbon = ds.read(1)[np.asarray(rows), np.asarray(cols)]
        np.testing.assert_allclose(carbon, out["prediction"], rtol=1e-5)


# ---- bad [tuning] / [selection] refused when the recipe is loaded ----------------------------------

def _with(**sections):
    def apply(recipe):
        recipe.update(sections)
        return recipe
    return apply


BAD = {
    "unknown tuning key": (_with(tuning={"params": {"max_depth": [2, 3]}, "budgte": 4}),
                           ["[tuning]", "budgte", "did you mean 'budget'"]),
    "unknown param name": (_with(tuning={"params": {"max_dept": [2, 3]}}),
                           ["[tuning] params", "max_dept", "did you mean 'max_depth'"]),
    "empty candidate list": (_with(tuning={"params": {"max_depth": []}}), ["[tuning] params", "max_depth", "empty"]),
    "candidates not a list": (_with(tuning={"params": {"max_depth": 3}}), ["max_depth", "list of candidate values"]),
    "no params": (_with(tuning={"search": "grid"}), ["[tuning]", "missing 'params'"]),
    "grid larger than budget": (_with(tuning={"params": {"max_depth": [1, 2, 3], "learning_rate": [0.1, 0.2]},
                                              "budget": 5}), ["[tuning]", "6 combinations", "3 x 2", "budget = 5"]),
    "bad metric": (_with(tuning={"params": {"max_depth": [2, 3]}, "metric": "rsme"}),
                   ["[tuning]", "metric", "rsme", "did you mean 'rmse'"]),
    "bad search": (_with(tuning={"params": {"max_depth": [2, 3]}, "search": "bayes"}), ["search", "bayes", "grid, random"]),
    "value rejected by a trial fit": (_with(tuning={"params": {"max_depth": [3, -1]}}),
                                      ["[tuning] params", "max_depth", "-1"]),
    "value out of range": (_with(tuning={"params": {"subsample": [0.5, 2.0]}}), ["[tuning] params", "subsample"]),
    "n_jobs untunable": (_with(tuning={"params": {"n_jobs": [1, 2]}}), ["n_jobs", "cannot be tuned"]),
    "repeated value": (_with(tuning={"params": {"max_depth": [2, 2]}}), ["max_depth", "repeats"]),
    "selection key typo": (_with(selection={"min_feature": 2}), ["[selection]", "min_feature", "'min_features'"]),
    "min_features above the spec's": (_with(selection={"min_features": 13}), ["[selection]", "min_features", "13", "12 feature"]),
    "max below min": (_with(selection={"min_features": 3, "max_features": 2}), ["max_features", "below"]),
    "selection metric": (_with(selection={"metric": "mse"}), ["[selection]", "metric", "mse"]),
    "forward not a boolean": (_with(selection={"forward": "yes"}), ["forward", "true or false"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_tuning_and_selection_refused_at_load(work, capsys, case):
    folder, recipe, table = work
    edit, keywords = BAD[case]
    recipe.write_text(to_toml(edit(base_recipe())))
    assert_refused(_argv(recipe, table, folder / "model"), capsys, keywords=[str(recipe), *keywords],
                   watch=folder.parent)


def test_nesting_needs_three_folds(tmp_path):
    data = base_recipe()
    data.update(validation={"folds": 2, "block_size": 500}, tuning={"params": {"max_depth": [2, 3]}})
    with pytest.raises(Exception, match=r"\[validation\].*folds.*>= 3"):
        parse_recipe(data, base=tmp_path, path=tmp_path / "r.toml")


# ---- [tuning] / [selection] with plot weights, and with CQR ---------------------------------------

WLOG: list[tuple[np.ndarray, np.ndarray | None]] = []


class WeightedRecordingRidge(RecordingRidge):
    """:class:`RecordingRidge` that takes ``sample_weight`` and logs it with the rows it fits."""

    def fit(self, X, y, sample_weight=None):
        ids = X[:, 0].astype(int)
        WLOG.append((ids, None if sample_weight is None else np.array(sample_weight, dtype=float)))
        self.train_ids_ = ids
        self.model_ = Ridge(alpha=self.alpha).fit(X[:, 1:], y, sample_weight=sample_weight)
        return self


def _weighted_search(X, y, folds, sd, grid):
    from sinks.learn.weights import cv_weights, nested_weights

    base = WeightedRecordingRidge()
    final, _, _ = cv_weights(base, X, y, folds, sd, progress=False)
    by_fold = nested_weights(base, X, y, folds, sd, progress=False)
    weights = {**{k: w for k, (w, _) in by_fold.items()}, "all": final}
    WLOG.clear()
    result = tuning.nested_search(X, y, folds, make=lambda p: WeightedRecordingRidge(**p), params={}, tuning=grid,
                                  sample_weight=weights, progress=False)
    return result, weights


def test_weights_reach_every_nested_fit_and_fold_k_never_reaches_its_own_choice():
    X, y, folds = _data()
    X = np.column_stack([np.arange(len(y)), X])
    sd = np.random.default_rng(5).uniform(0.1, 1.5, len(y))
    grid = tuning.Tuning(params={"alpha": (0.01, 10.0, 300.0)}, budget=3)
    result, weights = _weighted_search(X, y, folds, sd, grid)
    ids = np.unique(folds)
    assert result.extra["weighted"] and len(WLOG) == result.fits
    for train_ids, w in WLOG:  # every fit weighted: inner fits of outer fold k, or its refit, with k's weights
        assert w is not None
        excluded = set(ids) - set(folds[train_ids])
        owners = [*excluded] + (["all"] if len(excluded) == 1 else [])
        assert any(np.allclose(w, weights[o][train_ids]) for o in owners)
        assert all(np.isfinite(weights[o][train_ids]).all() for o in excluded)
    # the inner score is the weighted metric of a hand-made weighted inner CV
    for outer in result.outer:
        k = outer["fold"]
        w, inner = weights[k], [j for j in ids if j != k]
        rows = np.isin(folds, inner)
        expected = []
        for alpha in grid.params["alpha"]:
            oof = np.full(len(y), np.nan)
            for j in inner:
                test, fit_rows = folds == j, rows & (folds != j)
                oof[test] = Ridge(alpha=alpha).fit(X[fit_rows][:, 1:], y[fit_rows],
                                                   sample_weight=w[fit_rows]).predict(X[test][:, 1:])
            expected.append(np.sqrt(np.sum(w[rows] * (oof[rows] - y[rows]) ** 2) / np.sum(w[rows])))
        np.testing.assert_allclose(result.table[result.table.outer_fold == k].score, expected, rtol=1e-10)
        assert outer["score"] == pytest.approx(np.sqrt(np.mean((result.oof - y)[folds == k] ** 2)))  # unweighted
    # fold 0's targets and sds changed: its weights, scores, choice and held-out predictions are not
    y2, sd2 = y.copy(), sd.copy()
    y2[folds == 0] += np.random.default_rng(6).normal(0, 5, int((folds == 0).sum()))
    sd2[folds == 0] *= 7
    again, weights2 = _weighted_search(X, y2, folds, sd2, grid)
    np.testing.assert_array_equal(weights2[0], weights[0])
    assert not np.allclose(weights2[1][folds != 1], weights[1][folds != 1])  # the others do see fold 0
    table, table2 = (t[t.outer_fold == 0].drop(columns="outer_fold") for t in (result.table, again.table))
    pd.testing.assert_frame_equal(table.reset_index(drop=True), table2.reset_index(drop=True))
    assert again.outer[0]["choice"].params == result.outer[0]["choice"].params
    np.testing.assert_array_equal(again.oof[folds == 0], result.oof[folds == 0])


def test_a_tuned_weighted_recipe_trains_with_weights_in_every_fit(tmp_path, monkeypatch):
    from xgboost import XGBRegressor

    table = base_table(n=60, seed=1)
    table["sd"] = np.random.default_rng(2).uniform(1, 8, len(table))
    raw = {**base_recipe(), "target": {**base_recipe()["target"], "weights": "sd"},
           "validation": {"folds": 3, "block_size": 500, "schemes": ["random", "blocks"], "scheme": "blocks"},
           "tuning": {"params": {"max_depth": [1, 2]}}}
    recipe = parse_recipe(raw, base=tmp_path, path=tmp_path / "r.toml")
    fits, original = [], XGBRegressor.fit

    def spy(self, X, y, **kwargs):
        fits.append((len(y), kwargs.get("sample_weight") is not None))
        return original(self, X, y, **kwargs)

    monkeypatch.setattr(XGBRegressor, "fit", spy)
    folder = train(recipe, table, tmp_path / "m", progress=False)
    meta = load_bundle(folder).metadata
    tu, k = meta["tuning"], 3
    assert tu["weighted"] and tu["weights"]["column"] == "sd" and len(tu["weights"]["tau2_by_outer_fold"]) == k
    assert tu["weights"]["tau2_final"] == meta["weights"]["tau2"]
    real = [weighted for n, weighted in fits if n > 16]  # not the 16-row trial fits
    # unweighted: the pilot CVs for τ² (all folds, then each outer fold's other folds); weighted: the
    # nested search, the other scheme's CV and the final model
    assert real.count(False) == k + k * (k - 1)
    assert real.count(True) == tu["fits"] + k + 1
    assert meta["validation"]["blocks"]["tuning"] == "nested"
    oof = pd.read_csv(folder / "oof.csv")
    assert "weight" in oof.columns
    rmse = np.sqrt(np.mean((oof.oof_blocks - oof.observed) ** 2))
    assert meta["validation"]["blocks"]["rmse"] == pytest.approx(rmse)  # held-out scores unweighted


def test_an_untuned_weighted_recipe_never_lets_a_fold_weight_its_own_prediction(tmp_path):
    """τ² behind fold k's weights comes from the other folds only: changing fold 0's targets leaves
    fold 0's held-out predictions as they were (they used to move through τ²)."""
    table = base_table(n=90, seed=3)
    table["sd"] = np.random.default_rng(4).uniform(0.5, 12, len(table))
    raw = {**base_recipe(), "target": {**base_recipe()["target"], "weights": "sd"},
           "validation": {"folds": 3, "schemes": ["random"], "scheme": "random"}}
    recipe = parse_recipe(raw, base=tmp_path, path=tmp_path / "r.toml")
    first = train(recipe, table, tmp_path / "a", progress=False)
    oof = pd.read_csv(first / "oof.csv")
    fold0 = oof.fold_random.to_numpy() == 0
    changed = table.copy()
    ids = set(oof.plot_id[fold0])
    rows = changed.plot_id.isin(ids).to_numpy()
    changed.loc[rows, "carbon_mg_ha"] += np.random.default_rng(5).normal(0, 40, rows.sum()).clip(-60, 60)
    second = pd.read_csv(train(recipe, changed, tmp_path / "b", progress=False) / "oof.csv")
    assert np.array_equal(second.fold_random, oof.fold_random)
    np.testing.assert_array_equal(second.oof_random[fold0], oof.oof_random[fold0])
    meta = load_bundle(first).metadata["weights"]
    assert len(meta["tau2_by_fold"]) == 3 and "other folds only" in meta["folds"]
    card = (first / "MODEL_CARD.md").read_text(encoding="utf-8")  # a reader of the card sees the weighting
    assert "plots weighted by measurement variance from column `sd`" in card and "unweighted, the same CV gave R²" in card


def test_ridge_takes_weights_and_a_regressor_that_cannot_is_refused_before_fitting(tmp_path):
    from sklearn.neighbors import KNeighborsRegressor

    table = base_table(n=60, seed=6)
    table["sd"] = np.random.default_rng(7).uniform(0.5, 12, len(table))
    raw = {**base_recipe(), "target": {**base_recipe()["target"], "weights": "sd"}, "estimator": {"kind": "ridge"},
           "validation": {"folds": 3, "schemes": ["random"], "scheme": "random"}}
    recipe = parse_recipe(raw, base=tmp_path, path=tmp_path / "r.toml")
    folder = train(recipe, table, tmp_path / "ridge", progress=False)  # a Pipeline: weights to its Ridge step
    weights = pd.read_csv(folder / "oof.csv")["weight"].to_numpy()
    assert weights.max() > 1.5 * weights.min()
    unweighted = train(parse_recipe({**raw, "target": base_recipe()["target"]}, base=tmp_path,
                                    path=tmp_path / "r.toml"), table, tmp_path / "plain", progress=False)
    assert not np.array_equal(pd.read_csv(folder / "oof.csv").oof_random,
                              pd.read_csv(unweighted / "oof.csv").oof_random)
    with pytest.raises(SpecError, match=r"weights = 'sd': .* cannot be fitted with per-plot weights"):
        train(recipe, table, tmp_path / "knn", progress=False, estimator=KNeighborsRegressor(algorithm="brute"))
    assert not (tmp_path / "knn").exists()


def test_a_tuned_cqr_recipe_calibrates_on_the_nested_quantiles(tmp_path):
    from sinks.learn.intervals import QuantileInterval
    from tests.test_badinput_train import FEATURES

    table = base_table(n=400, seed=2)  # heteroscedastic, as tests/test_intervals.py's CQR test
    noise_sd = 2 + 8 * (table[FEATURES[1]] > 0)
    table["carbon_mg_ha"] = 80 + 20 * table[FEATURES[0]] + np.random.default_rng(3).normal(0, 1, 400) * noise_sd
    raw = {**base_recipe(), "estimator": {"kind": "xgboost_quantile",
                                          "params": {"n_estimators": 100, "learning_rate": 0.2, "n_jobs": 1}},
           "validation": {"folds": 3, "block_size": 500, "schemes": ["blocks"], "scheme": "blocks"},
           "intervals": {"level": 0.9, "method": "cqr"},
           "tuning": {"params": {"max_depth": [1, 2]}}}
    folder = train(parse_recipe(raw, base=tmp_path, path=tmp_path / "r.toml"), table, tmp_path / "m", progress=False)
    bundle = load_bundle(folder)
    meta = bundle.metadata
    assert isinstance(bundle.interval, QuantileInterval) and meta["interval"]["quantiles"] == [0.05, 0.95]
    assert meta["tuning"]["intervals"].startswith("cqr") and not meta["tuning"]["weighted"]
    check = meta["interval_check"]["cqr"]
    assert abs(check["coverage"] - 0.9) <= 0.05, check["coverage"]  # held-out folds of the nested OOF
    oof = pd.read_csv(folder / "oof.csv")
    assert oof.heldout_covered.mean() == pytest.approx(check["coverage"])
    out = bundle.predict(table[bundle.feature_names].to_numpy())
    width = out["upper"] - out["lower"]
    noisy = (noise_sd > 2).to_numpy()
    assert width[noisy].mean() > 1.3 * width[~noisy].mean()


def test_cqr_tuning_candidates_need_the_intervals_quantiles(tmp_path):
    raw = {**base_recipe(), "estimator": {"kind": "xgboost_quantile", "params": {"n_estimators": 5}},
           "intervals": {"level": 0.9, "method": "cqr"}, "tuning": {"params": {"quantile_alpha": [0.5]}}}
    with pytest.raises(Exception, match=r"\[tuning\] params: quantile_alpha = \[0.5\] lacks 0.05, 0.95"):
        parse_recipe(raw, base=tmp_path, path=tmp_path / "r.toml")
