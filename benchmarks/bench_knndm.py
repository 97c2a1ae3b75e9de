"""Benchmark kNNDM fold construction: 10^3, 10^4, 10^5 plots over a 10^7-pixel prediction area.

Run:  .venv/bin/python benchmarks/bench_knndm.py [--sizes 1000 10000 100000] [--repeat 3] [--jobs 2]

Prediction area: a 3162 x 3162 grid at 30 m (10^7 pixels, ~95 km square). Plots: clustered, 40
cluster centres uniform over the area with plots normal around them (sd 1.5 km), clipped to
the area. Each case runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own; the
time covers everything :func:`sinks.learn.knndm.knndm_folds` does from coordinates to folds,
including the regular 1,000-pixel sample of the grid (:func:`grid_prediction_points`).
As a same-run reference, the script also times random K-fold's W (one ``fold_wasserstein``).

Prints a table (median of ``--repeat`` runs) and writes ``benchmarks/results/bench_knndm.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIDE, RES = 3162, 30.0


def _grid():
    from affine import Affine

    from sinks.covariates.local import TargetGrid
    from pyproj import CRS

    return TargetGrid(CRS.from_epsg(32648), Affine(RES, 0, 400_000, 0, -RES, 3_300_000), SIDE, SIDE)


def _plots(n: int, seed: int = 7) -> np.ndarray:
    grid = _grid()
    left, bottom, right, top = grid.bounds
    rng = np.random.default_rng(seed)
    centres = rng.uniform([left, bottom], [right, top], size=(40, 2))
    xy = centres[rng.integers(0, 40, n)] + rng.normal(0, 1500, (n, 2))
    return np.clip(xy, [left, bottom], [right - 1e-6, top - 1e-6])


def case(n: int, jobs: int) -> dict:
    from sinks.learn.knndm import fold_wasserstein, grid_prediction_points, knndm_folds

    xy = _plots(n)
    grid = _grid()
    start = time.perf_counter()
    pred = grid_prediction_points(grid, n=1000, seed=0)
    result = knndm_folds(xy, pred, 5, seed=0, n_jobs=jobs)
    seconds = time.perf_counter() - start
    folds_random = np.random.default_rng(0).permutation(np.arange(n) % 5)
    start = time.perf_counter()
    w_random = fold_wasserstein(xy, folds_random, result.Gij, n_jobs=jobs)
    seconds_random = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB on Linux
    return {"n": n, "seconds": seconds, "peak_mb": peak, "W": result.W, "W_random": w_random, "q": result.q,
            "method": result.method, "mode": result.mode, "n_candidates": int(result.candidates["valid"].sum()),
            "fold_sizes": result.fold_sizes.tolist(), "seconds_random_w": seconds_random}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.jobs)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.jobs), OPENBLAS_NUM_THREADS=str(args.jobs),
               MKL_NUM_THREADS=str(args.jobs))
    rows = []
    for n in args.sizes:
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, __file__, "--case", str(n), "--jobs", str(args.jobs)],
                                 check=True, capture_output=True, text=True, env=env)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        row = dict(runs[0])
        row["seconds"] = statistics.median(r["seconds"] for r in runs)
        row["peak_mb"] = statistics.median(r["peak_mb"] for r in runs)
        row["seconds_runs"] = [round(r["seconds"], 3) for r in runs]
        rows.append(row)
        print(f"{n:>7} plots  {row['seconds']:7.2f} s  peak {row['peak_mb']:7.0f} MB  W {row['W']:8.1f} m  "
              f"(random K-fold W {row['W_random']:8.1f} m)  q={row['q']}  {row['method']}/{row['mode']}  "
              f"folds {row['fold_sizes']}", flush=True)
    record = {"benchmark": "bench_knndm", "grid": f"{SIDE}x{SIDE} at {RES:g} m ({SIDE * SIDE:,} pixels)",
              "jobs": args.jobs, "repeat": args.repeat, "python": platform.python_version(),
              "machine": platform.machine(), "cpus": os.cpu_count(), "rows": rows}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "bench_knndm.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
