"""Prediction intervals by conformal calibration on cross-validation residuals, checked on held-out folds.

What the methods are
--------------------
All three are *split-conformal* intervals (Vovk et al. 2005; Lei et al. 2018, *JASA*
113:1094-1111) whose calibration set is the out-of-fold (OOF) residuals ``r_i = y_i - ŷ_(-i)``
of the recipe's chosen cross-validation scheme (kNNDM or spatial blocks by default), and whose
interval at a new location is ``ŷ(x) ± q · σ(x)``:

- ``"split"``: ``σ = 1``; ``q`` is the ⌈(n+1)·level⌉-th smallest ``|r_i|``. One width everywhere.
  (This is the plain split-conformal rule applied to CV residuals, not CV+ / jackknife+ of Barber
  et al. 2021, which would need every fold model at prediction time.)
- ``"normalized"`` (default): normalised conformal prediction (Papadopoulos, Vovk & Gammerman
  2011, *JAIR* 40:815-840): scores ``|r_i| / σ(x_i)``, with the difficulty
  ``σ(x) = a + b·s(x) + c·DI(x)``, where ``DI(x)`` is the dissimilarity index and ``s(x)`` the
  mean absolute OOF residual of the ``k`` training plots nearest to x's nearest training plot
  (that plot included), both in the AOA's weighted, standardised predictor space. For a training
  plot taken as a location, its nearest plot is the nearest in *another* fold and the ``k``
  skip the plot's own fold (:func:`location_difficulty`). One nearest-plot query per pixel gives
  a map both its DI and its σ (an earlier k-nearest-plots ``s`` cost 2-3x the DI query);
  ``a, b, c >= 0``
  are fitted by non-negative least squares of ``|r|`` on ``(1, s, DI)`` and σ is floored at
  10 % of the mean ``|r|``. Wider where neighbouring plots were hard to predict and where the
  covariates are unlike any plot.
- ``"cqr"``: conformalised quantile regression (Romano, Patterson & Candès 2019, *NeurIPS* 32):
  a quantile estimator's out-of-fold conditional quantiles ``q_lo``, ``q_hi`` at (1 ∓ level)/2
  give scores ``E_i = max(q_lo(x_i) − y_i, y_i − q_hi(x_i))``; with ``Q`` their
  ⌈(n+1)·level⌉-th smallest, the interval is ``[q_lo(x) − Q, q_hi(x) + Q]``. Its width follows
  the quantile model, not the neighbours or the DI; it needs ``xgboost_quantile`` (fitted with
  those quantiles) or ``quantile_forest``, and is calibrated at one level.
- ``"mondrian"``: Mondrian (category-wise) conformal prediction (Vovk et al. 2005, ch. 4;
  Boström et al. 2021): the calibration plots are binned by their DI (equal-count bins) and each
  bin gets its own ``q`` of ``|r|``; a location uses the ``q`` of its DI bin.

What the guarantee is, and where it does not hold
-------------------------------------------------
If a new location's (features, target) and the calibration plots are *exchangeable*, the interval
covers the new target with probability at least ``level``, *marginally*: on average over
locations drawn like the plots, not at every location or for every pixel of a given map
(Mondrian: marginally within each DI bin). Three things weaken it here and the docs say so:
the OOF residuals come from fold models trained on slightly less data than the final model (the
intervals are, if anything, a little wide); σ's three coefficients are fitted on the calibration
residuals themselves; and map pixels are not exchangeable with the plots where the map
extrapolates: **outside the area of applicability there is no coverage guarantee at all**, and
spatially clustered plots make even inside-AOA coverage optimistic unless the CV folds mimic the
map's prediction distances (which is what kNNDM folds are for).

So coverage is never reported on the residuals it was calibrated on. :func:`nested_check`
calibrates on the OOF residuals of K-1 folds (their σ built without the held-out fold) and
evaluates on the held-out fold, for each fold in turn; it reports coverage per fold, overall,
inside and outside the AOA, and by DI bin, with the mean width and its spread.

Library choice: crepes (``ConformalRegressor`` with ``sigmas`` and ``bins``) implements exactly
the last step, the conformal quantile, and gives the same numbers (tested when installed). It is
not used at run time because what matters here is outside it: a difficulty model whose
neighbours must exclude a plot's own CV fold (and, when checking, the held-out fold), and a
calibration stored in a bundle as plain arrays (no pickle). MAPIE's normalised score fits its own
residual model on its own split of the data, which would break the spatial folds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sinks.learn.aoa import TrainingNeighbours

METHODS = ("normalized", "mondrian", "split")
#: Conformalised quantile regression: needs a quantile estimator (sinks.learn.estimators.is_quantile).
QUANTILE_METHODS = ("cqr",)
#: Nearest training plots whose mean |OOF residual| is the difficulty s(x) (Papadopoulos et al.
#: 2011 used k = 5-40; 10 is a compromise for 10^2-10^3 plots).
DEFAULT_NEIGHBOURS = 10
#: DI bins of the Mondrian method (each needs at least level / (1 - level) plots; fewer bins are
#: used when there are too few).
DEFAULT_BINS = 4
#: σ floor as a fraction of the mean |OOF residual| (no zero-width intervals).
SIGMA_FLOOR = 0.1


# ---- plain split conformal (one width) ------------------------------------------------------------


@dataclass(frozen=True)
class ConformalInterval:
    """One half-width for every location (split conformal on CV residuals; bundles of format 1)."""

    level: float
    half_width: float
    n_calibration: int
    residuals_from: str
    lower_bound: float | None = 0.0

    def apply(self, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lower = prediction - self.half_width
        if self.lower_bound is not None:
            lower = np.maximum(lower, self.lower_bound)
        return lower, prediction + self.half_width

    def as_dict(self) -> dict:
        return asdict(self)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ⌈(n+1)·level⌉-th smallest score (inf when n is too small for ``level``)."""
    scores = np.sort(np.asarray(scores, dtype=float))
    n = len(scores)
    rank = math.ceil((n + 1) * level - 1e-9)
    return float(scores[rank - 1]) if 1 <= rank <= n else math.inf


def quantile_or_largest(scores: np.ndarray, level: float) -> float:
    """:func:`conformal_quantile`, or the largest score when there are too few for ``level`` (the
    interval then under-covers; the calibration counts say so)."""
    q = conformal_quantile(scores, level)
    return q if math.isfinite(q) else float(np.max(scores))


def calibrate(y: np.ndarray, oof: np.ndarray, *, level: float, residuals_from: str,
              lower_bound: float | None = 0.0) -> ConformalInterval:
    """Split-conformal half-width at ``level`` (e.g. 0.9) from out-of-fold predictions."""
    if not 0 < level < 1:
        raise ValueError("interval level must be between 0 and 1")
    residuals = np.abs(np.asarray(y) - np.asarray(oof))
    return ConformalInterval(level, quantile_or_largest(residuals, level), len(residuals), residuals_from, lower_bound)


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of observations inside their interval."""
    return float(np.mean((y >= lower) & (y <= upper)))


# ---- adaptive (normalised / Mondrian) conformal ---------------------------------------------------


def _first_k_mean(values: np.ndarray, index: np.ndarray, usable: np.ndarray, k: int, fallback: float) -> np.ndarray:
    """Mean of ``values[index]`` over the first ``k`` usable entries of each row (``fallback`` when none)."""
    use = usable & (np.cumsum(usable, axis=1) <= k)
    count = use.sum(axis=1)
    mean = np.where(use, values[np.where(index >= 0, index, 0)], 0.0).sum(axis=1) / np.maximum(count, 1)
    return np.where(count > 0, mean, fallback)


def search_neighbours(n_plots: int, neighbours: int) -> int:
    """Neighbours the other-fold search keeps per plot for ``neighbours`` difficulty neighbours:
    enough that, after skipping the plots of its own and of a held-out fold, ``neighbours`` remain."""
    return min(n_plots - 1, 3 * neighbours + 5)


def plot_difficulty(abs_residual: np.ndarray, nbrs: TrainingNeighbours, k: int) -> np.ndarray:
    """s̄ of each training plot: the mean ``abs_residual`` of its ``k`` nearest plots (itself included).

    A map location's ``s`` is the s̄ of its nearest plot, so a map needs one nearest-plot query
    per pixel, the one its DI needs anyway (:meth:`sinks.learn.aoa.AOAReference.nearest`).
    """
    r = np.asarray(abs_residual, dtype=float)
    return _first_k_mean(r, nbrs.all_index, nbrs.all_index >= 0, k, float(np.mean(r)))


def location_difficulty(abs_residual: np.ndarray, nbrs: TrainingNeighbours, k: int, *,
                        rows: np.ndarray | None = None, exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(s, DI) of training plots ``rows`` (a mask; default all) taken as new locations.

    As at a map location, a plot's difficulty comes from its nearest plot ``j``, here the nearest
    in another fold and not in fold ``exclude``: DI is the distance to ``j`` over the mean
    distance, ``s`` the mean ``abs_residual`` of the first ``k`` of ``j``'s nearest plots that are
    in neither the plot's own fold nor fold ``exclude``. So no plot's own residual, nor one of its
    fold (or of the held-out fold), enters its difficulty. A plot without such a neighbour gets
    the mean residual of the plots outside ``exclude`` and its farthest listed distance.
    """
    r = np.asarray(abs_residual, dtype=float)
    folds = np.asarray(nbrs.folds)
    rows = np.arange(len(r)) if rows is None else np.flatnonzero(rows)
    index, distance, own = nbrs.other_index[rows], nbrs.other_distance[rows], folds[rows]
    usable = index >= 0
    if exclude is not None:
        usable &= folds[np.where(usable, index, 0)] != exclude
    found = usable.any(axis=1)
    at = np.arange(len(rows)), np.argmax(usable, axis=1)
    di = distance[at] / nbrs.mean_distance
    fallback = float(np.mean(r if exclude is None else r[folds != exclude]))
    near = nbrs.all_index[np.where(found, index[at], 0)]
    near_fold = folds[np.where(near >= 0, near, 0)]
    keep = (near >= 0) & (near_fold != own[:, None])
    if exclude is not None:
        keep &= near_fold != exclude
    s = _first_k_mean(r, near, keep, k, fallback)
    if not found.all():
        s[~found] = fallback
        farthest = np.where(np.isfinite(distance), distance, 0.0).max(axis=1)
        di[~found] = farthest[~found] / nbrs.mean_distance
    return s, di


@dataclass(frozen=True)
class AdaptiveInterval:
    """Calibrated conformal interval ``ŷ ± q[bin(DI)] · σ(s, DI)`` (see the module docstring)."""

    method: str
    level: float
    quantiles: list  # one q per DI bin (one bin unless Mondrian)
    bin_edges: list  # inner DI edges between the bins (len(quantiles) - 1)
    coef: list  # a, b, c of σ = a + b·s + c·DI
    sigma_floor: float
    neighbours: int
    n_calibration: int
    residuals_from: str
    lower_bound: float | None = 0.0
    bin_counts: list = field(default_factory=list)
    bins: int | None = None  # the bins asked for (Mondrian: fewer are made where the plots are too few)

    def sigma(self, s: np.ndarray, di: np.ndarray) -> np.ndarray:
        a, b, c = self.coef
        return np.maximum(a + b * np.asarray(s, dtype=float) + c * np.asarray(di, dtype=float), self.sigma_floor)

    def half_width(self, s: np.ndarray, di: np.ndarray) -> np.ndarray:
        q = np.asarray(self.quantiles, dtype=float)[np.searchsorted(self.bin_edges, di, side="right")]
        return q * self.sigma(s, di)

    def apply(self, prediction: np.ndarray, s: np.ndarray, di: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = self.half_width(s, di)
        lower = prediction - h
        if self.lower_bound is not None:
            lower = np.maximum(lower, self.lower_bound)
        return lower, prediction + h

    def as_dict(self) -> dict:
        return asdict(self)


def _fit_sigma(abs_residual, s, di) -> tuple[list, float]:
    from scipy.optimize import nnls

    floor = SIGMA_FLOOR * max(float(np.mean(abs_residual)), 1e-12)
    A = np.column_stack([np.ones_like(s), s, di])
    coef, _ = nnls(A, abs_residual)
    if not np.all(np.isfinite(coef)) or (A @ coef).max() <= 0:
        coef = np.array([float(np.mean(abs_residual)), 0.0, 0.0])
    return [float(v) for v in coef], floor


def min_per_bin(level: float) -> int:
    """Fewest calibration plots for a finite conformal quantile at ``level``."""
    return math.ceil(level / (1 - level) - 1e-9)


def calibrate_adaptive(abs_residual: np.ndarray, s: np.ndarray, di: np.ndarray, *, level: float,
                       method: str = "normalized", bins: int = DEFAULT_BINS, neighbours: int = DEFAULT_NEIGHBOURS,
                       residuals_from: str = "", lower_bound: float | None = 0.0) -> AdaptiveInterval:
    """Calibrate ``method`` on |OOF residuals| with their difficulty ``s`` and ``di`` (see module)."""
    if not 0 < level < 1:
        raise ValueError("interval level must be between 0 and 1")
    if method not in METHODS:
        raise ValueError(f"unknown interval method {method!r}; one of {', '.join(METHODS)}")
    r = np.asarray(abs_residual, dtype=float)
    s, di = np.asarray(s, dtype=float), np.asarray(di, dtype=float)
    if method == "normalized":
        coef, floor = _fit_sigma(r, s, di)
    else:
        coef, floor = [1.0, 0.0, 0.0], 0.0
    sigma = np.maximum(coef[0] + coef[1] * s + coef[2] * di, floor)
    scores = r / sigma
    edges: list = []
    if method == "mondrian":
        nbins = max(1, min(int(bins), len(r) // (min_per_bin(level) + 1)))
        if nbins > 1:
            edges = np.unique(np.quantile(di, np.arange(1, nbins) / nbins)).tolist()
    which = np.searchsorted(edges, di, side="right")
    quantiles, counts = [], []
    for b in range(len(edges) + 1):
        part = scores[which == b]
        quantiles.append(quantile_or_largest(part, level) if len(part) else float(scores.max()))
        counts.append(int(len(part)))
    return AdaptiveInterval(method, level, quantiles, [float(e) for e in edges], coef, floor, int(neighbours),
                            len(r), residuals_from, lower_bound, counts, int(bins))


@dataclass(frozen=True)
class QuantileInterval:
    """Conformalised quantile regression: ``[q_lo(x) − q, q_hi(x) + q]`` (see the module docstring)."""

    method: str  # "cqr"
    level: float
    q: float
    quantiles: list  # the conditional quantile levels [lo, hi] the model predicts
    n_calibration: int
    residuals_from: str
    lower_bound: float | None = 0.0

    def apply(self, q_lo: np.ndarray, q_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lower = np.asarray(q_lo, dtype=float) - self.q
        if self.lower_bound is not None:
            lower = np.maximum(lower, self.lower_bound)
        return lower, np.asarray(q_hi, dtype=float) + self.q

    def as_dict(self) -> dict:
        return asdict(self)


def cqr_scores(y: np.ndarray, q_lo: np.ndarray, q_hi: np.ndarray) -> np.ndarray:
    """CQR conformity scores max(q_lo − y, y − q_hi) (negative inside the quantile band)."""
    y = np.asarray(y, dtype=float)
    return np.maximum(np.asarray(q_lo, dtype=float) - y, y - np.asarray(q_hi, dtype=float))


def calibrate_cqr(y, q_lo, q_hi, *, level: float, quantiles, residuals_from: str = "",
                  lower_bound: float | None = 0.0) -> QuantileInterval:
    """The CQR correction ``q`` at ``level`` from out-of-fold quantiles (the largest score when n
    is too small for the level)."""
    if not 0 < level < 1:
        raise ValueError("interval level must be between 0 and 1")
    scores = cqr_scores(y, q_lo, q_hi)
    return QuantileInterval("cqr", float(level), quantile_or_largest(scores, level), [float(v) for v in quantiles], int(len(scores)),
                            residuals_from, lower_bound)


def nested_check_cqr(y, q_lo, q_hi, folds, di, inside_aoa, *, level: float, quantiles,
                     lower_bound: float | None = 0.0, di_bins: int = 4) -> dict:
    """Held-out coverage of CQR: for each fold, ``q`` from the other folds' scores, applied to it."""
    y, q_lo, q_hi, folds = (np.asarray(a) for a in (y, q_lo, q_hi, folds))
    lower_all, upper_all = np.zeros(len(y)), np.zeros(len(y))
    for k in np.unique(folds):
        test = folds == k
        iv = calibrate_cqr(y[~test], q_lo[~test], q_hi[~test], level=level, quantiles=quantiles,
                           lower_bound=lower_bound)
        lower_all[test], upper_all[test] = iv.apply(q_lo[test], q_hi[test])
    return _check_result("cqr", level, y, lower_all, upper_all, np.asarray(di, dtype=float), inside_aoa, folds,
                         di_bins)


def _check_result(method, level, y, lower, upper, di, inside_aoa, folds, di_bins) -> dict:
    """A held-out check's report (:func:`_summary` by DI quantile bins) with its per-plot arrays."""
    covered, width = (y >= lower) & (y <= upper), upper - lower
    edges = np.unique(np.quantile(di, np.arange(1, di_bins) / di_bins)) if di_bins > 1 else np.array([])
    out = {"method": method, "level": level,
           **_summary(covered, width, di, np.asarray(inside_aoa, bool), folds, edges)}
    out["arrays"] = {"lower": lower, "upper": upper, "covered": covered, "width": width}
    return out


def _summary(covered, width, di, inside, folds, di_edges) -> dict:
    from scipy.stats import spearmanr

    def part(mask):
        n = int(mask.sum())
        if n == 0:
            return {"n": 0, "coverage": None, "mean_width": None, "sd_width": None}
        return {"n": n, "coverage": float(covered[mask].mean()), "mean_width": float(width[mask].mean()),
                "sd_width": float(width[mask].std())}

    everyone = np.ones(len(covered), dtype=bool)
    which = np.searchsorted(di_edges, di, side="right")
    by_bin = []
    for b in range(len(di_edges) + 1):
        lo = None if b == 0 else float(di_edges[b - 1])
        hi = None if b == len(di_edges) else float(di_edges[b])
        by_bin.append({"di_from": lo, "di_to": hi, **part(which == b)})
    rho = spearmanr(width, di).statistic if np.ptp(width) > 0 and np.ptp(di) > 0 else math.nan
    return {
        **part(everyone),
        "width_quantiles": {str(p): float(np.quantile(width, p)) for p in (0.05, 0.25, 0.5, 0.75, 0.95)},
        "width_di_spearman": float(rho),
        "inside_aoa": part(inside), "outside_aoa": part(~inside),
        "per_fold": [{"fold": int(k), **part(folds == k)} for k in np.unique(folds)],
        "by_di_bin": by_bin,
    }


def fold_difficulties(y: np.ndarray, oof: np.ndarray, nbrs: TrainingNeighbours,
                      neighbours: int = DEFAULT_NEIGHBOURS) -> list:
    """[(fold, s_cal, di_cal, s_test, di_test)]: the difficulties :func:`nested_check` uses per fold.

    They depend on neither the method, the level nor the bins, so a caller checking several of
    those on the same residuals computes them once and passes them as ``difficulties``.
    """
    r = np.abs(np.asarray(y, dtype=float) - np.asarray(oof, dtype=float))
    value = []
    for k in np.unique(nbrs.folds):
        test = nbrs.folds == k
        s_cal, di_cal = location_difficulty(r, nbrs, neighbours, rows=~test, exclude=k)
        s_t, di_t = location_difficulty(r, nbrs, neighbours, rows=test)
        value.append((k, s_cal, di_cal, s_t, di_t))
    return value


def nested_check(y: np.ndarray, oof: np.ndarray, nbrs: TrainingNeighbours, inside_aoa: np.ndarray, *,
                 level: float, method: str = "normalized", bins: int = DEFAULT_BINS,
                 neighbours: int = DEFAULT_NEIGHBOURS, lower_bound: float | None = 0.0, di_bins: int = 4,
                 difficulties: list | None = None) -> dict:
    """Coverage of ``method`` measured only on data not used to calibrate it.

    For each fold k: calibrate on the plots of the other folds (their |OOF residual|, with σ from
    neighbours that skip fold k as well as their own fold), then evaluate the interval on fold k
    (its OOF prediction, σ from its neighbours in the other folds). ``nbrs``: the plots'
    neighbours under the CV folds (:func:`sinks.learn.aoa.training_neighbours`);
    ``difficulties`` their :func:`fold_difficulties`, when already computed.
    Returns coverage and width overall, per fold, inside / outside the AOA and by DI quartile.
    """
    y, oof, folds = np.asarray(y, dtype=float), np.asarray(oof, dtype=float), np.asarray(nbrs.folds)
    r = np.abs(y - oof)
    lower_all, upper_all = np.zeros(len(y)), np.zeros(len(y))
    di_test = np.zeros(len(y))
    if difficulties is None:
        difficulties = fold_difficulties(y, oof, nbrs, neighbours)
    for k, s_cal, di_cal, s_t, di_t in difficulties:
        test, cal = folds == k, folds != k
        iv = calibrate_adaptive(r[cal], s_cal, di_cal, level=level, method=method, bins=bins,
                                neighbours=neighbours, lower_bound=lower_bound)
        lower_all[test], upper_all[test] = iv.apply(oof[test], s_t, di_t)
        di_test[test] = di_t
    return _check_result(method, level, y, lower_all, upper_all, di_test, inside_aoa, folds, di_bins)
