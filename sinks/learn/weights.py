"""Plot measurement uncertainty into the model: inverse-variance weights with a model-error term.

A plot's observed stock is its true stock plus a measurement error of known sd ``s_i`` (the Monte
Carlo sd of an inventory plot, the standard error of a GEDI footprint, or a crew's sampling error).
Weighting each plot by ``1 / s_i²`` alone would let the most precise plots dominate even though
every plot also carries the model's own error, which no measurement removes. So the weight is

    w_i = 1 / (τ² + s_i²),   normalised to a mean of 1,

the random-effects weight of meta-analysis (DerSimonian & Laird 1986, *Control. Clin. Trials*
7:177-188), with the between-plot ("model") variance τ² estimated by the method of moments from
the chosen CV scheme's *unweighted* out-of-fold residuals ``r_i``: τ² = mean(r²) − mean(s²),
floored at 1 % of mean(r²) so that the weights stay finite when the measurement error seems to
explain all of the residual (the floor is a numerical guard, not a published value).

What this does and does not do: the weights change how the model is fitted (noisy plots pull it
less); the prediction intervals stay calibrated on the observed out-of-fold residuals, so they
still cover a *measured* plot, noise included, and the noiseless stock at least as often.
"""

from __future__ import annotations

import numpy as np

#: τ² floor as a fraction of the mean squared OOF residual (a numerical guard).
TAU2_FLOOR = 0.01


def inverse_variance_weights(measurement_sd: np.ndarray, oof_residual: np.ndarray) -> tuple[np.ndarray, float]:
    """(weights with mean 1, τ²) from each plot's measurement sd and its unweighted OOF residual."""
    sd2 = np.asarray(measurement_sd, dtype=float) ** 2
    r2 = np.asarray(oof_residual, dtype=float) ** 2
    tau2 = max(float(r2.mean() - sd2.mean()), TAU2_FLOOR * float(r2.mean()), 1e-12)
    weights = 1.0 / (tau2 + sd2)
    return weights / weights.mean(), tau2


def cv_weights(estimator, X: np.ndarray, y: np.ndarray, folds: np.ndarray, measurement_sd: np.ndarray, *,
               rows: np.ndarray | None = None, scheme: str = "", progress: bool = True):
    """(weights, τ², unweighted scores) of the plots in ``rows`` (a mask; default all).

    τ² comes from an unweighted CV over those plots alone: each of their folds is left out in turn
    and predicted by ``estimator`` fitted on the others (:func:`sinks.learn.cv.cross_validate`),
    so no plot outside ``rows`` is fitted, predicted or counted; the weights have mean 1 over
    ``rows``. With ``rows`` = all plots this is the weighting of an untuned recipe.
    """
    from sinks.learn import cv

    rows = np.ones(len(y), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    scores, oof = cv.cross_validate(estimator, X[rows], y[rows], np.asarray(folds)[rows], scheme=scheme,
                                    progress=progress)
    weights, tau2 = inverse_variance_weights(np.asarray(measurement_sd)[rows], y[rows] - oof)
    return weights, tau2, scores


def nested_weights(estimator, X: np.ndarray, y: np.ndarray, folds: np.ndarray, measurement_sd: np.ndarray, *,
                   scheme: str = "", progress: bool = True) -> dict:
    """For each outer fold k: (weights of the plots outside k, NaN on fold k's own plots, τ²).

    τ² and the weights' mean-1 normalisation use only the plots outside fold k (:func:`cv_weights`
    with an inner CV over the other folds), so neither fold k's targets nor its sds reach the
    weights of the fits that choose and fit fold k's model in :func:`sinks.learn.tuning.nested_search`.
    """
    folds = np.asarray(folds)
    out = {}
    for k in np.unique(folds).tolist():
        rows = folds != k
        w, tau2, _ = cv_weights(estimator, X, y, folds, measurement_sd, rows=rows,
                                scheme=f"{scheme} without fold {k}", progress=progress)
        full = np.full(len(y), np.nan)
        full[rows] = w
        out[int(k)] = (full, tau2)
    return out
