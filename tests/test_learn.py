"""Spatial CV, conformal intervals, area of applicability and model bundles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sinks.bundle import load_bundle, save_bundle
from sinks.errors import ImplausibleValueError, InputError, ModelMismatchError, SpecError
from sinks.learn import cv
from sinks.learn.aoa import fit_aoa
from sinks.learn.estimators import check_params, make_estimator
from sinks.learn.intervals import calibrate, coverage
from sinks.learn.recipe import parse_recipe
from sinks.learn.targets import target_quantity
from sinks.learn.train import training_arrays


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
    with pytest.raises(SpecError, match=r"missing \[target\]"):
        parse_recipe({"features": "x.toml"}, base=tmp_path)
    with pytest.raises(SpecError, match="unknown key 'bogus'"):
        parse_recipe({"features": "x.toml", "target": {"column": "c"}, "bogus": 1}, base=tmp_path)
    with pytest.raises(SpecError, match="'folds' = 1 is out of range; it must be >= 3"):
        parse_recipe({"features": "x.toml", "target": {"column": "c"}, "validation": {"folds": 1}}, base=tmp_path)
    with pytest.raises(SpecError, match="unknown estimator kind 'xgbost' .did you mean 'xgboost'"):
        make_estimator("xgbost", {})
    with pytest.raises(SpecError, match="feature spec .* not found"):
        parse_recipe({"features": "x.toml", "target": {"column": "c"}}, base=tmp_path)


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
    with pytest.raises(ModelMismatchError, match="expects rows of 2 features"):
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


def _reforged(folder, edit):
    """Edit a bundle's metadata and forge its bundle id again, as an attacker could."""
    from sinks.bundle import _digest

    meta = json.loads((folder / "metadata.json").read_text())
    edit(meta)
    meta["bundle_id"] = _digest(meta["files"], {k: v for k, v in meta.items() if k != "bundle_id"})
    (folder / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("case", ["outside", "device", "interval"])
def test_a_forged_bundle_cannot_point_out_of_its_folder_or_smuggle_keys(tmp_path, case):
    from sinks.io import sha256_file

    folder, _, _ = _tiny_bundle(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("not the bundle's")
    if case == "outside":
        edit = lambda m: m["files"].update({"../secret.txt": sha256_file(secret)})  # noqa: E731
        match = "not a plain file name"
    elif case == "device":
        (folder / "zero").symlink_to("/dev/zero")  # hashing it would never end
        edit = lambda m: m["files"].update({"zero": "0" * 64})  # noqa: E731
        match = "not a regular file"
    else:
        edit = lambda m: m["interval"].update({"smuggled": 1})  # noqa: E731
        match = "interval or error profile"
    _reforged(folder, edit)
    with pytest.raises(ModelMismatchError, match=match):
        load_bundle(folder)


# ---- recipe and training-table checks (the CLI catalogue is tests/test_badinput_train.py) -------

def _recipe(tmp_path, **sections):
    data = {"features": str(Path(__file__).resolve().parents[1] / "features" / "meuse.toml"),
            "target": {"column": "carbon_mg_ha", "units": "Mg C/ha"},
            "estimator": {"params": {"n_estimators": 10, "n_jobs": 1}},
            "validation": {"folds": 3, "block_size": 500}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_recipe(data, base=tmp_path, path=tmp_path / "r.toml")


def test_recipe_is_fully_validated_when_loaded(tmp_path):
    recipe = _recipe(tmp_path, target={"pool": "forest"})
    assert recipe.pool == "forest" and recipe.folds == 3 and recipe.interval_level == 0.9
    with pytest.raises(SpecError, match=r"r.toml \[intervals\]: 'level' = 90 looks like a percentage.*level = 0.9"):
        _recipe(tmp_path, intervals={"level": 90})
    with pytest.raises(SpecError, match=r"r.toml \[estimator\] params: max_depth = -1 is rejected by xgboost"):
        _recipe(tmp_path, estimator={"params": {"max_depth": -1}})
    with pytest.raises(SpecError, match=r"unknown xgboost parameter 'colsample_bytre' \(did you mean 'colsample_bytree'"):
        _recipe(tmp_path, estimator={"params": {"colsample_bytre": 0.5}})
    with pytest.raises(SpecError, match="'seed' must be an integer"):
        _recipe(tmp_path, validation={"seed": "zero"})


def test_check_params_names_the_culprit_among_good_ones():
    with pytest.raises(SpecError, match=r"where: booster = 'gbtreee' is rejected by xgboost: Unknown gbm type"):
        check_params("xgboost", {"max_depth": 3, "booster": "gbtreee", "learning_rate": 0.1}, "where")
    check_params("xgboost", {"max_depth": 3, "objective": "reg:absoluteerror"}, "where")


def _table(n=60, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"plot_id": np.arange(n), "x": rng.uniform(0, 3000, n), "y": rng.uniform(0, 3000, n)})
    for name in ("a", "b"):
        frame[name] = rng.normal(size=n)
    frame["carbon_mg_ha"] = 100 + 10 * frame["a"] + rng.normal(0, 2, n)
    return frame


def test_training_arrays_drop_missing_rows_and_refuse_bad_targets(tmp_path):
    recipe = _recipe(tmp_path)
    frame = _table()
    frame.loc[[0, 1], "a"] = np.nan
    X, y, keep = training_arrays(recipe, frame, ["a", "b"], source="t.csv")
    assert X.shape == (58, 2) and not keep[:2].any()

    constant = _table().assign(carbon_mg_ha=5.0)
    with pytest.raises(InputError, match="t.csv: target column 'carbon_mg_ha' is constant"):
        training_arrays(recipe, constant, ["a", "b"], source="t.csv")
    rounding = _table().assign(carbon_mg_ha=100.0 + 1e-7 * (np.arange(60) % 2))  # below float32's resolution
    with pytest.raises(InputError, match="is constant.*float32"):
        training_arrays(recipe, rounding, ["a", "b"], source="t.csv")
    training_arrays(recipe, _table().assign(carbon_mg_ha=100.0 + 1e-3 * np.arange(60)), ["a", "b"], source="t.csv")
    negative = _table()
    negative.loc[4, "carbon_mg_ha"] = -3
    with pytest.raises(ImplausibleValueError, match=r"row\(s\) 5 are negative"):
        training_arrays(recipe, negative, ["a", "b"], source="t.csv")
    # the pool comes from the recipe, or else from the table's pool column
    slip = _table().assign(carbon_mg_ha=lambda f: f.carbon_mg_ha * 1000, pool="forest")
    with pytest.raises(ImplausibleValueError, match="plausible maximum for forest carbon"):
        training_arrays(recipe, slip, ["a", "b"], source="t.csv")
    training_arrays(recipe, slip.drop(columns="pool"), ["a", "b"], source="t.csv")  # pool unknown: no bound
    with pytest.raises(ImplausibleValueError, match="plausible maximum for forest carbon"):
        training_arrays(_recipe(tmp_path, target={"pool": "forest"}), slip.drop(columns="pool"), ["a", "b"])


def test_concentration_targets_are_bounded_by_pure_organic_matter_not_as_stocks(tmp_path):
    recipe = _recipe(tmp_path, target={"column": "soc", "units": "g C/kg", "pool": "soil"})
    assert target_quantity("g C/kg", "soc") == "concentration"
    assert target_quantity("", "carbon_mg_ha") == "stock" and target_quantity("index", "ndvi") is None
    frame = _table().assign(soc=lambda f: f.carbon_mg_ha / f.carbon_mg_ha.max() * 590)
    X, y, _ = training_arrays(recipe, frame, ["a", "b"])
    assert len(y) == 60
    from sinks.errors import ImplausibleValueError

    with pytest.raises(ImplausibleValueError, match="exceed 600 g C/kg .*pure organic matter"):  # not a stock bound
        training_arrays(recipe, _table().assign(soc=lambda f: f.carbon_mg_ha * 100), ["a", "b"])


def test_error_profile_is_monotone_in_the_di():
    from sinks.learn.aoa import fit_error_profile

    rng = np.random.default_rng(5)
    di = rng.uniform(0, 1, 300)
    err = np.abs(rng.normal(0, 1 + 3 * di))
    profile = fit_error_profile(di, err, scheme="knndm")
    grid = np.linspace(-0.5, 2, 50)
    values = profile(grid)
    assert np.all(np.diff(values) >= 0) and values[-1] > 2 * values[0]
    assert values[-1] == pytest.approx(profile.error[-1])  # held beyond the largest training DI


def _brute_di(ref, X):
    """Reference DI: distance to every training sample, by brute force, over the mean distance."""
    from scipy.spatial.distance import cdist

    return cdist(ref._transform(X), ref.train).min(axis=1) / ref.mean_distance


@pytest.mark.parametrize("workers", [1, 2])
def test_chunked_threaded_di_equals_brute_force_and_the_aoa_flag_everywhere(monkeypatch, workers):
    import sinks.learn.aoa as aoa_module

    monkeypatch.setattr(aoa_module, "QUERY_CHUNK", 97)  # several chunks, a ragged last one
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 4))
    ref = fit_aoa(X, np.array([0.4, 0.3, 0.2, 0.1]), rng.integers(0, 4, 400))
    new = np.vstack([rng.normal(size=(300, 4)), rng.normal(size=(200, 4)) * 3 + 2, X[:20]])
    new[5, 1] = np.nan  # a missing predictor sits at the training mean
    di, brute = ref.dissimilarity(new, workers=workers), _brute_di(ref, new)
    inside = brute.astype(np.float32) <= ref.threshold
    assert 0.2 < inside.mean() < 0.9  # both sides of the threshold are exercised
    np.testing.assert_allclose(di, brute, rtol=1e-12, atol=1e-15)  # exact inside and outside
    assert np.array_equal(di.astype(np.float32) <= ref.threshold, inside)
    di_n, index = ref.nearest(new, workers=workers)
    np.testing.assert_array_equal(di_n, di)
    np.testing.assert_allclose(np.linalg.norm(ref._transform(new) - ref.train[index], axis=1) / ref.mean_distance,
                               brute, rtol=1e-12, atol=1e-15)


def test_di_is_exact_and_the_flag_right_at_the_threshold():
    """Rows placed within float32 rounding of the threshold distance keep their exact DI and flag."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, 3))
    ref = fit_aoa(X, np.ones(3), rng.integers(0, 3, 300))
    direction = rng.normal(size=(50, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    # points just beyond the hull of the training data, at the threshold distance of their nearest
    far = ref.train[np.argmax(np.linalg.norm(ref.train, axis=1))]
    scale = np.linspace(1 - 1e-6, 1 + 1e-6, 50)[:, None]
    Z = far + np.abs(direction) * np.sign(far) * ref.threshold * ref.mean_distance * scale
    Xn = Z / ref.weights * ref.sd + ref.mean
    di, brute = ref.dissimilarity(Xn, workers=2), _brute_di(ref, Xn)
    np.testing.assert_allclose(di, brute, rtol=1e-12)
    assert np.array_equal(di.astype(np.float32) <= ref.threshold, brute.astype(np.float32) <= ref.threshold)


def test_brute_force_cv_neighbours_equal_the_kd_tree_ones(monkeypatch):
    import sinks.learn.aoa as aoa_module
    from sinks.learn.aoa import cv_neighbours

    rng = np.random.default_rng(5)
    X = rng.normal(size=(900, 16))
    folds = rng.integers(0, 4, 900)
    ref = fit_aoa(X, rng.dirichlet(np.ones(16)), folds, neighbours=20)
    kept_d, kept_i = cv_neighbours(ref, folds, 20)  # kept by fit_aoa: no second search
    monkeypatch.setattr(aoa_module, "BRUTE_FORCE_FEATURES", 100)  # k-d tree
    tree = fit_aoa(X, ref.weights, folds)
    tree_d, tree_i = cv_neighbours(tree, folds, 20)
    np.testing.assert_array_equal(kept_i, tree_i)
    np.testing.assert_allclose(kept_d, tree_d, rtol=1e-12)
    assert ref.threshold == pytest.approx(tree.threshold, rel=1e-12)
    assert (folds[kept_i] != folds[:, None]).all()


def test_categorical_predictors_are_compared_by_class_in_the_aoa(tmp_path):
    from sinks.learn.aoa import AOAReference

    rng = np.random.default_rng(3)
    n = 300
    classes = rng.choice([1.0, 3.0], n)  # class codes, not magnitudes
    X = np.column_stack([rng.normal(size=n), classes])
    folds = rng.integers(0, 5, n)
    ref = fit_aoa(X, np.array([0.5, 0.5]), folds, categorical=[1])
    assert ref.train.shape[1] == 1 + 2 + 1  # continuous + one-hot classes + unseen

    def di(ref, code):
        return ref.dissimilarity(np.array([[0.0, code]]))[0]

    assert di(ref, 2.0) == pytest.approx(di(ref, 9.0))  # an unseen class is unlike, whatever its code
    assert di(ref, 1.0) < 0.5 * di(ref, 2.0) and di(ref, 3.0) < 0.5 * di(ref, 2.0)
    assert di(ref, 2.0) > ref.threshold  # outside the AOA
    numeric = fit_aoa(X, np.array([0.5, 0.5]), folds)  # as numbers, the code's magnitude would count
    assert di(numeric, 9.0) > 3 * di(numeric, 2.0)
    # saved and loaded with the bundle
    ref.save(tmp_path / "aoa.npz")
    back = AOAReference.load(tmp_path / "aoa.npz")
    assert back.categorical == (1,) and [list(c) for c in back.classes] == [[1.0, 3.0]]
    probe = np.array([[0.3, 2.0], [1.0, 4.0], [-1.0, np.nan]])
    np.testing.assert_array_equal(back.dissimilarity(probe), ref.dissimilarity(probe))


def test_categorical_flag_in_a_spec_is_checked(tmp_path):
    from sinks.covariates.spec import parse_spec
    from sinks.errors import SpecError

    def spec(feature, resampling="bilinear"):
        return {"name": "s", "grid": {"crs": "EPSG:32648", "resolution": 30, "like": "a"},
                "sources": [{"name": "a", "path": "a.tif", "bands": ["x"]},
                            {"name": "b", "path": "b.tif", "bands": ["c"], "resampling": resampling}],
                "features": [{"name": "elev", "band": "a.x"}, feature]}

    ok = parse_spec(spec({"name": "c", "band": "b.c", "categorical": True}, "nearest"), base=tmp_path)
    assert [f.categorical for f in ok.features] == [False, True]
    plain = parse_spec(spec({"name": "c", "band": "b.c"}, "nearest"), base=tmp_path)
    assert plain.fingerprint() != ok.fingerprint()
    with pytest.raises(SpecError, match="mixes class codes"):
        parse_spec(spec({"name": "c", "band": "b.c", "categorical": True}), base=tmp_path)
    with pytest.raises(SpecError, match="true or false"):
        parse_spec(spec({"name": "c", "band": "b.c", "categorical": "yes"}, "nearest"), base=tmp_path)
    with pytest.raises(SpecError, match="only a band feature"):
        parse_spec(spec({"name": "c", "expression": "elev * 2", "categorical": True}, "nearest"), base=tmp_path)


def test_residual_error_model_from_the_out_of_fold_residuals():
    from sinks.learn.train import residual_error_model

    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 5000, 800), rng.uniform(0, 5000, 800)
    # spatially correlated residuals (a smooth field with a range of ~1 km) and pure noise
    centres = rng.uniform(0, 5000, (40, 2))
    field = np.exp(-np.hypot(x[:, None] - centres[:, 0], y[:, None] - centres[:, 1]) / 400) @ rng.normal(size=40)
    smooth = residual_error_model(x, y, field + 0.05 * rng.normal(size=800))
    noise = residual_error_model(x, y, rng.normal(size=800))
    assert smooth is not None and smooth["nugget_share"] < 0.3 and 100 < smooth["range_m"] < 3000
    assert smooth["range_m"] == pytest.approx(smooth["practical_range_m"] / 3)
    assert noise is None or noise["nugget_share"] is None or noise["nugget_share"] > 0.7


def test_an_unresolved_error_range_leaves_totals_fully_correlated(monkeypatch):
    """A range below the first lag is no evidence of independence within a parcel: no error model
    (totals then take the errors as fully correlated), not a pure nugget."""
    import dataclasses

    from sinks.learn import cv
    from sinks.learn.train import residual_error_model

    fitted = cv.Variogram("spherical", 40.0, 0.9, 0.1, lags=[85.0, 170.0], gamma=[1.0, 1.0], pairs=[30, 60],
                          n_points=600)
    monkeypatch.setattr(cv, "fit_variogram", lambda *a, **k: fitted)
    record = residual_error_model(np.zeros(3), np.zeros(3), np.zeros(3))
    assert record["range_m"] is None and record["nugget_share"] is None
    assert "below the first lag 85" in record["note"] and "fully correlated" in record["note"]
    monkeypatch.setattr(cv, "fit_variogram", lambda *a, **k: dataclasses.replace(fitted, range=400.0))
    resolved = residual_error_model(np.zeros(3), np.zeros(3), np.zeros(3))
    assert resolved["range_m"] == pytest.approx(400 / 3) and resolved["nugget_share"] == pytest.approx(0.9)
