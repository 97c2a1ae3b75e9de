"""Earth Engine tree strings from XGBoost and scikit-learn forests, checked by evaluating them back.

The oracle (:func:`evaluate_tree_strings`) reads the strings with the grammar Earth Engine's
parser enforces (pre-order, children ``2n``/``2n+1``) and evaluates them with float32 features
compared in double to the written thresholds; it must equal each model's own ``predict``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from sklearn.tree import DecisionTreeRegressor

from sinks.errors import InputError, ModelMismatchError, OutputError, ResourceError
from sinks.mapping import ee_trees as et
from tests.ee_offline import encode, function_names, invocations, offline_ee

REPO = Path(__file__).resolve().parents[1]
NAMES = ["ndvi", "elev", "slope", "b4"]


def _data(n=400, seed=0):
    """Features with many repeated values (so rows sit exactly on split thresholds) and a target."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([
        np.round(rng.uniform(-0.2, 0.9, n), 2),          # a grid of 0.01 steps
        rng.integers(200, 1800, n).astype(float),         # integers
        rng.gamma(2.0, 5.0, n),                           # continuous
        np.round(rng.normal(0.1, 0.05, n), 3),
    ]).astype(np.float32)
    y = 80 * X[:, 0] + 0.02 * X[:, 1] - 0.5 * X[:, 2] + 200 * X[:, 3] ** 2 + rng.normal(0, 3, n)
    return X, y


def _thresholds(model) -> list[tuple[int, np.float32]]:
    raw = json.loads(bytes(model.get_booster().save_raw(raw_format="json")))
    out = []
    for tree in raw["learner"]["gradient_booster"]["model"]["trees"]:
        for left, f, t in zip(tree["left_children"], tree["split_indices"], tree["split_conditions"]):
            if left >= 0:
                out.append((f, np.float32(t)))
    return out


def _boundary_rows(X, splits, seed=1):
    """Rows of ``X`` with one feature set exactly on a split's threshold and one float32 below it."""
    rng = np.random.default_rng(seed)
    rows = []
    for f, t in splits:
        for value in (t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.float32(np.inf))):
            row = X[rng.integers(len(X))].copy()
            row[f] = value
            rows.append(row)
    return np.asarray(rows, dtype=np.float32)


def _close(got, want):
    want = np.asarray(want, dtype=np.float64)
    atol = 1e-4 * max(1.0, float(np.ptp(want)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol)


# -- XGBoost ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.mark.parametrize(("n_trees", "base_score"), [(50, None), (120, 0.0), (300, 123.25), (80, -40.0)])
def test_xgboost_strings_equal_predict(data, n_trees, base_score):
    X, y = data
    model = xgb.XGBRegressor(n_estimators=n_trees, max_depth=6, learning_rate=0.1, base_score=base_score,
                             tree_method="hist", n_jobs=1, random_state=0).fit(X, y)
    splits = _thresholds(model)
    exact = np.isin(X, np.array([t for _, t in splits], dtype=np.float32))
    assert exact.any(), "the data must hold values exactly on split thresholds"
    X_test = np.vstack([X, _boundary_rows(X, splits[:200])])
    trees = et.xgboost_to_ee_trees(model, NAMES)
    assert len(trees) == n_trees
    _close(et.evaluate_tree_strings(trees, X_test, NAMES), model.predict(X_test))


def test_xgboost_base_score_is_in_every_tree(data):
    """Mean over trees = base_score + sum of leaves: each leaf is n * leaf + base_score."""
    X, y = data
    model = xgb.XGBRegressor(n_estimators=20, max_depth=3, base_score=500.0, n_jobs=1).fit(X, y)
    raw = et.evaluate_tree_strings(et.xgboost_to_ee_trees(model, NAMES), X[:50], NAMES, combine="raw")
    margin = model.get_booster().predict(xgb.DMatrix(X[:50]), pred_leaf=False, output_margin=True)
    assert raw.shape == (50, 20)
    _close(raw.mean(axis=1), margin)
    summed = et.evaluate_tree_strings(et.xgboost_to_ee_trees(model, NAMES, combine="sum"), X[:50], NAMES,
                                      combine="raw")
    _close(summed.sum(axis=1), margin)


def test_strict_split_needs_the_float32_below(data):
    """XGBoost sends x < t left: writing t itself with <= sends the rows on t the wrong way."""
    X, y = data
    model = xgb.XGBRegressor(n_estimators=60, max_depth=6, n_jobs=1, random_state=0).fit(X, y)
    splits = _thresholds(model)
    X_test = np.vstack([X, _boundary_rows(X, splits[:300])])
    strict = et.xgboost_to_ee_trees(model, NAMES, operator="<")
    _close(et.evaluate_tree_strings(strict, X_test, NAMES), model.predict(X_test))
    naive = [t.replace(">=", ">").replace("<", "<=") for t in strict]  # x <= t instead of x < t
    wrong = np.abs(et.evaluate_tree_strings(naive, X_test, NAMES) - model.predict(X_test))
    assert wrong.max() > 1e-3 * np.ptp(y)


@pytest.mark.parametrize(("combine", "operator"), [("sum", "<="), ("sum", "<"), ("mean", "<")])
def test_xgboost_other_conventions(data, combine, operator):
    X, y = data
    model = xgb.XGBRegressor(n_estimators=40, max_depth=6, base_score=7.5, n_jobs=1).fit(X, y)
    trees = et.xgboost_to_ee_trees(model, NAMES, combine=combine, operator=operator)
    _close(et.evaluate_tree_strings(trees, X, NAMES, combine=combine), model.predict(X))


def test_xgboost_from_booster_and_bundle_json(data, tmp_path):
    X, y = data
    model = xgb.XGBRegressor(n_estimators=15, max_depth=4, n_jobs=1).fit(X, y)
    model.save_model(tmp_path / "model.json")  # what a bundle holds (sinks.learn.estimators.save_model)
    from_model = et.ee_tree_strings(model, NAMES)
    assert et.ee_tree_strings(model.get_booster(), NAMES) == from_model
    assert et.ee_tree_strings(tmp_path / "model.json", NAMES) == from_model
    assert et.ee_tree_strings(str(tmp_path / "model.json"), NAMES) == from_model


def test_xgboost_trees_without_splits(data):
    """A tree that is one leaf is written as a split whose two sides hold the same value."""
    X, y = data
    model = xgb.XGBRegressor(n_estimators=5, max_depth=3, min_child_weight=1e9, base_score=3.0,
                             n_jobs=1).fit(X, y)
    trees = et.xgboost_to_ee_trees(model, NAMES)
    assert all(t.count("\n") == 3 for t in trees)
    _close(et.evaluate_tree_strings(trees, X, NAMES), model.predict(X))


def test_xgboost_early_stopping_exports_the_best_iteration(data):
    X, y = data
    model = xgb.XGBRegressor(n_estimators=200, max_depth=3, learning_rate=0.3, early_stopping_rounds=3,
                             n_jobs=1).fit(X[:300], y[:300], eval_set=[(X[300:], y[300:])], verbose=False)
    assert model.best_iteration < 199
    trees = et.xgboost_to_ee_trees(model, NAMES)
    assert len(trees) == model.best_iteration + 1
    _close(et.evaluate_tree_strings(trees, X, NAMES), model.predict(X))


def test_xgboost_refusals(data):
    X, y = data
    for objective in ("reg:absoluteerror", "reg:pseudohubererror"):  # identity links: exported
        model = xgb.XGBRegressor(n_estimators=20, max_depth=4, objective=objective, n_jobs=1).fit(X, y)
        _close(et.evaluate_tree_strings(et.ee_tree_strings(model, NAMES), X, NAMES), model.predict(X))
    gamma = xgb.XGBRegressor(n_estimators=3, objective="reg:gamma", n_jobs=1).fit(X, np.abs(y) + 1)
    with pytest.raises(InputError, match="reg:gamma"):
        et.xgboost_to_ee_trees(gamma, NAMES)
    model = xgb.XGBRegressor(n_estimators=3, n_jobs=1).fit(X, y)
    with pytest.raises(ModelMismatchError, match="4 features"):
        et.xgboost_to_ee_trees(model, NAMES[:3])
    with pytest.raises(InputError, match="cannot be written"):
        et.xgboost_to_ee_trees(model, ["ndvi", "elev m", "slope", "b4"])
    with pytest.raises(InputError, match="combine"):
        et.xgboost_to_ee_trees(model, NAMES, combine="median")
    with pytest.raises(InputError, match="only XGBoost models"):
        et.ee_tree_strings(object(), NAMES)


# -- scikit-learn forests ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", [RandomForestRegressor, ExtraTreesRegressor])
def test_forest_strings_equal_predict(data, kind):
    X, y = data
    model = kind(n_estimators=20, min_samples_leaf=2, random_state=0, n_jobs=1).fit(X, y)
    splits = []
    for est in model.estimators_[:5]:
        tree = est.tree_
        splits += [(int(f), et._floor32(t)) for f, t, left in zip(tree.feature, tree.threshold, tree.children_left)
                   if left >= 0]
    X_test = np.vstack([X, _boundary_rows(X, splits[:200])])
    trees = et.forest_to_ee_trees(model, NAMES)
    _close(et.evaluate_tree_strings(trees, X_test, NAMES), model.predict(X_test))
    strict = et.forest_to_ee_trees(model, NAMES, operator="<", combine="sum")
    _close(et.evaluate_tree_strings(strict, X_test, NAMES, combine="sum"), model.predict(X_test))


def test_forest_refuses_deep_trees_and_classifiers(monkeypatch):
    X = np.arange(40, dtype=np.float32)[:, None]
    y = np.sin(X[:, 0])
    deep = RandomForestRegressor(n_estimators=2, random_state=0).fit(X, y)
    assert deep.estimators_[0].get_depth() > 4
    et.forest_to_ee_trees(deep, ["x"])
    monkeypatch.setattr(et, "MAX_DEPTH", 4)  # the real limit is 30 (node numbers up to 2**31 - 1)
    with pytest.raises(InputError, match="deeper than 4"):
        et.forest_to_ee_trees(deep, ["x"])
    monkeypatch.undo()
    from sklearn.ensemble import RandomForestClassifier

    clf = RandomForestClassifier(n_estimators=2).fit(X, (X[:, 0] > 5).astype(int))
    with pytest.raises(InputError, match="not a regressor"):
        et.forest_to_ee_trees(clf, ["x"])
    single = DecisionTreeRegressor(max_depth=4).fit(X, y)
    _close(et.evaluate_tree_strings(et.ee_tree_strings(single, ["x"]), X, ["x"]), single.predict(X))


# -- real data: Meuse ---------------------------------------------------------------------------
def test_meuse_models_round_trip():
    """XGBoost and a random forest trained on the vendored Meuse soil samples (Pebesma, sp package)."""
    table = pd.read_csv(REPO / "sinks" / "datasets" / "meuse" / "meuse_points.csv")
    names = ["elev", "dist", "ffreq", "soil", "lime", "x", "y"]
    X = table[names].to_numpy(np.float32)
    y = np.log(table["zinc"].to_numpy())
    xgb_model = xgb.XGBRegressor(n_estimators=150, max_depth=6, learning_rate=0.05, n_jobs=1,
                                 random_state=0).fit(X, y)
    _close(et.evaluate_tree_strings(et.ee_tree_strings(xgb_model, names), X, names), xgb_model.predict(X))
    forest = RandomForestRegressor(n_estimators=50, random_state=0, n_jobs=1).fit(X, y)
    _close(et.evaluate_tree_strings(et.ee_tree_strings(forest, names), X, names), forest.predict(X))
    # a grid of new points, off the training values
    rng = np.random.default_rng(3)
    grid = X[rng.integers(len(X), size=200)] + rng.normal(0, 1, (200, len(names))).astype(np.float32) * X.std(0)
    _close(et.evaluate_tree_strings(et.ee_tree_strings(xgb_model, names), grid, names), xgb_model.predict(grid))


# -- the text itself ----------------------------------------------------------------------------
_ROOT = re.compile(r"^1\) root \d+ 0 -?\d+(\.\d+)?$")
_NODE = re.compile(r"^(?P<indent> *)(?P<n>\d+)\) (?P<f>[A-Za-z_][\w.]*)(?P<op><=|>)(?P<t>-?\d+(\.\d+)?) \d+ 0 "
                   r"-?\d+(\.\d+)?(?P<leaf> \*)?$")


def test_strings_follow_the_rpart_grammar(data):
    X, y = data
    model = xgb.XGBRegressor(n_estimators=10, max_depth=6, n_jobs=1).fit(X, y)
    for tree in et.xgboost_to_ee_trees(model, NAMES):
        lines = tree.rstrip("\n").split("\n")
        assert _ROOT.match(lines[0]), lines[0]
        numbers = []
        for line in lines[1:]:
            m = _NODE.match(line)
            assert m, line  # no exponent notation, one token per name, complementary operators
            n = int(m["n"])
            assert len(m["indent"]) == 2 * int(np.log2(n))
            assert m["op"] == ("<=" if n % 2 == 0 else ">")
            numbers.append(n)
        # pre-order with heap numbers: each even node is followed (after its subtree) by its sibling
        assert numbers[0] == 2 and len(numbers) == len(set(numbers))
        assert sum(line.endswith(" *") for line in lines) == (len(lines) + 1) // 2  # leaves = splits + 1
        et.parse_tree_string(tree, NAMES)  # pre-order with heap numbers, complementary children


def test_parser_rejects_what_earth_engine_rejects():
    good = "1) root 4 0 0\n  2) x<=1 2 0 5 *\n  3) x>1 2 0 7 *\n"
    assert et.evaluate_tree_strings([good], np.array([[1.0], [1.5]]), ["x"]).tolist() == [5.0, 7.0]
    # geemap's order for unbalanced trees (issue #1556): a child numbered out of pre-order
    bad = ("1) root 4 0 0\n  2) x<=1 2 0 5\n    4) y<=0 1 0 1 *\n  3) x>1 2 0 7 *\n    5) y>0 1 0 2 *\n")
    with pytest.raises(ValueError, match="expected node 5, got 3"):
        et.parse_tree_string(bad, ["x", "y"])
    with pytest.raises(ValueError, match="not the complement"):
        et.parse_tree_string("1) root 4 0 0\n  2) x<=1 2 0 5 *\n  3) x>2 2 0 7 *\n", ["x"])
    with pytest.raises(ValueError, match="unknown feature"):
        et.parse_tree_string(good, ["z"])
    # several trees in one item (a Blob file) read as separate trees
    assert len(et.split_trees([good + good, good])) == 3
    # a masked (NaN) feature gives a masked output
    assert np.isnan(et.evaluate_tree_strings([good], np.array([[np.nan]]), ["x"])[0])


# -- size, files and the classifier -------------------------------------------------------------
def test_payload_size_and_refusal(data):
    X, y = data
    model = xgb.XGBRegressor(n_estimators=30, max_depth=6, n_jobs=1).fit(X, y)
    trees = et.xgboost_to_ee_trees(model, NAMES)
    size = et.tree_payload_bytes(trees)
    assert size == len(json.dumps(trees).encode())
    assert et.check_payload(trees) == size < et.MAX_INLINE_BYTES < et.EE_REQUEST_LIMIT_BYTES
    with pytest.raises(ResourceError, match=r"write_tree_file.*gs://"):
        et.check_payload(trees, limit=size - 1)
    with pytest.raises(ResourceError, match="10485760 bytes"):
        et.ee_classifier(trees, limit=1000)  # refused before Earth Engine is touched


def test_write_tree_file(data, tmp_path):
    X, y = data
    model = RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0).fit(X, y)
    trees = et.forest_to_ee_trees(model, NAMES)
    path = et.write_tree_file(trees, tmp_path / "trees.txt")
    text = path.read_text(encoding="utf-8")
    assert et.split_trees([text]) == trees
    _close(et.evaluate_tree_strings([text], X, NAMES), model.predict(X))
    with pytest.raises(OutputError, match="exists"):
        et.write_tree_file(trees, path)
    et.write_tree_file(trees[:2], path, overwrite=True)
    assert len(et.split_trees([path.read_text()])) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trees.txt"]  # nothing half-written left


@pytest.fixture()
def ee():
    pytest.importorskip("ee")
    with offline_ee() as module:
        yield module


def test_classifier_graph_offline(ee, data):
    X, y = data
    model = xgb.XGBRegressor(n_estimators=8, max_depth=3, n_jobs=1).fit(X, y)
    trees = et.xgboost_to_ee_trees(model, NAMES)
    graph = encode(et.ee_classifier(trees))
    (ensemble,) = invocations(graph, "Classifier.decisionTreeEnsemble")
    assert ensemble["treeStrings"] == {"constantValue": trees}
    (mode,) = invocations(graph, "Classifier.setOutputMode")
    assert mode["mode"] == {"constantValue": "REGRESSION"}


def test_classifier_from_cloud_storage_offline(ee):
    graph = encode(et.ee_classifier("gs://my-bucket/models/trees.txt"))
    names = function_names(graph)
    assert names[:1] == ["Classifier.setOutputMode"] and "Blob.string" in names
    (blob,) = invocations(graph, "Blob")
    assert blob["url"] == {"constantValue": "gs://my-bucket/models/trees.txt"}
    with pytest.raises(InputError, match="gs://"):
        et.ee_classifier("trees.txt")


def test_classify_image_offline(ee, data):
    X, y = data
    model = RandomForestRegressor(n_estimators=3, max_depth=4, random_state=0).fit(X, y)
    image = ee.Image.constant([0.5, 900, 10, 0.1]).rename(NAMES)
    graph = encode(et.classify_image(image, et.forest_to_ee_trees(model, NAMES), NAMES))
    (classify,) = invocations(graph, "Image.classify")
    assert classify["outputName"] == {"constantValue": "carbon"}
    assert "Image.toFloat" in function_names(graph)


# -- live ---------------------------------------------------------------------------------------
live = pytest.mark.skipif(not os.environ.get("SINKS_EE_PROJECT"),
                          reason="set SINKS_EE_PROJECT (and run earthengine authenticate) for the live suite")


@pytest.mark.ee_live
@live
def test_live_ensemble_semantics_and_round_trip(data):
    """On the server: REGRESSION averages the trees, '<=' keeps a value on the threshold left, and
    an exported XGBoost model predicts what the oracle predicts on sample rows."""
    from sinks.covariates import earthengine as eng

    eng.initialize(os.environ["SINKS_EE_PROJECT"])
    ee = pytest.importorskip("ee")
    two = ["1) root 2 0 0\n  2) x<=0.5 1 0 1 *\n  3) x>0.5 1 0 10 *\n",
           "1) root 2 0 0\n  2) x<=0.5 1 0 3 *\n  3) x>0.5 1 0 3 *\n"]
    rows = ee.FeatureCollection([ee.Feature(None, {"x": v, "id": k}) for k, v in enumerate([0.5, 0.75])])
    got = rows.classify(et.ee_classifier(two), "carbon").aggregate_array("carbon").getInfo()
    assert got == pytest.approx([2.0, 6.5])  # mean of (1, 3) and (10, 3); a sum would be 4 and 13
    X, y = data
    model = xgb.XGBRegressor(n_estimators=100, max_depth=6, n_jobs=1, base_score=50.0).fit(X, y)
    sample = X[:40]
    fc = ee.FeatureCollection([ee.Feature(None, {n: float(v) for n, v in zip(NAMES, row)}) for row in sample])
    got = fc.classify(et.ee_classifier(et.ee_tree_strings(model, NAMES)), "carbon").aggregate_array("carbon").getInfo()
    _close(np.asarray(got), model.predict(sample))
