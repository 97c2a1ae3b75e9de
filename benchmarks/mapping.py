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

Memory mode (``--memory [--size 10000] [--cases BANDS:EXECUTOR,...] [--jobs 2] [--keep]
[--env KEY=VALUE]``): peak memory of ``sinks map --stack`` on a ``size``² stack (default 10000² =
10⁸ pixels, written once in 512 x 2048 windows into ``benchmarks/.work-mapping-memory-SIZE``, after
checking the free disk), with a bundle of XGBoost 50 trees depth 6 (``--trees``, ``--depth``; the
memory hardly depends on them) trained on ``--plots`` (10⁴) plots, which are also the DI reference.
Cases: ``carbon`` alone and ``all`` (every band the bundle gives, ``error`` included: the worst
case) on ``serial``, ``processes`` (``--jobs`` workers) and ``dask`` (a LocalCluster of ``--jobs``
single-threaded worker processes started in its own process; its idle memory is recorded too).
Measured, sampling every ``--interval`` (0.2) s with psutil: the peak of the SUM of RSS over the
``sinks map`` process and all its descendants (and, for dask, the cluster's process tree), the
same for PSS (shared pages counted once), in which phase it came (``tiles`` or ``assemble``: from
when the checkpoint folder's VRT appears, the COG step), which processes made it, each process's
VmHWM; and the main process's own VmHWM and wait4's ``ru_maxrss`` (through a small wrapper
process, since a child forked from this process would count this process's pages). ``--env``
reruns with extra environment (e.g. ``GDAL_CACHEMAX=128``) and records the cases under
``diagnostics`` in the main run's file. Writes ``benchmarks/results/mapping_memory.json`` after
every case and prints the peak per case against the 1 GiB target as its last lines; removes the
stack at the end unless ``--keep``.
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


def write_stack(path: Path, size: int, chunk: int | None = None, threads: int = 1) -> float:
    """Write the stack in windows of 512 rows x ``chunk`` columns (default: the full width, as the
    timing runs' cached stacks were made; the noise is seeded per window, so the chunking changes the
    noise, not its statistics); ``threads``: GDAL's compression threads. Returns the valid fraction."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=size, height=size, count=N_BANDS, dtype="float32", crs=CRS, nodata=-9999.0,
                   transform=Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1]), tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", predictor=3, BIGTIFF="IF_SAFER", interleave="pixel", num_threads=str(threads))
    chunk = chunk or size
    n_valid = 0
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for i, name in enumerate(NAMES, start=1):
            dst.set_band_description(i, name)
        for row in range(0, size, 512):
            h = min(512, size - row)
            rows = np.arange(row, row + h, dtype=np.float64)[:, None]
            for col in range(0, size, chunk):
                w = min(chunk, size - col)
                cols = np.arange(col, col + w, dtype=np.float64)[None, :]
                data, valid = _fields(rows, cols, size)
                data[:, ~valid] = -9999.0
                n_valid += int(valid.sum())
                dst.write(data, window=Window(col, row, w, h))
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
params = {{ n_estimators = {trees}, max_depth = {depth}, learning_rate = 0.1, subsample = 0.8 }}

[validation]
folds = 3
block_size = {block}
schemes = ["blocks"]
scheme = "blocks"
seed = 0

[intervals]
level = 0.9
"""


def make_bundle(work: Path, stack: Path, size: int, n_plots: int, trees: int = 300, depth: int = 6) -> Path:
    import pandas as pd
    import rasterio

    from sinks.learn.recipe import load_recipe
    from sinks.learn.train import train

    bands = ", ".join(f'{{ name = "{n}", index = {i} }}' for i, n in enumerate(NAMES, start=1))
    features = "\n".join(f'[[features]]\nname = "{n}"\nband = "stack.{n}"\n' for n in NAMES)
    spec = work / "bench.features.toml"
    spec.write_text(SPEC.format(crs=CRS, res=RES, stack=stack, bands=bands, features=features))
    recipe = work / "bench.recipe.toml"
    recipe.write_text(RECIPE.format(spec=spec, block=RES * size / 12, trees=trees, depth=depth))
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
        # sampled block by block (then put back in plot order): in random order every sample would
        # decompress a 512 x 512 x 12 block again once the stack outgrows GDAL's cache
        order = np.lexsort((cols // 512, rows // 512))
        values = np.empty((len(xs), N_BANDS), dtype=np.float32)
        values[order] = np.array(list(ds.sample(zip(xs[order], ys[order]))), dtype=np.float32)
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


# ---- memory mode (--memory) ------------------------------------------------------------------

#: A Dask LocalCluster in its own process: prints its address, runs until its stdin is closed.
CLUSTER = """
import sys
from distributed import LocalCluster
cluster = LocalCluster(n_workers=int(sys.argv[1]), threads_per_worker=1, processes=True,
                       dashboard_address=None, silence_logs=40)
print("ADDRESS", cluster.scheduler_address, flush=True)
sys.stdin.read()
cluster.close()
"""


def _proc_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class TreeSampler:
    """Samples, every ``interval`` s in a thread, the RSS (and PSS) of every process in the trees
    rooted at ``roots`` (a list of pids, appended to while running): the peak of their SUM, when it
    happened and in which phase (``phase()``), which processes made it, and each process's own
    high-water mark (``VmHWM``, exact between samples too)."""

    def __init__(self, roots: dict[int, str], interval: float = 0.2, phase=lambda: "run"):
        import threading

        self.roots, self.interval, self.phase = dict(roots), interval, phase
        self.t0 = time.perf_counter()
        self.peak = {"rss_mib": 0.0}
        self.peak_pss = 0.0
        self.phase_peaks: dict[str, float] = {}
        self.procs: dict[int, dict] = {}  # pid -> label, max rss, last VmHWM
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return self.summary()

    def _label(self, proc, root_label: str, depth: int) -> str:
        try:
            cmd = " ".join(proc.cmdline())
        except Exception:  # noqa: BLE001 - the process went away
            cmd = "?"
        if depth == 0:
            return root_label
        if "forkserver" in cmd:
            kind = "forkserver" if depth == 1 else "worker (forked by the forkserver)"
        elif "resource_tracker" in cmd:
            kind = "resource tracker"
        elif "spawn_main" in cmd or "multiprocessing" in cmd:
            kind = "worker (spawned)"
        else:
            kind = cmd[:60]
        return f"{root_label} > {kind}"

    def _tree(self):
        import psutil

        for root, label in list(self.roots.items()):
            try:
                top = psutil.Process(root)
                yield top, label, 0
                stack = [(c, 1) for c in top.children()]
                while stack:
                    proc, depth = stack.pop()
                    yield proc, label, depth
                    stack.extend((c, depth + 1) for c in proc.children())
            except psutil.NoSuchProcess:
                continue

    def sample(self) -> None:
        import psutil

        total, total_pss, parts = 0, 0, {}
        for proc, root_label, depth in self._tree():
            try:
                rss = proc.memory_info().rss
                try:
                    pss = proc.memory_full_info().pss
                except (psutil.AccessDenied, AttributeError):
                    pss = rss
            except psutil.NoSuchProcess:
                continue
            info = self.procs.get(proc.pid)
            if info is None:
                info = self.procs[proc.pid] = {"label": self._label(proc, root_label, depth), "max_rss_mib": 0.0,
                                                "vmhwm_mib": 0.0}
            info["max_rss_mib"] = max(info["max_rss_mib"], rss / 2**20)
            hwm = _proc_kib(proc.pid, "VmHWM")
            if hwm is not None:
                info["vmhwm_mib"] = max(info["vmhwm_mib"], hwm / 1024)
            total += rss
            total_pss += pss
            parts[info["label"]] = parts.get(info["label"], 0.0) + rss / 2**20
        self.samples += 1
        phase = self.phase()
        mib = total / 2**20
        self.phase_peaks[phase] = max(self.phase_peaks.get(phase, 0.0), mib)
        self.peak_pss = max(self.peak_pss, total_pss / 2**20)
        if mib > self.peak["rss_mib"]:
            self.peak = {"rss_mib": mib, "at_s": time.perf_counter() - self.t0, "phase": phase,
                         "processes": {k: round(v, 1) for k, v in sorted(parts.items())}}

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def summary(self) -> dict:
        return {
            "peak_rss_sum_mib": round(self.peak["rss_mib"], 1),
            "peak_pss_sum_mib": round(self.peak_pss, 1),
            "peak_at_s": round(self.peak.get("at_s", 0.0), 1), "peak_phase": self.peak.get("phase"),
            "peak_processes_rss_mib": self.peak.get("processes", {}),
            "peak_rss_sum_by_phase_mib": {k: round(v, 1) for k, v in self.phase_peaks.items()},
            "sum_of_process_vmhwm_mib": round(sum(p["vmhwm_mib"] for p in self.procs.values()), 1),
            "processes": [{"pid": pid, **{k: round(v, 1) if isinstance(v, float) else v for k, v in p.items()}}
                          for pid, p in self.procs.items()],
            "samples": self.samples,
        }


def start_cluster(workers: int, env: dict, log: Path):
    """A LocalCluster process with ``workers`` single-threaded worker processes; (Popen, address)."""
    proc = subprocess.Popen([sys.executable, "-c", CLUSTER, str(workers)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env={**os.environ, **env})
    line = proc.stdout.readline()
    if not line.startswith("ADDRESS"):
        proc.kill()
        raise RuntimeError(f"the Dask LocalCluster did not start; see {log}")
    return proc, line.split()[1]


def stop_cluster(proc) -> None:
    proc.stdin.close()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def memory_case(argv: list[str], out: Path, cores: int, env: dict, interval: float, log: Path,
                extra_roots: dict[int, str] | None = None) -> dict:
    """Run ``argv`` (a ``sinks map`` writing ``out``) pinned to ``cores`` CPUs, sampling the memory
    of its process tree (plus ``extra_roots``, e.g. a Dask cluster's); wait4's rusage at the end."""
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    full = ["taskset", "-c", ",".join(map(str, cpus)), *map(str, argv)] if shutil.which("taskset") else argv
    vrt_glob = f".{out.name}.resume-*/map.vrt"

    seen = []

    def phase() -> str:  # the tiles are assembled into the COG from when the store's VRT appears on
        if not seen and any(out.parent.glob(vrt_glob)):
            seen.append(True)
        return "assemble" if seen else "tiles"

    import psutil

    start = time.perf_counter()
    # through the small MEASURE wrapper: wait4's ru_maxrss of a child counts the memory it had before
    # exec, which for a child forked from this (large) process is this process's RSS
    with open(log, "w") as handle:
        proc = subprocess.Popen(measured(full), stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **env})
    main = None
    while main is None and proc.poll() is None:  # the wrapper's child (taskset execs the command)
        kids = psutil.Process(proc.pid).children()
        main = kids[0].pid if kids else time.sleep(0.01)
    sampler = TreeSampler({main: "sinks map", **(extra_roots or {})} if main else {}, interval, phase).start()
    main_hwm = 0
    while main is not None and proc.poll() is None:  # main's own VmHWM, read until it exits
        hwm = _proc_kib(main, "VmHWM")
        main_hwm = max(main_hwm, hwm or 0)
        time.sleep(interval)
    proc.wait()
    seconds = time.perf_counter() - start
    result = sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}); see {log}")
    maxrss = [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("PEAK_RSS_KB")]
    result.update(seconds=round(seconds, 1), main_vmhwm_mib=round(main_hwm / 1024, 1),
                  wait4_ru_maxrss_mib=round(maxrss[-1] / 1024, 1) if maxrss else None)
    return result


def memory_main(args) -> None:
    """Peak memory of ``sinks map`` on a ``size``² stack, per executor and band set."""
    import rasterio

    size = args.size or 10_000
    work = args.workdir or HERE / f".work-mapping-memory-{size}"
    work.mkdir(parents=True, exist_ok=True)
    (work / ".gitignore").write_text("*\n")
    stack = work / "stack.tif"
    need = size * size * N_BANDS * 4 * 2  # the stack (under its raw size) plus maps and checkpoints
    free = shutil.disk_usage(work).free
    if not stack.exists() and free < need:
        raise SystemExit(f"{work}: {free / 2**30:.1f} GiB free, about {need / 2**30:.1f} GiB needed")
    if not stack.exists():
        t = time.perf_counter()
        frac = write_stack(stack, size, chunk=2048, threads=args.cores)
        (work / "valid.txt").write_text(str(frac))
        print(f"stack {size}^2 x {N_BANDS} written in {time.perf_counter() - t:.0f} s "
              f"({stack.stat().st_size / 2**30:.2f} GiB, 512 x 2048 windows), {frac:.1%} valid", flush=True)
    frac = float((work / "valid.txt").read_text())
    bundle = work / "bundle"
    if not (bundle / "metadata.json").exists():
        t = time.perf_counter()
        make_bundle(work, stack, size, args.plots, trees=args.trees, depth=args.depth)
        print(f"bundle trained in {time.perf_counter() - t:.0f} s", flush=True)
    meta = json.loads((bundle / "metadata.json").read_text())
    from sinks.bundle import load_bundle
    from sinks.mapping.predict import available_bands

    every = list(available_bands(load_bundle(bundle)))  # every band the bundle gives, error included
    band_sets = {"carbon": every[:1], "all": every}  # the target band comes first
    cores = args.cores
    env = {"OMP_NUM_THREADS": str(cores), "SINKS_COG_THREADS": str(cores)}
    extra = dict(item.split("=", 1) for item in args.env)
    env.update(extra)
    configs = {"serial": ["--executor", "serial"],
               "processes": ["--executor", "processes", "--jobs", str(args.jobs)],
               "dask": ["--executor", "dask", "--jobs", str(args.jobs)]}
    cases = [c.split(":") for c in args.cases.split(",")]
    with rasterio.open(stack) as ds:
        size_bytes = stack.stat().st_size
        assert ds.width == ds.height == size
    result = {
        "benchmark": "mapping memory", "size": size, "pixels": size * size, "bands_in": N_BANDS,
        "valid_fraction": frac, "stack_gib": round(size_bytes / 2**30, 2), "block": args.block,
        "plots": meta["training"]["n"], "model": f"XGBoost {args.trees} trees depth {args.depth}",
        "di_reference_rows": meta["training"]["n"], "band_sets": band_sets, "cores": cores, "jobs": args.jobs,
        "sample_interval_s": args.interval,
        "measure": ("peak of the sum of RSS over the sinks map process and all its descendants (plus, for "
                    "dask, the LocalCluster process and its workers), sampled every interval; PSS likewise "
                    "(shared pages counted once); each process's VmHWM; the main process's own VmHWM and "
                    "wait4's ru_maxrss (the largest single process among it and the children it reaped)"),
        "target": "peak < 1 GiB (1024 MiB) for 1e8 pixels, on any executor",
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
        "env": {"GDAL_CACHEMAX": os.environ.get("GDAL_CACHEMAX", "unset (GDAL default: 5 % of RAM)"), **env},
        "code": {"sinks_package": subprocess.run([sys.executable, "-c", "import sinks; print(sinks.__path__[0])"],
                                                 capture_output=True, text=True).stdout.strip(),
                 "git_head": subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                            text=True).stdout.strip()},
        "cases": {}, "not_run": [f"{b}:{e}" for b, e in cases],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    label = " ".join(args.env)
    previous = json.loads(args.out.read_text()) if extra and args.out.exists() else None

    def save() -> None:  # after every case; a run with --env goes under "diagnostics" of the main run's file
        if previous is None:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        else:
            previous.setdefault("diagnostics", {})[label] = {k: result[k] for k in ("env", "cases", "not_run", "created")}
            args.out.write_text(json.dumps(previous, indent=2) + "\n")

    sinks = [sys.executable, "-m", "sinks.cli"]
    print(f"{size}^2 = {size * size:.0e} pixels, {frac:.0%} valid; {result['model']}, {result['plots']} plots "
          f"(the DI reference); cases {args.cases}", flush=True)
    for bands, name in cases:
        out = work / f"{bands}_{name}.tif"
        argv = [*sinks, "map", bundle, "--stack", stack, "--bands", ",".join(band_sets[bands]), "--out", out,
                "--overwrite", "--quiet", "--block", args.block, *configs[name]]
        cluster, roots, idle = None, {}, None
        if name == "dask":
            cluster, address = start_cluster(args.jobs, env, work / f"cluster_{bands}.log")
            argv += ["--scheduler", address]
            roots = {cluster.pid: "dask LocalCluster"}
            time.sleep(3)
            idle_sampler = TreeSampler(roots, args.interval)
            idle_sampler.sample()
            idle = idle_sampler.summary()["peak_rss_sum_mib"]
        try:
            r = memory_case(argv, out, cores, env, args.interval, work / f"{bands}_{name}.log", roots)
        finally:
            if cluster is not None:
                stop_cluster(cluster)
        if idle is not None:
            r["cluster_idle_rss_sum_mib"] = idle
        r["bands"] = band_sets[bands]
        r["executor"] = name
        r["under_1gib"] = r["peak_rss_sum_mib"] < 1024
        result["cases"][f"{bands}:{name}"] = r
        result["not_run"].remove(f"{bands}:{name}")
        save()
        print(f"{bands:6s} {name:9s} {r['seconds']:7.0f} s  peak sum RSS {r['peak_rss_sum_mib']:6.0f} MiB "
              f"(PSS {r['peak_pss_sum_mib']:.0f}, {r['peak_phase']}), main VmHWM {r['main_vmhwm_mib']:.0f} MiB, "
              f"ru_maxrss {r['wait4_ru_maxrss_mib']:.0f} MiB", flush=True)
        if not args.keep:
            for p in (out, out.with_name(out.stem + ".stac.json")):
                p.unlink(missing_ok=True)
    if not args.keep:
        stack.unlink(missing_ok=True)
        (work / "valid.txt").unlink(missing_ok=True)
    print()
    print(f"peak memory of sinks map, {size}^2 = {size * size:.0e} pixels (sum of RSS over the process tree; "
          f"target < 1024 MiB){' with ' + label if label else ''}:")
    for key, r in result["cases"].items():
        verdict = "OK" if r["under_1gib"] else "OVER"
        print(f"peak {key:18s} {r['peak_rss_sum_mib']:6.0f} MiB  (main {r['main_vmhwm_mib']:.0f} MiB)  "
              f"target < 1024 MiB: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, help="pixels per side (default 4096; 10000 with --memory)")
    parser.add_argument("--plots", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--configs", default="serial,threads", help="sinks executor configurations to time")
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--out", type=Path, help="results (default results/mapping.json, "
                        "results/mapping_memory.json with --memory)")
    memory = parser.add_argument_group("memory mode: peak memory per executor instead of times")
    memory.add_argument("--memory", action="store_true")
    memory.add_argument("--cases", default="carbon:serial,carbon:processes,carbon:dask,all:serial,all:processes,all:dask",
                        help="BANDS:EXECUTOR pairs, BANDS carbon or all, EXECUTOR serial, processes or dask")
    memory.add_argument("--jobs", type=int, default=2, help="workers of the processes and dask executors")
    memory.add_argument("--trees", type=int, default=50)
    memory.add_argument("--depth", type=int, default=6)
    memory.add_argument("--interval", type=float, default=0.2, help="seconds between memory samples")
    memory.add_argument("--keep", action="store_true", help="keep the stack and the maps")
    memory.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment of the sinks map runs (e.g. GDAL_CACHEMAX=128), a diagnostic run "
                        "recorded under 'diagnostics' in the results of the run without it")
    args = parser.parse_args()
    if args.memory:
        args.out = args.out or HERE / "results" / "mapping_memory.json"
        return memory_main(args)
    args.size = args.size or 4096
    args.out = args.out or HERE / "results" / "mapping.json"

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
