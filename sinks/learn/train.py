"""Train a recipe on a feature table: random and spatial CV, intervals, AOA, bundle."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from sinks.bundle import save_bundle
from sinks.covariates.spec import load_spec
from sinks.errors import InputError
from sinks.io import sha256_frame
from sinks.learn import cv
from sinks.learn.aoa import fit_aoa
from sinks.learn.estimators import importances, make_estimator
from sinks.learn.intervals import calibrate, coverage
from sinks.learn.recipe import Recipe
from sinks.learn.targets import derive_target


def training_arrays(recipe: Recipe, table: pd.DataFrame, feature_names: list[str]):
    """(X, y, kept rows mask) from a feature table; rows with a missing target or feature are dropped."""
    missing = [c for c in (*feature_names, "x", "y") if c not in table.columns]
    if missing:
        raise InputError(
            f"feature table lacks column(s) {', '.join(missing)} of spec {recipe.features.name}; "
            "extract it with 'sinks extract' and the recipe's feature spec"
        )
    if recipe.derive:
        target = derive_target(table, recipe.derive, recipe.derive_from)
    elif recipe.target in table.columns:
        target = pd.to_numeric(table[recipe.target], errors="coerce").to_numpy(dtype=float)
    else:
        raise InputError(f"feature table has no target column {recipe.target!r} (recipe {recipe.name})")
    X = table[feature_names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    keep = np.isfinite(target) & np.isfinite(X).all(axis=1)
    if keep.sum() < 2 * recipe.folds:
        raise InputError(
            f"only {keep.sum()} usable rows (target and every feature present) for {recipe.folds}-fold CV"
        )
    return X[keep], target[keep], keep


def train(recipe: Recipe, table: pd.DataFrame, out: str | os.PathLike, *, progress: bool = True) -> Path:
    """Fit ``recipe`` on ``table`` (from :func:`sinks.covariates.extract.extract`) and save a bundle."""
    spec = load_spec(recipe.features)
    names = spec.feature_names
    X, y, keep = training_arrays(recipe, table, names)
    xs, ys = table["x"].to_numpy(float)[keep], table["y"].to_numpy(float)[keep]
    estimator = make_estimator(recipe.estimator, recipe.params)

    random_folds = cv.fold_ids(len(y), folds=recipe.folds, seed=recipe.seed)
    blocks = cv.spatial_blocks(xs, ys, recipe.block_size)
    spatial_folds = cv.fold_ids(len(y), folds=recipe.folds, seed=recipe.seed, groups=blocks)
    random_scores, oof_random = cv.cross_validate(estimator, X, y, random_folds, scheme="random", progress=progress)
    spatial_scores, oof_spatial = cv.cross_validate(estimator, X, y, spatial_folds, scheme="spatial", progress=progress)

    model = estimator.fit(X, y)
    interval = calibrate(y, oof_spatial, level=recipe.interval_level, residuals_from="spatial-CV",
                         lower_bound=0.0 if np.all(y >= 0) else None)
    lower, upper = interval.apply(oof_spatial)
    aoa = fit_aoa(X, importances(recipe.estimator, model, len(names)), spatial_folds)

    oof = pd.DataFrame({
        "plot_id": table["plot_id"].to_numpy()[keep] if "plot_id" in table else np.arange(len(y)),
        "x": xs, "y": ys, "observed": y, "oof_random": oof_random, "oof_spatial": oof_spatial,
        "random_fold": random_folds, "spatial_fold": spatial_folds,
    })
    metadata = {
        "recipe": {"name": recipe.name, "description": recipe.description, "content": recipe.raw},
        "target": {"column": recipe.target, "units": recipe.target_units, "band": recipe.band,
                   "derive": recipe.derive, "from": recipe.derive_from},
        "features": {"names": names, "spec": spec.name, "spec_fingerprint": spec.fingerprint(),
                     "grid_crs": spec.grid.crs, "importance": dict(zip(names, aoa.weights.tolist()))},
        "estimator": {"params": {k: v for k, v in model.get_params().items()
                                 if v is not None and not (isinstance(v, float) and np.isnan(v))}},
        "training": {"n": int(len(y)), "dropped": int((~keep).sum()), "sha256": sha256_frame(table),
                     "crs": table.attrs.get("crs"), "target_mean": float(np.mean(y)), "target_sd": float(np.std(y))},
        "validation_setup": {"folds": recipe.folds, "block_size": recipe.block_size, "seed": recipe.seed,
                             "n_blocks": int(len(np.unique(blocks)))},
        "validation": {"random": random_scores.as_dict(), "spatial": spatial_scores.as_dict()},
        "interval": interval.as_dict(),
        "interval_coverage": coverage(y, lower, upper),
        "aoa": {"threshold": aoa.threshold, "mean_distance": aoa.mean_distance,
                "method": "Meyer & Pebesma 2021, spatial-CV folds"},
    }
    return save_bundle(out, kind=recipe.estimator, model=model, metadata=metadata, aoa=aoa, oof=oof)
