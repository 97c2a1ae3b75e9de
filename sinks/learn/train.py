"""Train a recipe on a feature table: CV schemes side by side, adaptive intervals, AOA, bundle.

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
from scipy import stats

from sinks.bundle import save_bundle
from sinks.covariates.spec import load_spec
from sinks.errors import InputError, SinksError, SpecError
from sinks.io import format_rows, sha256_frame
from sinks.learn import cv, tuning
from sinks.learn.aoa import fit_aoa, fit_error_profile, training_neighbours
from sinks.learn.estimators import (USER_KIND, as_estimator, estimator_params, fit_weighted, importances,
                                    library_message, make_estimator, predict_quantiles, quantile_levels_for,
                                    trial_fit, trial_save, with_interval_level)
from sinks.learn.intervals import (METHODS, QUANTILE_METHODS, calibrate_adaptive, calibrate_cqr, fold_difficulties,
                                   location_difficulty, nested_check, nested_check_cqr, plot_difficulty,
                                   search_neighbours)
from sinks.learn.knndm import (cv_distances, grid_prediction_points, knndm_folds, metric_coordinates,
                               prediction_to_sample_distances)
from sinks.learn.recipe import POOLS, Recipe
from sinks.learn.refit_check import FoldSetup, refit_check
from sinks.learn.targets import (check_extracted_with, check_not_infinite, check_target_values, feature_matrix,
                                 numeric_column, observed_target, target_quantity)
from sinks.learn.weights import cv_weights, nested_weights

#: Fewest usable plots a model is trained on, whatever the folds and interval level.
MIN_PLOTS = 10
#: Interval levels whose held-out coverage every bundle reports (beside the recipe's own level).
CHECK_LEVELS = (0.8, 0.9, 0.95)


def minimum_plots(recipe: Recipe) -> int:
    """Usable plots needed: 2 per fold, MIN_PLOTS, and enough for the conformal interval's level."""
    level = recipe.interval_level
    return max(2 * recipe.folds, MIN_PLOTS, math.ceil(level / (1 - level) - 1e-9))


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
    xs, ys = numeric_column(table, "x", source), numeric_column(table, "y", source)
    bad_xy = ~(np.isfinite(xs) & np.isfinite(ys))
    if bad_xy.any():
        raise InputError(f"{source}: row(s) {format_rows(np.flatnonzero(bad_xy))} have missing or "
                         "infinite x/y; every plot needs its coordinates for spatial CV")

    target, what = observed_target(table, recipe.target, recipe.derive, recipe.derive_from, source,
                                   f"recipe {recipe.path or recipe.name}")
    check_not_infinite(target, what, source)

    X = feature_matrix(table, feature_names, source)

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
        n = int(keep.sum())
        usable = (f"only {n} of {len(table)} rows are usable (target and every feature present)"
                  if n < len(table) else f"the table has {len(table)} usable rows")
        level = recipe.interval_level
        by_level = math.ceil(level / (1 - level) - 1e-9)
        if by_level == needed and n >= max(2 * recipe.folds, MIN_PLOTS):  # the level alone asks for more
            raise InputError(
                f"{source}: a {level:.4g} interval needs at least {by_level} calibration plots "
                f"(ceil(level / (1 - level))), and {usable.replace('only ', '')}; the highest level {n} plots "
                f"support is {math.floor(n / (n + 1) * 1000) / 1000:g} ([intervals] level)")
        raise InputError(
            f"{source}: {usable}, and at least {needed} are needed for {recipe.folds}-fold CV and a "
            f"{level:.4g} interval" + (f"; missing values per column: {', '.join(gaps)}" if gaps else "")
        )
    y = target[keep]
    # constant, or varying only below float32's resolution (the models fit float32: such a spread is rounding)
    if np.ptp(y) <= 10 * np.finfo(np.float32).eps * np.max(np.abs(y)):
        raise InputError(f"{source}: {what} is constant ({y[0]:g} in all {len(y)} usable rows, to float32's "
                         "precision); a model cannot learn from a constant target (it would report a perfect fit "
                         "with a zero-width interval): check the column or its derivation")
    return X[keep], y, keep


def _measurement_sd(recipe: Recipe, table: pd.DataFrame, keep: np.ndarray, source: str) -> np.ndarray:
    """The ``[target] weights`` column (each plot's measurement sd, target units) of the usable rows."""
    column = recipe.weights
    if column not in table.columns:
        from sinks.validate import did_you_mean

        raise InputError(f"{source}: no column {column!r} for the plot weights ([target] weights of "
                         f"{recipe.path or recipe.name}: each plot's measurement sd in {recipe.target_units or 'target units'})"
                         f"{did_you_mean(column, map(str, table.columns))}")
    sd = numeric_column(table, column, source)[keep]
    bad = ~np.isfinite(sd) | (sd < 0)
    if bad.any():
        rows = np.flatnonzero(keep)[bad]
        raise InputError(f"{source}: column {column!r} (plot measurement sd): row(s) {format_rows(rows)} are "
                         "missing, infinite or negative; every plot used for training needs an sd >= 0")
    return sd


def residual_error_model(x: np.ndarray, y: np.ndarray, residual: np.ndarray, *, seed: int = 0) -> dict | None:
    """The spatial correlation of the model's errors, from a variogram of its out-of-fold residuals.

    Fitted like the target's (:func:`sinks.learn.cv.fit_variogram`) and turned into the exponential
    error model that totals over areas use (:class:`sinks.mapping.zonal.ErrorModel`): range
    parameter = practical range / 3 (where an exponential reaches 95 % of its sill), nugget share =
    nugget / (nugget + partial sill). Maps carry it in their tags (``sinks_error_range_m``,
    ``sinks_error_nugget``), so zonal totals and credits need no ``--error-range-m``. None when no
    model could be fitted; ``range_m`` and ``nugget_share`` None when the fitted range is below the
    first lag (unresolved); either way totals then assume fully correlated errors.
    """
    vg = cv.fit_variogram(x, y, residual, seed=seed)
    total = vg.nugget + vg.sill
    if vg.model == "none" or not (math.isfinite(vg.range) and vg.range > 0 and total > 0):
        return None
    nugget_share, note = min(max(vg.nugget / total, 0.0), 1.0), vg.note
    first_lag = min((lag for lag, n in zip(vg.lags, vg.pairs) if n), default=0.0)
    record = {"range_m": float(vg.range / 3), "nugget_share": float(nugget_share),
              "practical_range_m": float(vg.range), "model": vg.model, "n_points": vg.n_points, "note": note,
              "method": "variogram of the chosen scheme's out-of-fold residuals; exponential error model with "
                        "range = practical range / 3 and nugget share = nugget / sill"}
    if vg.range < first_lag:
        # A range the lags cannot resolve says nothing about errors closer than the plots' spacing,
        # which are the pixels of one parcel (30 m apart where plots are 100s of m apart), and an
        # error shared by a land type is correlated there. Taking such a fit as pure nugget made the
        # demo county's parcel totals independent pixel sums whose 90 % intervals held the true
        # change of 8 of 19 parcels; fully correlated, 18. So no error model: totals fall back to
        # fully correlated errors, the conservative bound (sinks.mapping.zonal).
        record.update(range_m=None, nugget_share=None, note=(f"{note}; " if note else "") + (
            f"fitted range {vg.range:.3g} below the first lag {first_lag:.3g}: the plots cannot show how errors "
            "correlate at shorter distances, so totals take them as fully correlated (conservative)"))
    return record


@contextlib.contextmanager
def _library_errors(recipe: Recipe):
    """Turn the estimator library's errors on the real data into a SpecError naming the recipe."""
    try:
        yield
    except SinksError:
        raise
    except (ValueError, TypeError) as exc:  # XGBoostError is a ValueError
        raise SpecError(f"{recipe.path or recipe.name} [estimator] params: {recipe.estimator} failed on "
                        f"the training data: {library_message(exc)}") from exc


#: Share of the plots that may lie outside the spec's grid before the table is refused: a feature
#: table from ``sinks extract`` has every plot inside it, so most outside means coordinates in another
#: CRS or unit (a judgement, not a published value).
OUTSIDE_GRID_SHARE_MAX = 0.5


def _spec_grid(spec):
    """The spec's target grid and None, or None and why it cannot be resolved here (an Earth Engine
    source, a missing ``like`` raster)."""
    from sinks.covariates.local import target_grid

    try:
        return target_grid(spec), None
    except SinksError as exc:
        return None, f"the spec's grid cannot be resolved here ({exc})"


def _check_plot_locations(spec, grid, xs: np.ndarray, ys: np.ndarray, source: str) -> dict:
    """Refuse plot coordinates that cannot be the spec's: every plot at one location, or most of them
    outside the spec's ``grid`` (None: not resolved, nothing to compare; degrees in a table for a
    metric grid, a swapped x/y). Spatial folds, the kNNDM distances and the error model's range are
    all computed from them, and a range measured in degrees made parcel totals independent pixel sums.

    Returns what is suspect but allowed, for the bundle and a warning: ``plots_sharing_a_location``
    (plots at the same x, y as another: remeasurements or duplicates, which random CV scores as if
    independent) and ``plots_outside_grid`` (fewer than half).
    """
    n = len(xs)
    _, inverse, counts = np.unique(np.column_stack([xs, ys]), axis=0, return_inverse=True, return_counts=True)
    if n > 1 and len(counts) == 1:
        raise InputError(f"{source}: all {n} usable plots share one location (x {xs[0]:.10g}, y {ys[0]:.10g}); "
                         "check the x and y columns")
    found = {"plots_sharing_a_location": int((counts[inverse.ravel()] > 1).sum()), "plots_outside_grid": None}
    if grid is None:
        return found
    t = grid.transform
    x0, x1 = sorted((t.c, t.c + grid.width * t.a))
    y0, y1 = sorted((t.f, t.f + grid.height * t.e))
    outside = ~((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1))
    if outside.mean() > OUTSIDE_GRID_SHARE_MAX:
        degrees = (not grid.crs.is_geographic and (np.abs(xs) <= 180).all() and (np.abs(ys) <= 90).all())
        hint = ("they look like longitude/latitude degrees: extract the features again with the plots' --crs, "
                "which writes x/y in the spec's CRS" if degrees else
                "are they in another CRS, or x and y swapped? extract the features again with the plots' --crs")
        raise InputError(f"{source}: {int(outside.sum())} of {n} usable plots lie outside the grid of spec "
                         f"{spec.name!r} (x {x0:.10g} to {x1:.10g}, y {y0:.10g} to {y1:.10g} in {grid.crs}); {hint}")
    found["plots_outside_grid"] = int(outside.sum())
    return found


def _prediction_points(spec, grid, why: str | None, seed: int):
    """Points of the prediction area for kNNDM and the W statistics, in the grid's CRS: (points, description).

    The area is the spec's grid; when the grid is that of a local ``like`` source of at most
    5 x 10^7 pixels, only that source's valid pixels (the map is nodata elsewhere). Sampled with
    :func:`~sinks.learn.knndm.grid_prediction_points` (a regular lattice of about 1,000 pixels).
    ``grid``, ``why``: :func:`_spec_grid`'s. Returns (None, why) when the grid cannot be
    resolved locally.
    """
    if grid is None:
        return None, why
    mask, area = None, "the spec's whole grid"
    like = spec.grid.like
    if like is not None and grid.width * grid.height <= 5e7:
        try:
            import rasterio

            source = spec.source(like)
            if source.paths:
                with rasterio.open(source.paths[0]) as ds:
                    if (ds.width, ds.height) == (grid.width, grid.height):
                        mask = ds.read_masks(1) > 0
                        area = f"the valid pixels of the grid's source {like!r}"
        except Exception:  # noqa: BLE001 - the mask only refines the area; the grid stays usable
            mask = None
    if mask is not None and not mask.any():
        mask, area = None, "the spec's whole grid"
    return grid_prediction_points(grid, mask=mask, seed=seed), area


def _with_own_estimator(recipe: Recipe, estimator) -> tuple[Recipe, object]:
    """The recipe with a user's regressor in place of its ``[estimator]`` (kind and params), and the
    regressor's unfitted clone."""
    import dataclasses

    if recipe.tuning or recipe.selection or recipe.interval_method in QUANTILE_METHODS:
        raise InputError(f"{recipe.path or recipe.name}: a regressor given in Python replaces [estimator], so the "
                         "recipe may have no [tuning] or [selection] (they rebuild a registered kind from its "
                         "parameters) and no method = \"cqr\" (it needs a registered quantile kind)")
    kind, model = as_estimator(estimator)
    params = {} if kind == USER_KIND else estimator_params(kind, model)
    return dataclasses.replace(recipe, estimator=kind, params=params), model


def _refit_setups(recipe: Recipe, tuned, estimator, params: dict, names: list[str], kinds: dict,
                  folds: np.ndarray, chosen_weights: dict | None) -> list[FoldSetup]:
    """Each outer fold's fits for :func:`sinks.learn.refit_check.refit_check`: the recipe's estimator,
    or outer fold k's tuning choice (features, params) when tuned; its weights that never saw fold k."""
    choices = {} if tuned is None else {int(o["fold"]): o["choice"] for o in tuned.outer}
    setups = []
    for k in np.unique(folds).tolist():
        choice = choices.get(int(k))
        columns = tuple(range(len(names))) if choice is None else tuple(choice.features)
        setups.append(FoldSetup(
            fold=int(k), columns=columns,
            estimator=estimator if choice is None else make_estimator(recipe.estimator, {**params, **choice.params}),
            categorical=tuple(i for i, j in enumerate(columns) if kinds[names[j]].categorical),
            weights=None if chosen_weights is None else chosen_weights[k][folds != k]))
    return setups


def train(recipe: Recipe, table: pd.DataFrame, out: str | os.PathLike, *, progress: bool = True,
          source: str | None = None, estimator=None) -> Path:
    """Fit ``recipe`` on ``table`` (from :func:`sinks.covariates.extract.extract`) and save a bundle.

    Every scheme of ``[validation] schemes`` is run (random, blocks, kNNDM) and reported with
    per-fold and pooled R², RMSE, relative RMSE, MAE, bias and the Wasserstein distance W of its
    test-to-train distances to the map's prediction-to-plot distances. The chosen ``scheme``
    (default kNNDM) gives the out-of-fold residuals that calibrate the intervals
    (:mod:`sinks.learn.intervals`), the folds of the AOA, and the error profile; every interval
    method's coverage is checked on held-out folds only (:func:`~sinks.learn.intervals.nested_check`).
    With ``[tuning]`` / ``[selection]`` the chosen scheme's OOF are the nested ones of
    :func:`sinks.learn.tuning.nested_search`, the model and the AOA use the final choice's features
    and params, and the other schemes run with that choice (flagged as not nested).
    ``source`` names the table in error messages (its path; default ``table.attrs["source"]``).

    ``estimator``: a scikit-learn regressor instance to fit instead of the recipe's ``[estimator]``
    (any regressor, :func:`sinks.learn.estimators.as_estimator`; cloned, never fitted in place);
    the recipe's other sections apply, but not ``[tuning]`` and ``cqr``, which name registered
    kinds. It is saved in its kind's format, or through skops if all it holds is trusted.
    """
    if estimator is not None:
        recipe, estimator = _with_own_estimator(recipe, estimator)
    spec = load_spec(recipe.features)
    names = spec.feature_names
    source = str(source or table.attrs.get("source") or "feature table")
    where = recipe.path or recipe.name
    check_extracted_with(table, spec.fingerprint(), spec.name, source, f"recipe {where}")
    X, y, keep = training_arrays(recipe, table, names, source=source)
    # the same value at every usable plot: the model cannot use them (sinks train warns)
    constant_features = [name for j, name in enumerate(names) if np.ptp(X[:, j]) == 0]
    xs, ys = table["x"].to_numpy(float)[keep], table["y"].to_numpy(float)[keep]
    grid, grid_why = _spec_grid(spec)
    locations = _check_plot_locations(spec, grid, xs, ys, source)
    pred_xy, area = _prediction_points(spec, grid, grid_why, recipe.seed)
    # every distance (blocks, variograms, kNNDM, W) in metres: on a geographic grid, a local projection
    xy, dist_pred, distance_proj = metric_coordinates(spec.grid.crs, np.column_stack([xs, ys]),
                                                      np.empty((0, 2)) if pred_xy is None else pred_xy)
    dx, dy = xy[:, 0], xy[:, 1]
    cqr = recipe.interval_method in QUANTILE_METHODS
    params = with_interval_level(recipe.estimator, recipe.params, recipe.interval_level) if cqr else recipe.params
    estimator = make_estimator(recipe.estimator, params) if estimator is None else estimator
    tails = quantile_levels_for(recipe.interval_level)[::2]  # CQR's conditional quantiles (lo, hi)
    oof_tails = None
    schemes, chosen, k = list(recipe.schemes), recipe.scheme, recipe.folds

    # ---- folds of every scheme, before any fitting --------------------------------------------
    folds_by: dict[str, np.ndarray] = {}
    setup: dict = {"folds": k, "seed": recipe.seed, "schemes": schemes, "scheme": chosen,
                   "block_size": recipe.block_size}
    if "random" in schemes:
        folds_by["random"] = cv.fold_ids(len(y), folds=k, seed=recipe.seed)
    if "blocks" in schemes:
        if recipe.block_size is None:
            size, vg, note = cv.suggest_block_size(dx, dy, y, folds=k, seed=recipe.seed)
            setup["block_size_from"] = f"data: {note}"
        else:
            size, vg = recipe.block_size, cv.fit_variogram(dx, dy, y, seed=recipe.seed)
            setup["block_size_from"] = "recipe"
        blocks = cv.spatial_blocks(dx, dy, size)
        n_blocks = len(np.unique(blocks))
        if n_blocks < k:
            raise InputError(
                f"{source}: the {len(y)} usable plots fall in {n_blocks} spatial block(s) of "
                f"{size:g} m, fewer than the {k} folds of {where}; use a smaller "
                "[validation] block_size (or leave it out: it is then the variogram range) or fewer folds"
            )
        folds_by["blocks"] = cv.fold_ids(len(y), folds=k, seed=recipe.seed, groups=blocks)
        setup.update(block_size=float(size), n_blocks=n_blocks, variogram=vg.as_dict(),
                     plot_spacing_m=cv.median_nearest_neighbour(dx, dy))
    gij = None if pred_xy is None else prediction_to_sample_distances(xy, dist_pred)
    if distance_proj:
        setup["distance_crs"] = {"proj": distance_proj, "why": f"the grid's CRS {spec.grid.crs} is not in metres: "
                                 "distances and block_size are in metres of this (for a geographic grid, a local "
                                 "azimuthal equidistant projection; sinks.learn.knndm.metric_coordinates)"}
    setup["prediction_area"] = {"points": 0 if pred_xy is None else int(len(pred_xy)), "area": area,
                                "median_distance_to_plots": None if gij is None else float(np.median(gij))}
    if "knndm" in schemes:
        if pred_xy is None:
            raise InputError(f"{where} [validation]: kNNDM needs the map's prediction area but {area}; "
                             "drop 'knndm' from schemes and set scheme = \"blocks\"")
        result = knndm_folds(xy, dist_pred, k, seed=recipe.seed)
        folds_by["knndm"] = result.folds
        setup["knndm"] = {"method": result.method, "q": result.q, "W": result.W, "ks_pvalue": result.ks_pvalue,
                          "fold_sizes": result.fold_sizes.tolist(), "clustering": result.clustering}

    ids = np.unique(folds_by[chosen])
    others = min(int((folds_by[chosen] != f).sum()) for f in ids)
    if recipe.interval_neighbours >= others:
        raise InputError(f"{where} [intervals]: neighbours = {recipe.interval_neighbours}, but the plots of a "
                         f"{chosen} fold have only {others} plots in the other folds to be their neighbours; "
                         f"use fewer neighbours (the default is 10) or more plots")

    # ---- cross-validation of every scheme, then the final model -----------------------------
    validation, per_fold, oofs = {}, {}, {}
    sd = _measurement_sd(recipe, table, keep, source) if recipe.weights else None
    weights, weighting = None, None
    with _library_errors(recipe):
        if recipe.estimator == USER_KIND:
            trial_save(estimator, len(names))  # a user's regressor: can it be saved at all?
        else:
            trial_fit(recipe.estimator, recipe.params, len(names))  # params vs the real feature count
    if sd is not None:  # can it be fitted with per-plot weights at all?
        try:
            if recipe.estimator == USER_KIND:
                trial_save(estimator, len(names), weighted=True)
            else:
                trial_fit(recipe.estimator, recipe.params, len(names), weighted=True)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{where} [target] weights = {recipe.weights!r}: {recipe.estimator} cannot be fitted "
                            f"with per-plot weights ({library_message(exc)}); leave weights out or use another "
                            "estimator") from exc
    with _library_errors(recipe):
        # Weighted: τ² from the chosen scheme's unweighted OOF residuals (sinks.learn.weights) for the
        # final model; each of the chosen scheme's fold fits uses weights whose τ² never saw that
        # fold (nested_weights), so no held-out target reaches its own prediction.
        chosen_weights, tuning_weights = None, None
        if sd is not None:
            weights, tau2, plain = cv_weights(estimator, X, y, folds_by[chosen], sd, scheme=f"{chosen} unweighted",
                                              progress=progress)
            by_fold = nested_weights(estimator, X, y, folds_by[chosen], sd, scheme=f"{chosen} unweighted",
                                     progress=progress)
            chosen_weights = {**{k: w for k, (w, _) in by_fold.items()}, "all": weights}
            weighting = {"column": recipe.weights, "method": "1 / (tau2 + sd^2), DerSimonian & Laird 1986",
                         "tau2": tau2, "mean_sd2": float(np.mean(sd ** 2)), "unweighted": plain.as_dict(),
                         "weight_range": [float(weights.min()), float(weights.max())],
                         "tau2_by_fold": {str(k): t for k, (_, t) in by_fold.items()},
                         "folds": f"the {chosen} scheme's fold models use weights whose tau2 comes from an "
                                  "unweighted CV over the other folds only; the other schemes' fold models "
                                  "and the final model use tau2 from all folds (those schemes' scores are "
                                  "not nested in the weighting)"}
        # [tuning]/[selection]: chosen inside the chosen scheme's folds; X becomes the model's columns.
        # CQR: the outer fits also give the held-out conditional quantiles.
        if sd is not None and (recipe.tuning or recipe.selection):
            tuning_weights = {
                "column": recipe.weights, "inner_metric": "weighted (the fits' weights)",
                "outer_scores": "unweighted, as every CV score",
                "tau2": "per outer fold from an unweighted CV over the other folds only ([estimator] params, "
                        "all features), weights normalised over those folds; the final choice uses the "
                        "bundle's weights (tau2 from all folds)",
                "tau2_by_outer_fold": {str(k): t for k, (_, t) in by_fold.items()}, "tau2_final": tau2}

        def median_and_tails(model, Xt):  # the median and CQR's two quantiles from the same fold model
            return np.column_stack([model.predict(Xt), predict_quantiles(recipe.estimator, model, Xt, tails)])

        tuned = tuning.nested_for_recipe(recipe, X, y, folds_by[chosen], names, params=params,
                                         sample_weight=chosen_weights, predict=median_and_tails if cqr else None,
                                         progress=progress)
        model_names = list(names)
        X_features, base_estimator = X, estimator  # all features, untuned: what the refit check starts from
        if tuned is not None:
            model_names = [names[i] for i in tuned.final.features]
            X = X[:, list(tuned.final.features)]
            estimator = make_estimator(recipe.estimator, {**params, **tuned.final.params})
        for scheme in schemes:
            if tuned is not None and scheme == chosen:  # the nested OOF, honest about the tuning
                oofs[scheme], oof_tails = tuned.oof, tuned.oof_extra
                scores = cv.score(y, tuned.oof, scheme=scheme, folds=len(np.unique(folds_by[scheme])))
            elif cqr and scheme == chosen:  # the median and CQR's two quantiles from the same fold models
                both = cv.fold_predictions(estimator, X, y, folds_by[scheme], scheme=scheme, progress=progress,
                                           sample_weight=chosen_weights, predict=median_and_tails)
                oofs[scheme], oof_tails = both[:, 0], both[:, 1:]
                scores = cv.score(y, oofs[scheme], scheme=scheme, folds=len(np.unique(folds_by[scheme])))
            else:
                scores, oofs[scheme] = cv.cross_validate(estimator, X, y, folds_by[scheme], scheme=scheme,
                                                         progress=progress,
                                                         sample_weight=chosen_weights if scheme == chosen else weights)
            entry = scores.as_dict()
            if tuned is not None:
                entry["tuning"] = "nested" if scheme == chosen else "not nested (optimistic by the tuning)"
            if gij is not None:
                distances = cv_distances(xy, folds_by[scheme])
                entry["W"] = float(stats.wasserstein_distance(distances, gij))
                entry["median_cv_distance"] = float(np.median(distances))
            validation[scheme] = entry
            per_fold[scheme] = cv.fold_scores(y, oofs[scheme], folds_by[scheme])
        model = fit_weighted(estimator, X, y, weights)
    validation["spatial"] = dict(validation[chosen])  # the honest number, under its old name
    folds, oof = folds_by[chosen], oofs[chosen]

    # ---- AOA, difficulty, intervals checked on held-out folds, final calibration -------------
    m = search_neighbours(len(y), recipe.interval_neighbours)
    # one other-fold neighbour search: the AOA's training DIs and the intervals' m neighbours
    kinds = {f.name: f for f in spec.features}
    categorical = [i for i, n in enumerate(model_names) if kinds[n].categorical]
    aoa = fit_aoa(X, importances(recipe.estimator, model, len(model_names)), folds, neighbours=m,
                  categorical=categorical)
    abs_residual = np.abs(y - oof)
    nbrs = training_neighbours(aoa, folds, m)
    cv_di = nbrs.other_distance[:, 0] / aoa.mean_distance
    inside = cv_di <= aoa.threshold
    lower_bound = 0.0 if np.all(y >= 0) else None
    checks = {}
    difficulties = fold_difficulties(y, oof, nbrs, recipe.interval_neighbours)  # every method and level
    for method in METHODS:
        checks[method] = nested_check(y, oof, nbrs, inside,
                                      level=recipe.interval_level, method=method, bins=recipe.interval_bins,
                                      neighbours=recipe.interval_neighbours, lower_bound=lower_bound,
                                      difficulties=difficulties)
    if oof_tails is not None:
        checks["cqr"] = nested_check_cqr(y, oof_tails[:, 0], oof_tails[:, 1], folds, cv_di, inside,
                                         level=recipe.interval_level, quantiles=tails, lower_bound=lower_bound)
    refit = None
    if recipe.interval_check == "refit":
        with _library_errors(recipe):
            refit = refit_check(
                _refit_setups(recipe, tuned, base_estimator, params, names, kinds, folds, chosen_weights),
                X_features, y, folds, kind=recipe.estimator, level=recipe.interval_level, bins=recipe.interval_bins,
                neighbours=recipe.interval_neighbours, lower_bound=lower_bound, tails=tails,
                predict=median_and_tails if cqr else None,
                progress=progress)
        for check in refit["methods"].values():
            check.pop("arrays")
    held_out = checks[recipe.interval_method].pop("arrays")
    for method in checks:
        checks[method].pop("arrays", None)
    by_level = {}  # the recipe's method at the usual levels: maps can be made at any of them (not CQR)
    for level in sorted({recipe.interval_level} if cqr else {*CHECK_LEVELS, recipe.interval_level}):
        check = checks[recipe.interval_method] if level == recipe.interval_level else nested_check(
            y, oof, nbrs, inside, level=level,
            method=recipe.interval_method, bins=recipe.interval_bins, neighbours=recipe.interval_neighbours,
            lower_bound=lower_bound, difficulties=difficulties)
        check.pop("arrays", None)
        by_level[f"{level:g}"] = {part: check[part] for part in ("n", "coverage", "mean_width", "sd_width",
                                                                "width_di_spearman", "inside_aoa", "outside_aoa")}
    s_all, di_all = location_difficulty(abs_residual, nbrs, recipe.interval_neighbours)
    if cqr:
        interval = calibrate_cqr(y, oof_tails[:, 0], oof_tails[:, 1], level=recipe.interval_level, quantiles=tails,
                                 residuals_from=f"{chosen}-CV", lower_bound=lower_bound)
    else:
        interval = calibrate_adaptive(abs_residual, s_all, di_all, level=recipe.interval_level,
                                      method=recipe.interval_method, bins=recipe.interval_bins,
                                      neighbours=recipe.interval_neighbours, residuals_from=f"{chosen}-CV",
                                      lower_bound=lower_bound)
    profile = fit_error_profile(cv_di, abs_residual, scheme=chosen)
    error_variogram = residual_error_model(dx, dy, y - oof, seed=recipe.seed)

    frame = {
        "plot_id": table["plot_id"].to_numpy()[keep] if "plot_id" in table else np.arange(len(y)),
        "x": xs, "y": ys, "observed": y,
        "oof_random": oofs.get("random", np.full(len(y), np.nan)), "oof_spatial": oof,
        "random_fold": folds_by.get("random", np.full(len(y), -1)), "spatial_fold": folds,
    }
    for scheme in schemes:
        frame[f"oof_{scheme}"], frame[f"fold_{scheme}"] = oofs[scheme], folds_by[scheme]
    frame.update({"cv_di": cv_di, "inside_aoa": inside.astype(int),
                  "heldout_lower": held_out["lower"], "heldout_upper": held_out["upper"],
                  "heldout_covered": held_out["covered"].astype(int)})
    frame_out = pd.DataFrame(frame)
    metadata = {
        "recipe": {"name": recipe.name, "description": recipe.description, "content": recipe.raw},
        "target": {"column": recipe.target, "units": recipe.target_units, "band": recipe.band,
                   "derive": recipe.derive, "from": recipe.derive_from, "pool": recipe.pool},
        "features": {"names": names, "spec": spec.name, "spec_fingerprint": spec.fingerprint(),
                     "grid_crs": spec.grid.crs, "grid_resolution": list(spec.grid.resolution),
                     "selected": model_names,
                     "categorical": [model_names[i] for i in categorical],
                     "importance": dict(zip(model_names, aoa.weights.tolist()))},
        "estimator": {"params": estimator_params(recipe.estimator, model)},
        "training": {"n": int(len(y)), "dropped": int((~keep).sum()), "sha256": sha256_frame(table),
                     "crs": table.attrs.get("crs"), "target_mean": float(np.mean(y)), "target_sd": float(np.std(y)),
                     "constant_features": constant_features, **locations},
        "validation_setup": setup,
        "validation": validation,
        "validation_folds": per_fold,
        "interval": interval.as_dict(),
        "interval_check": checks,
        "interval_check_by_level": by_level,
        **({"interval_check_refit": refit} if refit is not None else {}),
        "error_profile": profile.as_dict(),
        "error_variogram": error_variogram,
        "aoa": {"threshold": aoa.threshold, "mean_distance": aoa.mean_distance,
                "method": f"Meyer & Pebesma 2021, {chosen}-CV folds",
                "training_inside": float(inside.mean())},
    }
    if weighting is not None:
        metadata["weights"] = weighting
        frame_out["weight"] = weights
    tables = {}
    if tuned is not None:
        metadata["tuning"] = tuning.tuning_metadata(recipe, tuned, names, schemes, weights=tuning_weights)
        tables["tuning.csv"] = tuned.table
    return save_bundle(out, kind=recipe.estimator, model=model, metadata=metadata, aoa=aoa,
                       oof=frame_out, calibration={"abs_residual": abs_residual, "s": s_all, "di": di_all,
                                                "plot_s": plot_difficulty(abs_residual, nbrs, recipe.interval_neighbours)},
                       distance_xy=(xy, None if pred_xy is None else dist_pred), tables=tables)
