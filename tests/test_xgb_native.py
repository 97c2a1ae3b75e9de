"""XGBoost through libxgboost's C API (sinks.learn.xgb_native): the package's predictions, bit for
bit, and maps that never import the xgboost package, scikit-learn or pandas."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import xgboost as xgb

from sinks.bundle import load_bundle
from sinks.learn.xgb_native import NativeBooster, native_model
from tests.test_mapping import mapping_demo


def _data(n=3000, p=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32)
    y = np.sin(X[:, 0]) * 10 + X[:, 1] * X[:, 2] + rng.normal(0, 0.5, n)
    X[rng.random((n, p)) < 0.05] = np.nan  # missing values take the trees' default directions
    return X, y


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    X, y = _data()
    model = xgb.XGBRegressor(n_estimators=60, max_depth=5, learning_rate=0.2, base_score=3.5).fit(X, y)
    path = tmp_path_factory.mktemp("native") / "model.json"
    model.save_model(path)
    return model, path


@pytest.mark.parametrize("n_jobs", [1, 2, None])
def test_predictions_are_the_packages_bits(fitted, n_jobs):
    model, path = fitted
    native = native_model("xgboost", path, n_jobs)
    assert isinstance(native, NativeBooster)
    X, _ = _data(2000, seed=1)
    expected = model.predict(X)
    got = native.predict(X)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.array_equal(got, expected)
    assert np.array_equal(native.predict(X.astype(np.float64)), model.predict(X.astype(np.float64)))
    assert native.get_params() == {"n_jobs": n_jobs}


def test_best_iteration_is_kept(tmp_path):
    """A model fitted with early stopping predicts with its best trees only, as XGBRegressor does."""
    X, y = _data(4000, seed=2)
    model = xgb.XGBRegressor(n_estimators=400, learning_rate=0.3, max_depth=6, early_stopping_rounds=5)
    model.fit(X[:3000], y[:3000], eval_set=[(X[3000:], y[3000:])], verbose=False)
    assert model.best_iteration < 399
    model.save_model(tmp_path / "model.json")
    native = native_model("xgboost", tmp_path / "model.json", 1)
    every_tree = model.get_booster().inplace_predict(X, iteration_range=(0, 0))
    assert np.array_equal(native.predict(X), model.predict(X))
    assert not np.array_equal(native.predict(X), every_tree)


def test_other_kinds_and_unreadable_files_fall_back(tmp_path, fitted):
    assert native_model("random_forest", fitted[1]) is None
    assert native_model("xgboost_quantile", fitted[1]) is None
    assert native_model("xgboost", tmp_path / "absent.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert native_model("xgboost", tmp_path / "bad.json") is None
    with pytest.raises(ValueError, match="no parameter"):
        native_model("xgboost", fitted[1]).set_params(max_depth=3)
    with pytest.raises(TypeError, match="not picklable"):
        import pickle

        pickle.dumps(native_model("xgboost", fitted[1]))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return mapping_demo(tmp_path_factory)


def test_predict_only_bundle_predicts_as_the_full_one(demo):
    full, lean = load_bundle(demo["bundle"]), load_bundle(demo["bundle"], predict_only=True)
    assert full.metadata["estimator"]["kind"] == "xgboost"
    assert isinstance(lean.model, NativeBooster) and not isinstance(full.model, NativeBooster)
    X = np.random.default_rng(3).normal(size=(500, len(full.feature_names))).astype(np.float32)
    a, b = full.predict(X), lean.predict(X)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


_MAP = """
import json, sys
from sinks.cli import main
main(["map", sys.argv[1], "--stack", sys.argv[2], "--bands", sys.argv[3], "--out", sys.argv[4], "--quiet"])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"xgboost", "sklearn", "pandas", "pyarrow", "scipy"})
print(json.dumps(heavy))
"""


@pytest.mark.parametrize("bands, allowed", [("carbon", []), ("carbon,lower,upper,di,aoa", ["scipy"])])
def test_map_imports_no_training_library(demo, tmp_path, bands, allowed):
    """``sinks map`` of an XGBoost bundle loads neither the xgboost package nor scikit-learn nor
    pandas (the target band alone not SciPy either), and writes what the full bundle writes."""
    from sinks.mapping.predict import predict_map

    out = tmp_path / "lean.tif"
    done = subprocess.run([sys.executable, "-c", _MAP, str(demo["bundle"]), str(demo["stack"]), bands, str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == allowed
    reference = predict_map(load_bundle(demo["bundle"]), None, tmp_path / "full.tif", stack=demo["stack"],
                            bands=bands, progress=False)
    assert out.read_bytes() == reference.read_bytes()
