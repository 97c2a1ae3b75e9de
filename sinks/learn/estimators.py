"""Estimators a recipe can name, each with how it is saved in a bundle in a safe format.

The registered kinds (a recipe's ``[estimator] kind``; :data:`ESTIMATORS`):

=========================  ==========================================================  ===============
kind                       estimator                                                   bundle file
=========================  ==========================================================  ===============
``xgboost`` (default)      ``xgboost.XGBRegressor``                                    ``model.json``
``xgboost_quantile``       :class:`XGBQuantileRegressor` (``reg:quantileerror``)       ``model.json``
``random_forest``          ``sklearn.ensemble.RandomForestRegressor``                  ``model.skops``
``extra_trees``            ``sklearn.ensemble.ExtraTreesRegressor``                    ``model.skops``
``hist_gradient_boosting`` ``sklearn.ensemble.HistGradientBoostingRegressor``          ``model.skops``
``ridge``                  ``Pipeline(StandardScaler(), Ridge())``                     ``model.skops``
``quantile_forest``        ``quantile_forest.RandomForestQuantileRegressor``           ``model.skops``
=========================  ==========================================================  ===============

In Python any scikit-learn regressor can be trained (``sinks.learn.train.train(..., estimator=obj)``,
checked by :func:`trial_save` before any long work): :func:`as_estimator` turns an instance into
``(kind, unfitted clone)``; an instance of a registered class gets that kind, anything else the kind
``"sklearn"`` (:data:`USER_KIND`), which no recipe can name.

A bundle never holds a pickle and loading it never runs code. XGBoost models are saved in XGBoost's
own JSON format. scikit-learn models are saved with skops (``skops.io.dump``) and loaded with
``skops.io.load(path, trusted=[...])`` where the trusted list is the explicit allow-list of the
kind's types in :data:`TRUSTED_TYPES` (never ``trusted=True``): a file holding any other type that
skops does not trust by default (``skops.io.get_untrusted_types``), or whose top object is not the
kind's class, is refused with :class:`~sinks.errors.ModelMismatchError` naming the types. A user's
own regressor is saved only if everything in it is trusted by skops or on the union of those
allow-lists; otherwise :func:`save_model` refuses it at save time, naming the type.

A recipe's ``[estimator] params`` are checked when the recipe is loaded: each name against the
estimator's own parameters (:func:`check_param_names`, with a did-you-mean), and the values by
fitting the estimator once on a tiny synthetic array (:func:`check_params`, a few milliseconds), so
a value the library rejects (``max_depth = -1``, ``objective = "nonsense"``) is one
:class:`~sinks.errors.SpecError` naming the parameter before any work.

Threads: XGBoost and the forests take ``n_jobs`` (:func:`set_n_jobs`, or ``make_estimator(...,
n_jobs=)``); histogram gradient boosting (OpenMP) and ridge (BLAS) have no such parameter, so wrap
their fit and predict in :func:`limit_threads` (threadpoolctl, as scikit-learn documents for
OpenMP-parallel estimators). Callers that run folds in parallel use both to avoid oversubscription.

Quantile kinds (:func:`is_quantile`): ``predict`` is the median, :func:`predict_quantiles` gives
the conditional quantiles at the levels asked, ascending.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
from xgboost import XGBRegressor

from sinks.errors import InputError, ModelMismatchError, SpecError
from sinks.threads import effective_n_jobs
from sinks.validate import did_you_mean

#: Kind given to a user's own scikit-learn regressor (Python only; recipes name registered kinds).
USER_KIND = "sklearn"


# ---- our own estimator: XGBoost's multi-quantile objective with the median as point prediction ---

class XGBQuantileRegressor(XGBRegressor):
    """XGBoost with the multi-quantile objective ``reg:quantileerror``; ``predict`` is the median.

    One model is fitted for all of ``quantile_alpha`` (XGBoost >= 2.0, "Quantile Regression" in its
    documentation), which must include 0.5. :meth:`predict_quantiles` returns the fitted quantiles
    in ascending order of level, sorted per row so they never cross (the rearrangement of
    Chernozhukov, Fernandez-Val & Galichon 2010, Econometrica 78:1093). All other parameters are
    XGBRegressor's.
    """

    def __init__(self, *, objective="reg:quantileerror", quantile_alpha=(0.05, 0.5, 0.95), **kwargs):
        super().__init__(objective=objective, **kwargs)
        self.quantile_alpha = quantile_alpha

    def _levels(self) -> np.ndarray:
        alpha = np.atleast_1d(np.asarray(self.quantile_alpha, dtype=float))
        if self.objective != "reg:quantileerror":
            raise ValueError(f"objective must be 'reg:quantileerror', got {self.objective!r}")
        if alpha.ndim != 1 or alpha.size == 0 or np.any(~np.isfinite(alpha)) or np.any((alpha <= 0) | (alpha >= 1)):
            raise ValueError(f"quantile_alpha must be levels strictly between 0 and 1, got {self.quantile_alpha!r}")
        if len(np.unique(alpha)) != alpha.size:
            raise ValueError(f"quantile_alpha has repeated levels: {self.quantile_alpha!r}")
        if not np.any(np.isclose(alpha, 0.5, rtol=0, atol=1e-9)):
            raise ValueError(f"quantile_alpha must include 0.5 (the median is the point prediction), "
                             f"got {list(alpha)}")
        return alpha

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = False  # the quantile loss takes one target (XGBoost 3.2)
        return tags

    def get_xgb_params(self):
        params = super().get_xgb_params()
        params["quantile_alpha"] = [float(a) for a in np.atleast_1d(np.asarray(self.quantile_alpha, dtype=float))]
        return params

    def fit(self, X, y, **kwargs):
        alpha = self._levels()  # refuse bad levels before the (longer) fit
        super().fit(X, y, **kwargs)
        self.fitted_alpha_ = alpha  # the booster's levels, whatever set_params says later
        return self

    def load_model(self, fname):
        super().load_model(fname)
        config = json.loads(self.get_booster().save_config())
        alpha = config["learner"]["objective"]["quantile_loss_param"]["quantile_alpha"]
        self.quantile_alpha = tuple(float(a) for a in alpha.strip("[]").split(","))
        self.fitted_alpha_ = np.asarray(self.quantile_alpha, dtype=float)
        self.objective = "reg:quantileerror"

    def _fitted_levels(self) -> np.ndarray:
        """The levels the booster was fitted for (its outputs' order)."""
        return self.fitted_alpha_ if hasattr(self, "fitted_alpha_") else self._levels()

    def predict_quantiles(self, X, quantiles=None, **kwargs) -> np.ndarray:
        """Quantiles at ``quantiles`` (default: all fitted levels, ascending), shape (n, levels)."""
        alpha = self._fitted_levels()
        raw = np.asarray(super().predict(X, **kwargs), dtype=float).reshape(-1, alpha.size)
        order = np.argsort(alpha)
        levels, values = alpha[order], np.sort(raw[:, order], axis=1)
        if quantiles is None:
            return values
        columns = []
        for q in np.atleast_1d(np.asarray(quantiles, dtype=float)):
            match = np.flatnonzero(np.isclose(levels, q, rtol=0, atol=1e-9))
            if match.size == 0:
                raise ValueError(f"quantile {q:g} was not fitted; this model has quantile_alpha = "
                                 f"{[float(a) for a in levels]}")
            columns.append(match[0])
        return values[:, columns]

    def predict(self, X, **kwargs):
        alpha = np.sort(self._fitted_levels())
        median = int(np.flatnonzero(np.isclose(alpha, 0.5, rtol=0, atol=1e-9))[0])
        return self.predict_quantiles(X, **kwargs)[:, median]


# ---- the registered kinds ------------------------------------------------------------------------

def _xgboost_defaults() -> dict:
    # sinks's choice, not XGBoost's defaults (n_estimators 100, max_depth 6, learning_rate 0.3,
    # subsample 1): shallow trees, a small learning rate with more rounds and row/column subsampling,
    # for plot tables of tens to thousands of rows. tree_method "hist" is XGBoost's default since 2.0;
    # n_jobs 0 lets XGBoost use all cores.
    return {"n_estimators": 400, "max_depth": 4, "learning_rate": 0.05, "subsample": 0.8,
            "colsample_bytree": 0.8, "tree_method": "hist", "n_jobs": 0, "random_state": 0}


def _xgb_params(params: dict) -> dict:
    params = dict(params)
    if isinstance(params.get("monotone_constraints"), list):  # a TOML array; XGBoost wants a tuple
        params["monotone_constraints"] = tuple(params["monotone_constraints"])
    return params


def _xgboost(params: dict):
    return XGBRegressor(**{**_xgboost_defaults(), **_xgb_params(params)})


def _xgboost_quantile(params: dict):
    # quantile_alpha (0.05, 0.5, 0.95): the 90 % central interval, sinks's default interval level,
    # and the median. Use quantile_levels_for(level) for another level.
    params = _xgb_params(params)
    if isinstance(params.get("quantile_alpha"), list):
        params["quantile_alpha"] = tuple(params["quantile_alpha"])
    return XGBQuantileRegressor(**{**_xgboost_defaults(), "quantile_alpha": (0.05, 0.5, 0.95), **params})


# Forests: the library's defaults (100 trees, fully grown, all features per split) with a fixed
# random_state (reproducible bundles; the library's default is None) and n_jobs=-1 (all cores, like
# the XGBoost default above; the library's default is 1).
_FOREST_DEFAULTS = {"random_state": 0, "n_jobs": -1}


def _random_forest(params: dict):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(**{**_FOREST_DEFAULTS, **params})


def _extra_trees(params: dict):
    from sklearn.ensemble import ExtraTreesRegressor

    return ExtraTreesRegressor(**{**_FOREST_DEFAULTS, **params})


def _hist_gradient_boosting(params: dict):
    # The library's defaults (max_iter 100, learning_rate 0.1, max_leaf_nodes 31, early stopping
    # when there are more than 10,000 rows) with a fixed random_state (used by early stopping's
    # validation split).
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(**{"random_state": 0, **params})


def _ridge(params: dict):
    # A linear baseline: features standardised, then Ridge with the library's defaults (alpha 1.0);
    # the recipe's params are Ridge's.
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("ridge", Ridge(**params))])


def _quantile_forest(params: dict):
    # Quantile regression forest (Meinshausen 2006, JMLR 7:983), as SoilGrids 2.0 maps (Poggio et
    # al. 2021, SOIL 7:217), from the quantile-forest package (zillow). Defaults: min_samples_leaf
    # 10, the terminal node size of Meinshausen's own R package quantregForest (nodesize = 10,
    # "slightly higher than for Random Forests"; the library's default is 1, whose one-value leaves
    # gave held-out 90 % intervals covering 0.81-0.82 instead of 0.86-0.88 in our synthetic check,
    # tests/test_estimators.py::_heteroscedastic); the rest
    # are the library's: 100 trees, max_features 1.0, bootstrap, and max_samples_leaf 1 (each leaf
    # keeps one randomly drawn training value per tree, an unbiased estimate of Meinshausen's leaf
    # weights; None keeps all of them, about 5x the memory and bundle size at 20,000 plots). Plus
    # random_state 0 and n_jobs -1 as the forests above. The point prediction is the median
    # (default_quantiles 0.5, the library's default; SoilGrids maps the median too).
    from quantile_forest import RandomForestQuantileRegressor

    return RandomForestQuantileRegressor(**{**_FOREST_DEFAULTS, "min_samples_leaf": 10, **params,
                                            "default_quantiles": 0.5})


ESTIMATORS = {
    "xgboost": _xgboost,
    "xgboost_quantile": _xgboost_quantile,
    "random_forest": _random_forest,
    "extra_trees": _extra_trees,
    "hist_gradient_boosting": _hist_gradient_boosting,
    "ridge": _ridge,
    "quantile_forest": _quantile_forest,
}
_XGB_KINDS = ("xgboost", "xgboost_quantile")
#: Kinds that predict conditional quantiles (:func:`predict_quantiles`).
QUANTILE_KINDS = ("xgboost_quantile", "quantile_forest")
MODEL_FILES = {kind: "model.json" if kind in _XGB_KINDS else "model.skops" for kind in ESTIMATORS}
MODEL_FILES[USER_KIND] = "model.skops"

#: For each kind saved with skops, the types skops does not trust by default that its models hold
#: (skops.io.get_untrusted_types on a fitted model); loading trusts these and nothing else.
TRUSTED_TYPES = {
    "random_forest": ("sklearn.tree._tree.Tree",),
    "extra_trees": ("sklearn.tree._tree.Tree",),
    "hist_gradient_boosting": ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
    "ridge": (),
    "quantile_forest": ("quantile_forest._quantile_forest.RandomForestQuantileRegressor",
                        "quantile_forest._quantile_forest_fast.QuantileForest", "sklearn.tree._tree.Tree"),
}
#: A user's own regressor may hold the types of the registered estimators only.
TRUSTED_TYPES[USER_KIND] = tuple(sorted({t for types in TRUSTED_TYPES.values() for t in types}))


def _classes() -> dict:
    """The class a saved model of each kind must be (its top object)."""
    from quantile_forest import RandomForestQuantileRegressor
    from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.pipeline import Pipeline

    return {"xgboost": XGBRegressor, "xgboost_quantile": XGBQuantileRegressor,
            "random_forest": RandomForestRegressor, "extra_trees": ExtraTreesRegressor,
            "hist_gradient_boosting": HistGradientBoostingRegressor, "ridge": Pipeline,
            "quantile_forest": RandomForestQuantileRegressor}


def _is_ridge_pipeline(model) -> bool:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return (type(model) is Pipeline and len(model.steps) == 2 and type(model.steps[0][1]) is StandardScaler
            and type(model.steps[1][1]) is Ridge)


def _library_class(kind: str):
    """The class whose get_params() names a kind's recipe parameters."""
    if kind == "ridge":
        from sklearn.linear_model import Ridge

        return Ridge
    return _classes()[kind]


def _parameters(kind: str):
    def names() -> list[str]:
        return sorted(k for k in _library_class(kind)().get_params() if k != "kwargs")
    return names


#: The estimator's parameter names, for checking a recipe's ``params``.
PARAMETERS = {kind: _parameters(kind) for kind in ESTIMATORS}

_XGB_UNSUPPORTED = {
    "callbacks": "Python objects cannot be given in a recipe",
    "early_stopping_rounds": "cross-validation fits have no evaluation set; set n_estimators instead",
    "eval_metric": "cross-validation fits have no evaluation set; sinks reports R2, RMSE, MAE and bias",
    "feature_types": "feature types come from the feature spec",
    "feature_weights": "not supported by sinks training",
    "enable_categorical": "features are numeric arrays; categorical features are not supported",
    "max_cat_to_onehot": "features are numeric arrays; categorical features are not supported",
    "max_cat_threshold": "features are numeric arrays; categorical features are not supported",
}
_NO_N_JOBS = ("{name} has no n_jobs; its threads ({pool}) are limited at run time with "
              "sinks.learn.estimators.limit_threads")
#: Parameters of the library that a recipe cannot use, and why.
UNSUPPORTED = {
    "xgboost": {**_XGB_UNSUPPORTED,
                "quantile_alpha": "for quantile regression use kind = \"xgboost_quantile\""},
    "xgboost_quantile": {**_XGB_UNSUPPORTED,
                         "objective": "xgboost_quantile always uses reg:quantileerror; for another "
                                      "objective use kind = \"xgboost\""},
    "random_forest": {},
    "extra_trees": {},
    "hist_gradient_boosting": {
        "categorical_features": "features are numeric arrays; categorical features are not supported",
        "scoring": "a scorer object cannot be saved safely in a bundle; early stopping uses the loss "
                   "(the library's default scoring = \"loss\")",
        "n_jobs": _NO_N_JOBS.format(name="HistGradientBoostingRegressor", pool="OpenMP"),
    },
    "ridge": {"n_jobs": _NO_N_JOBS.format(name="Ridge", pool="BLAS")},
    "quantile_forest": {
        "default_quantiles": "the point prediction is the median; other quantiles are asked for at "
                             "prediction (sinks.learn.estimators.predict_quantiles)",
    },
}
_XGB_NUMERIC = {
    **dict.fromkeys(("n_estimators", "max_depth", "max_leaves", "max_bin", "num_parallel_tree", "n_jobs",
                     "random_state", "verbosity"), True),
    **dict.fromkeys(("learning_rate", "gamma", "min_child_weight", "max_delta_step", "subsample",
                     "colsample_bytree", "colsample_bylevel", "colsample_bynode", "reg_alpha", "reg_lambda",
                     "scale_pos_weight", "base_score", "missing"), False),
}
#: Numeric parameters (True: integer), whose type sinks checks before the library parses them.
#: scikit-learn checks its own parameters' types and ranges with clear messages.
#: The size of a scikit-learn ensemble: the library checks it only when fitting.
_SIZES = {"random_forest": "n_estimators", "extra_trees": "n_estimators", "quantile_forest": "n_estimators",
          "hist_gradient_boosting": "max_iter"}
_NUMERIC = {kind: (_XGB_NUMERIC if kind in _XGB_KINDS else {_SIZES[kind]: True} if kind in _SIZES else {})
            for kind in ESTIMATORS}
_XGB_RANGES = {
    "n_estimators": (1, None, True),  # (minimum, maximum, integer)
    "subsample": (1e-12, 1.0, False),
    "colsample_bytree": (1e-12, 1.0, False),
    "colsample_bylevel": (1e-12, 1.0, False),
    "colsample_bynode": (1e-12, 1.0, False),
    "random_state": (0, 2**32 - 1, True),
}
#: Ranges sinks checks itself where the library accepts a value that makes no sense.
_RANGES = {kind: (_XGB_RANGES if kind in _XGB_KINDS else {_SIZES[kind]: (1, None, True)} if kind in _SIZES else {})
           for kind in ESTIMATORS}
#: XGBoost boosters that grow trees: gblinear's weights are signed per-unit coefficients (no AOA
#: weights), and neither the map's native predictor nor the Earth Engine export takes it.
TREE_BOOSTERS = ("gbtree", "dart")
#: Parameters that make the trial fit tiny.
_TRIAL_SIZE = {"xgboost": {"n_estimators": 2}, "xgboost_quantile": {"n_estimators": 2},
               "random_forest": {"n_estimators": 2}, "extra_trees": {"n_estimators": 2},
               "quantile_forest": {"n_estimators": 2}, "hist_gradient_boosting": {"max_iter": 2},
               "ridge": {}}


def _unknown_kind(kind: str) -> SpecError:
    return SpecError(f"unknown estimator kind {kind!r}{did_you_mean(kind, ESTIMATORS)}; "
                     f"available: {', '.join(ESTIMATORS)}")


def make_estimator(kind: str, params: dict, *, n_jobs: int | None = None):
    """An unfitted estimator of a registered ``kind`` with ``params`` over sinks's defaults.

    ``n_jobs`` (optional) overrides the thread count where the estimator has one (:func:`set_n_jobs`).
    """
    if kind not in ESTIMATORS:
        raise _unknown_kind(kind)
    try:
        model = ESTIMATORS[kind](params)
    except TypeError as exc:
        raise SpecError(f"estimator {kind!r}: bad parameter ({exc})") from exc
    return model if n_jobs is None else set_n_jobs(model, n_jobs)


def kind_of(model) -> str:
    """The registered kind of an estimator instance, or :data:`USER_KIND` for any other regressor."""
    if _is_ridge_pipeline(model):
        return "ridge"
    for kind, cls in _classes().items():
        if type(model) is cls and kind != "ridge":
            if kind == "xgboost" and callable(getattr(model, "objective", None)):
                raise InputError("an XGBRegressor with a custom (Python) objective cannot be saved safely "
                                 "in a bundle; give the objective by name (e.g. \"reg:absoluteerror\")")
            return kind
    return USER_KIND


def as_estimator(estimator, params: dict | None = None) -> tuple[str, object]:
    """``(kind, unfitted estimator)`` from a registered kind's name or any scikit-learn regressor.

    A name is made with :func:`make_estimator` and ``params``; an instance is cloned (its fitted
    state, if any, is dropped) and gets its registered kind (:func:`kind_of`) or ``"sklearn"``.
    """
    if isinstance(estimator, str):
        return estimator, make_estimator(estimator, params or {})
    if params:
        raise InputError("params go with an estimator kind's name; set them on the estimator instance instead")
    from sklearn.base import clone, is_classifier

    # looked up on the class: an unfitted meta-estimator (StackingRegressor) hides predict until fitted
    if not all(callable(getattr(type(estimator), name, None)) for name in ("fit", "predict", "get_params")):
        raise InputError(f"{type(estimator).__name__} is not a scikit-learn regressor (it needs fit, "
                         "predict and get_params)")
    if is_classifier(estimator):
        raise InputError(f"{type(estimator).__name__} is a classifier; sinks trains regressors of a "
                         "continuous target")
    try:
        model = clone(estimator)
    except Exception as exc:  # noqa: BLE001 - sklearn raises TypeError/RuntimeError for odd objects
        raise InputError(f"{type(estimator).__name__} cannot be cloned as a scikit-learn estimator: {exc}") from exc
    return kind_of(model), model


# ---- threads ------------------------------------------------------------------------------------

def set_n_jobs(model, n_jobs: int | None):
    """Set every ``n_jobs`` parameter of ``model`` (nested ones too, as in a Pipeline); returns it.

    Estimators without one (histogram gradient boosting: OpenMP; ridge: BLAS) are unchanged: run
    them inside :func:`limit_threads`.
    """
    names = [k for k in model.get_params(deep=True) if k == "n_jobs" or k.endswith("__n_jobs")]
    if names:
        model.set_params(**dict.fromkeys(names, n_jobs))
    return model


def limit_threads(n_jobs: int | None):
    """A context that limits OpenMP and BLAS threads to ``n_jobs`` (threadpoolctl); no-op for None.

    HistGradientBoostingRegressor reads this limit for its OpenMP loops; Ridge's BLAS calls obey it.
    """
    if n_jobs is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=effective_n_jobs(n_jobs))


# ---- recipe checks -------------------------------------------------------------------------------

def check_param_names(kind: str, params: dict, where: str) -> None:
    """Refuse parameter names the estimator does not have (with a did-you-mean) or sinks cannot use."""
    if kind not in ESTIMATORS:
        raise SpecError(f"{where}: {_unknown_kind(kind)}")
    known = PARAMETERS[kind]()
    for name in params:
        if name in UNSUPPORTED[kind]:
            raise SpecError(f"{where}: parameter '{name}' cannot be used in a recipe: {UNSUPPORTED[kind][name]}")
        if name not in known:
            raise SpecError(f"{where}: unknown {kind} parameter '{name}'{did_you_mean(name, known)}; "
                            f"its parameters are: {', '.join(p for p in known if p not in UNSUPPORTED[kind])}")
    for name in ("monotone_constraints", "monotonic_cst"):
        if isinstance(params.get(name), dict):
            raise SpecError(f"{where}: {name} by feature name is not supported (training uses "
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
    if kind in _XGB_KINDS and params.get("booster") == "gblinear":  # another name is the library's to refuse
        raise SpecError(f"{where}: booster = {params['booster']!r} is not a tree ensemble: the area of applicability "
                        "weighs features by tree importance, and maps and the Earth Engine export predict with "
                        f"trees; use {' or '.join(repr(b) for b in TREE_BOOSTERS)} (the default), or kind = \"ridge\" "
                        "for a linear model")
    if kind == "xgboost_quantile" and "quantile_alpha" in params:
        _check_levels(params["quantile_alpha"], f"{where}: 'quantile_alpha'")


def _check_levels(alpha, where: str) -> None:
    values = alpha if isinstance(alpha, (list, tuple)) else [alpha]
    if not values or any(isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a < 1 for a in values):
        raise SpecError(f"{where} = {alpha!r} must be a list of quantile levels strictly between 0 and 1, "
                        "such as [0.05, 0.5, 0.95]")
    if len(set(values)) != len(values):
        raise SpecError(f"{where} = {alpha!r} repeats a level")
    if not any(abs(a - 0.5) < 1e-9 for a in values):
        raise SpecError(f"{where} = {alpha!r} must include 0.5: the median is the point prediction")


def _trial_width(params: dict) -> int:
    """Number of synthetic features that fits the params' feature constraints, if any."""
    width = 3
    for name in ("monotone_constraints", "monotonic_cst"):
        mono = params.get(name)
        if isinstance(mono, (list, tuple)):
            width = max(width, len(mono))
        elif isinstance(mono, str):
            width = max(width, mono.count(",") + 1)
    for name in ("interaction_constraints", "interaction_cst"):
        inter = params.get(name)
        if inter is not None and not (isinstance(inter, str) and inter in ("pairwise", "no_interactions")):
            numbers = [int(n) for n in re.findall(r"\d+", str(inter))]
            width = max(width, max(numbers, default=0) + 1)
    return width


def library_message(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    first = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", first)  # XGBoost's "[time] file.cc:27: " prefix
    return first.rstrip(":").strip()


def fit_weighted(model, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None):
    """``model.fit(X, y)``, with per-plot ``sample_weight`` when given; a scikit-learn
    ``Pipeline``'s go to its last step (a pipeline routes fit parameters by step name; ``ridge``
    is one). Returns the fitted model."""
    if sample_weight is None:
        return model.fit(X, y)
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):
        return model.fit(X, y, **{f"{model.steps[-1][0]}__sample_weight": sample_weight})
    return model.fit(X, y, sample_weight=sample_weight)


def _trial_data(width: int, weighted: bool):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, width))
    y = rng.uniform(1.0, 2.0, size=16)  # positive: fits objectives that need it (gamma, tweedie, poisson)
    return X, y, (rng.uniform(0.5, 2.0, size=16) if weighted else None)


def trial_save(estimator, width: int, *, weighted: bool = False) -> None:
    """Fit a clone of a user's regressor on 16 synthetic rows of ``width`` features (with weights,
    if ``weighted``) and save it as a bundle would: a model that cannot be saved safely is refused
    before any long work."""
    import tempfile

    from sklearn.base import clone

    X, y, w = _trial_data(width, weighted)
    with limit_threads(1), warnings.catch_warnings(), tempfile.TemporaryDirectory() as folder:
        warnings.simplefilter("ignore")
        model = fit_weighted(clone(estimator), X, y, w)
        model.predict(X[:2])
        save_model(kind_of(model), model, Path(folder))


def trial_fit(kind: str, params: dict, width: int, *, weighted: bool = False) -> None:
    """Fit ``kind`` with ``params`` (2 rounds or trees) on 16 synthetic rows of ``width`` features
    (with weights, if ``weighted``)."""
    import xgboost

    X, y, w = _trial_data(width, weighted)
    threads = {"n_jobs": 1} if "n_jobs" in PARAMETERS[kind]() else {}
    trial = {**threads, **params, **_TRIAL_SIZE[kind]}
    context = xgboost.config_context() if kind in _XGB_KINDS else limit_threads(1)
    with context, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit_weighted(ESTIMATORS[kind](trial), X, y, w)
        model.predict(X[:2])
        if kind in _XGB_KINDS:
            model.feature_importances_  # noqa: B018 - importance_type is checked here
        if kind in QUANTILE_KINDS:
            predict_quantiles(kind, model, X[:2], [0.5])


def check_params(kind: str, params: dict, where: str) -> None:
    """Fit ``kind`` with ``params`` on a tiny synthetic array; a rejected value is a SpecError.

    The parameter at fault is found by trying each one alone on top of the defaults.
    """
    check_param_names(kind, params, where)
    for name, value in params.items():  # a library may take NaN and fail later, on the data
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{where}: {name} = {value!r} is not a finite number")
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
            raise SpecError(f"{where}: {name} = {value!r} is rejected by {kind}: {library_message(exc)}; "
                            f"fix or remove it") from exc
    names = ", ".join(params) or "(none)"
    raise SpecError(f"{where}: the parameters together ({names}) are rejected by {kind}: "
                    f"{library_message(error)}") from error


# ---- quantiles -----------------------------------------------------------------------------------

def is_quantile(kind: str) -> bool:
    """Whether ``kind`` predicts conditional quantiles (:func:`predict_quantiles`)."""
    return kind in QUANTILE_KINDS


def quantile_levels_for(level: float) -> tuple[float, float, float]:
    """The quantile levels of a central interval at ``level`` and the median: (a/2, 0.5, 1 - a/2)."""
    if not 0 < level < 1:
        raise InputError(f"interval level {level!r} must be strictly between 0 and 1")
    return (round((1 - level) / 2, 12), 0.5, round((1 + level) / 2, 12))


def with_interval_level(kind: str, params: dict, level: float) -> dict:
    """``params`` with xgboost_quantile's ``quantile_alpha`` set for ``level`` if the recipe gave none.

    Other kinds are returned unchanged (the quantile forest predicts any level).
    """
    if kind == "xgboost_quantile" and "quantile_alpha" not in params:
        return {**params, "quantile_alpha": list(quantile_levels_for(level))}
    return dict(params)


def check_interval_level(kind: str, params: dict, level: float, where: str) -> None:
    """Refuse an xgboost_quantile recipe whose ``quantile_alpha`` lacks the interval's quantiles."""
    if kind != "xgboost_quantile" or "quantile_alpha" not in params:
        return
    alpha = params["quantile_alpha"] if isinstance(params["quantile_alpha"], (list, tuple)) else [params["quantile_alpha"]]
    lower, _, upper = quantile_levels_for(level)
    missing = [q for q in (lower, upper) if not any(abs(a - q) < 1e-9 for a in alpha)]
    if missing:
        raise SpecError(f"{where}: quantile_alpha = {list(alpha)} lacks {', '.join(f'{q:g}' for q in missing)}, "
                        f"needed for the {level:g} interval; add them or remove quantile_alpha "
                        "(sinks then fits the interval's levels and the median)")


def quantile_levels(kind: str, model):
    """The fitted levels of an xgboost_quantile model (ascending), or None where any level works."""
    if kind == "xgboost_quantile":
        return np.sort(model._fitted_levels())
    if kind == "quantile_forest":
        return None
    raise InputError(f"estimator kind {kind!r} does not predict quantiles (quantile kinds: {', '.join(QUANTILE_KINDS)})")


def predict_quantiles(kind: str, model, X, levels) -> np.ndarray:
    """Conditional quantiles at ``levels``: an array (n, len(levels)), columns in the order given.

    Quantiles never cross: they are computed at the sorted levels and sorted per row.
    """
    if kind not in QUANTILE_KINDS:
        raise InputError(f"estimator kind {kind!r} does not predict quantiles (quantile kinds: "
                         f"{', '.join(QUANTILE_KINDS)})")
    levels = np.atleast_1d(np.asarray(levels, dtype=float))
    if levels.size == 0 or np.any(~np.isfinite(levels)) or np.any((levels <= 0) | (levels >= 1)):
        raise InputError(f"quantile levels must be strictly between 0 and 1, got {levels.tolist()}")
    order = np.argsort(levels, kind="stable")
    ordered = levels[order]
    if kind == "xgboost_quantile":
        values = model.predict_quantiles(X, ordered)
    else:
        values = np.asarray(model.predict(X, quantiles=[float(q) for q in ordered]), dtype=float)
    values = np.sort(values.reshape(len(values), -1), axis=1)
    out = np.empty_like(values)
    out[:, order] = values
    return out


# ---- metadata ------------------------------------------------------------------------------------

def estimator_params(kind: str, model) -> dict:
    """The model's parameters as JSON values, for a bundle's metadata and model card.

    For ``ridge``, Ridge's own (the recipe's names); None, NaN and values that are not numbers,
    strings, booleans or lists of them (estimator objects in a Pipeline, callables) are left out.
    """
    source = model[-1] if kind == "ridge" and _is_ridge_pipeline(model) else model
    params = source.get_params(deep=False)

    def plain(value):
        if isinstance(value, (bool, str, int)) or (isinstance(value, float) and np.isfinite(value)):
            return True
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            return plain(value.item())
        return isinstance(value, (list, tuple)) and all(plain(v) for v in value)

    def convert(value):
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value.item() if isinstance(value, np.generic) else value

    return {k: convert(v) for k, v in params.items() if k != "kwargs" and plain(v)}


# ---- importances ---------------------------------------------------------------------------------

def importances(kind: str, model, n_features: int) -> np.ndarray:
    """Feature importances summing to 1, for the AOA's weights (uniform when the model has none).

    Trees: the library's impurity/gain importances (``feature_importances_``); histogram gradient
    boosting: the split gains summed per feature over all trees (as XGBoost's "gain");
    ridge: the absolute coefficients on the standardised features.
    """
    values = None
    if hasattr(model, "feature_importances_"):
        values = getattr(model, "feature_importances_")
    elif kind == "hist_gradient_boosting" or type(model).__name__ == "HistGradientBoostingRegressor":
        values = _hgb_gains(model, n_features)
    elif kind == "ridge":
        values = np.abs(np.ravel(model[-1].coef_))
    values = np.ones(n_features) if values is None else np.asarray(values, dtype=float)
    values = np.nan_to_num(values)
    if values.shape != (n_features,):
        values = np.ones(n_features)
    return values / values.sum() if values.sum() > 0 else np.full(n_features, 1.0 / n_features)


def _hgb_gains(model, n_features: int):
    try:
        gains = np.zeros(n_features)
        for iteration in model._predictors:
            for predictor in iteration:
                nodes = predictor.nodes[~predictor.nodes["is_leaf"].astype(bool)]
                np.add.at(gains, nodes["feature_idx"].astype(int), np.maximum(nodes["gain"], 0))
        return gains
    except (AttributeError, KeyError, ValueError, IndexError):  # private structure changed: uniform
        return None


# ---- persistence ---------------------------------------------------------------------------------

def _refuse(path, kind: str, types) -> ModelMismatchError:
    return ModelMismatchError(
        f"{path}: refusing to load: it holds type(s) not trusted for estimator kind {kind!r}: "
        f"{', '.join(types)} (sinks trusts only {', '.join(TRUSTED_TYPES[kind]) or 'what skops trusts by default'}); "
        "the bundle was altered or made by other software")


def _check_class(kind: str, model, where) -> None:
    if kind == USER_KIND:
        return
    ok = _is_ridge_pipeline(model) if kind == "ridge" else type(model) is _classes()[kind]
    if not ok:
        raise ModelMismatchError(f"{where}: a {type(model).__module__}.{type(model).__qualname__} is not a "
                                 f"{kind!r} model")


def save_model(kind: str, model, folder: Path) -> Path:
    """Save a fitted model in the kind's safe format (:data:`MODEL_FILES`); returns the path.

    A model holding a type skops does not trust by default and that is not on the kind's allow-list
    (:data:`TRUSTED_TYPES`), or that skops cannot write, is refused with an InputError naming it.
    """
    if kind not in MODEL_FILES:
        raise _unknown_kind(kind)
    path = Path(folder) / MODEL_FILES[kind]
    _check_class(kind, model, f"save_model({kind!r})")
    if kind in _XGB_KINDS:
        model.save_model(path)
        return path
    import skops.io as sio

    name = f"{type(model).__module__}.{type(model).__qualname__}"
    try:
        data = sio.dumps(model)
    except Exception as exc:  # noqa: BLE001 - TypeError, and RecursionError on a scorer object
        raise InputError(f"{name} cannot be saved safely in a bundle (skops: {library_message(exc)}); "
                         "Python functions, lambdas and scorer objects cannot be saved") from exc
    untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES[kind]]
    if untrusted:
        raise InputError(f"{name} cannot be saved in a bundle: it holds type(s) not on sinks's allow-list "
                         f"of safe types: {', '.join(untrusted)}; use one of the registered estimators "
                         f"({', '.join(ESTIMATORS)}) or a scikit-learn model made of their parts")
    path.write_bytes(data)
    return path


def load_model(kind: str, folder: Path):
    """Load a model saved by :func:`save_model`; never runs code from the file.

    An unknown kind, a missing or unreadable file, a type not on the kind's allow-list or a model of
    another class is a ModelMismatchError.
    """
    if kind not in MODEL_FILES:
        raise ModelMismatchError(f"{folder}: bundle uses estimator {kind!r}, unknown to this sinks version")
    path = Path(folder) / MODEL_FILES[kind]
    if not path.is_file():
        raise ModelMismatchError(f"{folder}: bundle file {MODEL_FILES[kind]} is missing")
    if kind in _XGB_KINDS:
        model = ESTIMATORS[kind]({})
        try:
            model.load_model(path)
        except Exception as exc:  # noqa: BLE001 - XGBoostError, JSON and key errors
            raise ModelMismatchError(f"{path}: not a readable XGBoost model ({library_message(exc)})") from exc
        return model
    import skops.io as sio

    try:
        found = sio.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001 - a zip or JSON error
        raise ModelMismatchError(f"{path}: not a readable skops model file ({library_message(exc)})") from exc
    untrusted = [t for t in found if t not in TRUSTED_TYPES[kind]]
    if untrusted:
        raise _refuse(path, kind, untrusted)
    try:
        model = sio.load(path, trusted=list(TRUSTED_TYPES[kind]))
    except Exception as exc:  # noqa: BLE001 - UntrustedTypesFoundException, a damaged file
        raise ModelMismatchError(f"{path}: cannot be loaded safely ({library_message(exc)})") from exc
    _check_class(kind, model, path)
    return model
