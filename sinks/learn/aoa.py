"""Dissimilarity index (DI), area of applicability (AOA) and the DI -> expected-error profile.

Meyer & Pebesma (2021), "Predicting into unknown space? Estimating the area of applicability of
spatial prediction models", Methods Ecol. Evol. 12:1620-1633 (as in the R package CAST):
predictors are standardised and weighted by their importance; the DI of a location is its distance
to the nearest training sample divided by the mean distance between training samples; the
threshold is the upper whisker (largest value <= Q3 + 1.5 IQR) of the training DIs, each computed
against training samples outside its own cross-validation fold.

The error profile is CAST's ``errorProfiles`` (Meyer & Pebesma 2022, *Nat. Commun.* 13:2208): the
absolute out-of-fold error of each training plot against its cross-validation DI, fitted as a
monotone (non-decreasing) function, here by isotonic regression (CAST fits a shape-constrained
GAM). It gives a map an *expected absolute error* per pixel. Beyond the largest training DI the
profile is held at its last value, so it understates the error far outside the AOA.

The same weighted, standardised space gives each location its nearest training plot
(:meth:`AOAReference.nearest`) and each training plot its nearest plots
(:func:`training_neighbours`), which the adaptive intervals use as their difficulty measure
(:mod:`sinks.learn.intervals`).
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sinks.threads import available_cores

if TYPE_CHECKING:
    from scipy.spatial import cKDTree

#: Mean pairwise distance is taken over a seeded random subsample of this many training samples
#: above it (4,000 samples give 8 million pairs; the mean is then within a fraction of a percent).
MEAN_DISTANCE_SAMPLE = 4000
#: Rows queried at once (bounds the memory of the queries in mapping windows).
QUERY_CHUNK = 65536
#: Leaf size of the map-time k-d tree: 32 was 1.15-1.3x faster than scipy's default 16 for 10^4
#: plots in 12 dimensions, 64 no faster again (benchmarks/di.py).
QUERY_LEAFSIZE = 32
#: Above this many predictors the other-fold neighbour search (:func:`cv_neighbours`) is exact brute
#: force (BLAS distances with a running k-smallest selection, scikit-learn's ``NearestNeighbors``
#: ``algorithm="brute"``) instead of a k-d tree: in 30 dimensions a k-d tree prunes almost nothing and
#: was 2.5-4x slower than brute force at 10^5 plots (benchmarks/training.py); at 6-10 dimensions it is
#: 1.3-5x faster.
BRUTE_FORCE_FEATURES = 12
#: Brute force picks this many candidates beyond the k asked for; their exact distances are then
#: recomputed and the k nearest kept (the BLAS distances carry rounding that could swap near-ties).
_BRUTE_EXTRA = 8
#: Query rows whose exact candidate distances are recomputed at once (bounds that gather's memory).
_EXACT_CHUNK = 4096


@dataclass
class AOAReference:
    mean: np.ndarray
    sd: np.ndarray
    weights: np.ndarray
    train: np.ndarray  # standardised, weighted training predictors (n x p)
    mean_distance: float
    threshold: float
    #: column indices of categorical predictors and, for each, its training classes (sorted)
    categorical: tuple = ()
    classes: tuple = ()
    #: the map-time search space: ``(Z - centre) @ rotation.T`` rotates the transformed predictors
    #: onto their principal axes (distances unchanged; see :func:`principal_axes`); None: no rotation
    centre: np.ndarray | None = None
    rotation: np.ndarray | None = None

    def _transform(self, X: np.ndarray) -> np.ndarray:
        """Standardised, importance-weighted predictors; a categorical one as weighted one-hot columns.

        A categorical predictor with weight w becomes one column per training class plus one for a
        class no training plot has, each w / sqrt(2) where the row has that class: two rows of
        different classes (or one of an unseen class) are then w apart, as a Gower-type mismatch
        of weight w, and rows of the same class 0 apart (CAST one-hot encodes categorical
        predictors for the AOA in the same way).
        """
        X = np.asarray(X, dtype=np.float64)
        Z = (X - self.mean) / self.sd * self.weights
        Z = np.where(np.isfinite(Z), Z, 0.0)  # a missing predictor sits at the training mean
        if not self.categorical:
            return Z
        parts = [np.delete(Z, list(self.categorical), axis=1)]
        for j, classes in zip(self.categorical, self.classes):
            value, w = X[:, j], self.weights[j] / np.sqrt(2.0)
            onehot = value[:, None] == np.asarray(classes)[None, :]
            unseen = np.isfinite(value) & ~onehot.any(axis=1)
            parts += [onehot * w, unseen[:, None] * w]
        return np.hstack(parts)

    def _search_space(self, Z: np.ndarray) -> np.ndarray:
        """Transformed rows in the map-time search space (rotated; a row-wise product, no BLAS, so
        the same rows give the same bits in any process or thread count)."""
        if self.rotation is None:
            return Z
        return np.einsum("ij,kj->ik", Z - self.centre, self.rotation)

    @cached_property
    def _tree(self) -> cKDTree:
        from scipy.spatial import cKDTree  # here: a map of the target band alone never needs SciPy

        return cKDTree(self._search_space(self.train), leafsize=QUERY_LEAFSIZE)

    def nearest(self, X: np.ndarray, *, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(DI, index of the nearest training sample) of each row, exact.

        One nearest-neighbour query of a k-d tree per chunk of :data:`QUERY_CHUNK` rows (bounded
        memory); ``workers``: query threads (``cKDTree.query``). The tree is built on the training
        samples' principal axes with leaves of :data:`QUERY_LEAFSIZE` (both measured faster in
        benchmarks/di.py).

        A first pass pruned at the AOA threshold (``distance_upper_bound``) with an exact second
        pass for the rows outside was measured and gave no gain: nearly every map row is inside the
        AOA, where the pruned search visits the same leaves, and rows outside then pay twice. A
        bound from the neighbouring pixel's nearest plot gave none either (the search's cost is in
        proving the nearest one, not finding it). So the DI is exact everywhere.
        """
        X = np.asarray(X)
        di = np.empty(len(X))
        index = np.empty(len(X), dtype=np.int64)
        for start in range(0, len(X), QUERY_CHUNK):
            Z = self._search_space(self._transform(X[start:start + QUERY_CHUNK]))
            d, i = self._tree.query(Z, k=1, workers=workers)
            di[start:start + len(d)] = d / self.mean_distance
            index[start:start + len(d)] = i
        return di, index

    def closest_training_pair_di(self) -> float:
        """The smallest DI between two distinct training samples (their nearest-other distance over
        the mean training distance, duplicates left out); inf with fewer than two distinct samples.
        A new row far closer than that to a training sample is, in all likelihood, a copy of it."""
        d, _ = self._tree.query(self._tree.data, k=2)
        positive = d[:, 1][d[:, 1] > 0]
        return float(positive.min() / self.mean_distance) if positive.size else math.inf

    def dissimilarity(self, X: np.ndarray, *, workers: int = 1) -> np.ndarray:
        """Exact DI of each row (float64); see :meth:`nearest`."""
        return self.nearest(X, workers=workers)[0]

    def save(self, path: Path) -> None:
        classes = [np.asarray(c, dtype=np.float64) for c in self.classes]
        np.savez_compressed(path, mean=self.mean, sd=self.sd, weights=self.weights, train=self.train,
                            mean_distance=self.mean_distance, threshold=self.threshold,
                            categorical=np.asarray(self.categorical, dtype=np.int64),
                            class_counts=np.asarray([len(c) for c in classes], dtype=np.int64),
                            classes=np.concatenate(classes) if classes else np.zeros(0),
                            **({} if self.rotation is None else {"centre": self.centre, "rotation": self.rotation}))

    @classmethod
    def load(cls, path: Path) -> "AOAReference":
        with np.load(path, allow_pickle=False) as data:
            categorical, classes = (), ()
            if "categorical" in data and len(data["categorical"]):
                categorical = tuple(int(j) for j in data["categorical"])
                ends = np.cumsum(data["class_counts"])
                classes = tuple(np.split(data["classes"], ends[:-1]))
            rotation = (data["centre"], data["rotation"]) if "rotation" in data else (None, None)
            return cls(data["mean"], data["sd"], data["weights"], data["train"],
                       float(data["mean_distance"]), float(data["threshold"]), categorical, classes, *rotation)


def _mean_distance(Z: np.ndarray, seed: int = 0) -> float:
    from scipy.spatial.distance import pdist

    if len(Z) > MEAN_DISTANCE_SAMPLE:
        Z = Z[np.random.default_rng(seed).choice(len(Z), MEAN_DISTANCE_SAMPLE, replace=False)]
    value = float(np.mean(pdist(Z))) if len(Z) > 1 else 1.0
    return value if value > 0 else 1.0


def _brute_neighbours(train: np.ndarray, query: np.ndarray, k: int, workers: int):
    """The ``k`` nearest rows of ``train`` to each row of ``query``, exact: (distances, indices).

    Candidates come from scikit-learn's brute-force search (BLAS inner products, rows in chunks),
    ``_BRUTE_EXTRA`` more than asked; their distances are recomputed from the coordinates and the
    ``k`` smallest kept, nearest first, ties by index.
    """
    from sklearn.neighbors import NearestNeighbors
    from threadpoolctl import threadpool_limits

    kk = min(len(train), k + _BRUTE_EXTRA)
    with threadpool_limits(limits=workers):
        cand = NearestNeighbors(n_neighbors=kk, algorithm="brute").fit(train).kneighbors(
            query, return_distance=False)
    dist = np.empty((len(query), k))
    index = np.empty((len(query), k), dtype=np.int64)
    for start in range(0, len(query), _EXACT_CHUNK):
        c = cand[start:start + _EXACT_CHUNK]
        diff = train[c] - query[start:start + len(c), None, :]
        d = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        order = np.lexsort((c, d), axis=1)[:, :k]
        dist[start:start + len(c)] = np.take_along_axis(d, order, axis=1)
        index[start:start + len(c)] = np.take_along_axis(c, order, axis=1)
    return dist, index


def principal_axes(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre, rotation) of the rows of ``Z``: their mean and their principal axes (the right
    singular vectors, as rows). A rotation keeps every distance, and a k-d tree of correlated
    predictors on their principal axes splits where the samples spread: the exact nearest-plot
    query was 1.2-1.6x faster than on the original axes (benchmarks/di.py). Computed once when the
    AOA is fitted and stored, so every map process uses the same one."""
    centre = Z.mean(axis=0) if len(Z) else np.zeros(Z.shape[1])
    if len(Z) < 2:
        return centre, np.eye(Z.shape[1])
    _, _, vt = np.linalg.svd(Z - centre, full_matrices=True)
    return centre, vt


def _search(train: np.ndarray, query: np.ndarray, k: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``train`` to each row of ``query``, exact, as (n x k) arrays: a k-d
    tree up to :data:`BRUTE_FORCE_FEATURES` columns, brute force above."""
    if train.shape[1] > BRUTE_FORCE_FEATURES:
        return _brute_neighbours(train, query, k, workers)
    from scipy.spatial import cKDTree

    d, i = cKDTree(train).query(query, k=k, workers=workers)
    return d.reshape(len(query), -1), i.reshape(len(query), -1)


@dataclass(frozen=True)
class TrainingNeighbours:
    """Each training sample's nearest training samples in the AOA's space (nearest first).

    ``other_index``/``other_distance`` (n x m): nearest samples in *other* CV folds (index -1 and
    distance inf pad when there are fewer); ``all_index`` (n x m): nearest samples of any fold, the
    sample itself first (or an exact duplicate of it). The interval's difficulty needs both (:mod:`sinks.learn.intervals`).
    """

    folds: np.ndarray
    other_index: np.ndarray
    other_distance: np.ndarray
    all_index: np.ndarray
    mean_distance: float


def training_neighbours(ref: AOAReference, folds: np.ndarray, m: int, *,
                        workers: int | None = None) -> TrainingNeighbours:
    """:class:`TrainingNeighbours` of ``ref``'s training samples under ``folds``, ``m`` of each."""
    workers = available_cores() if workers is None else max(1, int(workers))
    distance, index = cv_neighbours(ref, folds, m, workers=workers)
    m_all = max(1, min(int(m), len(ref.train)))
    _, all_index = _search(ref.train, ref.train, m_all, workers)
    return TrainingNeighbours(np.asarray(folds), index, distance, all_index, ref.mean_distance)


def cv_neighbours(ref: AOAReference, folds: np.ndarray, m: int, *,
                  workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each training sample, its ``m`` nearest training samples in *other* CV folds.

    Returns (distances, indices), both (n x m), nearest first, in the weighted standardised space
    of ``ref`` (distances not divided by the mean distance). Fewer than ``m`` samples in the other
    folds pad with index -1 and distance inf.

    Exact: a k-d tree up to :data:`BRUTE_FORCE_FEATURES` predictors, brute force above (the
    same neighbours; exact ties may come in another order). ``workers``: threads (default: all
    cores this process may use). When ``ref`` came from :func:`fit_aoa` with ``neighbours >= m``
    and these folds, its kept neighbours are returned (their first ``m`` columns) without a search.
    """
    Z = ref.train
    n = len(Z)
    folds = np.asarray(folds)
    kept = getattr(ref, "_cv_neighbours", None)
    if kept is not None and kept[0].shape == folds.shape and kept[1].shape[1] >= m \
            and np.array_equal(kept[0], folds):
        return kept[1][:, :m].copy(), kept[2][:, :m].copy()
    workers = available_cores() if workers is None else max(1, int(workers))
    dist = np.full((n, m), np.inf)
    index = np.full((n, m), -1, dtype=np.int64)
    for g in np.unique(folds):
        inside = np.flatnonzero(folds == g)
        others = np.flatnonzero(folds != g)
        if not len(others):
            continue
        kk = min(m, len(others))
        d, i = _search(Z[others], Z[inside], kk, workers)
        dist[inside, :kk] = d
        index[inside, :kk] = others[i]
    return dist, index


def fit_aoa(X: np.ndarray, importance: np.ndarray, folds: np.ndarray, *, neighbours: int = 1,
            workers: int | None = None, categorical=()) -> AOAReference:
    """Reference for DI/AOA from training predictors, feature importances and CV fold ids.

    The training DIs need each sample's nearest sample in the other folds; with ``neighbours``
    larger than 1 that search keeps that many (the one search :func:`cv_neighbours` then reuses for
    the same folds). ``workers``: threads of the search (default: all cores). ``categorical``:
    column indices of class-coded predictors (compared by class, see :meth:`AOAReference._transform`).
    """
    X = np.asarray(X, dtype=np.float64)
    folds = np.asarray(folds)
    mean, sd = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    weights = np.asarray(importance, dtype=np.float64)
    weights = weights / weights.sum() if weights.sum() > 0 else np.ones_like(weights)
    categorical = tuple(sorted(int(j) for j in categorical))
    classes = tuple(np.unique(X[np.isfinite(X[:, j]), j]) for j in categorical)
    ref = AOAReference(mean, sd, weights, np.zeros((0, X.shape[1])), 1.0, np.inf, categorical, classes)
    Z = ref._transform(X)
    ref = AOAReference(mean, sd, weights, Z, _mean_distance(Z), np.inf, categorical, classes)
    dist, index = cv_neighbours(ref, folds, max(1, int(neighbours)), workers=workers)
    train_di = dist[:, 0] / ref.mean_distance
    q1, q3 = np.percentile(train_di, [25, 75])
    whisker = train_di[train_di <= q3 + 1.5 * (q3 - q1)].max()
    out = AOAReference(mean, sd, weights, Z, ref.mean_distance, float(whisker), categorical, classes,
                       *principal_axes(Z))
    out._cv_neighbours = (folds.copy(), dist, index)  # not saved with the bundle
    return out


def training_di(ref: AOAReference, folds: np.ndarray) -> np.ndarray:
    """DI of each training sample against the training samples of the other CV folds."""
    dist, _ = cv_neighbours(ref, folds, 1)
    return dist[:, 0] / ref.mean_distance


@dataclass(frozen=True)
class ErrorProfile:
    """Expected absolute error as a non-decreasing step-linear function of the DI."""

    di: list
    error: list
    n: int
    scheme: str
    method: str = "isotonic regression of |out-of-fold error| on cross-validation DI (non-decreasing)"

    def __call__(self, di: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(di, dtype=float), self.di, self.error)

    def as_dict(self) -> dict:
        return asdict(self)


def fit_error_profile(di: np.ndarray, abs_error: np.ndarray, *, scheme: str) -> ErrorProfile:
    """CAST's ``errorProfiles``: |OOF error| against the cross-validation DI, fitted monotone."""
    from sklearn.isotonic import IsotonicRegression

    di, abs_error = np.asarray(di, dtype=float), np.asarray(abs_error, dtype=float)
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(di, abs_error)
    xs, ys = np.asarray(iso.X_thresholds_, dtype=float), np.asarray(iso.y_thresholds_, dtype=float)
    return ErrorProfile([float(v) for v in xs], [float(v) for v in ys], len(di), scheme)
