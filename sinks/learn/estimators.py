"""Estimators a recipe can name, each with how it is saved in a bundle in a safe format.

A bundle never holds a pickle: XGBoost models are saved in XGBoost's own JSON format, which loads
without executing code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sinks.errors import ModelMismatchError, SpecError


def _xgboost(params: dict):
    from xgboost import XGBRegressor

    defaults = {"n_estimators": 400, "max_depth": 4, "learning_rate": 0.05, "subsample": 0.8,
                "colsample_bytree": 0.8, "tree_method": "hist", "n_jobs": 0, "random_state": 0}
    return XGBRegressor(**{**defaults, **params})


ESTIMATORS = {"xgboost": _xgboost}
MODEL_FILES = {"xgboost": "model.json"}


def make_estimator(kind: str, params: dict):
    if kind not in ESTIMATORS:
        raise SpecError(f"unknown estimator kind {kind!r}; available: {', '.join(ESTIMATORS)}")
    try:
        return ESTIMATORS[kind](params)
    except TypeError as exc:
        raise SpecError(f"estimator {kind!r}: bad parameter ({exc})") from exc


def importances(kind: str, model, n_features: int) -> np.ndarray:
    """Gain importances (sum to 1; uniform when the model has none)."""
    values = np.asarray(getattr(model, "feature_importances_", np.ones(n_features)), dtype=float)
    values = np.nan_to_num(values)
    return values / values.sum() if values.sum() > 0 else np.full(n_features, 1.0 / n_features)


def save_model(kind: str, model, folder: Path) -> Path:
    path = folder / MODEL_FILES[kind]
    model.save_model(path)
    return path


def load_model(kind: str, folder: Path):
    if kind not in ESTIMATORS:
        raise ModelMismatchError(f"{folder}: bundle uses estimator {kind!r}, unknown to this sinks version")
    model = ESTIMATORS[kind]({})
    model.load_model(folder / MODEL_FILES[kind])
    return model
