"""The fully nested interval check: every step that calibrates fold k's interval refitted without it.

:func:`sinks.learn.intervals.nested_check` (the default, ``[intervals] check = "fast"``) calibrates
fold k's interval on the other folds' out-of-fold residuals, but those residuals come from fold
models that were trained with fold k's plots, and the AOA's feature weights (which set the DI and
so σ) come from the final model fitted on every plot. When one fold is unlike the others, that
check is optimistic there. ``check = "refit"`` redoes, for each outer fold k, everything the
interval rests on from the plots outside k alone, as nested cross-validation assesses a whole
procedure (Varma & Simon 2006, BMC Bioinformatics 7:91):

1. the outer model: fitted on the other folds (with outer fold k's tuning choice when the recipe
   tunes, and its weights whose τ² never saw fold k when it weights); it predicts fold k;
2. inner out-of-fold predictions on those plots, the remaining K−1 folds each held out in turn,
   with the same choice and weights: their |residuals| calibrate fold k's interval;
3. the AOA from the outer model's importances and the other folds' predictors (its DI threshold
   and mean distance), the other-fold neighbours, σ's ``s`` and the DI;
4. fold k's plots then get what a map pixel gets: DI and ``s`` from their nearest plot of the
   other folds, the interval from the calibration of step 2, inside/outside from step 3's threshold.

So fold k's targets reach nothing that sets fold k's interval (tested: changing them leaves its
bounds unchanged). The cost is K outer and K·(K−1) inner fits, besides the recipe's own.
Tuning is not redone inside the inner folds: the inner fits use outer fold k's choice, made
without fold k, so the calibration residuals are, if anything, optimistic about the tuning, which
makes the intervals narrower and the check's coverage lower, not higher.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn.base import clone
from tqdm.auto import tqdm

from sinks.learn import cv
from sinks.learn.aoa import fit_aoa, training_neighbours
from sinks.learn.estimators import fit_weighted, importances
from sinks.learn.intervals import (METHODS, _check_result, calibrate_adaptive, calibrate_cqr, location_difficulty,
                                   plot_difficulty, search_neighbours)

#: The recipe's ``[intervals] check`` values: "fast" (:func:`sinks.learn.intervals.nested_check`
#: on the scheme's out-of-fold residuals) or "refit" (:func:`refit_check`).
CHECKS = ("fast", "refit")


@dataclass(frozen=True)
class FoldSetup:
    """What outer fold ``fold``'s fits use: an unfitted estimator, its predictor columns (indices
    into the full feature matrix), the categorical ones among them (indices into those columns)
    and the weights of the other folds' plots (None: unweighted)."""

    fold: int
    estimator: object
    columns: tuple
    categorical: tuple = ()
    weights: np.ndarray | None = None


def refit_check(setups: list[FoldSetup], X: np.ndarray, y: np.ndarray, folds: np.ndarray, *, kind: str,
                level: float, bins: int, neighbours: int, lower_bound: float | None,
                predict: Callable | None = None, tails=(), progress: bool = True) -> dict:
    """Held-out coverage of every interval method with each fold's interval built without it.

    ``setups``: one :class:`FoldSetup` per fold id of ``folds``; ``kind``: the estimator's kind
    (for its importances); ``predict(model, X)``: a quantile model's median and CQR's two
    conditional quantiles as three columns (``tails`` their levels; the same function the recipe's
    own fold fits use), or None: ``model.predict``, and no CQR. Returns
    ``{method: check}`` as :func:`sinks.learn.intervals.nested_check` reports it (per fold,
    overall, inside and outside AOA, by DI quartile, with its per-plot ``"arrays"``), inside/outside
    by each fold's own AOA, under ``"methods"``, and ``"fits"``: the fits it made.
    """
    X, y, folds = np.asarray(X, dtype=float), np.asarray(y, dtype=float), np.asarray(folds)
    n = len(y)
    methods = [*METHODS, *(["cqr"] if predict is not None else [])]
    bounds = {m: (np.zeros(n), np.zeros(n)) for m in methods}
    di, inside = np.zeros(n), np.zeros(n, dtype=bool)
    fits = 0

    def fold_predict(model, Xt):
        return model.predict(Xt) if predict is None else predict(model, Xt)

    with tqdm(total=len(setups), desc="refit interval check", unit="fold", disable=not progress,
              leave=False) as bar:
        for setup in setups:
            test = folds == setup.fold
            rest = ~test
            cols = list(setup.columns)
            Xr, yr, fr, Xt = X[rest][:, cols], y[rest], folds[rest], X[test][:, cols]
            weight = None if setup.weights is None else np.asarray(setup.weights, dtype=float)
            inner = cv.fold_predictions(setup.estimator, Xr, yr, fr, scheme=f"without fold {setup.fold}",
                                        progress=False, sample_weight=weight, predict=predict)
            model = fit_weighted(clone(setup.estimator), Xr, yr, weight)
            fits += len(np.unique(fr)) + 1
            outer = np.asarray(fold_predict(model, Xt), dtype=float).reshape(int(test.sum()), -1)
            m = search_neighbours(len(yr), neighbours)
            aoa = fit_aoa(Xr, importances(kind, model, len(cols)), fr, neighbours=m,
                          categorical=setup.categorical)
            nbrs = training_neighbours(aoa, fr, m)
            r = np.abs(yr - inner[:, 0])
            s_cal, di_cal = location_difficulty(r, nbrs, neighbours)
            di_t, nearest = aoa.nearest(Xt)
            s_t = plot_difficulty(r, nbrs, neighbours)[nearest]
            di[test], inside[test] = di_t, di_t <= aoa.threshold
            for method in METHODS:
                iv = calibrate_adaptive(r, s_cal, di_cal, level=level, method=method, bins=bins,
                                        neighbours=neighbours, lower_bound=lower_bound)
                lo, hi = iv.apply(outer[:, 0], s_t, di_t)
                bounds[method][0][test], bounds[method][1][test] = lo, hi
            if predict is not None:
                iv = calibrate_cqr(yr, inner[:, 1], inner[:, 2], level=level, quantiles=tails,
                                   lower_bound=lower_bound)
                lo, hi = iv.apply(outer[:, 1], outer[:, 2])
                bounds["cqr"][0][test], bounds["cqr"][1][test] = lo, hi
            bar.update()
    checks = {method: _check_result(method, level, y, *bounds[method], di, inside, folds, 4) for method in methods}
    return {"fits": fits, "methods": checks}
