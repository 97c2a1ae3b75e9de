"""Spatial CV, conformal intervals, area of applicability and model bundles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sinks.bundle import load_bundle, save_bundle
from sinks.errors import InputError, ModelMismatchError, SpecError
from sinks.learn import cv
from sinks.learn.aoa import fit_aoa
from sinks.learn.estimators import make_estimator
from sinks.learn.intervals import calibrate, coverage
from sinks.learn.recipe import parse_recipe


def test_spatial_blocks_keep_blocks_in_one_fold():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 10_000, 500), rng.uniform(0, 10_000, 500)
    blocks = cv.spatial_blocks(x, y, 1000)
    folds = cv.fold_ids(500, folds=5, seed=1, groups=blocks)
    for block in np.unique(blocks):
        assert len(np.unique(folds[blocks == block])) == 1
    assert set(folds) == set(range(5))


def test_spatial_cv_is_more_pessimistic_on_spatially_autocorrelated_noise():
    # the target is a smooth spatial field the features do not explain; random CV leaks it
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 10, 400), rng.uniform(0, 10, 400)
    field = np.sin(x) + np.cos(y)
    X = np.column_stack([x, y, rng.normal(size=400)])
    target = field + 0.1 * rng.normal(size=400)
    est = make_estimator("xgboost", {"n_estimators": 100, "n_jobs": 1})
    random_scores, _ = cv.cross_validate(est, X, target, cv.fold_ids(400, folds=5, seed=0), scheme="random", progress=False)
    groups = cv.spatial_blocks(x, y, 3.0)
    spatial_scores, _ = cv.cross_validate(est, X, target, cv.fold_ids(400, folds=5, seed=0, groups=groups),
                                          scheme="spatial", progress=False)
    assert random_scores.r2 > spatial_scores.r2 + 0.05


def test_too_few_blocks_is_a_clear_error():
    with pytest.raises(InputError, match="at least 5 blocks"):
        cv.fold_ids(10, folds=5, seed=0, groups=np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2]))


def test_conformal_interval_covers_at_its_level():
    rng = np.random.default_rng(1)
    y = rng.normal(50, 10, 2000)
    oof = y + rng.normal(0, 5, 2000)
    interval = calibrate(y[:1000], oof[:1000], level=0.9, residuals_from="test", lower_bound=None)
    assert interval.half_width == pytest.approx(1.645 * 5, rel=0.1)
    lower, upper = interval.apply(oof[1000:])
    assert coverage(y[1000:], lower, upper) == pytest.approx(0.9, abs=0.03)


def test_conformal_lower_bound_is_clipped_at_zero():
    interval = calibrate(np.array([1.0, 2, 3, 4]), np.array([1.5, 2.5, 3.5, 4.5]), level=0.5, residuals_from="t")
    lower, _ = interval.apply(np.array([0.2]))
    assert lower[0] == 0.0


def test_aoa_flags_points_far_from_training_data():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 3))
    ref = fit_aoa(X, np.array([0.5, 0.3, 0.2]), rng.integers(0, 5, 200))
    di_inside = ref.dissimilarity(rng.normal(size=(100, 3)))
    di_outside = ref.dissimilarity(rng.normal(size=(100, 3)) + 8)
    assert np.mean(di_inside <= ref.threshold) > 0.9
    assert np.all(di_outside > ref.threshold)


def test_recipe_errors_are_specific(tmp_path):
    with pytest.raises(SpecError, match="missing 'target'"):
        parse_recipe({"features": "x.toml"}, base=tmp_path)
    with pytest.raises(SpecError, match="unknown key"):
        parse_recipe({"features": "x.toml", "target": {"column": "c"}, "bogus": 1}, base=tmp_path)
    with pytest.raises(SpecError, match="folds must be at least 2"):
        parse_recipe({"features": "x.toml", "target": {"column": "c"}, "validation": {"folds": 1}}, base=tmp_path)
    with pytest.raises(SpecError, match="unknown estimator"):
        make_estimator("nope", {})


def _tiny_bundle(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 2)), rng.normal(size=60)
    model = make_estimator("xgboost", {"n_estimators": 10, "n_jobs": 1}).fit(X, y)
    aoa = fit_aoa(X, np.array([0.5, 0.5]), np.arange(60) % 5)
    interval = calibrate(y, model.predict(X), level=0.9, residuals_from="test", lower_bound=None)
    meta = {"recipe": {"name": "tiny"}, "target": {"column": "t", "units": "u", "band": "t"},
            "features": {"names": ["a", "b"], "spec": "s", "spec_fingerprint": "f" * 64},
            "training": {"n": 60, "dropped": 0, "sha256": "0" * 64},
            "validation_setup": {"block_size": 1.0},
            "validation": {"random": cv.score(y, y, scheme="random").as_dict()},
            "interval": interval.as_dict(), "interval_coverage": 0.9, "aoa": {"threshold": aoa.threshold}}
    return save_bundle(tmp_path / "bundle", kind="xgboost", model=model, metadata=meta, aoa=aoa,
                       oof=pd.DataFrame({"a": [1]})), X, model


def test_bundle_round_trip_predicts_the_same(tmp_path):
    folder, X, model = _tiny_bundle(tmp_path)
    bundle = load_bundle(folder)
    out = bundle.predict(X)
    np.testing.assert_allclose(out["prediction"], model.predict(X), rtol=1e-6)
    assert set(out) == {"prediction", "lower", "upper", "di", "aoa"}
    assert (folder / "MODEL_CARD.md").read_text().startswith("# Model card: tiny")
    with pytest.raises(ModelMismatchError, match="expects 2 features"):
        bundle.predict(np.zeros((3, 5)))


def test_tampered_bundle_is_refused(tmp_path):
    folder, _, _ = _tiny_bundle(tmp_path)
    meta = json.loads((folder / "metadata.json").read_text())
    meta["validation"]["random"]["r2"] = 0.99
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelMismatchError, match="edited after"):
        load_bundle(folder)
    folder2, _, _ = _tiny_bundle(tmp_path / "two")
    with open(folder2 / "model.json", "a") as handle:
        handle.write(" ")
    with pytest.raises(ModelMismatchError, match="checksum"):
        load_bundle(folder2)
    with pytest.raises(ModelMismatchError, match="not a model bundle"):
        load_bundle(tmp_path)
