"""Run the whole sinks chain on the simulated demo county and check it against the known truth.

The demo writes a workspace in ``out``: ``data/`` (the simulated inputs), ``features/`` and
``training/`` (the spec and recipe), ``plots/`` (plot stocks and the feature table), ``models/``
(the bundle), ``maps/`` (the carbon COGs of 2025 and 2020), ``reports/`` (eligibility report,
the afforestation project's credits with its one-page HTML summary, and the truth check: the map
against the hidden truth, the intervals on independent test plots, the verdicts, the credits
against the planted parcels' true gain and the placebo parcels).
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
from sinks.demo.world import EPOCHS, NOISE_SD_LOG, make_world, simulate_test_plots
from sinks.eligibility.crediting import REPORT_LEVEL, credit
from sinks.eligibility.engine import assess
from sinks.eligibility.report import write_report
from sinks.eligibility.summary import write_summary
from sinks.eligibility.rules import load_ruleset
from sinks.io import FOLDER_MARKERS, check_outputs, clean_stale_staging, on_abandon, read_table, workspace_files, write_table
from sinks.learn.recipe import load_recipe
from sinks.learn.train import CHECK_LEVELS
from sinks.stats import normal_quantile
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


def map_truth_check(map_path: Path, truth_path: Path, forest_history: Path | None = None, band: str = "carbon") -> dict:
    """Accuracy of a carbon map against the truth raster, over the map's valid pixels (and over its
    forest pixels: those of the last year of ``forest_history``, else where the truth is positive)."""
    with rasterio.open(map_path) as m, rasterio.open(truth_path) as t:
        names = list(m.descriptions)
        pred = m.read(names.index(band) + 1, masked=True)
        lower = m.read(names.index("lower") + 1, masked=True)
        upper = m.read(names.index("upper") + 1, masked=True)
        aoa = m.read(names.index("aoa") + 1, masked=True)
        truth = t.read(1)
    forest_now = None
    if forest_history is not None:
        with rasterio.open(forest_history) as h:
            forest_now = h.read(h.count) == 1
    valid = ~np.ma.getmaskarray(pred)
    p, y = pred.data[valid].astype(float), truth[valid].astype(float)
    ss_res, ss_tot = np.sum((y - p) ** 2), np.sum((y - y.mean()) ** 2)
    forest = forest_now[valid] if forest_now is not None else y > 0
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


def _epoch_spec(spec_path: Path, world) -> Path:
    """The demo spec with the first epoch's reflectance (same features, so the bundle maps it)."""
    text = spec_path.read_text(encoding="utf-8")
    start = spec_path.with_name(f"{spec_path.stem}_{EPOCHS[0]}.toml")
    start.write_text(text.replace(world.reflectance.name, world.reflectance_2020.name), encoding="utf-8")
    return start


def credit_truth_check(report_path: Path, truth_path: Path, *, placebo_path: Path | None = None) -> dict:
    """Creditable t CO2e of the project's parcels against their true gain from the planting.

    ``placebo_path``: the report of the placebo parcels, credited on their own (not the project's).
    The project: what it may issue (``tco2e``) and which bound set it. Planted parcels: how often the
    creditable volume exceeds the true gain (over-crediting; it should
    not exceed the share 1 - level of the methodology's uncertainty rule), how often the interval of
    the net change holds the true gain, and the total credited against the total true gain. Placebo parcels (no planting): the credits, and whether zero lies
    inside each one's interval of the net change. The parcel planted outside the model's area of
    applicability on purpose (kind ``outside_aoa``, not counted with the planted parcels): its status,
    its share outside the AOA and what was credited to it from the map (it must be nothing). Every
    parcel whose truth gives an ``expected_status`` (the status it must get by construction): whether
    it got it.
    """
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    truth = pd.read_csv(truth_path).set_index("parcel_id")
    placebo_report = json.loads(Path(placebo_path).read_text(encoding="utf-8")) if placebo_path else {"parcels": []}
    rows = []
    for parcel in [*report["parcels"], *placebo_report["parcels"]]:
        c = parcel.get("creditable") or {}
        t = truth.loc[parcel["parcel_id"]]
        expected = t.get("expected_status")
        rows.append({"parcel_id": parcel["parcel_id"], "kind": t["kind"], "verdict": parcel["verdict"],
                     "status": c.get("status"), "tco2e": c.get("tco2e", 0.0), "net_tco2e": c.get("net_tco2e"),
                     "net_sd_tco2e": c.get("net_sd_tco2e"), "lower_tco2e": c.get("lower_tco2e"),
                     "upper_tco2e": c.get("upper_tco2e"), "outside_aoa_share": c.get("outside_aoa_share"),
                     "true_gain_tco2e": float(t["true_gain_tco2e"]), "trend_tco2e": float(t["trend_tco2e"]),
                     "expected_status": expected if isinstance(expected, str) and expected else None})
    frame = pd.DataFrame(rows)
    planted, placebo = frame[frame["kind"] == "planted"], frame[frame["kind"] == "placebo"]
    outside = frame[frame["kind"] == "outside_aoa"]
    expected = frame.dropna(subset=["expected_status"])
    missed = expected[expected["status"] != expected["expected_status"]]
    z = normal_quantile(REPORT_LEVEL)
    netted = placebo.dropna(subset=["net_tco2e", "net_sd_tco2e"])
    gained = planted.dropna(subset=["net_tco2e", "net_sd_tco2e"])
    return {
        "controls": {k: report.get("crediting", {}).get("controls", {}).get(k)
                     for k in ("passed", "baseline_tco2e_ha_yr", "matched")},
        "project": {k: report.get("crediting", {}).get("project", {}).get(k)
                    for k in ("tco2e", "by_parcels_tco2e", "project_level_tco2e", "binding")},
        "planted": {"n": int(len(planted)), "credited": int((planted["tco2e"] > 0).sum()),
                    "over_credited": int((planted["tco2e"] > planted["true_gain_tco2e"]).sum()),
                    "credited_tco2e": float(planted["tco2e"].sum()),
                    "true_gain_tco2e": float(planted["true_gain_tco2e"].sum()),
                    # the net's interval (net +- z sd, the one the deduction comes from) holds the true gain
                    "with_net_change": int(len(gained)),
                    "interval_holds_true_gain": int(((gained["net_tco2e"] - gained["true_gain_tco2e"]).abs()
                                                     <= z * gained["net_sd_tco2e"]).sum())},
        "placebo": {"n": int(len(placebo)), "credited_tco2e": float(placebo["tco2e"].sum()),
                    "with_net_change": int(len(netted)),
                    # zero inside the net change's interval (net +- z sd, not clipped at 0)
                    "zero_inside_interval": int((netted["net_tco2e"].abs() <= z * netted["net_sd_tco2e"]).sum()),
                    "max_tco2e": float(placebo["tco2e"].max()) if len(placebo) else 0.0,
                    "trend_tco2e": float(placebo["trend_tco2e"].sum())},
        "outside_aoa": {"n": int(len(outside)),
                        "needs_field_measurement": int((outside["status"] == "needs_field_measurement").sum()),
                        "credited_tco2e": float(outside["tco2e"].sum()),
                        "true_gain_tco2e": float(outside["true_gain_tco2e"].sum()),
                        "outside_aoa_share": {r["parcel_id"]: r["outside_aoa_share"] for r in rows
                                              if r["kind"] == "outside_aoa"}},
        "expected_status": {"n": int(len(expected)), "agree": int(len(expected) - len(missed)),
                            "disagree": sorted(missed["parcel_id"])},
        "parcels": rows,
    }


def independent_plot_features(spec, world, n: int, *, seed: int = 0) -> pd.DataFrame:
    """``n`` independent test plots (:func:`~sinks.demo.world.simulate_test_plots`): their stocks
    from the tree lists, then the spec's features at them (rows with a missing feature kept)."""
    plots, trees = simulate_test_plots(world, n, seed=seed)
    return extract(spec, forest_stocks(trees, plots).plots, progress=False, allow_missing=True)


def interval_truth_check(bundle_path: Path, spec, world, *, n: int = 2000, seed: int = 0) -> dict:
    """Coverage of the bundle's intervals on ``n`` independent test plots of the simulated county.

    The test plots (:func:`~sinks.demo.world.simulate_test_plots`) lie at random valid pixels of the
    whole county, are measured with the training plots' own noise model and never reach training.
    At each of :data:`~sinks.learn.train.CHECK_LEVELS` (the interval recalibrated with
    :meth:`~sinks.bundle.Bundle.at_level`), the share of measured plots inside their interval:
    inside and outside the AOA, and inside the AOA by noise level; the share of the noiseless
    truth (the pixel's hidden carbon) inside; and the rank correlation of interval width with DI.
    """
    from scipy.stats import spearmanr

    from sinks.bundle import load_bundle

    table = independent_plot_features(spec, world, n, seed=seed)
    bundle = load_bundle(bundle_path)
    X = table[bundle.feature_names].to_numpy(dtype=float)
    usable = np.isfinite(X).all(axis=1)
    X, table = X[usable], table.loc[usable]
    observed = table["carbon_mg_ha"].fillna(0.0).to_numpy(dtype=float)  # plots without trees hold 0
    truth = table["carbon_truth_mg_ha"].to_numpy(dtype=float)
    noise = table["noise_level"].to_numpy()
    out = {"n": int(len(table)), "unusable": int((~usable).sum()), "levels": {}}

    def share(mask):
        return float(mask.mean()) if len(mask) else None

    for level in CHECK_LEVELS:
        p = bundle.at_level(level).predict(X)
        inside = p["aoa"] == 1
        covered = (observed >= p["lower"]) & (observed <= p["upper"])
        width = p["upper"] - p["lower"]
        out["levels"][f"{level:g}"] = {
            "inside_aoa": share(covered[inside]), "outside_aoa": share(covered[~inside]),
            "n_inside": int(inside.sum()), "n_outside": int((~inside).sum()),
            "inside_by_noise": {k: share(covered[inside & (noise == k)]) for k in NOISE_SD_LOG},
            "truth_inside_aoa": share(((truth >= p["lower"]) & (truth <= p["upper"]))[inside]),
            "mean_width_inside": float(width[inside].mean()), "mean_width_outside": (
                float(width[~inside].mean()) if (~inside).any() else None),
            "width_di_spearman": float(spearmanr(width, p["di"]).statistic),
        }
    return out


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
                                          "size": size, "files": workspace_files(out)}), encoding="utf-8")
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
                                        n_jobs=n_jobs, progress=progress, year=EPOCHS[1])
    lap("map")

    parcels = read_table(world.parcels, geometry=True)
    report = assess(parcels, load_ruleset("ccer-14-001"),
                    {"forest_history": world.forest_history, "wetland": world.wetland}, progress=progress)
    result.outputs["eligibility"] = out / "reports" / "eligibility.json"
    result.outputs["eligibility_gpkg"] = out / "reports" / "eligibility.gpkg"
    write_report(report, result.outputs["eligibility"], result.outputs["eligibility_gpkg"])
    lap("eligibility")

    # the afforestation project: the 2020 epoch mapped with the same model, credited against controls
    spec_start = _epoch_spec(spec_path, world)
    result.outputs["map_2020"] = predict_map(result.outputs["model"], spec_start, out / "maps" / "carbon_2020.tif",
                                             n_jobs=n_jobs, progress=progress, year=EPOCHS[0])
    # the placebo parcels (like land, never planted) are credited on their own, as controls are: in the
    # project they would pull its project-level bound down, being no part of it
    parcels_all = read_table(world.project_parcels, geometry=True)
    kinds = pd.read_csv(world.project_truth).set_index("parcel_id")["kind"]
    placebo = parcels_all["parcel_id"].map(kinds).eq("placebo").to_numpy()
    for key, chosen in (("credits", ~placebo), ("placebo_credits", placebo)):
        credits = credit(parcels_all[chosen].reset_index(drop=True), "ccer-14-001",
                         [result.outputs["map_2020"], result.outputs["map"]], list(EPOCHS),
                         layers={"forest_history": world.forest_history, "wetland": world.wetland},
                         controls_covariates=world.dem, progress=progress, source=str(world.project_parcels))
        result.outputs[key] = out / "reports" / f"{key}.json"
        result.outputs[f"{key}_gpkg"] = out / "reports" / f"{key}.gpkg"
        write_report(credits, result.outputs[key], result.outputs[f"{key}_gpkg"])
        if key == "credits":
            result.outputs["project_summary"] = write_summary(credits, out / "reports" / "project_summary.html",
                                                              title="demo county afforestation project (SIMULATED)")
    lap("credit")

    result.checks["map_vs_truth"] = map_truth_check(result.outputs["map"], world.carbon_truth, world.forest_history)
    result.checks["credits_vs_truth"] = credit_truth_check(result.outputs["credits"], world.project_truth,
                                                           placebo_path=result.outputs["placebo_credits"])
    result.checks["intervals_vs_test_plots"] = interval_truth_check(result.outputs["model"], spec, world, seed=seed)
    lap("test plots")
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
