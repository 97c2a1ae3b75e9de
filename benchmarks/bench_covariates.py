"""Benchmark the local covariate engine: extraction at many plots and a wall-to-wall stack.

Run:  .venv/bin/python benchmarks/bench_covariates.py [--size 10000] [--plots 100000] [--workdir DIR]

Writes synthetic rasters (red, nir, dem; float32, 512 x 512 deflate tiles) of ``size`` x ``size``
pixels, then measures, each case in a fresh subprocess so peak RSS is its own:

- ``extract``: :func:`sinks.covariates.extract.extract` at ``plots`` random points, features red,
  nir, NDVI and Horn slope; reference: a naive ``rasterio`` ``dataset.sample`` loop over the same
  points for the three raw bands (no slope, which ``sample`` cannot give), same run, with the ratio.
- ``stack``: :func:`sinks.covariates.extract.build_stack` of the same 4 features over the whole
  grid (COG with overviews); memory compared with the size of one whole band.
- ``twi``: whole-grid flow accumulation + TWI on a 1000 x 1000 and a 2000 x 2000 DEM; tracemalloc
  peak per pixel (the basis of ``terrain.FLOW_BYTES_PER_PIXEL``).

Every case runs ``--repeat`` times (default 3); times and peak memory are medians over the runs.
Prints a table and writes ``benchmarks/results/bench_covariates.json``. Peak memory is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the case's subprocess (GDAL's block cache
included); for TWI also ``tracemalloc``'s peak in a second, untimed run.
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
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CRS = "EPSG:32650"
ORIGIN = (400000.0, 3400000.0)
RES = 10.0


def _write(path: Path, size: int, kind: str) -> None:
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=size, height=size, count=1, dtype="float32", crs=CRS, nodata=-9999.0,
                   transform=Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]), tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            h = min(512, size - row)
            y = (np.arange(row, row + h, dtype=np.float32)[:, None]) * RES
            x = np.arange(size, dtype=np.float32)[None, :] * RES
            if kind == "dem":
                z = 500 + 100 * np.sin(x / 3000) * np.cos(y / 2000) + 0.01 * x
            elif kind == "red":
                z = 0.05 + 0.03 * np.sin(x / 700) ** 2 + 0.0 * y
            else:
                z = 0.3 + 0.1 * np.cos(y / 900) ** 2 + 0.0 * x
            dst.write(z.astype(np.float32), 1, window=Window(0, row, size, h))


def _spec(workdir: Path) -> Path:
    spec = workdir / "bench.toml"
    spec.write_text(f"""name = "bench"
[grid]
crs = "{CRS}"
resolution = {RES}
like = "red"
[[sources]]
name = "red"
path = "red.tif"
bands = ["red"]
[[sources]]
name = "nir"
path = "nir.tif"
bands = ["nir"]
[[sources]]
name = "dem"
path = "dem.tif"
bands = ["z"]
[[features]]
name = "red"
band = "red.red"
[[features]]
name = "nir"
band = "nir.nir"
[[features]]
name = "ndvi"
expression = "(nir - red) / (nir + red)"
[[features]]
name = "slope"
terrain = "slope"
band = "dem.z"
""")
    return spec


def _points(size: int, n: int):
    import geopandas as gpd

    rng = np.random.default_rng(42)
    x = ORIGIN[0] + rng.uniform(0, size * RES, n)
    y = ORIGIN[1] - rng.uniform(0, size * RES, n)
    return gpd.GeoDataFrame({"plot_id": np.arange(n)}, geometry=gpd.points_from_xy(x, y), crs=CRS)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def case(name: str, workdir: Path, size: int, n_plots: int) -> dict:
    from sinks.covariates.extract import build_stack, extract
    from sinks.covariates.spec import load_spec

    spec = load_spec(_spec(workdir))
    result: dict = {"case": name}
    if name in ("extract", "naive_sample"):
        plots = _points(size, n_plots)
    t0 = time.perf_counter()
    if name == "extract":
        table = extract(spec, plots, progress=False)
        result["n_valid"] = int((table["valid_pixels"] > 0).sum())
        result["checksum_red"] = float(np.nansum(table["red"]))
    elif name == "naive_sample":
        import rasterio

        total = 0.0
        xy = list(zip(plots.geometry.x, plots.geometry.y))
        for band in ("red", "nir", "dem"):
            with rasterio.open(workdir / f"{band}.tif") as ds:
                values = np.array([v[0] for v in ds.sample(xy)], dtype=np.float64)
                if band == "red":
                    total = float(np.nansum(values))
        result["checksum_red"] = total
    elif name == "stack":
        out = build_stack(spec, workdir / "stack.tif", block=512, progress=False)
        result["out_mb"] = out.stat().st_size / 2**20
    elif name.startswith("twi"):
        from sinks.covariates import terrain

        n = int(name[3:])
        y, x = np.mgrid[0:n, 0:n].astype(np.float64) * RES
        z = (500 + 100 * np.sin(x / 3000) * np.cos(y / 2000) + 0.01 * x).astype(np.float32)
        z += np.random.default_rng(0).normal(0, 0.5, z.shape).astype(np.float32)  # pits to fill
        t0 = time.perf_counter()
        terrain.twi_grid(z, RES, RES)
        result["seconds"] = time.perf_counter() - t0
        tracemalloc.start()  # a second, traced run: tracemalloc slows the Python loops many-fold
        terrain.twi_grid(z, RES, RES)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result["pixels"] = n * n
        result["tracemalloc_peak_mb"] = peak / 2**20
        result["bytes_per_pixel"] = peak / result["pixels"]
    result.setdefault("seconds", time.perf_counter() - t0)
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _spawn(name: str, workdir: Path, args) -> dict:
    """One run of a case in a fresh interpreter (its own peak RSS)."""
    env = {**os.environ, **({"GDAL_CACHEMAX": str(args.gdal_cachemax)} if args.gdal_cachemax else {})}
    proc = subprocess.run([sys.executable, __file__, "--case", name, "--workdir", str(workdir), "--size",
                           str(args.size), "--plots", str(args.plots)], capture_output=True, text=True, check=True,
                          env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="grid side in pixels (default 10000: 1e8 pixels)")
    parser.add_argument("--plots", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; medians are reported (default 3)")
    parser.add_argument("--gdal-cachemax", type=int, metavar="MB",
                        help="GDAL block cache for the cases (default GDAL's: 5 %% of RAM); results then go to "
                        "results/bench_covariates_cache<MB>.json")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.workdir, args.size, args.plots)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_covariates_"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for kind in ("red", "nir", "dem"):
        if not (workdir / f"{kind}.tif").exists():
            _write(workdir / f"{kind}.tif", args.size, kind)
    print(f"inputs: 3 x {args.size} x {args.size} float32 in {workdir} ({time.perf_counter() - t0:.1f} s)", flush=True)
    results = {}
    for name in ("extract", "naive_sample", "stack", "twi1000", "twi2000"):
        runs = [_spawn(name, workdir, args) for _ in range(args.repeat)]
        results[name] = {**runs[0], **{key: statistics.median(r[key] for r in runs)
                                       for key, value in runs[0].items() if isinstance(value, float)},
                         "runs_s": [r["seconds"] for r in runs]}
        print(json.dumps(results[name]), flush=True)
    ratio = results["naive_sample"]["seconds"] / results["extract"]["seconds"]
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "grid_pixels": args.size**2, "plots": args.plots, "repeat": args.repeat,
        "gdal_cachemax_mb": args.gdal_cachemax,
        "extract_s": results["extract"]["seconds"], "naive_sample_s": results["naive_sample"]["seconds"],
        "extract_speedup_vs_naive": ratio,
        "stack_s": results["stack"]["seconds"], "stack_peak_rss_mb": results["stack"]["peak_rss_mb"],
        "one_band_whole_mb": args.size**2 * 4 / 2**20,
        "results": results,
    }
    print(f"medians of {args.repeat}: extract {args.plots} plots: {summary['extract_s']:.1f} s vs naive sample loop "
          f"{summary['naive_sample_s']:.1f} s (x{ratio:.2f}); stack {args.size}^2 x 4 features: "
          f"{summary['stack_s']:.1f} s, peak RSS {summary['stack_peak_rss_mb']:.0f} MB "
          f"(one whole band = {summary['one_band_whole_mb']:.0f} MB)")
    out = HERE / "results" / (f"bench_covariates_cache{args.gdal_cachemax}.json" if args.gdal_cachemax
                              else "bench_covariates.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
