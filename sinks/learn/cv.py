"""Cross-validation schemes side by side: random K-fold, spatial blocks, kNNDM; out-of-fold metrics.

Three ways to hold plots out, each giving out-of-fold (OOF) predictions for every plot:

- **random** K-fold (``KFold``, shuffled): the plots held out are as close to the training plots
  as the plots are to each other. It measures accuracy *at the plots*, and over-states map
  accuracy when plots are clustered or the target is spatially autocorrelated (Ploton et al. 2020,
  *Nat. Commun.* 11:4540).
- **blocks**: every plot falls in a square block of ``block_size`` CRS units and whole blocks
  are kept in one fold (Roberts et al. 2017, *Ecography* 40:913-929; Valavi et al. 2019 blockCV).
  When the recipe gives no block size it is the practical range of an empirical variogram of the
  target (:func:`suggest_block_size`), the distance beyond which plots no longer resemble each
  other, as blockCV's ``cv_spatial_autocor`` suggests.
- **knndm**: folds built by :mod:`sinks.learn.knndm` (Linnenbrink et al. 2024) so that the
  distance from each held-out plot to its nearest training plot is distributed like the distance
  from a map pixel to its nearest plot.

:func:`fold_scores` gives R², RMSE, relative RMSE, MAE and bias per fold; :func:`score` the same
over all OOF predictions pooled (the "global" score CAST recommends for unbalanced folds).
Pooled MSE, MAE and bias are the size-weighted means of the per-fold ones; R² is not an average.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import GroupKFold, KFold
from tqdm.auto import tqdm

from sinks.errors import InputError
from sinks.learn.estimators import fit_weighted

#: The validation schemes a recipe can name.
SCHEMES = ("random", "blocks", "knndm")
#: Plots the empirical variogram is computed on at most (a seeded random subsample above it:
#: 2,000 plots give 2 million pairs, plenty for 15 lags).
VARIOGRAM_MAX_POINTS = 2000
#: Fewest non-empty blocks per fold a suggested block size keeps (it is shrunk until it does).
MIN_BLOCKS_PER_FOLD = 2


def median_nearest_neighbour(x: np.ndarray, y: np.ndarray) -> float | None:
    """The median distance (units of ``x``, ``y``) from each plot to its nearest other plot at another
    location; None with fewer than two locations. Blocks smaller than it hold one plot each, and
    block CV is then random CV."""
    from scipy.spatial import cKDTree

    xy = np.unique(np.column_stack([x, y]), axis=0)
    if len(xy) < 2:
        return None
    distances, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(distances[:, 1]))


def spatial_blocks(x: np.ndarray, y: np.ndarray, block_size: float) -> np.ndarray:
    """Integer id of the square block (side ``block_size``, CRS units) containing each point."""
    if block_size <= 0:
        raise InputError("spatial CV block size must be positive (CRS units, e.g. metres)")
    col = np.floor((np.asarray(x) - np.min(x)) / block_size).astype(np.int64)
    row = np.floor((np.asarray(y) - np.min(y)) / block_size).astype(np.int64)
    return row * (col.max() + 1) + col


def fold_ids(n: int, *, folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold number (0..folds-1) of each sample: random K-fold, or grouped (whole groups) K-fold."""
    if groups is None:
        splitter, args = KFold(folds, shuffle=True, random_state=seed), ()
    else:
        n_groups = len(np.unique(groups))
        if n_groups < folds:
            raise InputError(
                f"spatial CV needs at least {folds} blocks with samples but found {n_groups}; "
                "use a smaller block size or fewer folds"
            )
        splitter, args = GroupKFold(folds, shuffle=True, random_state=seed), (None, groups)
    ids = np.empty(n, dtype=np.int64)
    for k, (_, test) in enumerate(splitter.split(np.zeros((n, 1)), *args)):
        ids[test] = k
    return ids


@dataclass(frozen=True)
class Scores:
    """Out-of-fold accuracy of one CV scheme (target units; ``rel_rmse`` = RMSE / mean observed)."""

    scheme: str
    folds: int
    n: int
    r2: float
    rmse: float
    mae: float
    bias: float
    rel_rmse: float = math.nan

    def as_dict(self) -> dict:
        return asdict(self)


def _fold_threads(estimator, n_folds: int) -> tuple[int, int]:
    """(folds fitted at once, threads per fit) for an XGBoost estimator; (1, 0) for any other.

    XGBoost's OpenMP threads meet at a barrier many times per tree, so one fit on several threads
    is slowed badly when another process shares the cores (measured on a shared 2-core machine: one
    fit of 80,000 x 30 took 3 s on one thread, 3-40 s on two). Fitting the folds side by side on one
    thread each keeps the same total threads (the estimator's ``n_jobs``) without those barriers.
    XGBoost's predictions do not depend on its thread count, so the OOF predictions are unchanged.
    Other estimators are fitted one fold after another with their own threads, as before.
    """
    try:
        from xgboost import XGBModel
    except ImportError:  # pragma: no cover - xgboost is a dependency
        return 1, 0
    if not isinstance(estimator, XGBModel) or n_folds < 2:
        return 1, 0
    from sinks.threads import effective_n_jobs

    threads = effective_n_jobs(estimator.get_params().get("n_jobs"))
    at_once = min(threads, n_folds)
    return at_once, max(1, threads // at_once)


def fold_weights(sample_weight, key) -> np.ndarray | None:
    """The weights of the fits made for fold ``key`` (or ``"all"``: the final fit).

    ``sample_weight``: None, one weight per plot used by every fit, or a mapping from each fold id
    (and ``"all"``) to one weight per plot, whose entries on fold ``key`` itself are never read
    (:func:`sinks.learn.weights.nested_weights`: weights that never saw that fold's targets).
    """
    if sample_weight is None or isinstance(sample_weight, np.ndarray):
        return sample_weight
    return np.asarray(sample_weight[key], dtype=float)


def cross_validate(estimator, X: np.ndarray, y: np.ndarray, folds: np.ndarray, *, scheme: str,
                   progress: bool = True, sample_weight=None) -> tuple[Scores, np.ndarray]:
    """Fit a clone per fold (with the training plots' ``sample_weight``, if given: see
    :func:`fold_weights`); return the pooled (unweighted) scores and the out-of-fold predictions.

    XGBoost folds are fitted side by side, each on its share of the estimator's threads
    (:func:`_fold_threads`); the result is the same as fitting them one after another.
    """
    oof = fold_predictions(estimator, X, y, folds, scheme=scheme, progress=progress,
                           sample_weight=sample_weight)[:, 0]
    return score(y, oof, scheme=scheme, folds=len(np.unique(folds))), oof


def fold_predictions(estimator, X: np.ndarray, y: np.ndarray, folds: np.ndarray, *, scheme: str,
                     progress: bool = True, sample_weight=None, predict=None) -> np.ndarray:
    """Out-of-fold predictions, (n, m): ``predict(model, X_test)`` of each fold's model (default its
    ``predict``, m = 1; e.g. the median and two conditional quantiles for CQR)."""
    ids = np.unique(folds)
    at_once, threads = _fold_threads(estimator, len(ids))

    def fit_fold(k):
        test = folds == k
        weight = fold_weights(sample_weight, k)
        fit = {} if weight is None else {"sample_weight": weight[~test]}
        model = clone(estimator)
        if threads:
            model.set_params(n_jobs=threads)
        fit_weighted(model, X[~test], y[~test], **fit)
        values = model.predict(X[test]) if predict is None else predict(model, X[test])
        return test, np.asarray(values, dtype=float).reshape(int(test.sum()), -1)

    out = None
    with tqdm(total=len(ids), desc=f"{scheme} CV", unit="fold", disable=not progress, leave=False) as bar:
        if at_once <= 1:
            results = (fit_fold(k) for k in ids)
        else:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=at_once)  # XGBoost releases the GIL
            results = pool.map(fit_fold, ids)
        try:
            for test, pred in results:
                if out is None:
                    out = np.full((len(y), pred.shape[1]), np.nan)
                out[test] = pred
                bar.update()
        finally:
            if at_once > 1:
                pool.shutdown()
    return out


def score(y: np.ndarray, pred: np.ndarray, *, scheme: str, folds: int = 0) -> Scores:
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    rmse = float(np.sqrt(mean_squared_error(y, pred)))
    mean = float(np.mean(y))
    r2 = float(r2_score(y, pred)) if len(y) > 1 and np.ptp(y) > 0 else math.nan
    return Scores(
        scheme=scheme, folds=folds, n=len(y), r2=r2, rmse=rmse, mae=float(mean_absolute_error(y, pred)),
        bias=float(np.mean(pred - y)), rel_rmse=rmse / mean if mean != 0 else math.nan,
    )


def fold_scores(y: np.ndarray, pred: np.ndarray, folds: np.ndarray) -> list[dict]:
    """One row per fold: fold, n, r2, rmse, rel_rmse (RMSE / the fold's mean observed), mae, bias.

    R² of a fold is NaN when its observations are constant (or it has a single plot).
    """
    rows = []
    for k in np.unique(folds):
        test = folds == k
        s = score(y[test], pred[test], scheme="", folds=1).as_dict()
        rows.append({"fold": int(k), **{key: s[key] for key in ("n", "r2", "rmse", "rel_rmse", "mae", "bias")}})
    return rows


# ---- variogram and block size ---------------------------------------------------------------------


@dataclass(frozen=True)
class Variogram:
    """An empirical semivariogram of a variable at plot locations and the model fitted to it.

    ``range`` is the *practical* range (CRS units): where the fitted model reaches 95 % of its sill
    (the range parameter itself for the spherical model, 3 x the scale for the exponential one).
    ``model`` is ``"spherical"``, ``"exponential"`` or ``"none"`` (no fit: see ``note``).
    """

    model: str
    range: float
    nugget: float
    sill: float  # partial sill (total sill = nugget + sill)
    lags: list = field(default_factory=list)
    gamma: list = field(default_factory=list)
    pairs: list = field(default_factory=list)
    cutoff: float = math.nan
    n_points: int = 0
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _spherical(h, nugget, sill, a):
    r = np.minimum(h / a, 1.0)
    return nugget + sill * (1.5 * r - 0.5 * r**3)


def _exponential(h, nugget, sill, a):
    return nugget + sill * (1.0 - np.exp(-3.0 * h / a))


VARIOGRAM_MODELS = {"spherical": _spherical, "exponential": _exponential}


def empirical_variogram(x, y, z, *, n_lags: int = 15, cutoff: float | None = None,
                        max_points: int = VARIOGRAM_MAX_POINTS, seed: int = 0):
    """(lag centres, semivariance, pair counts, cutoff, points used) of ``z`` at ``(x, y)``.

    Classical (Matheron) estimator, ``n_lags`` equal lag classes up to ``cutoff`` (default one
    third of the bounding-box diagonal, as gstat). Above ``max_points`` plots a seeded random
    subsample is used. Empty lag classes are dropped.
    """
    from scipy.spatial.distance import pdist

    x, y, z = (np.asarray(a, dtype=float) for a in (x, y, z))
    if len(z) > max_points:
        pick = np.sort(np.random.default_rng(seed).choice(len(z), max_points, replace=False))
        x, y, z = x[pick], y[pick], z[pick]
    if cutoff is None:
        cutoff = math.hypot(np.ptp(x), np.ptp(y)) / 3
    xy = np.column_stack([x, y])
    d = pdist(xy)
    sq = 0.5 * pdist(z[:, None], "sqeuclidean")
    edges = np.linspace(0, cutoff, n_lags + 1)
    which = np.digitize(d, edges) - 1
    inside = (which >= 0) & (which < n_lags) & (d > 0)
    counts = np.bincount(which[inside], minlength=n_lags)
    sums = np.bincount(which[inside], weights=sq[inside], minlength=n_lags)
    dsum = np.bincount(which[inside], weights=d[inside], minlength=n_lags)
    keep = counts > 0
    return dsum[keep] / counts[keep], sums[keep] / counts[keep], counts[keep], float(cutoff), len(z)


def fit_variogram(x, y, z, *, n_lags: int = 15, cutoff: float | None = None,
                  max_points: int = VARIOGRAM_MAX_POINTS, seed: int = 0) -> Variogram:
    """Fit spherical and exponential models (with nugget) to the empirical variogram of ``z``.

    Weighted least squares (weights = pairs per lag, scipy ``curve_fit``); the model with the
    smaller weighted residual sum of squares is kept. A range that runs into the upper bound
    (twice the cutoff) means no sill was reached within the cutoff: reported in ``note``.
    """
    from scipy.optimize import curve_fit

    lags, gamma, pairs, cutoff, used = empirical_variogram(x, y, z, n_lags=n_lags, cutoff=cutoff,
                                                           max_points=max_points, seed=seed)
    base = {"lags": lags.tolist(), "gamma": gamma.tolist(), "pairs": pairs.astype(int).tolist(),
            "cutoff": cutoff, "n_points": used}
    if len(lags) < 4 or not np.isfinite(gamma).all() or gamma.max() <= 0:
        return Variogram("none", math.nan, math.nan, math.nan, **base,
                         note="too few distance classes with plot pairs to fit a variogram")
    var = float(np.max(gamma))
    sigma = 1.0 / np.sqrt(pairs)
    best = None
    for name, fn in VARIOGRAM_MODELS.items():
        p0 = (float(gamma[0]) * 0.5, var * 0.5, cutoff / 2)
        bounds = ([0.0, 0.0, lags[0] / 2], [var * 2, var * 4, cutoff * 2])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _ = curve_fit(fn, lags, gamma, p0=p0, bounds=bounds, sigma=sigma, maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum(pairs * (fn(lags, *params) - gamma) ** 2))
        if best is None or sse < best[0]:
            best = (sse, name, params)
    if best is None:
        return Variogram("none", math.nan, math.nan, math.nan, **base, note="the variogram fit did not converge")
    _, name, (nugget, sill, a) = best
    note = ""
    if a >= cutoff * 2 * 0.999:
        note = "the fitted range runs to the fit's bound (twice the cutoff): no sill within the cutoff"
    elif sill < 0.05 * (nugget + sill):
        note = "nearly pure nugget: little spatial autocorrelation at the plot spacing"
    return Variogram(name, float(a), float(nugget), float(sill), **base, note=note)


def suggest_block_size(x, y, z, *, folds: int, seed: int = 0) -> tuple[float, Variogram, str]:
    """Block side for spatial block CV from the variogram range of ``z``: (size, variogram, note).

    The size is the fitted practical range, shrunk (x 0.8 at a time) until the plots fall in at
    least ``MIN_BLOCKS_PER_FOLD x folds`` non-empty blocks; without a usable fit it is one third
    of the cutoff. ``note`` says which.
    """
    vg = fit_variogram(x, y, z, seed=seed)
    if vg.model == "none" or not np.isfinite(vg.range) or vg.range <= 0:
        size, note = vg.cutoff / 3, f"no variogram fit ({vg.note}); one third of the {vg.cutoff:.4g} cutoff"
    else:
        size, note = vg.range, f"{vg.model} variogram practical range"
    need = MIN_BLOCKS_PER_FOLD * folds
    shrunk = False
    for _ in range(60):
        if len(np.unique(spatial_blocks(x, y, size))) >= need:
            break
        size *= 0.8
        shrunk = True
    if shrunk:
        note += f", shrunk to keep at least {need} non-empty blocks for {folds} folds"
    return float(size), vg, note
