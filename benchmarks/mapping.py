"""Benchmark wall-to-wall mapping: sinks map against the raw model ceiling and pyspatialml.

Run:  .venv/bin/python benchmarks/mapping.py [--size 4096] [--plots 10000] [--repeat 3] [--cores 2]
                                             [--workdir DIR] [--skip-peer] [--configs serial,threads]

Setup (cached in ``--workdir``, default ``benchmarks/.work-mapping-SIZE``): a 12-band float32 stack
of ``size`` x ``size`` pixels (DEFLATE + predictor, 512-pixel tiles, band descriptions f00..f11,
nodata -9999), about 70 % valid; a feature spec reading it; ``plots`` synthetic plots sampled from
the valid pixels with a nonlinear target plus noise; and a bundle trained by ``sinks.learn.train``:
XGBoost, 300 trees, depth 6 (the DI reference then holds ``plots`` training rows).

Cases, each in its own subprocess pinned to ``--cores`` CPUs (``taskset``), alternated within each
of ``--repeat`` rounds; times and peak RSS (``os.wait4``'s ``ru_maxrss`` of that subprocess) are
medians over the rounds:

- ``ceiling``: the bundle's XGBoost model, ``inplace_predict`` with ``cores`` threads on the valid
  pixels already in memory (the read is not timed): the most any mapper can do with this model;
- ``sinks carbon``: ``sinks map BUNDLE --stack STACK --bands carbon`` end to end (start-up, reads,
  COG with overviews, STAC Item with the inputs' sha256), per executor configuration in
  ``--configs`` (``serial``: one worker, the model on all cores; ``threads``: ``--jobs cores``);
- ``sinks all``: the same with every band (carbon, lower, upper, di, aoa);
- ``pyspatialml``: pyspatialml 0.22.1 ``Raster.predict`` of the same model (XGBoost JSON) on the
  same stack, end to end in its own venv (``benchmarks/.venv-pyspatialml``, numpy < 2), created here
  on first use; ``n_jobs = cores``; it writes a plain GeoTIFF (no overviews).

Also ``sinks map --help`` start-up time (median of 5). Prints a table and, as its last lines, the
ratios against the targets; writes ``benchmarks/results/mapping.json``.
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
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CRS = "EPSG:32648"
RES = 30.0
ORIGIN = (400000.0, 3400000.0)
N_BANDS = 12
NAMES = [f"f{i:02d}" for i in range(N_BANDS)]
PEER_VENV = HERE / ".venv-pyspatialml"


# ---- setup ----------------------------------------------------------------------------------

def _fields(rows: np.ndarray, cols: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """12 smooth-plus-noise bands and the valid mask on the given pixel rows/cols (broadcast)."""
    y, x = rows / size, cols / size
    rng = np.random.default_rng(int(rows.flat[0]) * 7919 + int(cols.flat[0]))
    bands = []
    for i in range(N_BANDS):
        f = np.sin((i + 1) * 3.1 * x + i) * np.cos((i % 4 + 1) * 2.3 * y - i) + 0.3 * (x - y) * i
        bands.append((f + 0.15 * rng.standard_normal(np.broadcast(x, y).shape)).astype(np.float32))
    blob = np.sin(5.0 * x) * np.cos(4.0 * y) + 0.6 * np.sin(13 * x * y)
    valid = np.broadcast_to(blob > -0.25, np.broadcast(x, y).shape)  # about 70 % valid
    return np.stack(bands), valid


def write_stack(path: Path, size: int) -> float:
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=size, height=size, count=N_BANDS, dtype="float32", crs=CRS, nodata=-9999.0,
                   transform=Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]), tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", predictor=3, BIGTIFF="IF_SAFER", interleave="pixel")
    n_valid = 0
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for i, name in enumerate(NAMES, start=1):
            dst.set_band_description(i, name)
        for row in range(0, size, 512):
            h = min(512, size - row)
            rows = np.arange(row, row + h, dtype=np.float64)[:, None]
            cols = np.arange(size, dtype=np.float64)[None, :]
            data, valid = _fields(rows, cols, size)
            data[:, ~valid] = -9999.0
            n_valid += int(valid.sum())
            dst.write(data, window=Window(0, row, size, h))
    os.replace(tmp, path)
    return n_valid / size**2


SPEC = """name = "bench_stack"
description = "12 synthetic bands read from the benchmark stack"

[grid]
crs = "{crs}"
resolution = {res}
like = "stack"

[footprint]
radius = 0

[[sources]]
name = "stack"
paths = ["{stack}"]
nodata = -9999
bands = [{bands}]

{features}
"""

RECIPE = """name = "bench_carbon"
description = "synthetic carbon from 12 synthetic bands"
features = "{spec}"

[target]
column = "carbon_mg_ha"
units = "Mg C/ha"
band = "carbon"

[estimator]
kind = "xgboost"
params = {{ n_estimators = 300, max_depth = 6, learning_rate = 0.1, subsample = 0.8 }}

[validation]
folds = 3
block_size = {block}
schemes = ["blocks"]
scheme = "blocks"
seed = 0

[intervals]
level = 0.9
"""


def make_bundle(work: Path, stack: Path, size: int, n_plots: int) -> Path:
    import pandas as pd
    import rasterio

    from sinks.learn.recipe import load_recipe
    from sinks.learn.train import train

    bands = ", ".join(f'{{ name = "{n}", index = {i} }}' for i, n in enumerate(NAMES, start=1))
    features = "\n".join(f'[[features]]\nname = "{n}"\nband = "stack.{n}"\n' for n in NAMES)
    spec = work / "bench.features.toml"
    spec.write_text(SPEC.format(crs=CRS, res=RES, stack=stack, bands=bands, features=features))
    recipe = work / "bench.recipe.toml"
    recipe.write_text(RECIPE.format(spec=spec, block=RES * size / 12))
    rng = np.random.default_rng(1)
    picked_r, picked_c, n = [], [], 0
    with rasterio.open(stack) as ds:
        while n < n_plots:
            r, c = rng.integers(0, size, 4 * n_plots), rng.integers(0, size, 4 * n_plots)
            _, valid = _fields(r.astype(float), c.astype(float), size)
            picked_r.append(r[valid])
            picked_c.append(c[valid])
            n += int(valid.sum())
        rows, cols = np.concatenate(picked_r)[:n_plots], np.concatenate(picked_c)[:n_plots]
        xs = ORIGIN[0] + (cols + 0.5) * RES
        ys = ORIGIN[1] - (rows + 0.5) * RES
        values = np.array(list(ds.sample(zip(xs, ys))), dtype=np.float32)
    keep = (values != -9999).all(axis=1)
    values, xs, ys = values[keep], xs[keep], ys[keep]
    f = values
    carbon = 60 + 25 * np.tanh(f[:, 0] + f[:, 1] * f[:, 2]) + 15 * np.sin(3 * f[:, 3]) + 10 * f[:, 4] ** 2 \
        - 8 * np.abs(f[:, 5] - f[:, 6]) + 5 * f[:, 7] * f[:, 8] + rng.normal(0, 8, len(f))
    table = pd.DataFrame({"plot_id": np.arange(len(f)), "x": xs, "y": ys, **{n: f[:, i] for i, n in enumerate(NAMES)},
                          "carbon_mg_ha": np.clip(carbon, 1, 250)})
    table.attrs["source"] = "benchmark plots"
    out = work / "bundle"
    train(load_recipe(recipe), table, out, progress=False)
    return out


# ---- cases -----------------------------------------------------------------------------------

CEILING = """
import sys, time, numpy as np, rasterio, xgboost as xgb
stack, model, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
with rasterio.open(stack) as ds:
    data = ds.read()
n = data.shape[0]
flat = data.reshape(n, -1)
valid = (flat != -9999).all(axis=0)
X = np.ascontiguousarray(flat[:, valid].T)
del data, flat
booster = xgb.Booster(model_file=model)
booster.set_param({"nthread": threads})
booster.inplace_predict(X[:1000])
t = time.perf_counter()
p = booster.inplace_predict(X)
print("SECONDS", time.perf_counter() - t, "PIXELS", X.shape[0])
"""

PEER = """
import sys, time, xgboost as xgb
from pyspatialml import Raster
stack, model, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
est = xgb.XGBRegressor(n_jobs=threads)
est.load_model(model)
r = Raster(stack)
r.predict(est, file_path=out, dtype="float32", nodata=-9999, progress=False)
"""


def run_case(argv: list[str], cores: int, env: dict | None = None) -> dict:
    """Run ``argv`` pinned to the first ``cores`` CPUs; wall seconds, peak RSS (MiB), stdout."""
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    full = ["taskset", "-c", ",".join(map(str, cpus)), *argv] if shutil.which("taskset") else argv
    start = time.perf_counter()
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n{err[-3000:]}")
    rss = None
    for line in out.splitlines():
        if line.startswith("PEAK_RSS_KB"):
            rss = int(line.split()[1]) / 1024
    return {"seconds": seconds, "rss_mib": rss, "stdout": out}


#: Wrapper measuring a command's peak RSS: runs it as a child and reports wait4's ru_maxrss.
MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
code = os.waitstatus_to_exitcode(status)
print("PEAK_RSS_KB", usage.ru_maxrss, flush=True)
sys.exit(code)
"""


def measured(argv: list[str]) -> list[str]:
    return [sys.executable, "-c", MEASURE, *map(str, argv)]


def ensure_peer() -> Path | None:
    python = PEER_VENV / "bin" / "python"
    if python.exists():
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        (PEER_VENV / ".gitignore").write_text("*\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "pyspatialml==0.22.1", "xgboost"], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"pyspatialml venv could not be made ({exc}); skipping the peer", file=sys.stderr)
        return None
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--plots", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--configs", default="serial,threads", help="sinks executor configurations to time")
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "mapping.json")
    args = parser.parse_args()

    work = args.workdir or HERE / f".work-mapping-{args.size}"
    work.mkdir(parents=True, exist_ok=True)
    (work / ".gitignore").write_text("*\n")
    stack = work / "stack.tif"
    t = time.perf_counter()
    if not stack.exists():
        frac = write_stack(stack, args.size)
        (work / "valid.txt").write_text(str(frac))
        print(f"stack {args.size}^2 x {N_BANDS} written in {time.perf_counter() - t:.0f} s, {frac:.1%} valid", flush=True)
    frac = float((work / "valid.txt").read_text())
    bundle = work / "bundle"
    if not (bundle / "metadata.json").exists():
        t = time.perf_counter()
        make_bundle(work, stack, args.size, args.plots)
        print(f"bundle trained in {time.perf_counter() - t:.0f} s", flush=True)
    meta = json.loads((bundle / "metadata.json").read_text())
    peer = None if args.skip_peer else ensure_peer()
    sinks = [sys.executable, "-m", "sinks.cli"]
    cores = args.cores
    configs = {"serial": [], "threads": ["--jobs", str(cores)], "processes": ["--jobs", str(cores), "--executor", "processes"]}
    cases: dict[str, list[str]] = {"ceiling": [sys.executable, "-c", CEILING, stack, bundle / "model.json", cores]}
    for name in args.configs.split(","):
        cases[f"sinks carbon ({name})"] = [*sinks, "map", bundle, "--stack", stack, "--bands", "carbon", "--out",
                                           work / f"carbon_{name}.tif", "--overwrite", "--quiet", "--block",
                                           args.block, *configs[name]]
    for name in args.configs.split(","):
        cases[f"sinks all ({name})"] = [*sinks, "map", bundle, "--stack", stack, "--out", work / f"all_{name}.tif",
                                        "--overwrite", "--quiet", "--block", args.block, *configs[name]]
    if peer is not None:
        cases["pyspatialml"] = [peer, "-c", PEER, stack, bundle / "model.json", work / "peer.tif", cores]
    env = {"OMP_NUM_THREADS": str(cores), "SINKS_COG_THREADS": str(cores)}
    runs: dict[str, list[dict]] = {k: [] for k in cases}
    for r in range(args.repeat):
        for name, argv in cases.items():
            (work / "peer.tif").unlink(missing_ok=True)
            result = run_case(measured(argv), cores, env)
            if name == "ceiling":
                fields = result["stdout"].split()
                result["predict_seconds"] = float(fields[fields.index("SECONDS") + 1])
                result["pixels"] = int(fields[fields.index("PIXELS") + 1])
            runs[name].append(result)
            shown = result.get("predict_seconds", result["seconds"])
            print(f"round {r + 1} {name:28s} {shown:8.2f} s  peak {result['rss_mib'] or 0:7.0f} MiB", flush=True)
    helps = []
    for _ in range(5):
        helps.append(run_case([*sinks, "map", "--help"], cores, env)["seconds"])

    med = {}
    for name, rs in runs.items():
        key = "predict_seconds" if name == "ceiling" else "seconds"
        med[name] = {"seconds": statistics.median(r[key] for r in rs),
                     "peak_rss_mib": statistics.median(r["rss_mib"] for r in rs if r["rss_mib"] is not None),
                     "runs": [round(r[key], 3) for r in rs]}
    n_valid = runs["ceiling"][0]["pixels"]
    ceiling = med["ceiling"]["seconds"]
    best_carbon = min((k for k in med if k.startswith("sinks carbon")), key=lambda k: med[k]["seconds"])
    best_all = min((k for k in med if k.startswith("sinks all")), key=lambda k: med[k]["seconds"])
    ratios = {
        "carbon_vs_ceiling": ceiling / med[best_carbon]["seconds"],
        "carbon_vs_pyspatialml": (med["pyspatialml"]["seconds"] / med[best_carbon]["seconds"]) if "pyspatialml" in med else None,
        "all_over_carbon": med[best_all]["seconds"] / med[best_carbon]["seconds"],
    }
    result = {
        "benchmark": "mapping", "size": args.size, "bands": N_BANDS, "valid_fraction": frac, "valid_pixels": n_valid,
        "plots": meta["training"]["n"], "model": "XGBoost 300 trees depth 6", "cores": cores, "block": args.block,
        "repeat": args.repeat, "medians": med, "best": {"carbon": best_carbon, "all": best_all}, "ratios": ratios,
        "targets": {"carbon_vs_ceiling": ">= 0.9", "carbon_vs_pyspatialml": ">= 1.65", "all_over_carbon": "<= 1.3",
                    "peak_rss": "< 1 GiB for 1e8 pixels"},
        "map_help_seconds": statistics.median(helps),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"{'case':30s} {'median s':>9s} {'peak MiB':>9s}   Mpx/s (valid)")
    for name, m in med.items():
        print(f"{name:30s} {m['seconds']:9.2f} {m['peak_rss_mib']:9.0f}   {n_valid / m['seconds'] / 1e6:6.2f}")
    print(f"sinks map --help: {result['map_help_seconds']:.2f} s")
    print(textwrap.dedent(f"""\
        ratio carbon alone vs ceiling      {ratios['carbon_vs_ceiling']:.2f}  (target >= 0.9; {best_carbon})"""))
    if ratios["carbon_vs_pyspatialml"] is not None:
        print(f"ratio carbon alone vs pyspatialml  {ratios['carbon_vs_pyspatialml']:.2f}  (target >= 1.65)")
    print(f"ratio all bands / carbon alone     {ratios['all_over_carbon']:.2f}  (target <= 1.3; {best_all})")


if __name__ == "__main__":
    main()
