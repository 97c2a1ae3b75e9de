"""Benchmark the dissimilarity index (DI) and the intervals' σ against the model's own predict.

Run:  .venv/bin/python benchmarks/di.py [--rows 1000000] [--plots 2000,20000] [--repeat 3] [--cores 2]

Setup, per training-set size: rows drawn like the mapping benchmark's stack (12 smooth-plus-noise
bands of pixel position, random pixels of a 4096² grid), ``plots`` training plots drawn the same
way with a nonlinear target plus noise; XGBoost 300 trees, depth 6, ``n_jobs = cores``; an AOA
reference (importance weights, 3 spatial-block folds), out-of-fold residuals of 3 fold models,
a normalised conformal interval (σ from the DI and the nearest plot's 10-plot neighbourhood) and
an error profile, assembled into an in-memory :class:`sinks.bundle.Bundle` as ``sinks train`` would.

Cases, alternated within each of ``--repeat`` rounds in one process pinned to ``--cores`` CPUs
(``os.sched_setaffinity``); medians over the rounds:

- ``model``: ``model.predict(X)`` (the reference of every ratio);
- ``di before``: the previous DI, a chunked 1-NN query (``workers = cores``) of a k-d tree on the
  predictors' own axes with scipy's default leaves of 16;
- ``di``: :meth:`AOAReference.dissimilarity` (the tree on the training plots' principal axes,
  leaves of 32; a pass pruned at the AOA threshold with an exact second pass outside was tried
  and measured no faster, see docs/learn.md);
- ``di+σ before``: the previous σ's 10-NN query (same tree as ``di before``) and the mean
  |residual| gather;
- ``di+σ``: :meth:`AOAReference.nearest` and the nearest plot's s̄ (one 1-NN query for both);
- ``bundle before`` / ``bundle``: the whole ``Bundle.predict`` (previous implementation, kept here
  as the reference, and the current one). The σ's definition changed with it (see
  :mod:`sinks.learn.intervals`), so their intervals differ; the check is that the DI, the AOA flag
  and the nearest plot equal a brute-force search.

The machine may be shared: the ratios are what to read, and each round alternates the cases.
Writes ``benchmarks/results/di.json``; prints the ratios to ``model`` as its last lines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N_BANDS = 12
SIZE = 4096


def fields(rows: np.ndarray, cols: np.ndarray, seed: int) -> np.ndarray:
    """(n x 12) float32 covariates at pixel rows/cols, as in benchmarks/mapping.py's stack."""
    y, x = rows / SIZE, cols / SIZE
    rng = np.random.default_rng(seed)
    bands = []
    for i in range(N_BANDS):
        f = np.sin((i + 1) * 3.1 * x + i) * np.cos((i % 4 + 1) * 2.3 * y - i) + 0.3 * (x - y) * i
        bands.append((f + 0.15 * rng.standard_normal(x.shape)).astype(np.float32))
    return np.stack(bands, axis=1)


def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(0, SIZE, n).astype(float), rng.integers(0, SIZE, n).astype(float)
    return fields(rows, cols, seed + 1), rows, cols


def make_bundle(n_plots: int, cores: int):
    import xgboost as xgb

    from sinks.bundle import Bundle
    from sinks.learn.aoa import fit_aoa, fit_error_profile, training_neighbours
    from sinks.learn.intervals import DEFAULT_NEIGHBOURS, calibrate_adaptive, location_difficulty, plot_difficulty

    f, rows, cols = sample(n_plots, 10)
    rng = np.random.default_rng(3)
    y = 60 + 25 * np.tanh(f[:, 0] + f[:, 1] * f[:, 2]) + 15 * np.sin(3 * f[:, 3]) + 10 * f[:, 4] ** 2 \
        - 8 * np.abs(f[:, 5] - f[:, 6]) + 5 * f[:, 7] * f[:, 8] + rng.normal(0, 8, len(f))
    params = dict(n_estimators=300, max_depth=6, learning_rate=0.1, subsample=0.8, tree_method="hist",
                  n_jobs=cores, random_state=0)
    blocks = (rows // (SIZE / 4)).astype(int) * 4 + (cols // (SIZE / 4)).astype(int)
    folds = blocks % 3
    oof = np.empty(len(y))
    for k in range(3):
        m = xgb.XGBRegressor(**params).fit(f[folds != k], y[folds != k])
        oof[folds == k] = m.predict(f[folds == k])
    model = xgb.XGBRegressor(**params).fit(f, y)
    ref = fit_aoa(f, model.feature_importances_, folds)
    r = np.abs(y - oof)
    nbrs = training_neighbours(ref, folds, 3 * DEFAULT_NEIGHBOURS + 5)
    s, di = location_difficulty(r, nbrs, DEFAULT_NEIGHBOURS)
    interval = calibrate_adaptive(r, s, di, level=0.9, method="normalized", residuals_from="blocks")
    profile = fit_error_profile(di, r, scheme="blocks")
    meta = {"bundle_id": f"bench-{n_plots}", "features": {"names": [f"f{i:02d}" for i in range(N_BANDS)]}}
    return Bundle(Path("."), meta, model, interval, ref, r, profile, (s, di), plot_difficulty(r, nbrs, DEFAULT_NEIGHBOURS))


# ---- the previous implementation (the "before" of every case) ------------------------------------

def tree_before(ref):
    from scipy.spatial import cKDTree

    return cKDTree(ref.train)  # the predictors' own axes, scipy's default leaves


def neighbours_before(ref, tree, X, k, cores):
    from sinks.learn.aoa import QUERY_CHUNK

    di, index = np.empty(len(X)), np.empty((len(X), k), dtype=np.int64)
    for start in range(0, len(X), QUERY_CHUNK):
        d, i = tree.query(ref._transform(X[start:start + QUERY_CHUNK]), k=k, workers=cores)
        d, i = d.reshape(len(d), -1), i.reshape(len(i), -1)
        di[start:start + len(d)] = d[:, 0] / ref.mean_distance
        index[start:start + len(d)] = i
    return di, index


def predict_before(bundle, tree, X, cores):
    X = np.asarray(X, dtype=np.float32)
    prediction = bundle.model.predict(X).astype(np.float32)
    di64, index = neighbours_before(bundle.aoa, tree, X, bundle.interval.neighbours, cores)
    s = bundle.abs_residual[index].mean(axis=1)
    lower, upper = bundle.interval.apply(prediction.astype(np.float64), s, di64)
    di = di64.astype(np.float32)
    return {"prediction": prediction, "lower": np.asarray(lower, dtype=np.float32),
            "upper": np.asarray(upper, dtype=np.float32), "di": di,
            "aoa": (di <= bundle.aoa.threshold).astype(np.float32),
            "error": bundle.error_profile(di64).astype(np.float32)}


def exact(bundle, X) -> dict:
    """DI, AOA flag and nearest plot of ``Bundle.predict`` against a brute-force search (rows of X)."""
    from scipy.spatial.distance import cdist

    ref = bundle.aoa
    D = cdist(ref._transform(X), ref.train)
    di, nearest = ref.nearest(X)
    out = bundle.predict(X)
    return {"di": bool(np.allclose(di, D.min(axis=1) / ref.mean_distance, rtol=1e-12, atol=0)),
            "nearest": bool(np.array_equal(nearest, D.argmin(axis=1))),
            "aoa": bool(np.array_equal(out["aoa"], (out["di"] <= ref.threshold).astype(np.float32)))}


def run(n_plots: int, X: np.ndarray, cores: int, repeat: int) -> dict:
    bundle = make_bundle(n_plots, cores)
    ref, k = bundle.aoa, bundle.interval.neighbours
    ref._tree  # build the trees outside the timings (cached per bundle)
    old = tree_before(ref)
    cases = {
        "model": lambda: bundle.model.predict(X),
        "di before": lambda: neighbours_before(ref, old, X, 1, cores)[0],
        "di": lambda: ref.dissimilarity(X, workers=cores),
        "di+σ before": lambda: bundle.abs_residual[neighbours_before(ref, old, X, k, cores)[1]].mean(axis=1),
        "di+σ": lambda: bundle.plot_difficulty[ref.nearest(X, workers=cores)[1]],
        "bundle before": lambda: predict_before(bundle, old, X, cores),
        "bundle": lambda: bundle.predict(X),
    }
    times = {name: [] for name in cases}
    for rnd in range(repeat):
        names = list(cases) if rnd % 2 == 0 else list(reversed(cases))
        for name in names:
            t = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t)
    same = exact(bundle, X[:20000])  # the check behind the timings
    new = bundle.predict(X[:200000])
    inside = float(new["aoa"].mean())
    med = {name: statistics.median(v) for name, v in times.items()}
    return {"plots": n_plots, "rows": len(X), "inside_aoa": inside, "seconds": med, "all_seconds": times,
            "ratio_to_model": {name: med[name] / med["model"] for name in med}, "exact": same}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--plots", default="2000,20000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))[:args.cores]
    os.sched_setaffinity(0, cpus)
    X, _, _ = sample(args.rows, 0)
    results = [run(int(n), X, args.cores, args.repeat) for n in args.plots.split(",")]
    load = os.getloadavg()
    out = {"machine": platform.platform(), "cpus": cpus, "load_average_after": load, "repeat": args.repeat,
           "note": "shared machine: timings are noisy; cases alternate within each round", "results": results}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "di.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    for r in results:
        print(f"\n{r['plots']} plots, {r['rows']} rows, {r['inside_aoa']:.1%} inside the AOA; "
              f"DI, AOA and nearest plot exact: {all(r['exact'].values())}")
        for name, sec in r["seconds"].items():
            print(f"  {name:14s} {sec:8.2f} s  {r['ratio_to_model'][name]:5.2f} x model")
    for r in results:
        rt = r["ratio_to_model"]
        print(f"{r['plots']} plots: DI+σ {rt['di+σ before']:.2f} -> {rt['di+σ']:.2f} x model predict; "
              f"DI alone {rt['di before']:.2f} -> {rt['di']:.2f}; Bundle.predict {rt['bundle before']:.2f} -> "
              f"{rt['bundle']:.2f} (target: DI+σ well under 0.3)")


if __name__ == "__main__":
    main()
