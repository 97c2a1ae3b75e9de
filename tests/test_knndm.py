"""kNNDM folds (Linnenbrink et al. 2024, as CAST's knndm): matching, validity, splitter, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from pyproj import CRS
from sklearn.linear_model import Ridge
from sklearn.model_selection import cross_val_score

from sinks.errors import InputError
from sinks.learn import knndm as K
from sinks.learn.knndm import (KNNDMSplit, cv_distances, fold_wasserstein, grid_prediction_points, knndm_folds,
                               metric_coordinates, nearest_neighbour_distances)

SIZE = 100_000.0  # a 100 km square prediction area


def _pred(n_side=40):
    g = np.linspace(0, SIZE, n_side)
    return np.column_stack([a.ravel() for a in np.meshgrid(g, g)])


def _clustered(n, n_clusters=8, sd=1500.0, seed=1):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1 * SIZE, 0.9 * SIZE, (n_clusters, 2))
    return centres[rng.integers(0, n_clusters, n)] + rng.normal(0, sd, (n, 2))


def _random_folds(n, k=5, seed=0):
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


@pytest.fixture(scope="module")
def clustered_result():
    xy = _clustered(400)
    return xy, knndm_folds(xy, _pred(), 5, seed=0)


def test_clustered_plots_knndm_beats_random_kfold(clustered_result):
    xy, res = clustered_result
    assert res.method == "kNNDM" and res.mode == "exact"
    w_random = fold_wasserstein(xy, _random_folds(len(xy)), res.Gij)
    assert res.W < 0.5 * w_random
    # W is what it says: Wasserstein between the chosen folds' CV NNDs and Gij
    assert res.W == pytest.approx(fold_wasserstein(xy, res.folds, res.Gij))
    assert res.W == pytest.approx(np.nanmin(res.candidates["W"]))
    assert res.q in set(res.candidates["q"])


def test_every_plot_in_one_fold_and_maxp(clustered_result):
    xy, res = clustered_result
    assert res.folds.shape == (len(xy),)
    assert set(np.unique(res.folds)) == set(range(5))
    assert res.fold_sizes.sum() == len(xy)
    assert res.fold_sizes.max() <= 0.5 * len(xy)
    tight = knndm_folds(xy, _pred(), 5, maxp=0.3, seed=0)
    assert tight.fold_sizes.max() <= 0.3 * len(xy)
    table = tight.candidates
    assert (table.loc[table["valid"], "max_fold_share"] <= 0.3).all()
    assert table.loc[~table["valid"], "W"].isna().all()


def test_uniform_plots_give_small_w_and_near_random_folds():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, SIZE, (500, 2))
    res = knndm_folds(xy, _pred(), 5, seed=0)
    d = nearest_neighbour_distances(xy, _pred())
    assert res.W < 0.1 * np.median(d.prediction_to_sample)
    assert res.W <= 1.5 * fold_wasserstein(xy, _random_folds(len(xy)), res.Gij)
    # near-random: random K-fold itself, or clusters of one or two plots dealt round the folds
    assert res.method == "random" or res.q >= len(xy) / 2
    assert res.fold_sizes.max() <= 1.05 * len(xy) / 5


def test_representative_plots_return_random_kfold():
    # plots on a jittered lattice, prediction points denser: Gj is not smaller than Gij
    g = np.linspace(2500, SIZE - 2500, 20)
    xy = np.column_stack([a.ravel() for a in np.meshgrid(g, g)])
    xy += np.random.default_rng(0).normal(0, 300, xy.shape)
    res = knndm_folds(xy, _pred(), 5, seed=0)
    assert res.method == "random" and res.q is None and res.ks_pvalue >= 0.05  # as CAST
    assert np.bincount(res.folds).tolist() == [80] * 5
    assert res.candidates.empty
    assert res.W == pytest.approx(fold_wasserstein(xy, res.folds, res.Gij))


def test_deterministic_with_seed(clustered_result):
    xy, res = clustered_result
    again = knndm_folds(xy, _pred(), 5, seed=0)
    np.testing.assert_array_equal(res.folds, again.folds)
    assert res.W == again.W
    km1 = knndm_folds(xy, _pred(), 5, clustering="kmeans", seed=4, n_candidates=15)
    km2 = knndm_folds(xy, _pred(), 5, clustering="kmeans", seed=4, n_candidates=15)
    np.testing.assert_array_equal(km1.folds, km2.folds)
    assert km1.fold_sizes.max() <= 0.5 * len(xy)


def test_large_n_micro_mode_is_valid_and_better_than_random():
    xy = _clustered(6000, n_clusters=12, sd=2000.0, seed=5)
    res = knndm_folds(xy, _pred(), 5, seed=0, n_candidates=30, max_eval_points=3000)
    assert res.mode == "micro"
    assert res.fold_sizes.sum() == len(xy) and res.fold_sizes.max() <= 0.5 * len(xy)
    assert res.W < 0.5 * fold_wasserstein(xy, _random_folds(len(xy)), res.Gij)
    assert res.W == pytest.approx(fold_wasserstein(xy, res.folds, res.Gij))


def test_weighted_ward_equals_scipy_ward_for_unit_weights():
    from sklearn.metrics import adjusted_rand_score

    x = np.random.default_rng(0).random((150, 2))
    a = K._cuts(K._ward_pairs_exact(x), 150, [2, 5, 30])
    b = K._cuts(K._weighted_ward(x, np.ones(150)), 150, [2, 5, 30])
    for q in (2, 5, 30):
        assert len(np.unique(a[q])) == q
        assert adjusted_rand_score(a[q], b[q]) == 1.0


def test_cv_distances_against_brute_force():
    rng = np.random.default_rng(2)
    xy = rng.random((60, 2))
    folds = rng.integers(0, 3, 60)
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    d[folds[:, None] == folds[None, :]] = np.inf
    np.testing.assert_allclose(cv_distances(xy, folds), d.min(axis=1))
    np.testing.assert_allclose(cv_distances(xy, folds, subset=[3, 7]), d.min(axis=1)[[3, 7]])


def test_grid_prediction_points_regular_random_and_mask():
    grid = type("G", (), {"transform": Affine(30, 0, 1000, 0, -30, 5000), "width": 300, "height": 200, "crs": None})
    pts = grid_prediction_points(grid, n=1000)
    assert 800 <= len(pts) <= 1200
    assert pts[:, 0].min() > 1000 and pts[:, 0].max() < 1000 + 300 * 30
    assert pts[:, 1].max() < 5000 and pts[:, 1].min() > 5000 - 200 * 30
    mask = np.zeros((200, 300), bool)
    mask[:, :100] = True
    inside = grid_prediction_points(grid, mask=mask, n=500)
    assert 350 <= len(inside) <= 650 and inside[:, 0].max() < 1000 + 100 * 30
    r1 = grid_prediction_points(grid, mask=mask, n=200, sampling="random", seed=1)
    r2 = grid_prediction_points(grid, mask=mask, n=200, sampling="random", seed=1)
    np.testing.assert_array_equal(r1, r2)
    assert len(r1) == 200 and r1[:, 0].max() < 1000 + 100 * 30
    with pytest.raises(InputError, match="empty"):
        grid_prediction_points(grid, mask=np.zeros((200, 300), bool))


def test_splitter_with_cross_val_score(clustered_result):
    xy, res = clustered_result
    rng = np.random.default_rng(0)
    X = np.column_stack([xy, rng.normal(size=(len(xy), 2))])
    y = X[:, 2] + 0.1 * rng.normal(size=len(xy))
    cv = KNNDMSplit(5, prediction_points=_pred(), seed=0)  # coordinates: first two columns of X
    assert cv.get_n_splits() == 5
    scores = cross_val_score(Ridge(), X, y, cv=cv)
    assert len(scores) == 5 and np.all(np.isfinite(scores))
    tests = [t for _, t in cv.split(X)]
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(len(xy)))
    for f, t in enumerate(tests):
        np.testing.assert_array_equal(t, np.flatnonzero(res.folds == f))
    by_coords = KNNDMSplit(5, prediction_points=_pred(), coords=xy, seed=0)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(by_coords.split(X[:, 2:]), cv.split(X)))
    import pandas as pd

    frame = pd.DataFrame({"f": X[:, 2], "east": xy[:, 0], "north": xy[:, 1]})
    by_name = KNNDMSplit(5, prediction_points=_pred(), coords=("east", "north"), seed=0)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(by_name.split(frame), cv.split(X)))


@pytest.mark.parametrize("call, match", [
    (lambda xy, p: knndm_folds(xy, p, 1), "at least 2"),
    (lambda xy, p: knndm_folds(xy[:3], p, 5), "3 plots cannot make 5 folds"),
    (lambda xy, p: knndm_folds(np.where(np.arange(len(xy))[:, None] == 4, np.nan, xy), p, 5), "NaN.*rows 4"),
    (lambda xy, p: knndm_folds(xy, np.empty((0, 2)), 5), "prediction area is empty"),
    (lambda xy, p: knndm_folds(xy, np.array([[np.nan, 1.0]]), 5), "prediction points.*NaN"),
    (lambda xy, p: knndm_folds(xy, p, 5, maxp=0.1), "maxp"),
    (lambda xy, p: knndm_folds(xy, p, 5, clustering="dbscan"), "clustering"),
    (lambda xy, p: knndm_folds(xy[:, :1], p, 5), r"\(n, 2\)"),
    (lambda xy, p: knndm_folds(xy, p, 5, crs="EPSG:4326"), "geographic CRS"),
    (lambda xy, p: list(KNNDMSplit(5).split(xy)), "prediction_points"),
    (lambda xy, p: list(KNNDMSplit(5, prediction_points=p, coords=("x", "y")).split(xy)), "needs X as a pandas DataFrame"),
    (lambda xy, p: grid_prediction_points(type("Grid", (), {"crs": "EPSG:32648", "resolution": 30})()),
     r"resolved to pixels .*target_grid\(spec\)"),
])
def test_bad_input_raises_input_error(call, match):
    xy = _clustered(50)
    with pytest.raises(InputError, match=match):
        call(xy, _pred(10))


def test_projected_crs_accepted():
    xy = _clustered(60)
    res = knndm_folds(xy, _pred(10), 3, crs=CRS.from_epsg(32648), n_candidates=10)
    assert res.fold_sizes.sum() == 60


def test_metric_coordinates_are_metres_for_geographic_and_foot_crs():
    from pyproj import Geod

    lonlat = np.array([[104.0, 30.6], [104.9, 30.1], [105.6, 29.5], [103.2, 31.4]])
    xy, proj = metric_coordinates("EPSG:4326", lonlat)
    assert "+proj=aeqd" in proj
    geod = Geod(ellps="WGS84")
    for i, j in [(0, 1), (1, 2), (2, 3), (0, 3)]:  # pairs 70-300 km apart, none through the centre
        _, _, great_circle = geod.inv(*lonlat[i], *lonlat[j])
        assert np.hypot(*(xy[i] - xy[j])) == pytest.approx(great_circle, rel=1e-3)
    feet = np.array([[2_000_000.0, 700_000.0], [2_000_000.0 + 1000 / 0.3048006096, 700_000.0]])  # NC State Plane, US survey feet
    metres, proj = metric_coordinates("EPSG:2264", feet)
    assert np.hypot(*(metres[1] - metres[0])) == pytest.approx(1000.0, rel=1e-5) and "metres" in proj
    same, none = metric_coordinates("EPSG:32648", feet)
    assert none is None and same is not None and np.array_equal(same, feet)


def test_a_spec_on_a_geographic_grid_trains_with_every_scheme_in_metres(tmp_path):
    from scipy.ndimage import gaussian_filter

    from sinks.bundle import load_bundle
    from sinks.covariates.extract import extract
    from sinks.covariates.spec import load_spec
    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train
    from tests.test_covariates_local import points, write_tif

    rng = np.random.default_rng(0)
    bands = [gaussian_filter(rng.normal(size=(60, 60)), 4) for _ in range(2)]
    write_tif(tmp_path / "a.tif", bands, res=0.002, origin=(104.0, 30.7), crs="EPSG:4326")  # 11.5 x 13.3 km
    (tmp_path / "s.toml").write_text('name = "geo"\n[grid]\ncrs = "EPSG:4326"\nresolution = 0.002\nlike = "a"\n'
                                     '[footprint]\nkind = "point"\n[[sources]]\nname = "a"\npath = "a.tif"\n'
                                     'bands = ["b1", "b2"]\n[[features]]\nname = "f1"\nband = "a.b1"\n'
                                     '[[features]]\nname = "f2"\nband = "a.b2"\n')
    cells = rng.choice(3600, 120, replace=False)
    xy = [(104.0 + (c % 60 + 0.5) * 0.002, 30.7 - (c // 60 + 0.5) * 0.002) for c in cells]
    table = extract(load_spec(tmp_path / "s.toml"), points(xy, crs="EPSG:4326"), progress=False)
    table["carbon_mg_ha"] = 80 + 200 * table["f1"] + rng.normal(0, 2, len(table))
    raw = {"name": "geo", "features": "s.toml", "target": {"column": "carbon_mg_ha", "units": "Mg C/ha"},
           "estimator": {"kind": "ridge"}, "validation": {"folds": 3, "schemes": ["random", "blocks", "knndm"]}}
    folder = train(parse_recipe(raw, base=tmp_path, path=tmp_path / "r.toml"), table, tmp_path / "m", progress=False)
    meta = load_bundle(folder).metadata
    setup = meta["validation_setup"]
    assert "+proj=aeqd" in setup["distance_crs"]["proj"]
    assert 200 < setup["block_size"] < 20_000  # metres (the degrees would be below 0.2)
    # a map pixel is about half a plot spacing (~1.1 km here) from its nearest plot: metres, not degrees
    assert 100 < setup["prediction_area"]["median_distance_to_plots"] < 2000
    assert all(np.isfinite(meta["validation"][s]["W"]) for s in ("random", "blocks", "knndm"))
    assert (folder / "geodist.png").is_file()
