"""Run the whole sinks chain on the simulated demo county and check it against the known truth.

The demo writes a workspace in ``out``: ``data/`` (the simulated inputs), ``features/`` and
``training/`` (the spec and recipe), ``plots/`` (plot stocks and the feature table), ``models/``
(the bundle), ``maps/`` (the carbon COG), ``reports/`` (eligibility report and the truth check).
Each step is the public function the matching ``sinks`` subcommand calls.

The workspace is marked by a ``.sinks-workspace`` file. An existing folder is used only when it is
empty, or when it is a demo workspace and ``overwrite`` is set: the old workspace is moved aside,
and put back if the run fails or is interrupted, so a user's folder is never written into.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from sinks.covariates.extract import extract
from sinks.covariates.spec import load_spec
from sinks.demo.world import make_world
from sinks.eligibility.engine import assess
from sinks.eligibility.report import write_report
from sinks.eligibility.rules import load_ruleset
from sinks.io import FOLDER_MARKERS, check_outputs, clean_stale_staging, on_abandon, read_table, write_table
from sinks.learn.recipe import load_recipe
from sinks.learn.train import train
from sinks.mapping.predict import predict_map
from sinks.pools.forest import forest_stocks


@dataclass
class DemoResult:
    out: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _copy_packaged(name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with resources.as_file(resources.files("sinks.demo").joinpath(name)) as src:
        shutil.copyfile(src, dest)
    return dest


def map_truth_check(map_path: Path, truth_path: Path, band: str = "carbon") -> dict:
    """Accuracy of a carbon map against the truth raster, over the map's valid pixels."""
    with rasterio.open(map_path) as m, rasterio.open(truth_path) as t:
        names = list(m.descriptions)
        pred = m.read(names.index(band) + 1, masked=True)
        lower = m.read(names.index("lower") + 1, masked=True)
        upper = m.read(names.index("upper") + 1, masked=True)
        aoa = m.read(names.index("aoa") + 1, masked=True)
        truth = t.read(1)
    valid = ~np.ma.getmaskarray(pred)
    p, y = pred.data[valid].astype(float), truth[valid].astype(float)
    ss_res, ss_tot = np.sum((y - p) ** 2), np.sum((y - y.mean()) ** 2)
    forest = y > 0
    pf, yf = p[forest], y[forest]
    return {
        "pixels_valid": int(valid.sum()),
        "pixels_nodata": int((~valid).sum()),
        "r2": float(1 - ss_res / ss_tot),
        "rmse_mg_ha": float(np.sqrt(np.mean((y - p) ** 2))),
        "r2_forest_pixels": float(1 - np.sum((yf - pf) ** 2) / np.sum((yf - yf.mean()) ** 2)),
        "interval_coverage": float(np.mean((y >= lower.data[valid]) & (y <= upper.data[valid]))),
        "aoa_fraction": float(np.mean(aoa.data[valid] == 1)),
        "truth_total_mg_c": float(y.sum() * 0.09),  # 30 m pixels = 0.09 ha (UTM, equal area enough here)
        "map_total_mg_c": float(p.sum() * 0.09),
    }


def run_demo(out: str | Path, *, seed: int = 2025, size: int = 400, n_jobs: int = 1,
             progress: bool = True, overwrite: bool = False) -> DemoResult:
    """Generate the demo county in ``out`` and run every step; returns outputs and truth checks.

    ``out`` must be new, empty, or (with ``overwrite``) a demo workspace, which is replaced.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_outputs({out: "workspace"}, overwrite=overwrite)
    clean_stale_staging(out)
    aside = out.with_name(f".{out.name}.{os.getpid()}.partial.old")
    users_empty_folder = out.is_dir() and not any(out.iterdir())  # kept on failure, emptied again
    if out.is_dir() and not users_empty_folder:
        os.replace(out, aside)

    def undo() -> None:
        if not users_empty_folder:
            shutil.rmtree(out, ignore_errors=True)
        elif out.is_dir():
            for entry in out.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        if aside.exists():
            os.replace(aside, out)

    try:
        with on_abandon(undo):
            out.mkdir(exist_ok=True)
            marker = out / FOLDER_MARKERS["workspace"]
            marker.write_text(json.dumps({"sinks": "demo workspace", "complete": False}), encoding="utf-8")
            result = _run_steps(out, seed=seed, size=size, n_jobs=n_jobs, progress=progress)
            marker.write_text(json.dumps({"sinks": "demo workspace", "complete": True, "seed": seed,
                                          "size": size}), encoding="utf-8")
    except BaseException:
        undo()
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return result


def _run_steps(out: Path, *, seed: int, size: int, n_jobs: int, progress: bool) -> DemoResult:
    result = DemoResult(out)
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[step] = round(now - clock, 2)
        clock = now

    world = make_world(out / "data", size=size, seed=seed)
    spec_path = _copy_packaged("demo_county.features.toml", out / "features" / "demo_county.toml")
    recipe_path = _copy_packaged("demo_county.recipe.toml", out / "training" / "demo_county.toml")
    lap("simulate")

    trees = read_table(world.trees)
    plots = read_table(world.plots, geometry=True)
    plot_table = forest_stocks(trees, plots).plots
    result.outputs["plot_stocks"] = write_table(plot_table, out / "plots" / "plot_stocks.gpkg")
    lap("stocks")

    spec = load_spec(spec_path)
    table = extract(spec, plot_table, progress=progress)
    result.outputs["features"] = write_table(table, out / "plots" / "features.csv")
    lap("extract")

    recipe = load_recipe(recipe_path)
    result.outputs["model"] = train(recipe, table, out / "models" / "demo_county", progress=progress)
    lap("train")

    result.outputs["map"] = predict_map(result.outputs["model"], spec, out / "maps" / "carbon_2025.tif",
                                        n_jobs=n_jobs, progress=progress)
    lap("map")

    parcels = read_table(world.parcels, geometry=True)
    report = assess(parcels, load_ruleset("ccer-14-001"),
                    {"forest_history": world.forest_history, "wetland": world.wetland}, progress=progress)
    result.outputs["eligibility"] = out / "reports" / "eligibility.json"
    result.outputs["eligibility_gpkg"] = out / "reports" / "eligibility.gpkg"
    write_report(report, result.outputs["eligibility"], result.outputs["eligibility_gpkg"])
    lap("eligibility")

    result.checks["map_vs_truth"] = map_truth_check(result.outputs["map"], world.carbon_truth)
    truth = pd.read_csv(world.parcels_truth).set_index("parcel_id")["truth_verdict"]
    got = pd.Series({p.parcel_id: p.verdict for p in report.parcels})
    result.checks["eligibility"] = {"n": len(got), "agree": int((got == truth.reindex(got.index)).sum()),
                                    "verdicts": report.counts(),
                                    "disagree": sorted(got.index[got != truth.reindex(got.index)])}
    meta = json.loads((result.outputs["model"] / "metadata.json").read_text())
    result.checks["validation"] = meta["validation"]
    check_path = out / "reports" / "demo_check.json"
    check_path.parent.mkdir(parents=True, exist_ok=True)
    check_path.write_text(json.dumps({"checks": result.checks, "seconds": result.seconds}, indent=2))
    result.outputs["check"] = check_path
    return result
