"""kNNDM cross-validation: k-fold nearest-neighbour distance matching.

Linnenbrink, Milà, Ludwig & Meyer (2024), "kNNDM CV: k-fold nearest-neighbour distance matching
cross-validation for map accuracy estimation", *Geosci. Model Dev.* 17:5897-5912, following the
algorithm of the R package CAST (``knndm()``, geographical space, Euclidean distances); this is
an independent Python implementation, not a translation of CAST's code.

The idea: a map is used at prediction locations (pixels of the prediction area), each some
distance away from its nearest training plot. Cross-validation is honest for the map when the
distance from each held-out plot to its nearest training plot (in the other folds) is
distributed like the distance from a map pixel to its nearest plot. kNNDM clusters the plots
into ``q`` clusters for a range of ``q``, merges the clusters into ``k`` folds, and keeps the
fold assignment whose test-to-train nearest-neighbour distance (NND) distribution is closest,
by the Wasserstein distance ``W``, to the prediction-to-sample NND distribution.

Distances are Euclidean in projected coordinates (CRS units, e.g. metres). A geographic CRS
(degrees) is refused: reproject plots and prediction points first (e.g. to the UTM zone, or with
:func:`metric_coordinates`, which ``sinks train`` uses for a spec on a geographic grid).

Names follow CAST: ``Gij`` prediction-to-sample NNDs, ``Gj`` sample-to-sample NNDs (each plot to
its nearest other plot: leave-one-out), ``Gjstar`` test-to-train NNDs of a fold assignment.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from scipy.cluster.hierarchy import linkage
from scipy.spatial import cKDTree
from sklearn.model_selection import BaseCrossValidator

from sinks.errors import InputError

__all__ = [
    "GeoDistances",
    "KNNDMResult",
    "KNNDMSplit",
    "cv_distances",
    "fold_wasserstein",
    "grid_prediction_points",
    "knndm_folds",
    "metric_coordinates",
    "nearest_neighbour_distances",
    "prediction_to_sample_distances",
    "sample_to_sample_distances",
]

#: Prediction points CAST's knndm samples from a model domain (``samplesize = 1000``).
DEFAULT_PREDICTION_SAMPLE = 1000
#: Prediction points given as an array are used as they are up to this many; above it a seeded
#: random subsample of this size is used (the ECDF of 10^4 points is within ~0.014 of the
#: population's, by the DKW inequality at 95 %).
MAX_PREDICTION_POINTS = 10_000
#: Up to this many plots the clustering is done on the plots themselves, exactly as CAST does
#: (Ward on the full distance matrix: O(n^2) memory, ~1 s at 4,000 plots). Above it the plots
#: are first grouped into about ``MICRO_CLUSTERS`` compact k-d-tree cells (see ``knndm_folds``).
EXACT_LIMIT = 4000
MICRO_CLUSTERS = 2048
#: Above this many plots, candidate fold assignments are scored on a seeded random subsample of
#: this many held-out plots (all plots remain as training neighbours); the chosen assignment's
#: W is then recomputed on all plots.
MAX_EVAL_POINTS = 20_000
#: CAST's nk_len: how many cluster numbers q to try, log-spaced from k to n - 2.
N_CANDIDATES = 100
#: CAST's significance level for "the plots are already representative" (one-sided KS test).
KS_ALPHA = 0.05


# --------------------------------------------------------------------------------------------
# input checks


def _coords(xy, what: str, *, min_rows: int = 1) -> np.ndarray:
    try:
        arr = np.asarray(xy, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InputError(f"kNNDM: {what} must be numeric x/y coordinates ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"kNNDM: {what} must be an (n, 2) array of x/y coordinates, got shape {arr.shape}")
    if len(arr) < min_rows:
        if what.startswith("prediction"):
            raise InputError("kNNDM: the prediction area is empty (no prediction points); give the spec's grid "
                             "or a mask with at least one pixel to predict")
        raise InputError(f"kNNDM: {what} has {len(arr)} rows but at least {min_rows} are needed")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(str(r) for r in rows[:5]) + (" ..." if len(rows) > 5 else "")
        raise InputError(f"kNNDM: {what} has {len(rows)} row(s) with NaN or infinite coordinates "
                         f"(rows {shown}); drop or fix them first")
    return arr


def _check_crs(crs) -> None:
    if crs is None:
        return
    from pyproj import CRS

    try:
        parsed = CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises its own CRSError
        raise InputError(f"kNNDM: crs {crs!r} is not a CRS pyproj knows ({exc})") from None
    if parsed.is_geographic:
        raise InputError(
            f"kNNDM: distances need projected coordinates, but {parsed.to_string()} is a geographic CRS "
            "(degrees); reproject the plots and prediction points first, e.g. to their UTM zone "
            "(GeoDataFrame.to_crs(gdf.estimate_utm_crs()))")


def metric_coordinates(crs, xy, *others):
    """Coordinates in metres for distances: ``(xy_m, *others_m, proj)``.

    For a projected ``crs`` in metres (or None) the arrays come back as they are and ``proj`` is
    None; in another linear unit (US survey feet, say) they are scaled to metres and ``proj`` says
    so. For a geographic one (longitude, latitude in degrees) every array is projected to an azimuthal
    equidistant projection centred on ``xy``'s mean position (circular mean of the longitudes,
    so plots across the antimeridian centre correctly), and ``proj`` is its PROJ string.
    Distances from the centre are then exact; the scale across is c / sin c (c the angular
    distance from the centre; Snyder 1987, *Map Projections: A Working Manual*, USGS Professional
    Paper 1395, azimuthal equidistant, pp. 191-202), 1.001 at 500 km, so any distance within
    500 km of the centre is within 0.1 % of the great-circle one: ample for the county-to-province
    maps sinks makes. CAST measures great-circle distances instead (``sf``).
    """
    arrays = [np.asarray(a, dtype=float).reshape(-1, 2) for a in (xy, *others)]
    from pyproj import CRS, Transformer

    parsed = None if crs is None else CRS.from_user_input(crs)
    if parsed is None or not parsed.is_geographic:
        factor = 1.0 if parsed is None or not parsed.axis_info else parsed.axis_info[0].unit_conversion_factor
        if factor in (None, 1.0):
            return (*arrays, None)
        return (*(a * factor for a in arrays), f"{parsed.to_string()} scaled by {factor:g} to metres")
    lonlat = Transformer.from_crs(parsed, "EPSG:4326", always_xy=True)
    lon, lat = lonlat.transform(arrays[0][:, 0], arrays[0][:, 1])
    angle = np.radians(lon)
    lon0 = float(np.degrees(np.arctan2(np.sin(angle).mean(), np.cos(angle).mean())))
    proj = f"+proj=aeqd +lat_0={float(np.mean(lat)):.6f} +lon_0={lon0:.6f} +datum=WGS84 +units=m +no_defs"
    to_metres = Transformer.from_crs(parsed, CRS.from_proj4(proj), always_xy=True)
    out = [np.column_stack(to_metres.transform(a[:, 0], a[:, 1])) if len(a) else a for a in arrays]
    return (*out, proj)


def _workers(n_jobs) -> int:
    return 1 if n_jobs is None else int(n_jobs)


# --------------------------------------------------------------------------------------------
# nearest-neighbour distances (CAST geodist)


def prediction_to_sample_distances(train_xy, prediction_xy, *, n_jobs=None) -> np.ndarray:
    """``Gij``: distance from each prediction point to its nearest training plot."""
    train = _coords(train_xy, "train_xy")
    pred = _coords(prediction_xy, "prediction points")
    d, _ = cKDTree(train).query(pred, k=1, workers=_workers(n_jobs))
    return d


def sample_to_sample_distances(train_xy, *, n_jobs=None) -> np.ndarray:
    """``Gj``: distance from each plot to its nearest other plot (the leave-one-out NND)."""
    train = _coords(train_xy, "train_xy", min_rows=2)
    d, _ = cKDTree(train).query(train, k=2, workers=_workers(n_jobs))
    return d[:, 1]


def cv_distances(train_xy, folds, *, subset=None, n_jobs=None) -> np.ndarray:
    """``Gjstar``: distance from each held-out plot to its nearest plot in the other folds.

    ``folds`` is the fold id of each plot. With ``subset`` (indices), only those plots are
    measured (all plots still count as training neighbours) and an array of ``len(subset)``
    distances is returned.
    """
    xy = _coords(train_xy, "train_xy", min_rows=2)
    folds = np.asarray(folds)
    if folds.shape != (len(xy),):
        raise InputError(f"kNNDM: folds has shape {folds.shape} but there are {len(xy)} plots")
    return _cv_distances(xy, folds, subset, _workers(n_jobs))


def _cv_distances(xy, folds, subset, workers) -> np.ndarray:
    ids = np.unique(folds)
    if len(ids) < 2:
        raise InputError("kNNDM: a fold assignment needs at least two folds")
    query = np.arange(len(xy)) if subset is None else np.asarray(subset)
    qfold = folds[query]
    best = np.full(len(query), np.inf)
    # One tree per fold; a held-out plot's NND is its nearest plot over the trees of the other
    # folds. The running minimum bounds each later search.
    for g in ids:
        tree = cKDTree(xy[folds == g], balanced_tree=False, compact_nodes=False)
        sel = np.flatnonzero(qfold != g)
        if not len(sel):
            continue
        bound = float(best[sel].max()) if np.isfinite(best[sel]).all() else np.inf
        d, _ = tree.query(xy[query[sel]], k=1, distance_upper_bound=bound, workers=workers)
        best[sel] = np.minimum(best[sel], d)
    return best


def fold_wasserstein(train_xy, folds, prediction_distances, *, n_jobs=None) -> float:
    """W of a fold assignment (random, blocks, kNNDM): Wasserstein-1 distance between its
    test-to-train NNDs and the prediction-to-sample NNDs ``Gij``."""
    return float(stats.wasserstein_distance(cv_distances(train_xy, folds, n_jobs=n_jobs),
                                            np.asarray(prediction_distances, dtype=float)))


@dataclass(frozen=True)
class GeoDistances:
    """The three NND distributions CAST's ``geodist`` draws, with their W statistics."""

    sample_to_sample: np.ndarray
    prediction_to_sample: np.ndarray
    cv: np.ndarray | None = None
    #: W between sample-to-sample (LOO) and prediction-to-sample NNDs.
    w_sample: float = math.nan
    #: W between the CV test-to-train and prediction-to-sample NNDs (``None`` without folds).
    w_cv: float | None = None

    def to_frame(self) -> pd.DataFrame:
        """Long table ``dist``, ``what`` (sample-to-sample, prediction-to-sample, CV-distances)."""
        parts = [("sample-to-sample", self.sample_to_sample), ("prediction-to-sample", self.prediction_to_sample)]
        if self.cv is not None:
            parts.append(("CV-distances", self.cv))
        return pd.concat([pd.DataFrame({"dist": d, "what": w}) for w, d in parts], ignore_index=True)


def nearest_neighbour_distances(train_xy, prediction_xy, folds=None, *, crs=None, n_jobs=None) -> GeoDistances:
    """Sample-to-sample, prediction-to-sample and (with ``folds``) CV test-to-train NNDs.

    ``prediction_xy`` are points of the prediction area, e.g. from :func:`grid_prediction_points`
    (a regular sample of the spec's grid or a mask). Coordinates must be projected (``crs``, when
    given, is checked).
    """
    _check_crs(crs)
    gj = sample_to_sample_distances(train_xy, n_jobs=n_jobs)
    gij = prediction_to_sample_distances(train_xy, prediction_xy, n_jobs=n_jobs)
    cv = None if folds is None else cv_distances(train_xy, folds, n_jobs=n_jobs)
    return GeoDistances(gj, gij, cv, float(stats.wasserstein_distance(gj, gij)),
                        None if cv is None else float(stats.wasserstein_distance(cv, gij)))


def grid_prediction_points(grid, *, mask=None, n: int = DEFAULT_PREDICTION_SAMPLE, sampling: str = "regular",
                           seed: int = 0) -> np.ndarray:
    """Pixel centres sampled from a grid (``TargetGrid``: ``transform``, ``width``, ``height``).

    ``mask`` (``height x width``, True where the map is predicted) restricts the sample to the
    prediction area. ``sampling="regular"`` (CAST's default) takes a regular lattice of about
    ``n`` valid pixels; ``"random"`` takes ``n`` valid pixels at random (seeded). The grid is never
    expanded to all its pixels, so a 10^7-pixel grid costs only the mask.
    """
    if sampling not in ("regular", "random"):
        raise InputError(f"kNNDM: sampling must be 'regular' or 'random', not {sampling!r}")
    if n < 1:
        raise InputError("kNNDM: the prediction sample size n must be at least 1")
    if not all(hasattr(grid, a) for a in ("height", "width", "transform")):
        raise InputError(f"kNNDM: the grid must be resolved to pixels (transform, width, height), not a "
                         f"{type(grid).__name__}; for a feature spec use sinks.covariates.local.target_grid(spec)")
    height, width, t = int(grid.height), int(grid.width), grid.transform
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (height, width):
            raise InputError(f"kNNDM: the mask has shape {mask.shape} but the grid is {height} x {width}")
        n_valid = int(mask.sum())
    else:
        n_valid = height * width
    if n_valid == 0:
        raise InputError("kNNDM: the prediction area is empty (the mask has no pixel to predict)")
    if sampling == "regular":
        step = max(1.0, math.sqrt(n_valid / n))
        rows = np.arange(step / 2, height, step).astype(np.int64)
        cols = np.arange(step / 2, width, step).astype(np.int64)
        rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
        if mask is not None:
            keep = mask[rr, cc]
            rr, cc = rr[keep], cc[keep]
        if len(rr) == 0:  # a mask thinner than the lattice: fall back to a random sample
            return grid_prediction_points(grid, mask=mask, n=n, sampling="random", seed=seed)
    else:
        rng = np.random.default_rng(seed)
        size = min(n, n_valid)
        if mask is None:
            flat = rng.choice(height * width, size=size, replace=False)
        else:
            flat = rng.choice(np.flatnonzero(mask.ravel()), size=size, replace=False)
        rr, cc = np.divmod(flat, width)
    x = t.c + (cc + 0.5) * t.a + (rr + 0.5) * t.b
    y = t.f + (cc + 0.5) * t.d + (rr + 0.5) * t.e
    return np.column_stack([x, y])


# --------------------------------------------------------------------------------------------
# clustering hierarchies


def _kd_levels(xy: np.ndarray) -> list[np.ndarray]:
    """Nested partitions of the plots by recursive median bisection (a k-d tree to leaves of 1).

    Level ``L`` splits every cell of level ``L - 1`` with two or more plots at the median of its
    longer side, so level ``L`` has up to ``2**L`` compact cells of about ``n / 2**L`` plots.
    Returns the cell id of each plot at every level (level 0: all in one cell).
    """
    n = len(xy)
    perm = np.arange(n)
    cell = np.zeros(n, dtype=np.int64)  # cell id of the plot at each sorted position
    levels = [np.zeros(n, dtype=np.int64)]
    while True:
        _, start, size = np.unique(cell, return_index=True, return_counts=True)
        if size.max() <= 1:
            break
        x, y = xy[perm, 0], xy[perm, 1]
        ext_x = np.maximum.reduceat(x, start) - np.minimum.reduceat(x, start)
        ext_y = np.maximum.reduceat(y, start) - np.minimum.reduceat(y, start)
        seg = np.repeat(np.arange(len(start)), size)
        key = np.where((ext_x >= ext_y)[seg], x, y)
        order = np.lexsort((key, seg))
        perm, seg = perm[order], seg[order]
        rank = np.arange(n) - start[seg]
        cell = 2 * seg + (rank >= size[seg] // 2)
        labels = np.empty(n, dtype=np.int64)
        labels[perm] = cell
        levels.append(np.unique(labels, return_inverse=True)[1])
    return levels


def _weighted_ward(centres: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Ward agglomeration of weighted points (clusters given by centroid and size).

    Ward's merge cost depends only on the sizes and centroids of the two clusters
    (d^2 = 2 n_a n_b / (n_a + n_b) |c_a - c_b|^2, the Lance-Williams invariant), so starting from
    micro-clusters gives exactly the Ward tree of the points constrained to keep each
    micro-cluster whole. Nearest-neighbour-chain algorithm, O(m^2) time and memory. Returns the
    merges as (representative a, representative b) pairs in increasing order of height.
    """
    m = len(centres)
    w = weights.astype(float)
    sq = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    d = 2.0 * w[:, None] * w[None, :] / (w[:, None] + w[None, :]) * sq
    np.fill_diagonal(d, np.inf)
    size = w.copy()
    active = np.ones(m, dtype=bool)
    merges, heights = [], []
    chain: list[int] = []
    while len(merges) < m - 1:
        if not chain:
            chain.append(int(np.flatnonzero(active)[0]))
        a = chain[-1]
        b = int(np.argmin(d[a]))
        if len(chain) > 1 and d[a, chain[-2]] <= d[a, b]:
            b = chain[-2]
        if len(chain) > 1 and b == chain[-2]:
            chain.pop()
            chain.pop()
            dab = d[a, b]
            na, nb = size[a], size[b]
            new = ((size + na) * d[a] + (size + nb) * d[b] - size * dab) / (size + na + nb)
            new[~active] = np.inf
            d[b, :] = new
            d[:, b] = new
            d[b, b] = np.inf
            d[a, :] = np.inf
            d[:, a] = np.inf
            active[a] = False
            size[b] = na + nb
            merges.append((a, b))
            heights.append(dab)
        else:
            chain.append(b)
    order = np.argsort(np.asarray(heights), kind="stable")
    return np.asarray(merges, dtype=np.int64).reshape(-1, 2)[order]


def _ward_pairs_exact(xy: np.ndarray) -> np.ndarray:
    """Ward (CAST: hclust ward.D2 on Euclidean distances) on the plots; merges as pairs of
    representative plots in merge order."""
    z = linkage(xy, method="ward")
    n = len(xy)
    rep = np.concatenate([np.arange(n), np.empty(n - 1, dtype=np.int64)])
    pairs = np.empty((n - 1, 2), dtype=np.int64)
    for t, (i, j) in enumerate(z[:, :2].astype(np.int64)):
        pairs[t] = rep[i], rep[j]
        rep[n + t] = rep[j]
    return pairs


def _cuts(pairs: np.ndarray, m: int, qs) -> dict[int, np.ndarray]:
    """Labels (0..q-1) of the ``m`` base units when the hierarchy is cut into ``q`` clusters."""
    parent = np.arange(m)
    out: dict[int, np.ndarray] = {}
    done = 0
    for q in sorted(set(int(q) for q in qs), reverse=True):
        for a, b in pairs[done:m - q]:
            ra, rb = a, b
            while parent[ra] != ra:
                ra = parent[ra]
            while parent[rb] != rb:
                rb = parent[rb]
            parent[ra] = rb
        done = max(done, m - q)
        root = parent.copy()
        while True:
            nxt = root[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
        out[q] = np.unique(root, return_inverse=True)[1]
    return out


# --------------------------------------------------------------------------------------------
# kNNDM


@dataclass(frozen=True)
class KNNDMResult:
    """kNNDM folds with the evidence for them."""

    #: fold id (0..k-1) of each plot
    folds: np.ndarray
    #: Wasserstein distance between the test-to-train (``Gjstar``) and prediction-to-sample
    #: (``Gij``) NND distributions of the chosen folds
    W: float
    #: number of clusters of the chosen configuration; None when random K-fold was returned
    q: int | None
    k: int
    #: "kNNDM" or "random" (the plots are already representative: random K-fold, as CAST)
    method: str
    clustering: str
    #: one row per candidate: q, W (NaN when invalid), max_fold_share, valid
    candidates: pd.DataFrame
    Gij: np.ndarray = field(repr=False)
    Gj: np.ndarray = field(repr=False)
    Gjstar: np.ndarray = field(repr=False)
    #: p-value of the one-sided KS test "sample-to-sample NNDs are smaller than prediction-to-sample"
    ks_pvalue: float = math.nan
    #: "exact" (clustering of the plots) or "micro" (of k-d-tree micro-clusters, large n)
    mode: str = "exact"

    @property
    def fold_sizes(self) -> np.ndarray:
        return np.bincount(self.folds, minlength=self.k)

    def distances(self) -> GeoDistances:
        return GeoDistances(self.Gj, self.Gij, self.Gjstar, float(stats.wasserstein_distance(self.Gj, self.Gij)),
                            self.W)


def _merge_to_folds(labels: np.ndarray, xy: np.ndarray, pc1: np.ndarray, k: int) -> np.ndarray:
    """CAST's merge: order clusters by their centroid on the first principal component; a
    cluster with at least n/k plots is a fold of its own; the others are dealt to the remaining
    folds in turn, in that order."""
    n = len(labels)
    nc = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=nc).astype(float)
    score = np.bincount(labels, weights=xy @ pc1, minlength=nc) / np.maximum(counts, 1)
    order = np.argsort(score, kind="stable")
    order = order[counts[order] > 0]
    fold_of = np.full(nc, -1, dtype=np.int64)
    big = order[counts[order] >= n / k]
    fold_of[big] = np.arange(len(big))
    small = order[counts[order] < n / k]
    rest = np.arange(len(big), k)
    if len(small):
        fold_of[small] = rest[np.arange(len(small)) % len(rest)]
    return fold_of[labels]


def _q_grid(k: int, top: int, n_candidates: int) -> np.ndarray:
    top = max(top, k)
    return np.unique(np.round(np.exp(np.linspace(math.log(k), math.log(top), n_candidates))).astype(np.int64))


def knndm_folds(train_xy, prediction_xy, k: int = 5, *, maxp: float = 0.5, clustering: str = "hierarchical",
                seed: int = 0, n_candidates: int = N_CANDIDATES, crs=None, n_jobs=None,
                exact_limit: int = EXACT_LIMIT, micro_clusters: int = MICRO_CLUSTERS,
                max_prediction_points: int = MAX_PREDICTION_POINTS,
                max_eval_points: int = MAX_EVAL_POINTS) -> KNNDMResult:
    """kNNDM fold assignment of the plots at ``train_xy`` for a map of the ``prediction_xy`` area.

    Follows CAST's ``knndm`` (geographical space, Euclidean distances):

    1. ``Gij`` = NND of prediction points to the plots, ``Gj`` = NND of each plot to the others.
       If a one-sided KS test does not find ``Gj`` smaller than ``Gij`` (p >= 0.05), the plots are
       already as close to each other as the map pixels are to them: random K-fold is returned
       (``method="random"``), as CAST does.
    2. Otherwise, for ``n_candidates`` log-spaced cluster numbers q from k to n - 2, cluster the
       plots into q clusters (Ward or k-means on the coordinates), merge them into k folds
       (:func:`_merge_to_folds`), discard assignments with a fold larger than ``maxp`` of the
       plots, and compute ``W`` = Wasserstein distance between their test-to-train NNDs and
       ``Gij``. The assignment with the smallest W is returned.

    Large n (more than ``exact_limit`` plots): the plots are first split into about
    ``micro_clusters`` compact k-d-tree cells (recursive median bisection); Ward (weighted by
    cell sizes, which is exact Ward over cells) or weighted k-means then runs on the cell
    centroids for q up to the number of cells, and finer q (up to n) are the deeper, nested
    k-d-tree levels. Candidates are scored on a seeded subsample of ``max_eval_points``
    held-out plots; the chosen one is rescored on all plots.

    ``prediction_xy`` is an (m, 2) array of points in the prediction area (use
    :func:`grid_prediction_points` for a grid or a mask) or a grid object (sampled with it);
    above ``max_prediction_points`` a seeded random subsample is used. Deterministic for a seed.
    """
    _check_crs(crs)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise InputError(f"kNNDM: k (the number of folds) must be an integer of at least 2, got {k!r}")
    if clustering not in ("hierarchical", "kmeans"):
        raise InputError(f"kNNDM: clustering must be 'hierarchical' or 'kmeans', not {clustering!r}")
    if not (1.0 / k < maxp < 1.0):
        raise InputError(f"kNNDM: maxp must lie strictly between 1/k = {1 / k:.3g} and 1, got {maxp!r}")
    if n_candidates < 1:
        raise InputError("kNNDM: n_candidates must be at least 1")
    xy = _coords(train_xy, "train_xy", min_rows=1)
    n = len(xy)
    if n < k:
        raise InputError(f"kNNDM: {n} plots cannot make {k} folds; use fewer folds or more plots")
    if hasattr(prediction_xy, "transform") and hasattr(prediction_xy, "width"):
        _check_crs(getattr(prediction_xy, "crs", None))  # a grid in degrees: its points would be too
        pred = grid_prediction_points(prediction_xy, seed=seed)
    else:
        pred = _coords(prediction_xy, "prediction points")
    rng = np.random.default_rng(seed)
    if len(pred) > max_prediction_points:
        pred = pred[np.sort(rng.choice(len(pred), max_prediction_points, replace=False))]
    workers = _workers(n_jobs)
    tree = cKDTree(xy)
    gij = tree.query(pred, k=1, workers=workers)[0]
    gj = tree.query(xy, k=2, workers=workers)[0][:, 1]
    with warnings.catch_warnings():  # "exact calculation unsuccessful, switching to asymp": fine
        warnings.simplefilter("ignore", RuntimeWarning)
        pvalue = float(stats.ks_2samp(gj, gij, alternative="greater").pvalue)
    mode = "exact" if n <= exact_limit else "micro"
    empty = pd.DataFrame({"q": pd.Series(dtype="int64"), "W": pd.Series(dtype=float),
                          "max_fold_share": pd.Series(dtype=float), "valid": pd.Series(dtype=bool)})

    if pvalue >= KS_ALPHA:
        folds = rng.permutation(np.arange(n) % k)
        gjstar = _cv_distances(xy, folds, None, workers)
        return KNNDMResult(folds, float(stats.wasserstein_distance(gjstar, gij)), None, k, "random", clustering,
                           empty, gij, gj, gjstar, pvalue, mode)

    centred = xy - xy.mean(axis=0)
    pc1 = np.linalg.svd(centred, full_matrices=False)[2][0]
    pc1 = pc1 if pc1[np.argmax(np.abs(pc1))] > 0 else -pc1  # fix the sign: deterministic order

    eval_idx = None
    if n > max_eval_points:
        eval_idx = np.sort(rng.choice(n, max_eval_points, replace=False))
    gjstar_cache = {}

    rows = []
    best = (math.inf, None, None)
    for q, labels in _candidate_labels(xy, k, clustering, seed, n_candidates, mode, micro_clusters, workers):
        folds = _merge_to_folds(labels, xy, pc1, k)
        share = float(np.bincount(folds, minlength=k).max() / n)
        valid = share <= maxp
        w = math.nan
        if valid:
            gjs = _cv_distances(xy, folds, eval_idx, workers)
            w = float(stats.wasserstein_distance(gjs, gij))
            if w < best[0]:
                best = (w, q, folds)
                gjstar_cache = {"gjs": gjs}
        rows.append((q, w, share, valid))
    table = pd.DataFrame(rows, columns=["q", "W", "max_fold_share", "valid"]).astype(
        {"q": "int64", "W": float, "max_fold_share": float, "valid": bool})
    if best[2] is None:
        raise InputError(
            f"kNNDM: every candidate fold assignment puts more than maxp = {maxp:g} of the plots in one fold "
            f"(the plots are too clustered); raise maxp or use fewer folds than k = {k}")
    w, q, folds = best
    if eval_idx is None:
        gjstar = gjstar_cache["gjs"]
    else:
        gjstar = _cv_distances(xy, folds, None, workers)
        w = float(stats.wasserstein_distance(gjstar, gij))
    return KNNDMResult(folds, w, int(q), k, "kNNDM", clustering, table, gij, gj, gjstar, pvalue, mode)


def _candidate_labels(xy, k, clustering, seed, n_candidates, mode, micro_clusters, workers=1):
    """Yield (q, cluster label of each plot) for the candidate cluster numbers."""
    n = len(xy)
    if mode == "exact":
        qs = _q_grid(k, n - 2, n_candidates)
        qs = qs[qs <= n]
        if clustering == "hierarchical":
            cuts = _cuts(_ward_pairs_exact(xy), n, qs)
            for q in qs:
                yield int(q), cuts[int(q)]
        else:
            for q in qs:
                yield int(q), _kmeans(xy, int(q), seed, workers=workers)
        return
    levels = _kd_levels(xy)
    micro_level = next((i for i, lab in enumerate(levels) if lab.max() + 1 >= micro_clusters), len(levels) - 1)
    micro = levels[micro_level]
    m = int(micro.max()) + 1
    counts = np.bincount(micro, minlength=m).astype(float)
    centres = np.column_stack([np.bincount(micro, weights=xy[:, i], minlength=m) for i in (0, 1)]) / counts[:, None]
    qs = _q_grid(k, n - 2, n_candidates)
    low = qs[qs < m]
    if clustering == "hierarchical":
        cuts = _cuts(_weighted_ward(centres, counts), m, low)
        for q in low:
            yield int(q), cuts[int(q)][micro]
    else:
        for q in low:
            yield int(q), _kmeans(centres, int(q), seed, counts, workers)[micro]
    # finer scales: the nested k-d-tree levels from the micro-clusters down to single plots
    for lab in levels[micro_level:]:
        q = int(lab.max()) + 1
        if q <= n - 2 or q == m:
            yield q, lab


def _kmeans(points, q, seed, weights=None, workers=1):
    """k-means labels: one start and at most 10 iterations, as R's ``kmeans`` defaults."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    q = min(q, len(points))
    km = KMeans(n_clusters=q, n_init=1, max_iter=10, random_state=seed, init="random" if q > 500 else "k-means++")
    with threadpool_limits(limits=max(1, workers)):
        labels = km.fit_predict(points, sample_weight=weights)
    return np.unique(labels, return_inverse=True)[1]


# --------------------------------------------------------------------------------------------
# scikit-learn splitter


class KNNDMSplit(BaseCrossValidator):
    """kNNDM K-fold cross-validator, usable wherever scikit-learn takes ``cv=``.

    Parameters
    ----------
    n_splits : number of folds k (>= 2).
    prediction_points : (m, 2) array of points in the prediction area (or a grid object with
        ``transform``/``width``/``height``), in the same projected CRS as the coordinates.
    coords : the plots' coordinates. An (n, 2) array aligned with the rows of ``X`` given to
        :meth:`split`; or a pair of column names (``("x", "y")``) or indices selecting them from
        ``X``; or None (default): the first two columns of ``X``.
    maxp, clustering, seed, n_candidates, crs, n_jobs : as :func:`knndm_folds`.

    ``split(X, y=None, groups=None)`` yields (train, test) index arrays; ``groups`` is ignored
    (kNNDM makes its own groups). Deterministic for a seed; :meth:`knndm` returns the full
    :class:`KNNDMResult` for the same ``X``.
    """

    def __init__(self, n_splits: int = 5, *, prediction_points=None, coords=None, maxp: float = 0.5,
                 clustering: str = "hierarchical", seed: int = 0, n_candidates: int = N_CANDIDATES, crs=None,
                 n_jobs=None):
        self.n_splits = n_splits
        self.prediction_points = prediction_points
        self.coords = coords
        self.maxp = maxp
        self.clustering = clustering
        self.seed = seed
        self.n_candidates = n_candidates
        self.crs = crs
        self.n_jobs = n_jobs

    def _xy(self, X) -> np.ndarray:
        c = self.coords
        if c is None or (isinstance(c, (tuple, list)) and len(c) == 2 and not np.ndim(c[0])):
            cols = (0, 1) if c is None else tuple(c)
            if X is None:
                raise InputError("kNNDM: split needs X when coords are taken from its columns")
            if hasattr(X, "iloc"):
                if all(isinstance(v, str) for v in cols):
                    missing = [v for v in cols if v not in X.columns]
                    if missing:
                        raise InputError(f"kNNDM: X has no coordinate column(s) {missing}; "
                                         f"it has {list(X.columns)[:10]}")
                    return X[list(cols)].to_numpy(dtype=float)
                return X.iloc[:, list(cols)].to_numpy(dtype=float)
            if any(isinstance(v, str) for v in cols):
                raise InputError(f"kNNDM: coords names columns {list(cols)}, which needs X as a pandas DataFrame; "
                                 "give coords as an (n, 2) array of x, y for an array X")
            arr = np.asarray(X)
            if arr.ndim != 2 or arr.shape[1] < 2:
                raise InputError("kNNDM: X must have at least two columns (x, y) when coords is not given")
            return arr[:, list(cols)].astype(float)
        xy = np.asarray(c, dtype=float)
        if X is not None and len(xy) != len(X):
            raise InputError(f"kNNDM: coords has {len(xy)} rows but X has {len(X)}; they must be aligned")
        return xy

    def knndm(self, X=None) -> KNNDMResult:
        """The :class:`KNNDMResult` behind :meth:`split` for this ``X``."""
        if self.prediction_points is None:
            raise InputError("kNNDM: KNNDMSplit needs prediction_points (points of the prediction area)")
        return knndm_folds(self._xy(X), self.prediction_points, self.n_splits, maxp=self.maxp,
                           clustering=self.clustering, seed=self.seed, n_candidates=self.n_candidates,
                           crs=self.crs, n_jobs=self.n_jobs)

    def split(self, X, y=None, groups=None):
        folds = self.knndm(X).folds
        idx = np.arange(len(folds))
        for f in range(self.n_splits):
            test = folds == f
            yield idx[~test], idx[test]

    def _iter_test_masks(self, X=None, y=None, groups=None):  # BaseCrossValidator's protocol
        folds = self.knndm(X).folds
        for f in range(self.n_splits):
            yield folds == f

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits
