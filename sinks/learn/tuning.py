"""Hyperparameter search and forward feature selection, nested inside the chosen CV scheme.

A recipe may ask for either or both::

    [tuning]
    search = "grid"                       # or "random"
    params = { max_depth = [3, 6], learning_rate = [0.03, 0.1] }   # candidate values per parameter
    budget = 20                           # most candidates evaluated (a larger grid is refused)
    metric = "rmse"                       # or "mae", "r2"
    [selection]
    forward = true                        # forward feature selection (CAST's ffs)
    min_features = 2                      # start from the best subset of this size
    max_features = 6                      # optional
    metric = "rmse"

**Nesting.** The folds are those of the recipe's chosen scheme (``[validation] scheme``). For each
outer fold *k*, the choice (features, then parameters) is made by an inner cross-validation on the
plots of the other folds only: the inner folds are the remaining K−1 outer folds, each left out in
turn, so no row of fold *k* is ever fitted or scored while choosing the model that predicts fold
*k*. That model is then fitted on the other folds with its choice and predicts fold *k*: these
nested out-of-fold predictions are honest about the tuning, and replace the chosen scheme's OOF
for the reported accuracy and the interval calibration. The final model's choice is made by the
same procedure on all K folds (an ordinary CV of the chosen scheme); its inner score is the
optimistic, non-nested number, reported beside the nested one.

**Order.** With both on, features are selected first, with the recipe's ``[estimator] params``,
and the parameters are then tuned on the selected features.

**Forward selection** (Meyer et al. 2018, *Environ. Model. Softw.* 101:1-9; CAST ``ffs``): every
subset of ``min_features`` features is scored, the best kept, then the feature whose addition
scores best is added while it improves the score, up to ``max_features``.

**Scores** are the metric over the pooled inner out-of-fold predictions (CAST's "global" score);
the per-fold values are kept in the tuning table. Ties go to the first candidate (grid order, or
the order of the random draws) and, in selection, to the smaller subset.

**Plot weights** (``[target] weights``, :mod:`sinks.learn.weights`): every fit, inner and outer,
gets its training plots' weights as ``sample_weight`` (the inner CV is
:func:`sinks.learn.cv.fold_predictions`), and the inner scores are the weighted metric. The weights'
τ² is estimated from residuals, so for outer fold *k* it comes from an unweighted CV over the other
folds only (:func:`sinks.learn.weights.nested_weights`); the final choice uses the weights of all
folds, those of the final model. The outer (held-out) scores stay unweighted, as every CV score.

**CQR** (``[intervals] method = "cqr"``): the outer fits predict the median (scored) and the two
conditional quantiles (``predict``), so the nested OOF carry the held-out quantiles that CQR
calibrates on; the inner CV scores the median.

**Cost**: every candidate (parameter combination or feature subset) costs K−1 fits per outer fold
and K for the final choice: folds x (folds − 1) x candidates + folds x candidates fits in all
(weighted: plus folds x (folds − 1) unweighted fits for the outer folds' τ²).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from sinks import validate
from sinks.errors import SpecError
from sinks.learn import cv
from sinks.learn.estimators import fit_weighted

SEARCHES = ("grid", "random")
METRICS = ("rmse", "mae", "r2")
TUNING_KEYS = ("search", "params", "budget", "metric")
SELECTION_KEYS = ("forward", "min_features", "max_features", "metric")
#: Parameters that cannot be tuned: thread counts change no result; constraints index features.
UNTUNABLE = ("n_jobs", "monotone_constraints", "monotonic_cst", "interaction_constraints", "interaction_cst")
#: Parameters that index the features, which selection would reorder and drop.
FEATURE_INDEXED = ("monotone_constraints", "monotonic_cst", "interaction_constraints", "interaction_cst")
#: Most candidates a budget may allow, and most starting subsets forward selection scores.
MAX_BUDGET = 10_000
MAX_START_SUBSETS = 5_000


@dataclass(frozen=True)
class Tuning:
    """A recipe's ``[tuning]``: candidate values per parameter, search kind, budget and metric."""

    params: dict
    search: str = "grid"
    budget: int = 20
    metric: str = "rmse"

    @property
    def size(self) -> int:
        """Combinations in the full grid."""
        return math.prod(len(v) for v in self.params.values())

    def candidates(self, seed: int = 0) -> list[dict]:
        """The combinations evaluated: the whole grid, or ``budget`` distinct random draws (seeded)."""
        names, values = list(self.params), [list(v) for v in self.params.values()]
        if self.search == "grid" or self.size <= self.budget:
            return [dict(zip(names, combo)) for combo in itertools.product(*values)]
        picks = np.sort(np.random.default_rng(seed).choice(self.size, self.budget, replace=False))
        out = []
        for index in picks.tolist():  # mixed-radix decoding, the last parameter varying fastest
            combo = []
            for options in reversed(values):
                index, digit = divmod(index, len(options))
                combo.append(options[digit])
            out.append(dict(zip(names, reversed(combo))))
        return out

    def as_dict(self) -> dict:
        return {"search": self.search, "params": {k: list(v) for k, v in self.params.items()},
                "budget": self.budget, "metric": self.metric, "grid_size": self.size}


@dataclass(frozen=True)
class Selection:
    """A recipe's ``[selection]``: forward feature selection from ``min_features``."""

    min_features: int = 2
    max_features: int | None = None
    metric: str = "rmse"

    def as_dict(self) -> dict:
        return {"method": "forward (CAST ffs, Meyer et al. 2018)", "min_features": self.min_features,
                "max_features": self.max_features, "metric": self.metric}


# ---- recipe sections, validated at load -----------------------------------------------------------

def parse_tuning(section: dict, *, kind: str, params: dict, where: str) -> Tuning | None:
    """Validate a recipe's ``[tuning]`` table (``None`` when absent or empty).

    Keys, search, metric, budget; each parameter name against the estimator (with a did-you-mean),
    each candidate value by its type and range and by one tiny trial fit on top of ``params``
    (per value, not per combination); a grid larger than the budget is refused with its size.
    """
    from sinks.learn.estimators import check_param_names, check_params

    if not section:
        return None
    at = f"{where} [tuning]"
    validate.check_keys(section, TUNING_KEYS, at)
    search = validate.string(section, "search", at, default="grid", choices=SEARCHES)
    metric = validate.string(section, "metric", at, default="rmse", choices=METRICS)
    budget = validate.number(section, "budget", at, default=20, integer=True, minimum=1, maximum=MAX_BUDGET)
    candidates = validate.table(section, "params", at)
    if not candidates:
        raise SpecError(f"{at}: missing 'params': give candidate values per parameter, e.g. "
                        "params = { max_depth = [3, 6], learning_rate = [0.03, 0.1] }")
    where_params = f"{at} params"
    out = {}
    for name, values in candidates.items():
        if name in UNTUNABLE:
            raise SpecError(f"{where_params}: '{name}' cannot be tuned (it "
                            + ("sets threads, which change no result" if name == "n_jobs" else "indexes the features")
                            + "); set it in [estimator] params")
        if not isinstance(values, list):
            raise SpecError(f"{where_params}: '{name}' must be a list of candidate values such as "
                            f"[{values!r}, ...], got {values!r}")
        if not values:
            raise SpecError(f"{where_params}: '{name}' is an empty list; give at least one candidate value")
        for value in values:
            if isinstance(value, (list, dict)):
                raise SpecError(f"{where_params}: '{name}' candidates must be numbers, strings or booleans, "
                                f"got {value!r}")
        keys = [json.dumps(v) for v in values]
        if len(set(keys)) != len(keys):
            raise SpecError(f"{where_params}: '{name}' = {values!r} repeats a value")
        for value in values:
            check_param_names(kind, {name: value}, where_params)
        out[name] = tuple(values)
    tuning = Tuning(params=out, search=search, budget=budget, metric=metric)
    if tuning.size >= 2**62:
        raise SpecError(f"{at}: the candidate lists make {tuning.size:.3g} combinations; shorten them")
    if search == "grid" and tuning.size > budget:
        shape = " x ".join(str(len(v)) for v in out.values())
        raise SpecError(f"{at}: the grid has {tuning.size} combinations ({shape}), more than budget = {budget}; "
                        f"raise the budget to {tuning.size}, shorten the lists, or use search = \"random\" "
                        f"(it draws {budget} of them)")
    for name, values in out.items():
        for value in values:
            check_params(kind, {**params, name: value}, where_params)
    return tuning


def parse_selection(section: dict, *, params: dict, n_features: int, spec: str, where: str) -> Selection | None:
    """Validate a recipe's ``[selection]`` table against the spec's ``n_features`` (``None``: off)."""
    if not section:
        return None
    at = f"{where} [selection]"
    validate.check_keys(section, SELECTION_KEYS, at)
    forward = section.get("forward", True)
    if not isinstance(forward, bool):
        raise SpecError(f"{at}: 'forward' must be true or false, got {forward!r}")
    metric = validate.string(section, "metric", at, default="rmse", choices=METRICS)
    low = validate.number(section, "min_features", at, default=2, integer=True, minimum=1)
    high = validate.number(section, "max_features", at, default=None, integer=True, minimum=1)
    if not forward:
        return None
    if n_features < low:
        raise SpecError(f"{at}: 'min_features' = {low} but feature spec {spec} has only {n_features} "
                        f"feature(s); lower min_features or add features")
    if high is not None and high < low:
        raise SpecError(f"{at}: 'max_features' = {high} is below 'min_features' = {low}")
    if high is not None and high > n_features:
        raise SpecError(f"{at}: 'max_features' = {high} but feature spec {spec} has only {n_features} "
                        "feature(s); lower it or leave it out (no limit)")
    start = math.comb(n_features, low)
    if start > MAX_START_SUBSETS:
        raise SpecError(f"{at}: 'min_features' = {low} of {n_features} features means scoring {start} "
                        f"starting subsets (at most {MAX_START_SUBSETS}); use a smaller min_features")
    for name in FEATURE_INDEXED:
        if name in params:
            raise SpecError(f"{where} [estimator] params: '{name}' indexes the spec's features, which "
                            "[selection] drops and renumbers; remove one of the two")
    return Selection(min_features=low, max_features=high, metric=metric)


# ---- scores -------------------------------------------------------------------------------------

def metric_value(metric: str, y: np.ndarray, pred: np.ndarray, weight: np.ndarray | None = None) -> float:
    """RMSE, MAE or R² of ``pred`` against ``y`` (R² is NaN for a constant ``y``).

    With ``weight``, the weighted versions: sqrt(Σw·e² / Σw), Σw·|e| / Σw, and
    1 − Σw·e² / Σw·(y − ȳ_w)² with ȳ_w the weighted mean.
    """
    y = np.asarray(y, dtype=float)
    err = np.asarray(pred, dtype=float) - y
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    if metric == "rmse":
        return float(np.sqrt(np.sum(w * err**2) / np.sum(w)))
    if metric == "mae":
        return float(np.sum(w * np.abs(err)) / np.sum(w))
    if metric == "r2":
        ss = float(np.sum(w * (y - np.sum(w * y) / np.sum(w)) ** 2))
        return float(1 - np.sum(w * err**2) / ss) if ss > 0 else math.nan
    raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")


def better(metric: str, a: float, b: float | None) -> bool:
    """Whether score ``a`` is strictly better than ``b`` (``None`` or NaN: anything is better)."""
    if b is None or not math.isfinite(b):
        return math.isfinite(a)
    if not math.isfinite(a):
        return False
    return a > b if metric == "r2" else a < b


# ---- the search -----------------------------------------------------------------------------------

@dataclass
class Choice:
    """Features and parameters chosen by an inner CV, and the inner score of that choice."""

    features: tuple            # column indices into X, ascending (the model's input order)
    params: dict               # tuned values only (over the base params)
    score: float               # the inner (pooled out-of-fold) score of the choice
    metric: str
    added: tuple = ()          # selection: the order features were added in
    inner_folds: tuple = ()    # the outer fold ids used as inner folds

    def as_dict(self, names: Sequence[str]) -> dict:
        return {"features": [names[i] for i in self.features], "params": dict(self.params),
                "inner_score": self.score, "metric": self.metric,
                "selection_order": [names[i] for i in self.added],
                "inner_folds": [int(j) for j in self.inner_folds]}


@dataclass
class NestedResult:
    """Nested out-of-fold predictions, each outer fold's choice, the final choice and the table."""

    oof: np.ndarray
    outer: list                 # per outer fold: {"fold", "choice": Choice, "score": outer score}
    final: Choice
    table: pd.DataFrame
    fits: int
    extra: dict = field(default_factory=dict)
    oof_extra: np.ndarray | None = None  # the outer fits' other ``predict`` columns (e.g. CQR's quantiles)

    def as_dict(self, names: Sequence[str]) -> dict:
        return {"outer": [{"fold": int(o["fold"]), **o["choice"].as_dict(names), "outer_score": o["score"]}
                          for o in self.outer],
                "final": self.final.as_dict(names), "fits": self.fits, **self.extra}


class _Searcher:
    """Scores candidates by leave-one-fold-out CV over given outer folds, recording each in a table."""

    def __init__(self, X, y, folds, make, base_params, names, bar):
        self.X, self.y, self.folds = X, y, np.asarray(folds)
        self.make, self.base, self.names, self.bar = make, dict(base_params), list(names), bar
        self.rows: list[dict] = []
        self.fits = 0

    def evaluate(self, inner: Sequence, columns: Sequence[int], tuned: dict, metric: str, *,
                 outer, stage: str, candidate: int, weight: np.ndarray | None = None) -> float:
        """Pooled inner score of (columns, tuned params) over the plots of ``inner`` folds only.

        With ``weight`` (one per plot; only the inner folds' entries are read), every fit gets its
        training plots' weights as ``sample_weight`` and the score is the weighted metric.
        """
        cols = list(columns)
        rows = np.isin(self.folds, inner)
        oof = np.full(len(self.y), np.nan)
        per_fold = {}
        w = None if weight is None else np.asarray(weight, dtype=float)[rows]
        # the inner CV: leave each inner fold out in turn, as sinks.learn.cv does for any scheme
        oof[rows] = cv.fold_predictions(self.make({**self.base, **tuned}), self.X[np.ix_(rows, cols)], self.y[rows],
                                        self.folds[rows], scheme="inner", progress=False, sample_weight=w)[:, 0]
        for j in inner:
            test = self.folds == j
            per_fold[f"fold_{int(j)}"] = metric_value(metric, self.y[test], oof[test],
                                                      None if weight is None else weight[test])
            self.fits += 1
        value = metric_value(metric, self.y[rows], oof[rows], w)
        self.rows.append({"outer_fold": outer, "stage": stage, "candidate": candidate,
                          "features": ";".join(self.names[c] for c in cols),
                          "params": json.dumps(tuned, sort_keys=True), "metric": metric,
                          "weighted": weight is not None, "score": value,
                          "mean_of_folds": float(np.nanmean(list(per_fold.values()))) if per_fold else math.nan,
                          "chosen": False, **per_fold})
        if self.bar is not None:
            self.bar.update(1)
        return value

    def mark(self, index: int) -> None:
        self.rows[index]["chosen"] = True


def _forward(search: _Searcher, inner, selection: Selection, outer, weight=None) -> tuple[tuple, tuple, float]:
    """Forward selection over the columns of X: (selected ascending, order added, inner score)."""
    p = search.X.shape[1]
    metric, candidate = selection.metric, 0
    best, best_score, best_row = None, None, None
    for combo in itertools.combinations(range(p), selection.min_features):
        s = search.evaluate(inner, combo, {}, metric, outer=outer, stage="selection", candidate=candidate,
                            weight=weight)
        candidate += 1
        if best is None or better(metric, s, best_score):
            best, best_score, best_row = combo, s, len(search.rows) - 1
    added = list(best)
    limit = p if selection.max_features is None else selection.max_features
    while len(added) < limit:
        round_best, round_score, round_row = None, None, None
        for f in range(p):
            if f in added:
                continue
            s = search.evaluate(inner, sorted([*added, f]), {}, metric, outer=outer, stage="selection",
                                candidate=candidate, weight=weight)
            candidate += 1
            if better(metric, s, round_score):
                round_best, round_score, round_row = f, s, len(search.rows) - 1
        if round_best is None or not better(metric, round_score, best_score):
            break
        added.append(round_best)
        best_score, best_row = round_score, round_row
    if best_row is not None:
        search.mark(best_row)
    return tuple(sorted(added)), tuple(added), best_score


def choose(search: _Searcher, inner: Sequence, *, tuning: Tuning | None, selection: Selection | None,
           candidates: list[dict], outer, weight: np.ndarray | None = None) -> Choice:
    """Select features (with the base params), then tune params on them, by CV over ``inner`` folds
    (weighted fits and scores with ``weight``)."""
    p = search.X.shape[1]
    columns, added, score = tuple(range(p)), (), math.nan
    metric = (tuning or selection).metric
    if selection is not None:
        columns, added, score = _forward(search, inner, selection, outer, weight)
        metric = selection.metric
    params: dict = {}
    if tuning is not None:
        best_score, best_row = None, None
        for i, cand in enumerate(candidates):
            s = search.evaluate(inner, columns, cand, tuning.metric, outer=outer, stage="tuning", candidate=i,
                                weight=weight)
            if best_row is None or better(tuning.metric, s, best_score):
                params, best_score, best_row = dict(cand), s, len(search.rows) - 1
        search.mark(best_row)
        score, metric = best_score, tuning.metric
    return Choice(features=columns, params=params, score=score, metric=metric, added=added,
                  inner_folds=tuple(int(j) for j in inner))


def nested_search(X: np.ndarray, y: np.ndarray, folds: np.ndarray, *, make: Callable[[dict], object],
                  params: Mapping, tuning: Tuning | None = None, selection: Selection | None = None,
                  names: Sequence[str] | None = None, seed: int = 0, scheme: str = "",
                  progress: bool = True, sample_weight=None,
                  predict: Callable[[object, np.ndarray], np.ndarray] | None = None) -> NestedResult:
    """Nested choice of features and/or parameters over the outer ``folds``; see the module doc.

    ``make(params)`` returns an unfitted estimator for a full parameter dict (``params`` with a
    candidate's values over them). Returns the nested OOF predictions (fold *k* predicted by a
    model whose choice never saw fold *k*), each outer fold's choice and score, the final choice
    (made on all folds) and the tuning table (one row per candidate evaluated).

    ``sample_weight``: None, one weight per plot used by every fit, or a mapping from each outer
    fold id to the weights of the plots outside that fold (its own entries are never read) and
    ``"all"`` to those of the final choice (:func:`sinks.learn.weights.nested_weights`). Every fit,
    inner and outer, then gets its training plots' weights, and the inner scores are the weighted
    metric; the outer (held-out) scores and ``nested_score`` stay unweighted, as CV scores are
    without tuning. ``predict(model, X_test)``, if given, is what the outer fits predict: an
    (n, m) array whose column 0 is the point prediction (scored) and whose other columns come back
    as ``oof_extra`` (e.g. CQR's conditional quantiles). The inner CV scores ``model.predict``.
    """
    if tuning is None and selection is None:
        raise ValueError("nested_search needs a tuning or a selection")
    X, y, folds = np.asarray(X, dtype=float), np.asarray(y, dtype=float), np.asarray(folds)
    names = list(names) if names is not None else [f"x{i}" for i in range(X.shape[1])]
    ids = [int(k) for k in np.unique(folds)]
    if len(ids) < 3:
        raise ValueError(f"nested tuning needs at least 3 folds, got {len(ids)}")
    candidates = tuning.candidates(seed) if tuning is not None else []
    total = None if selection is not None else (len(ids) + 1) * len(candidates)
    with tqdm(total=total, desc=f"tuning ({scheme or 'CV'}, nested)", unit="candidate",
              disable=not progress, leave=False) as bar:
        search = _Searcher(X, y, folds, make, params, names, bar)
        outer, oof, extra_oof = [], np.full(len(y), np.nan), None
        for k in ids:
            inner = [j for j in ids if j != k]
            weight = cv.fold_weights(sample_weight, k)
            choice = choose(search, inner, tuning=tuning, selection=selection, candidates=candidates, outer=k,
                            weight=weight)
            test = folds == k
            cols = list(choice.features)
            fit = {} if weight is None else {"sample_weight": weight[~test]}
            model = fit_weighted(make({**params, **choice.params}), X[np.ix_(~test, cols)], y[~test], **fit)
            values = model.predict(X[np.ix_(test, cols)]) if predict is None else predict(model, X[np.ix_(test, cols)])
            values = np.asarray(values, dtype=float).reshape(int(test.sum()), -1)
            oof[test] = values[:, 0]
            if values.shape[1] > 1:
                if extra_oof is None:
                    extra_oof = np.full((len(y), values.shape[1] - 1), np.nan)
                extra_oof[test] = values[:, 1:]
            search.fits += 1
            outer.append({"fold": k, "choice": choice, "score": metric_value(choice.metric, y[test], oof[test])})
        final = choose(search, ids, tuning=tuning, selection=selection, candidates=candidates, outer="all",
                       weight=cv.fold_weights(sample_weight, "all"))
    table = pd.DataFrame(search.rows)
    fold_columns = [f"fold_{k}" for k in ids]
    table = table.reindex(columns=[c for c in table.columns if c not in fold_columns]
                          + [c for c in fold_columns if c in table.columns])
    extra = {"nested_score": metric_value(final.metric, y, oof), "candidates": len(candidates),
             "weighted": sample_weight is not None}
    return NestedResult(oof=oof, outer=outer, final=final, table=table, fits=search.fits, extra=extra,
                        oof_extra=extra_oof)


# ---- for sinks.learn.train ------------------------------------------------------------------------

def nested_for_recipe(recipe, X: np.ndarray, y: np.ndarray, folds: np.ndarray, names: Sequence[str], *,
                      params: Mapping | None = None, sample_weight=None, predict=None,
                      progress: bool = True) -> NestedResult | None:
    """:func:`nested_search` with a recipe's estimator, params (``params``, default the recipe's:
    CQR passes them with its quantile levels), ``[tuning]``, ``[selection]`` and seed over the
    chosen scheme's ``folds``, with ``sample_weight`` and ``predict`` as there; ``None`` when the
    recipe asks for neither."""
    from sinks.learn.estimators import make_estimator

    if recipe.tuning is None and recipe.selection is None:
        return None
    return nested_search(X, y, folds, make=lambda p: make_estimator(recipe.estimator, p),
                         params=recipe.params if params is None else params, tuning=recipe.tuning,
                         selection=recipe.selection, names=names, seed=recipe.seed, scheme=recipe.scheme,
                         progress=progress, sample_weight=sample_weight, predict=predict)


def tuning_metadata(recipe, result: NestedResult, names: Sequence[str], schemes: Sequence[str],
                    weights: dict | None = None) -> dict:
    """The bundle's ``metadata["tuning"]``: settings, per outer fold and final choices, fit count;
    ``weights`` (None: unweighted) says how the plot weights entered the search."""
    k = len(result.outer)
    order = ("features selected first with the [estimator] params, then params tuned on the selected features"
             if recipe.tuning and recipe.selection else "params tuned" if recipe.tuning else "features selected")
    return {
        "scheme": recipe.scheme,
        "inner": f"leave-one-fold-out over the other {k - 1} folds of the {recipe.scheme} scheme "
                 "(fold k is never fitted or scored while choosing fold k's model)",
        "order": order,
        "tuning": recipe.tuning.as_dict() if recipe.tuning else None,
        "selection": recipe.selection.as_dict() if recipe.selection else None,
        "nested_scheme": recipe.scheme,
        "not_nested": [s for s in schemes if s != recipe.scheme],
        "table": "tuning.csv",
        "weights": weights,
        "intervals": ("cqr: the outer fits' conditional quantiles are the held-out quantiles CQR calibrates on"
                      if result.oof_extra is not None else None),
        **result.as_dict(names),
    }
