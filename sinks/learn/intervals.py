"""Prediction intervals by split-conformal calibration on spatial out-of-fold residuals.

The half-width is the ceil((n+1) level)/n empirical quantile of absolute out-of-fold residuals
(Lei et al. 2018, "Distribution-free predictive inference for regression", JASA 113:1094-1111;
the cross-validation variant is the CV+ idea of Barber et al. 2021, Ann. Statist. 49:486-507).
Using residuals from *spatial* folds keeps the intervals honest for locations away from the plots.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ConformalInterval:
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


def calibrate(y: np.ndarray, oof: np.ndarray, *, level: float, residuals_from: str,
              lower_bound: float | None = 0.0) -> ConformalInterval:
    """Conformal half-width at ``level`` (e.g. 0.9) from out-of-fold predictions."""
    if not 0 < level < 1:
        raise ValueError("interval level must be between 0 and 1")
    residuals = np.sort(np.abs(np.asarray(y) - np.asarray(oof)))
    n = len(residuals)
    rank = min(math.ceil((n + 1) * level), n)
    return ConformalInterval(level, float(residuals[rank - 1]), n, residuals_from, lower_bound)


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of observations inside their interval."""
    return float(np.mean((y >= lower) & (y <= upper)))
