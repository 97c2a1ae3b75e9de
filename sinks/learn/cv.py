"""Random and spatial (block) cross-validation with out-of-fold predictions and metrics.

Spatial block CV assigns every sample to a square block of ``block_size`` CRS units and keeps
whole blocks together in one fold, so a model is always scored on locations away from those it was
trained on (Roberts et al. 2017, "Cross-validation strategies for data with temporal, spatial,
hierarchical, or phylogenetic structure", Ecography 40:913-929; Valavi et al. 2019 blockCV).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.base import clone
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import GroupKFold, KFold
from tqdm.auto import tqdm

from sinks.errors import InputError


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
    """Out-of-fold accuracy of one CV scheme (target units)."""

    scheme: str
    folds: int
    n: int
    r2: float
    rmse: float
    mae: float
    bias: float

    def as_dict(self) -> dict:
        return asdict(self)


def cross_validate(estimator, X: np.ndarray, y: np.ndarray, folds: np.ndarray, *, scheme: str,
                   progress: bool = True) -> tuple[Scores, np.ndarray]:
    """Fit a clone per fold; return the scores and the out-of-fold predictions."""
    oof = np.full(len(y), np.nan)
    for k in tqdm(np.unique(folds), desc=f"{scheme} CV", unit="fold", disable=not progress, leave=False):
        test = folds == k
        model = clone(estimator).fit(X[~test], y[~test])
        oof[test] = model.predict(X[test])
    return score(y, oof, scheme=scheme, folds=len(np.unique(folds))), oof


def score(y: np.ndarray, pred: np.ndarray, *, scheme: str, folds: int = 0) -> Scores:
    return Scores(
        scheme=scheme, folds=folds, n=len(y), r2=float(r2_score(y, pred)),
        rmse=float(np.sqrt(mean_squared_error(y, pred))), mae=float(mean_absolute_error(y, pred)),
        bias=float(np.mean(pred - y)),
    )
