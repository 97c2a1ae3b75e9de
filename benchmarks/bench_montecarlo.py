"""Benchmark the forest Monte Carlo: 10^6 trees x 1,000 draws, time and peak memory.

Run:  .venv/bin/python benchmarks/bench_montecarlo.py [--trees 1000000] [--draws 1000] [--jobs 2]

Synthetic inventory: ``trees`` trees in plots of 100, diameters log-normal (median 18 cm), wood
density 0.35-0.85 g/cm3 with sd 0.08, heights from a log2 H-D model (RSE 0.22 on ln H), Chave
2004 diameter errors, Chave 2014 eq. 4 with posterior parameter draws: every error source on.

Cases, each in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own:

- ``sinks``: :func:`sinks.pools.montecarlo.propagate` (chunked, per-plot sums on the fly) on
  all trees, with ``--jobs`` threads, repeated ``--repeat`` times (median reported);
- ``sinks_small`` and ``reference_small``: the same on ``--small`` trees, against the reference
  algorithm of BIOMASS ``AGBmonteCarlo`` written in NumPy (whole n x draws matrices of D, WD,
  H and AGB, then plot sums), for a same-run time and memory ratio. The reference cannot run at
  10^6 x 1,000 here (each matrix is 8 GB).

Prints a table and writes ``benchmarks/results/bench_montecarlo.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _inputs(n_trees: int):
    from sinks.pools import montecarlo
    from sinks.pools.height import HeightModel

    rng = np.random.default_rng(42)
    dbh = np.clip(rng.lognormal(np.log(18), 0.5, n_trees), 5, 250)
    model = HeightModel("log2", (0.517, 1.142, -0.0985), 4.3, 0.224)
    trees = montecarlo.TreeDraws(
        plot_code=np.arange(n_trees) // 100, dbh_cm=dbh, wd_g_cm3=rng.uniform(0.35, 0.85, n_trees),
        wd_sd_g_cm3=np.full(n_trees, 0.08), height_m=model.predict(dbh), height_sd_m=np.zeros(n_trees),
        height_mode=np.ones(n_trees, dtype=int), height_model_index=np.zeros(n_trees, dtype=int),
        carbon_factor=np.full(n_trees, 0.47 * 1.24))
    return trees, model, int(trees.plot_code.max()) + 1


def run_sinks(n_trees: int, n_draws: int, jobs: int) -> dict:
    from sinks.pools import montecarlo

    trees, model, n_plots = _inputs(n_trees)
    start = time.perf_counter()
    result = montecarlo.propagate(trees, n_plots, height_models=[model], n_draws=n_draws,
                                  diameter_error="chave2004", seed=1, n_jobs=jobs)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "checksum": float(result.agb_mg.mean(axis=1).sum())}


def run_reference(n_trees: int, n_draws: int) -> dict:
    """BIOMASS AGBmonteCarlo's algorithm as written there: full (trees x draws) matrices."""
    from scipy import special

    from sinks.pools.allometry import posterior

    trees, model, n_plots = _inputs(n_trees)
    rng = np.random.default_rng(1)
    start = time.perf_counter()

    def rtruncnorm(mean, sd, low, high):  # BIOMASS myrtruncnorm: inverse CDF
        lo, hi = special.ndtr((low - mean) / sd), special.ndtr((high - mean) / sd)
        return special.ndtri(rng.uniform(lo, hi)) * sd + mean

    shape = (n_trees, n_draws)
    dbh = np.broadcast_to(trees.dbh_cm[:, None], shape)
    d_sd = np.where(rng.random(shape) < 0.05, 4.64, 0.0062 * dbh + 0.0904)
    d = rtruncnorm(dbh, d_sd, 0.1, 500)
    wd = rtruncnorm(np.broadcast_to(trees.wd_g_cm3[:, None], shape), 0.08, 0.08, 1.39)
    log_d = np.log(d)
    h = np.exp(model.coefficients[0] + model.coefficients[1] * log_d + model.coefficients[2] * log_d**2
               + rng.normal(0, model.rse_log, shape))
    names, mean, cov = posterior("chave2014_eq4")
    p = rng.multivariate_normal(mean, cov, size=n_draws)
    agb = np.exp(np.log(wd * h * d**2) * p[:, 1] + p[:, 0] + rng.normal(0, 1, shape) * p[:, 2]) / 1000
    sums = np.zeros((n_plots, n_draws))
    np.add.at(sums, trees.plot_code, agb)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "checksum": float(sums.mean(axis=1).sum())}


def _child(case: str, n_trees: int, n_draws: int, jobs: int) -> None:
    result = run_reference(n_trees, n_draws) if case == "reference" else run_sinks(n_trees, n_draws, jobs)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _spawn(case: str, n_trees: int, n_draws: int, jobs: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", case, "--trees", str(n_trees),
                          "--draws", str(n_draws), "--jobs", str(jobs)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=1_000_000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--small", type=int, default=50_000, help="trees for the same-run reference comparison")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", choices=("sinks", "reference"))
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.trees, args.draws, args.jobs)
        return
    small = {case: [_spawn(case, args.small, args.draws, args.jobs) for _ in range(args.repeat)]
             for case in ("sinks", "reference")}
    full = [_spawn("sinks", args.trees, args.draws, args.jobs) for _ in range(args.repeat)]

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    report = {
        "machine": f"{platform.machine()}, Python {platform.python_version()}, jobs {args.jobs}",
        "draws": args.draws,
        "full": {"trees": args.trees, "median_s": med(full, "seconds"), "peak_rss_mb": med(full, "peak_rss_mb"),
                 "runs_s": [r["seconds"] for r in full]},
        "small": {"trees": args.small,
                  "sinks_median_s": med(small["sinks"], "seconds"),
                  "reference_median_s": med(small["reference"], "seconds"),
                  "speedup_vs_reference": med(small["reference"], "seconds") / med(small["sinks"], "seconds"),
                  "sinks_peak_rss_mb": med(small["sinks"], "peak_rss_mb"),
                  "reference_peak_rss_mb": med(small["reference"], "peak_rss_mb"),
                  "checksum_ratio": med(small["sinks"], "checksum") / med(small["reference"], "checksum")},
    }
    print(json.dumps(report, indent=2))
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "bench_montecarlo.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
