"""Dissimilarity index (DI) and area of applicability (AOA) of a fitted model.

Meyer & Pebesma (2021), "Predicting into unknown space? Estimating the area of applicability of
spatial prediction models", Methods Ecol. Evol. 12:1620-1633 (as in the R package CAST):
predictors are standardised and weighted by their importance; the DI of a location is its distance
to the nearest training sample divided by the mean distance between training samples; the
threshold is the upper whisker (largest value <= Q3 + 1.5 IQR) of the training DIs, each computed
against training samples outside its own cross-validation fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist


@dataclass
class AOAReference:
    mean: np.ndarray
    sd: np.ndarray
    weights: np.ndarray
    train: np.ndarray  # standardised, weighted training predictors (n x p)
    mean_distance: float
    threshold: float

    def _transform(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.sd * self.weights
        return np.where(np.isfinite(Z), Z, 0.0)  # a missing predictor sits at the training mean

    @cached_property
    def _tree(self) -> cKDTree:
        return cKDTree(self.train)

    def dissimilarity(self, X: np.ndarray) -> np.ndarray:
        distance, _ = self._tree.query(self._transform(X), k=1)
        return distance / self.mean_distance

    def save(self, path: Path) -> None:
        np.savez_compressed(path, mean=self.mean, sd=self.sd, weights=self.weights, train=self.train,
                            mean_distance=self.mean_distance, threshold=self.threshold)

    @classmethod
    def load(cls, path: Path) -> "AOAReference":
        with np.load(path) as data:
            return cls(data["mean"], data["sd"], data["weights"], data["train"],
                       float(data["mean_distance"]), float(data["threshold"]))


def fit_aoa(X: np.ndarray, importance: np.ndarray, folds: np.ndarray) -> AOAReference:
    """Reference for DI/AOA from training predictors, feature importances and CV fold ids."""
    X = np.asarray(X, dtype=np.float64)
    mean, sd = np.nanmean(X, axis=0), np.nanstd(X, axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    weights = np.asarray(importance, dtype=np.float64)
    weights = weights / weights.sum() if weights.sum() > 0 else np.ones_like(weights)
    ref = AOAReference(mean, sd, weights, np.zeros((0, X.shape[1])), 1.0, np.inf)
    Z = ref._transform(X)
    mean_distance = float(np.mean(pdist(Z))) if len(Z) > 1 else 1.0
    mean_distance = mean_distance if mean_distance > 0 else 1.0
    train_di = np.empty(len(Z))
    for k in np.unique(folds):
        inside = folds == k
        distance, _ = cKDTree(Z[~inside]).query(Z[inside], k=1)
        train_di[inside] = distance / mean_distance
    q1, q3 = np.percentile(train_di, [25, 75])
    whisker = train_di[train_di <= q3 + 1.5 * (q3 - q1)].max()
    return AOAReference(mean, sd, weights, Z, mean_distance, float(whisker))
