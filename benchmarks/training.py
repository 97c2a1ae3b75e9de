"""Benchmark training: kNNDM spatial CV (5 folds) plus interval calibration, XGBoost, 10^3-10^5 plots x 30 features.

Run:  .venv/bin/python benchmarks/training.py [--quick] [--sizes 1000 10000 100000] [--repeat 3]
                                              [--repeat-large 2] [--cores 2] [--no-reference]

What is timed is the real path users run: :func:`sinks.learn.train.train` on a recipe with
``schemes = ["knndm"]`` (5 folds), i.e. kNNDM fold construction over the spec's prediction area,
5 CV fits, the final fit, the AOA and the CV neighbours, the nested (held-out-fold) coverage
check of all three interval methods (and of the recipe's method at the other reported levels),
the adaptive calibration, the error profile and the bundle with its model-card figures. No
tuning (the recipe has none). Stages: folds (prediction area + kNNDM), cv_fits, cv_w, final_fit,
aoa_neighbours (fit_aoa + cv_neighbours: one search), nested_checks, calibration, bundle (less
figures), figures, other.

Setup (seeded, cached in ``benchmarks/.work-training``): a prediction area of 3162 x 3162 pixels
at 30 m (10^7 pixels, ~95 km square, UTM 48N) given as the ``like`` source of the feature spec, a
uint8 GeoTIFF whose mask keeps ~80 % of it (an irregular region), so ``train`` reads the mask
of all 10^7 pixels as it does for a real spec. Plots: 40 cluster centres in the valid area, plots
normal around them (sd 1.5 km), kept on valid pixels. 30 features: smooth random fields of x, y
(sums of random sinusoids, so correlated with space and, through shared components, with each
other) plus noise. Target: nonlinear in 6 features plus a smooth spatial residual plus noise
(Mg C/ha, clipped to 1..300).

Estimator: ``kind = "xgboost"`` with the project's defaults (:mod:`sinks.learn.estimators`:
400 trees, depth 4, learning rate 0.05, subsample/colsample 0.8, hist), ``n_jobs = 2``.

Each run is a fresh subprocess pinned to ``--cores`` CPUs (``taskset``; BLAS/OpenMP see those cores);
peak memory is that subprocess's ``ru_maxrss`` (``os.wait4``). Stage times come from wrappers
around the functions ``train`` calls. The reference is today's default-before-kNNDM path, the
same ``train`` with ``schemes = ["random", "blocks"]`` and ``scheme = "blocks"`` (block size from
the variogram), run at the largest size alternated with the kNNDM runs, so their ratio is from
one run. Also times kNNDM fold construction alone (:func:`grid_prediction_points` on the masked
grid plus :func:`knndm_folds`) as its own subprocess at each size.

Prints medians over the repeats (timings on a shared machine are noisy: compare the ratio) and,
as its last lines, the targets with pass/fail; writes ``benchmarks/results/training.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work-training"
SIDE, RES = 3162, 30.0
LEFT, TOP = 400_000.0, 3_300_000.0
CRS = "EPSG:32648"
N_FEATURES = 30
NAMES = [f"f{i:02d}" for i in range(N_FEATURES)]
#: Targets of the issue (tuning excluded), for the largest size.
TARGET_SECONDS, TARGET_PEAK_MB, TARGET_KNNDM_SECONDS = 120.0, 2048.0, 30.0


# ---- setup --------------------------------------------------------------------------------------

def _valid(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The prediction area: an irregular blob covering ~80 % of the square."""
    y, x = rows / SIDE, cols / SIDE
    return np.sin(3.0 * x + 1.0) * np.cos(2.5 * y - 0.5) + 0.5 * np.sin(9 * x * y) > -0.3


def write_area(path: Path) -> float:
    import rasterio
    from affine import Affine

    rows = np.arange(SIDE, dtype=float)[:, None]
    cols = np.arange(SIDE, dtype=float)[None, :]
    valid = _valid(rows, cols)
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", driver="GTiff", width=SIDE, height=SIDE, count=1, dtype="uint8", crs=CRS,
                       transform=Affine(RES, 0, LEFT, 0, -RES, TOP), nodata=0, tiled=True, blockxsize=512,
                       blockysize=512, compress="deflate") as dst:
        dst.write(valid.astype(np.uint8)[None])
    os.replace(tmp, path)
    return float(valid.mean())


def write_spec(work: Path) -> Path:
    spec = work / "bench_training.features.toml"
    features = "\n".join(f'[[features]]\nname = "{n}"\nexpression = "valid * {i + 1}"\n' for i, n in enumerate(NAMES))
    spec.write_text(f"""name = "bench_training"
description = "prediction area of the training benchmark; the features are given in the table"
[grid]
crs = "{CRS}"
resolution = {RES}
like = "area"
[footprint]
kind = "point"
[[sources]]
name = "area"
path = "area.tif"
bands = ["valid"]
{features}""")
    return spec


def write_recipe(work: Path, name: str, schemes: list[str], scheme: str) -> Path:
    path = work / f"{name}.recipe.toml"
    path.write_text(f"""name = "{name}"
features = "bench_training.features.toml"
[target]
column = "carbon_mg_ha"
units = "Mg C/ha"
[estimator]
kind = "xgboost"
params = {{ n_jobs = 2 }}
[validation]
folds = 5
schemes = {json.dumps(schemes)}
scheme = "{scheme}"
seed = 0
[intervals]
level = 0.9
""")
    return path


def _fields(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, count: int, components: int = 6):
    """``count`` smooth random fields of (x, y) in [0, 1]^2: sums of random sinusoids sharing a pool."""
    freq = rng.uniform(0.5, 6.0, (components * 2, 2)) * rng.choice([-1, 1], (components * 2, 2))
    phase = rng.uniform(0, 2 * np.pi, components * 2)
    basis = np.sin(2 * np.pi * (np.outer(x, freq[:, 0]) + np.outer(y, freq[:, 1])) + phase)  # n x 2c
    mix = rng.normal(0, 1, (components * 2, count)) * (rng.uniform(size=(components * 2, count)) < 0.5)
    return basis @ mix


def plots(n: int, seed: int = 7):
    """Seeded clustered plots with 30 space-correlated features and a target: a DataFrame."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    right, bottom = LEFT + SIDE * RES, TOP - SIDE * RES
    centres = []
    while len(centres) < 40:
        c = rng.uniform([LEFT, bottom], [right, TOP])
        if _valid(np.array((TOP - c[1]) / RES), np.array((c[0] - LEFT) / RES)):
            centres.append(c)
    centres = np.array(centres)
    xy = np.empty((0, 2))
    while len(xy) < n:
        cand = centres[rng.integers(0, 40, 2 * n)] + rng.normal(0, 1500, (2 * n, 2))
        cand = cand[(cand[:, 0] > LEFT) & (cand[:, 0] < right) & (cand[:, 1] > bottom) & (cand[:, 1] < TOP)]
        rows, cols = np.floor((TOP - cand[:, 1]) / RES), np.floor((cand[:, 0] - LEFT) / RES)
        xy = np.vstack([xy, cand[_valid(rows, cols)]])
    xy = xy[:n]
    u, v = (xy[:, 0] - LEFT) / (SIDE * RES), (TOP - xy[:, 1]) / (SIDE * RES)
    frng = np.random.default_rng(1234)  # the fields are the same functions of space at every n
    F = _fields(u, v, frng, N_FEATURES)
    F = (F - F.mean(axis=0)) / F.std(axis=0) + 0.3 * rng.standard_normal(F.shape)
    spatial = _fields(u, v, frng, 1)[:, 0]
    carbon = (80 + 20 * np.tanh(F[:, 0] + F[:, 1] * F[:, 2]) + 12 * np.sin(2 * F[:, 3]) + 6 * F[:, 4] ** 2
              - 8 * np.abs(F[:, 5]) + 6 * spatial / spatial.std() + rng.normal(0, 10, n))
    table = pd.DataFrame({"plot_id": np.arange(n), "x": xy[:, 0], "y": xy[:, 1],
                          **{name: F[:, i] for i, name in enumerate(NAMES)},
                          "carbon_mg_ha": np.clip(carbon, 1, 300)})
    table.attrs["source"] = "benchmark plots"
    return table


# ---- cases (run in a child process) -------------------------------------------------------------

STAGES = {  # stage -> names in sinks.learn.train wrapped by it
    "folds": ["_prediction_points", "prediction_to_sample_distances", "knndm_folds", "fold_ids",
              "suggest_block_size", "fit_variogram", "spatial_blocks"],
    "cv_fits": ["cross_validate"],
    "cv_w": ["cv_distances"],
    "aoa_neighbours": ["fit_aoa", "cv_neighbours"],
    "nested_checks": ["nested_check"],
    "calibration": ["neighbour_difficulty", "calibrate_adaptive", "fit_error_profile"],
    "bundle": ["save_bundle"],
}


def _instrument():
    """Wrap the functions ``train`` calls; returns the dict of seconds per stage it fills."""
    import sinks.learn.card_figures as card_figures
    import sinks.learn.train as T
    from sinks.learn import cv as cv_module
    from xgboost import XGBRegressor

    seconds: dict[str, float] = {}
    active: list[str] = []

    def wrap(fn, stage):
        def timed(*args, **kwargs):
            if active:  # nested in another stage: counted there
                return fn(*args, **kwargs)
            active.append(stage)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start
                active.pop()
        return timed

    for stage, names in STAGES.items():
        for name in names:
            if hasattr(T, name):
                setattr(T, name, wrap(getattr(T, name), stage))
    for name in ("cross_validate", "fold_ids", "suggest_block_size", "fit_variogram", "spatial_blocks"):
        setattr(T.cv, name, wrap(getattr(cv_module, name), "cv_fits" if name == "cross_validate" else "folds"))
    T.trial_fit = wrap(T.trial_fit, "trial_fit")
    if hasattr(T, "tuning"):  # [tuning]/[selection] (none in these recipes: should stay ~0)
        T.tuning.nested_for_recipe = wrap(T.tuning.nested_for_recipe, "tuning")
    XGBRegressor.fit = wrap(XGBRegressor.fit, "final_fit")  # only counted outside the other stages
    # the figures, inside the bundle stage: timed separately (and subtracted from "bundle" later)
    figures = card_figures.write_card_figures

    def timed_figures(*args, **kwargs):
        start = time.perf_counter()
        try:
            return figures(*args, **kwargs)
        finally:
            seconds["figures"] = seconds.get("figures", 0.0) + time.perf_counter() - start
    card_figures.write_card_figures = timed_figures
    return seconds


def _patch_cv_module():
    """``train`` calls ``cv.cross_validate`` through the module: make T.cv a wrappable copy."""
    import types

    import sinks.learn.train as T
    from sinks.learn import cv as cv_module

    T.cv = types.SimpleNamespace(**{k: getattr(cv_module, k) for k in dir(cv_module) if not k.startswith("__")})


def case_train(n: int, which: str) -> dict:
    import resource

    table = plots(n)
    work = Path(os.environ["BENCH_WORK"])
    recipe_path = work / ("knndm.recipe.toml" if which == "knndm" else "reference.recipe.toml")
    from sinks.learn.recipe import load_recipe
    from sinks.learn.train import train

    recipe = load_recipe(recipe_path)
    _patch_cv_module()
    seconds = _instrument()
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = work / f"bundle-{which}-{n}-{os.getpid()}"
    start = time.perf_counter()
    train(recipe, table, out, progress=False)
    total = time.perf_counter() - start
    meta = json.loads((out / "metadata.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    stages = {k: round(v, 3) for k, v in seconds.items()}
    if "figures" in stages:
        stages["bundle"] = round(stages.get("bundle", 0.0) - stages["figures"], 3)
    stages["other"] = round(total - sum(v for k, v in seconds.items() if k != "figures"), 3)
    setup = meta["validation_setup"]
    chosen = meta["validation"]["spatial"]
    return {"n": n, "case": which, "seconds": total, "stages": stages, "base_mb": base_mb,
            "self_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "r2": chosen["r2"], "rmse": chosen["rmse"], "W": chosen.get("W"),
            "knndm": setup.get("knndm"), "block_size": setup.get("block_size"),
            "coverage": {m: c["coverage"] for m, c in meta["interval_check"].items()},
            "prediction_points": setup["prediction_area"]["points"], "area": setup["prediction_area"]["area"]}


def case_folds(n: int) -> dict:
    """kNNDM fold construction alone: the mask read, the grid sample, knndm_folds."""
    import resource

    table = plots(n)
    work = Path(os.environ["BENCH_WORK"])
    xy = table[["x", "y"]].to_numpy()
    from sinks.covariates.spec import load_spec
    from sinks.learn.knndm import knndm_folds
    from sinks.learn.train import _prediction_points, _spec_grid

    spec = load_spec(work / "bench_training.features.toml")
    start = time.perf_counter()
    pred, area, crs = _prediction_points(spec, *_spec_grid(spec), 0)
    seconds_points = time.perf_counter() - start
    result = knndm_folds(xy, pred, 5, seed=0, crs=crs)
    seconds = time.perf_counter() - start
    return {"n": n, "case": "knndm_folds", "seconds": seconds, "seconds_points": seconds_points,
            "W": result.W, "q": result.q, "method": result.method, "mode": result.mode,
            "fold_sizes": result.fold_sizes.tolist(), "prediction_points": int(len(pred)),
            "self_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---- driver -------------------------------------------------------------------------------------

#: Runs a command as a child and prints its peak RSS (``os.wait4``'s ru_maxrss, kB) last.
MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
print("PEAK_RSS_KB", usage.ru_maxrss, usage.ru_utime + usage.ru_stime, flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_case(args: list[str], cores: int) -> dict:
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    argv = [sys.executable, "-c", MEASURE, sys.executable, __file__, *args]
    if shutil.which("taskset"):
        argv = ["taskset", "-c", ",".join(map(str, cpus)), *argv]
    env = dict(os.environ, BENCH_WORK=str(WORK), MPLBACKEND="Agg")  # threads: the pinned cores, n_jobs 2
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"case {args} failed:\n{proc.stderr[-4000:]}")
    lines = proc.stdout.strip().splitlines()
    result = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    result["peak_mb"] = int(lines[-1].split()[1]) / 1024
    result["cpu_seconds"] = float(lines[-1].split()[2])  # user + system, the whole subprocess
    return result


def _median_row(runs: list[dict]) -> dict:
    row = dict(runs[0])
    row["seconds"] = statistics.median(r["seconds"] for r in runs)
    row["peak_mb"] = statistics.median(r["peak_mb"] for r in runs)
    row["seconds_runs"] = [round(r["seconds"], 2) for r in runs]
    row["peak_mb_runs"] = [round(r["peak_mb"]) for r in runs]
    row["cpu_seconds"] = statistics.median(r["cpu_seconds"] for r in runs)
    if "stages" in row:
        keys = sorted({k for r in runs for k in r["stages"]})
        row["stages"] = {k: round(statistics.median(r["stages"].get(k, 0.0) for r in runs), 2) for k in keys}
    if "seconds_points" in row:
        row["seconds_points"] = statistics.median(r["seconds_points"] for r in runs)
    return row


def _stages_text(stages: dict) -> str:
    order = ["folds", "tuning", "cv_fits", "cv_w", "trial_fit", "final_fit", "aoa_neighbours", "nested_checks",
             "calibration", "bundle", "figures", "other"]
    return ", ".join(f"{k} {stages[k]:.1f}" for k in order if k in stages)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--quick", action="store_true", help="10^3 and 10^4 only")
    ap.add_argument("--repeat", type=int, default=3, help="runs per size below 10^5")
    ap.add_argument("--repeat-large", type=int, default=2, help="runs at 10^5 and above (each case)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--no-reference", action="store_true", help="skip the random + blocks reference")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "training.json")
    ap.add_argument("--case", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        which, n = args.case[0], int(args.case[1])
        print(json.dumps(case_folds(n) if which == "folds" else case_train(n, which)))
        return

    sizes = args.sizes or ([1000, 10_000] if args.quick else [1000, 10_000, 100_000])
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / ".gitignore").write_text("*\n")
    if not (WORK / "area.tif").exists():
        frac = write_area(WORK / "area.tif")
        (WORK / "valid.txt").write_text(str(frac))
    frac = float((WORK / "valid.txt").read_text())
    write_spec(WORK)
    write_recipe(WORK, "knndm", ["knndm"], "knndm")
    write_recipe(WORK, "reference", ["random", "blocks"], "blocks")
    print(f"prediction area: {SIDE}x{SIDE} at {RES:g} m ({SIDE * SIDE:,} pixels, {frac:.0%} valid); "
          f"XGBoost 400 trees depth 4 (project defaults), n_jobs 2; {args.cores} cores; kNNDM 5 folds", flush=True)

    rows, reference = [], None
    for n in sizes:
        large = n >= 100_000
        repeat = args.repeat_large if large else args.repeat
        with_ref = large and not args.no_reference and n == max(sizes)
        runs, ref_runs, fold_runs = [], [], []
        for _ in range(repeat):  # alternated: kNNDM path, reference, folds alone
            runs.append(run_case(["--case", "knndm", str(n)], args.cores))
            if with_ref:
                ref_runs.append(run_case(["--case", "reference", str(n)], args.cores))
            fold_runs.append(run_case(["--case", "folds", str(n)], args.cores))
        row = _median_row(runs)
        row["folds_alone"] = _median_row(fold_runs)
        rows.append(row)
        print(f"{n:>7} plots  train (kNNDM + intervals) {row['seconds']:7.1f} s {row['seconds_runs']}  "
              f"peak {row['peak_mb']:6.0f} MB  cpu {row['cpu_seconds']:.0f} s  | kNNDM folds alone {row['folds_alone']['seconds']:6.1f} s "
              f"(peak {row['folds_alone']['peak_mb']:.0f} MB)  R2 {row['r2']:.3f}  W {row['W']:.0f} m", flush=True)
        print(f"         stages (s): {_stages_text(row['stages'])}", flush=True)
        if ref_runs:
            reference = _median_row(ref_runs)
            print(f"{n:>7} plots  reference (random + blocks) {reference['seconds']:7.1f} s "
                  f"{reference['seconds_runs']}  peak {reference['peak_mb']:6.0f} MB  cpu {reference['cpu_seconds']:.0f} s",
                  flush=True)
            print(f"         stages (s): {_stages_text(reference['stages'])}", flush=True)

    record = {"benchmark": "training", "grid": f"{SIDE}x{SIDE} at {RES:g} m ({SIDE * SIDE:,} pixels, {frac:.0%} valid)",
              "estimator": "xgboost, project defaults (400 trees, depth 4, lr 0.05), n_jobs 2",
              "features": N_FEATURES, "folds": 5, "cores": args.cores, "repeat": args.repeat,
              "repeat_large": args.repeat_large, "python": platform.python_version(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "note": "medians; shared 2-core machine, timings are noisy",
              "rows": rows, "reference": reference}
    lines = []
    big = rows[-1]
    if big["n"] >= 100_000:
        lines.append(f"target: {big['n']:,} x {N_FEATURES} kNNDM CV + intervals under {TARGET_SECONDS:.0f} s: "
                     f"{big['seconds']:.1f} s  {'PASS' if big['seconds'] < TARGET_SECONDS else 'FAIL'}")
        lines.append(f"target: peak memory under {TARGET_PEAK_MB / 1024:.0f} GB: {big['peak_mb']:.0f} MB  "
                     f"{'PASS' if big['peak_mb'] < TARGET_PEAK_MB else 'FAIL'}")
        kf = big["folds_alone"]["seconds"]
        lines.append(f"target: kNNDM fold construction, {big['n']:,} plots over {SIDE * SIDE:,} pixels, under "
                     f"{TARGET_KNNDM_SECONDS:.0f} s: {kf:.1f} s  {'PASS' if kf < TARGET_KNNDM_SECONDS else 'FAIL'}")
        if reference is not None:
            ratio = big["seconds"] / reference["seconds"]
            lines.append(f"ratio: kNNDM path / reference (random + blocks) at {big['n']:,}: {ratio:.2f} "
                         f"({big['seconds']:.1f} s / {reference['seconds']:.1f} s; peak {big['peak_mb']:.0f} / "
                         f"{reference['peak_mb']:.0f} MB)")
    else:
        lines.append(f"(--quick: targets are for 10^5 plots; largest here {big['n']:,}: {big['seconds']:.1f} s, "
                     f"peak {big['peak_mb']:.0f} MB)")
    record["summary"] = lines
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
