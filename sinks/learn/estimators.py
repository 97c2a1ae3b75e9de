"""Estimators a recipe can name, each with how it is saved in a bundle in a safe format.

A bundle never holds a pickle: XGBoost models are saved in XGBoost's own JSON format, which loads
without executing code.

A recipe's ``[estimator] params`` are checked when the recipe is loaded: each name against the
estimator's own parameters (:func:`check_param_names`, with a did-you-mean), and the values by
fitting the estimator once on a tiny synthetic array (:func:`check_params`, a few milliseconds), so
a value the library rejects (``max_depth = -1``, ``objective = "nonsense"``) is one
:class:`~sinks.errors.SpecError` naming the parameter before any work.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from sinks.errors import ModelMismatchError, SpecError
from sinks.validate import did_you_mean


def _xgboost(params: dict):
    from xgboost import XGBRegressor

    defaults = {"n_estimators": 400, "max_depth": 4, "learning_rate": 0.05, "subsample": 0.8,
                "colsample_bytree": 0.8, "tree_method": "hist", "n_jobs": 0, "random_state": 0}
    params = dict(params)
    if isinstance(params.get("monotone_constraints"), list):  # a TOML array; XGBoost wants a tuple
        params["monotone_constraints"] = tuple(params["monotone_constraints"])
    return XGBRegressor(**{**defaults, **params})


def _xgboost_parameters() -> list[str]:
    from xgboost import XGBRegressor

    return sorted(k for k in XGBRegressor().get_params() if k != "kwargs")


ESTIMATORS = {"xgboost": _xgboost}
MODEL_FILES = {"xgboost": "model.json"}
#: The estimator's parameter names, for checking a recipe's ``params``.
PARAMETERS = {"xgboost": _xgboost_parameters}
#: Parameters of the library that a recipe cannot use, and why.
UNSUPPORTED = {"xgboost": {
    "callbacks": "Python objects cannot be given in a recipe",
    "early_stopping_rounds": "cross-validation fits have no evaluation set; set n_estimators instead",
    "eval_metric": "cross-validation fits have no evaluation set; sinks reports R2, RMSE, MAE and bias",
    "feature_types": "feature types come from the feature spec",
    "feature_weights": "not supported by sinks training",
    "enable_categorical": "features are numeric arrays; categorical features are not supported",
    "max_cat_to_onehot": "features are numeric arrays; categorical features are not supported",
    "max_cat_threshold": "features are numeric arrays; categorical features are not supported",
}}
#: Numeric parameters (True: integer), whose type sinks checks before the library parses them.
_NUMERIC = {"xgboost": {
    **dict.fromkeys(("n_estimators", "max_depth", "max_leaves", "max_bin", "num_parallel_tree", "n_jobs",
                     "random_state", "verbosity"), True),
    **dict.fromkeys(("learning_rate", "gamma", "min_child_weight", "max_delta_step", "subsample",
                     "colsample_bytree", "colsample_bylevel", "colsample_bynode", "reg_alpha", "reg_lambda",
                     "scale_pos_weight", "base_score", "missing"), False),
}}
#: Ranges sinks checks itself where the library accepts a value that makes no sense.
_RANGES = {"xgboost": {
    "n_estimators": (1, None, True),  # (minimum, maximum, integer)
    "subsample": (1e-12, 1.0, False),
    "colsample_bytree": (1e-12, 1.0, False),
    "colsample_bylevel": (1e-12, 1.0, False),
    "colsample_bynode": (1e-12, 1.0, False),
    "random_state": (0, 2**32 - 1, True),
}}


def make_estimator(kind: str, params: dict):
    if kind not in ESTIMATORS:
        raise SpecError(f"unknown estimator kind {kind!r}{did_you_mean(kind, ESTIMATORS)}; "
                        f"available: {', '.join(ESTIMATORS)}")
    try:
        return ESTIMATORS[kind](params)
    except TypeError as exc:
        raise SpecError(f"estimator {kind!r}: bad parameter ({exc})") from exc


def check_param_names(kind: str, params: dict, where: str) -> None:
    """Refuse parameter names the estimator does not have (with a did-you-mean) or sinks cannot use."""
    known = PARAMETERS[kind]()
    for name in params:
        if name in UNSUPPORTED[kind]:
            raise SpecError(f"{where}: parameter '{name}' cannot be used in a recipe: {UNSUPPORTED[kind][name]}")
        if name not in known:
            raise SpecError(f"{where}: unknown {kind} parameter '{name}'{did_you_mean(name, known)}; "
                            f"its parameters are: {', '.join(p for p in known if p not in UNSUPPORTED[kind])}")
    if isinstance(params.get("monotone_constraints"), dict):
        raise SpecError(f"{where}: monotone_constraints by feature name is not supported (training uses "
                        "arrays in the spec's feature order): give a list, one of -1/0/1 per feature")
    for name, value in params.items():
        integer = _NUMERIC[kind].get(name)
        if integer is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
            raise SpecError(f"{where}: '{name}' must be {'an integer' if integer else 'a number'}, got {value!r}")
    for name, (low, high, integer) in _RANGES[kind].items():
        if name not in params:
            continue
        value = params[name]
        if value < low or (high is not None and value > high):
            bounds = f">= {low:g}" if high is None else (f"in (0, {high:g}]" if low < 1e-6 and not integer
                                                        else f"between {low:g} and {high:g}")
            raise SpecError(f"{where}: '{name}' = {value!r} is out of range; it must be {bounds}")


def _trial_width(params: dict) -> int:
    """Number of synthetic features that fits the params' feature constraints, if any."""
    width = 3
    mono = params.get("monotone_constraints")
    if isinstance(mono, (list, tuple)):
        width = max(width, len(mono))
    elif isinstance(mono, str):
        width = max(width, mono.count(",") + 1)
    inter = params.get("interaction_constraints")
    if inter is not None:
        numbers = [int(n) for n in re.findall(r"\d+", str(inter))]
        width = max(width, max(numbers, default=0) + 1)
    return width


def _library_message(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    first = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", first)  # XGBoost's "[time] file.cc:27: " prefix
    return first.rstrip(":").strip()


def trial_fit(kind: str, params: dict, width: int) -> None:
    """Fit ``kind`` with ``params`` (2 rounds) on 16 synthetic rows of ``width`` features."""
    import xgboost

    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, width))
    y = rng.uniform(1.0, 2.0, size=16)  # positive: fits objectives that need it (gamma, tweedie)
    trial = {"n_jobs": 1, **params, "n_estimators": 2}
    with xgboost.config_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ESTIMATORS[kind](trial).fit(X, y)
        model.predict(X[:2])
        model.feature_importances_  # noqa: B018 - importance_type is checked here


def check_params(kind: str, params: dict, where: str) -> None:
    """Fit ``kind`` with ``params`` on a tiny synthetic array; a rejected value is a SpecError.

    The parameter at fault is found by trying each one alone on top of the defaults.
    """
    check_param_names(kind, params, where)
    width = _trial_width(params)
    try:
        trial_fit(kind, params, width)
        return
    except Exception as exc:  # the library's own errors: XGBoostError, ValueError, TypeError
        error = exc
    for name, value in params.items():
        try:
            trial_fit(kind, {name: value}, width)
        except Exception as exc:  # noqa: BLE001
            raise SpecError(f"{where}: {name} = {value!r} is rejected by {kind}: {_library_message(exc)}; "
                            f"fix or remove it") from exc
    names = ", ".join(params) or "(none)"
    raise SpecError(f"{where}: the parameters together ({names}) are rejected by {kind}: "
                    f"{_library_message(error)}") from error


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
