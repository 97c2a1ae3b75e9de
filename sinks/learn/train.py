"""Train a recipe on a feature table: random and spatial CV, intervals, AOA, bundle.

Before anything is fitted the table is checked (:func:`training_arrays`): the spec's feature
columns and x/y are present, plot ids are unique, values are numbers (text and infinities are
errors that name the rows and columns), and the target is plausible: not constant, not negative
for a carbon stock or concentration, and for a stock (Mg C/ha) not above its pool's documented
maximum (the pool is the recipe's ``[target] pool`` or the table's ``pool`` column). Rows with a
missing (empty/NaN) target or feature are dropped and counted; too few remaining plots, or too
few spatial blocks for the folds, are an error.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sinks.bundle import save_bundle
from sinks.covariates.spec import load_spec
from sinks.errors import InputError, SinksError, SpecError
from sinks.io import format_rows, sha256_frame
from sinks.learn import cv
from sinks.learn.aoa import fit_aoa
from sinks.learn.estimators import importances, make_estimator, trial_fit
from sinks.learn.intervals import calibrate, coverage
from sinks.learn.recipe import POOLS, Recipe
from sinks.learn.targets import check_target_values, derive_target, target_quantity

#: Fewest usable plots a model is trained on, whatever the folds and interval level.
MIN_PLOTS = 10


def minimum_plots(recipe: Recipe) -> int:
    """Usable plots needed: 2 per fold, MIN_PLOTS, and enough for the conformal interval's level."""
    level = recipe.interval_level
    return max(2 * recipe.folds, MIN_PLOTS, math.ceil(level / (1 - level) - 1e-9))


def _numeric(table: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """A column as floats; text that is not a number is an error naming the rows."""
    raw = table[column]
    values = pd.to_numeric(raw, errors="coerce")
    text = raw.notna() & values.isna()
    if text.any():
        bad = np.flatnonzero(text.to_numpy())
        examples = ", ".join(repr(v) for v in raw[text].astype(str).unique()[:3])
        raise InputError(f"{source}: column {column!r}: row(s) {format_rows(bad)} are not numbers "
                         f"({examples}); fix them or leave them empty to drop those rows")
    return values.to_numpy(dtype=np.float64)


def training_arrays(recipe: Recipe, table: pd.DataFrame, feature_names: list[str], *,
                    source: str | None = None):
    """(X, y, kept rows mask) from a feature table, after every check of the table and target.

    Rows with a missing (empty/NaN) target or feature are dropped; everything else that is wrong
    is an :class:`~sinks.errors.InputError` (or ImplausibleValueError) naming ``source``, the
    column and the rows.
    """
    source = str(source or table.attrs.get("source") or "feature table")
    missing = [c for c in feature_names if c not in table.columns]
    if missing:
        raise InputError(
            f"{source}: lacks {len(missing)} of the {len(feature_names)} feature column(s) of spec "
            f"{recipe.features.name}: {', '.join(missing)}; found {', '.join(map(str, table.columns))}; "
            "extract the table with 'sinks extract' and the recipe's feature spec"
        )
    missing_xy = [c for c in ("x", "y") if c not in table.columns]
    if missing_xy:
        raise InputError(f"{source}: lacks column(s) {', '.join(missing_xy)} (plot coordinates for "
                         "spatial CV); use the table 'sinks extract' writes")
    if len(table) == 0:
        raise InputError(f"{source}: has no rows")
    if "plot_id" in table.columns:
        ids = table["plot_id"]
        dup = (ids.duplicated(keep=False) & ids.notna()).to_numpy()
        if dup.any():
            values = ", ".join(map(str, ids[dup].unique()[:5]))
            raise InputError(f"{source}: column 'plot_id': {int(ids[dup].nunique())} id(s) appear more than once "
                             f"({values}; rows {format_rows(np.flatnonzero(dup))}); each plot must be one row: "
                             "remove the duplicates or give each plot its own id")
    xs, ys = _numeric(table, "x", source), _numeric(table, "y", source)
    bad_xy = ~(np.isfinite(xs) & np.isfinite(ys))
    if bad_xy.any():
        raise InputError(f"{source}: row(s) {format_rows(np.flatnonzero(bad_xy))} have missing or "
                         "infinite x/y; every plot needs its coordinates for spatial CV")

    if recipe.derive:
        if recipe.derive_from not in table.columns:
            raise InputError(f"{source}: no column {recipe.derive_from!r} to derive the target "
                             f"{recipe.target!r} from ([target] from in {recipe.path or recipe.name})")
        _numeric(table, recipe.derive_from, source)
        target = np.asarray(derive_target(table, recipe.derive, recipe.derive_from), dtype=np.float64)
        what = f"target {recipe.target!r} (derived from column {recipe.derive_from!r})"
    elif recipe.target in table.columns:
        target = _numeric(table, recipe.target, source)
        what = f"target column {recipe.target!r}"
    else:
        raise InputError(f"{source}: no target column {recipe.target!r} ([target] column of recipe "
                         f"{recipe.path or recipe.name}); found {', '.join(map(str, table.columns))}")
    if np.isinf(target).any():
        raise InputError(f"{source}: {what}: row(s) {format_rows(np.flatnonzero(np.isinf(target)))} "
                         "are infinite; fix them or leave them empty to drop those rows")

    X = np.column_stack([_numeric(table, c, source) for c in feature_names]) if feature_names \
        else np.zeros((len(table), 0))
    infinite = np.isinf(X)
    if infinite.any():
        columns = [c for c, bad in zip(feature_names, infinite.any(axis=0)) if bad]
        raise InputError(f"{source}: {int(infinite.any(axis=1).sum())} row(s) ({format_rows(np.flatnonzero(infinite.any(axis=1)))}) "
                         f"have infinite values in feature column(s) {', '.join(columns)}; "
                         "check the feature spec's expressions (a division by zero?)")

    finite = np.isfinite(target)
    quantity = target_quantity(recipe.target_units, recipe.target)
    if recipe.pool:
        pools = np.full(len(table), recipe.pool, dtype=object)
    elif "pool" in table.columns:
        pools = table["pool"].where(table["pool"].isin(POOLS), None).to_numpy(dtype=object)
    else:
        pools = None
    check_target_values(target[finite], np.flatnonzero(finite), what=what, source=source,
                        units=recipe.target_units, quantity=quantity,
                        pools=None if pools is None else pools[finite])

    keep = finite & np.isfinite(X).all(axis=1)
    needed = minimum_plots(recipe)
    if keep.sum() < needed:
        gaps = [f"{what.split(' (')[0]} {int((~finite).sum())}"] if (~finite).any() else []
        counts = np.isnan(X).sum(axis=0)
        gaps += [f"{c} {int(n)}" for c, n in sorted(zip(feature_names, counts), key=lambda t: -t[1]) if n][:5]
        raise InputError(
            f"{source}: only {int(keep.sum())} of {len(table)} rows are usable (target and every feature "
            f"present) and at least {needed} are needed for {recipe.folds}-fold CV and a "
            f"{recipe.interval_level:.0%} interval" + (f"; missing values per column: {', '.join(gaps)}" if gaps else "")
        )
    y = target[keep]
    if np.ptp(y) == 0:
        raise InputError(f"{source}: {what} is constant ({y[0]:g} in all {len(y)} usable rows); "
                         "a model cannot learn from a constant target (it would report a perfect fit "
                         "with a zero-width interval): check the column or its derivation")
    return X[keep], y, keep


@contextlib.contextmanager
def _library_errors(recipe: Recipe):
    """Turn the estimator library's errors on the real data into a SpecError naming the recipe."""
    try:
        yield
    except SinksError:
        raise
    except (ValueError, TypeError) as exc:  # XGBoostError is a ValueError
        from sinks.learn.estimators import _library_message

        raise SpecError(f"{recipe.path or recipe.name} [estimator] params: {recipe.estimator} failed on "
                        f"the training data: {_library_message(exc)}") from exc


def train(recipe: Recipe, table: pd.DataFrame, out: str | os.PathLike, *, progress: bool = True,
          source: str | None = None) -> Path:
    """Fit ``recipe`` on ``table`` (from :func:`sinks.covariates.extract.extract`) and save a bundle.

    ``source`` names the table in error messages (its path; default ``table.attrs["source"]``).
    """
    spec = load_spec(recipe.features)
    names = spec.feature_names
    source = str(source or table.attrs.get("source") or "feature table")
    X, y, keep = training_arrays(recipe, table, names, source=source)
    xs, ys = table["x"].to_numpy(float)[keep], table["y"].to_numpy(float)[keep]
    estimator = make_estimator(recipe.estimator, recipe.params)

    random_folds = cv.fold_ids(len(y), folds=recipe.folds, seed=recipe.seed)
    blocks = cv.spatial_blocks(xs, ys, recipe.block_size)
    n_blocks = len(np.unique(blocks))
    if n_blocks < recipe.folds:
        raise InputError(
            f"{source}: the {len(y)} usable plots fall in {n_blocks} spatial block(s) of "
            f"{recipe.block_size:g} CRS units, fewer than the {recipe.folds} folds of "
            f"{recipe.path or recipe.name}; use a smaller [validation] block_size or fewer folds"
        )
    spatial_folds = cv.fold_ids(len(y), folds=recipe.folds, seed=recipe.seed, groups=blocks)
    with _library_errors(recipe):
        trial_fit(recipe.estimator, recipe.params, len(names))  # params vs the real feature count
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
                   "derive": recipe.derive, "from": recipe.derive_from, "pool": recipe.pool},
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
