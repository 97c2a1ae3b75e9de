"""The fully nested interval check (``[intervals] check = "refit"``): nothing that sets a fold's
interval was fitted with that fold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from sinks.learn import cv
from sinks.learn.aoa import fit_aoa, training_neighbours
from sinks.learn.estimators import importances
from sinks.learn.intervals import nested_check
from sinks.learn.refit_check import FoldSetup, refit_check


def _plots(n=150, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = 50 + 10 * X[:, 0] + 5 * X[:, 1] ** 2 + rng.normal(0, 2 + 3 * (X[:, 2] > 0), n)
    return X, y, np.arange(n) % 5


def _forest():
    return RandomForestRegressor(n_estimators=40, min_samples_leaf=3, random_state=0, n_jobs=1)


def _refit(X, y, folds):
    setups = [FoldSetup(fold=k, estimator=_forest(), columns=(0, 1, 2)) for k in range(5)]
    return refit_check(setups, X, y, folds, kind="random_forest", level=0.9, bins=4, neighbours=10,
                       lower_bound=None, progress=False)


def _fast(X, y, folds):
    _, oof = cv.cross_validate(_forest(), X, y, folds, scheme="random", progress=False)
    model = _forest().fit(X, y)
    aoa = fit_aoa(X, importances("random_forest", model, 3), folds, neighbours=35)
    nbrs = training_neighbours(aoa, folds, 35)
    inside = nbrs.other_distance[:, 0] / aoa.mean_distance <= aoa.threshold
    return nested_check(y, oof, nbrs, inside, level=0.9, neighbours=10, lower_bound=None)


def test_a_folds_targets_reach_nothing_that_sets_its_interval():
    X, y, folds = _plots()
    changed = y.copy()
    changed[folds == 0] *= 3  # fold 0 unlike the others
    test = folds == 0
    for method in ("normalized", "mondrian", "split"):
        before = _refit(X, y, folds)["methods"][method]["arrays"]
        after = _refit(X, changed, folds)["methods"][method]["arrays"]
        assert np.array_equal(before["lower"][test], after["lower"][test]), method
        assert np.array_equal(before["upper"][test], after["upper"][test]), method
        assert not np.array_equal(before["lower"][~test], after["lower"][~test])  # the others' calibration saw it
    # the fast check is not nested so: fold 0's targets trained the fold models whose residuals calibrate it
    fast_before, fast_after = _fast(X, y, folds)["arrays"], _fast(X, changed, folds)["arrays"]
    assert not np.array_equal(fast_before["lower"][test], fast_after["lower"][test])


def test_an_unlike_fold_is_not_covered_by_the_refit_check_as_the_fast_check_claims():
    X, y, folds = _plots()
    y = y.copy()
    y[folds == 0] *= 1.4  # fold 0 unlike the others (its residuals inflate the others' calibration residuals)
    refit = _refit(X, y, folds)["methods"]["normalized"]
    fast = _fast(X, y, folds)
    fold0 = lambda check: next(f for f in check["per_fold"] if f["fold"] == 0)["coverage"]  # noqa: E731
    assert fold0(refit) < fold0(fast)
    assert refit["coverage"] < fast["coverage"]
    assert refit["n"] == len(y) and sum(f["n"] for f in refit["per_fold"]) == len(y)
    assert refit["inside_aoa"]["n"] + refit["outside_aoa"]["n"] == len(y)


def test_refit_check_on_exchangeable_plots_covers_near_the_level():
    X, y, folds = _plots(n=400, seed=1)
    out = _refit(X, y, folds)
    assert out["fits"] == 5 * 5  # K outer and K(K-1) inner fits
    for method in ("normalized", "mondrian", "split"):
        assert abs(out["methods"][method]["coverage"] - 0.9) < 0.05, method


def _train(tmp_path, extra: dict, name="m"):
    from tests.test_badinput_train import base_recipe, base_table

    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train

    raw = base_recipe()
    raw = {**raw, **extra, "intervals": {**raw.get("intervals", {}), "check": "refit", **extra.get("intervals", {})}}
    folder = train(parse_recipe(raw, base=tmp_path, path=tmp_path / "r.toml"), base_table(n=120), tmp_path / name,
                   progress=False)
    return folder, json.loads((folder / "metadata.json").read_text())


def test_a_refit_recipe_reports_the_check_in_bundle_card_and_cli(tmp_path):
    folder, meta = _train(tmp_path, {})
    refit = meta["interval_check_refit"]
    folds = len(meta["validation_folds"][meta["validation_setup"]["scheme"]])
    assert refit["fits"] == folds * folds
    assert set(refit["methods"]) == {"normalized", "mondrian", "split"}
    assert all("arrays" not in check for check in refit["methods"].values())
    assert 0 <= refit["methods"]["normalized"]["coverage"] <= 1
    card = (folder / "MODEL_CARD.md").read_text()
    assert "Refit check" in card and "saw the held-out fold" not in card


def test_the_fast_check_card_says_what_it_is_not(tmp_path):
    from tests.test_badinput_train import base_recipe, base_table

    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train

    folder = train(parse_recipe(base_recipe(), base=tmp_path, path=tmp_path / "r.toml"), base_table(n=120),
                   tmp_path / "m", progress=False)
    meta = json.loads((folder / "metadata.json").read_text())
    assert "interval_check_refit" not in meta
    assert "saw the held-out fold" in (folder / "MODEL_CARD.md").read_text()


def test_a_tuned_refit_check_uses_each_outer_folds_own_choice(tmp_path):
    folder, meta = _train(tmp_path, {"tuning": {"params": {"max_depth": [1, 3]}}})
    folds = len(meta["tuning"]["outer"])
    assert meta["interval_check_refit"]["fits"] == folds * folds
    assert meta["interval_check_refit"]["methods"]["normalized"]["n"] == meta["training"]["n"]


def test_an_unknown_check_is_refused_when_the_recipe_is_loaded(tmp_path):
    from tests.test_badinput_train import base_recipe

    from sinks.errors import SpecError
    from sinks.learn.recipe import parse_recipe

    raw = {**base_recipe(), "intervals": {"level": 0.9, "check": "full"}}
    with pytest.raises(SpecError, match=r"\[intervals\].*check.*refit"):
        parse_recipe(raw, base=tmp_path, path=tmp_path / "r.toml")


def test_a_cqr_refit_check_calibrates_each_fold_on_its_inner_quantiles(tmp_path):
    folder, meta = _train(tmp_path, {"estimator": {"kind": "xgboost_quantile",
                                                   "params": {"n_estimators": 50, "max_depth": 2, "n_jobs": 1}},
                                     "intervals": {"method": "cqr"}})
    cqr = meta["interval_check_refit"]["methods"]["cqr"]
    assert cqr["n"] == meta["training"]["n"] and 0.5 < cqr["coverage"] <= 1
    assert "cqr (used)" in (folder / "MODEL_CARD.md").read_text().split("Refit check")[1]
