"""Training recipes: ``training/*.toml`` parsed into a :class:`Recipe`.

::

    name = "meuse_soc"
    features = "../features/meuse.toml"     # feature spec, relative to the recipe file
    [target]
    column = "soc_g_kg"                     # column of the feature table to predict
    units = "g C/kg"
    band = "soc"                            # name of the predicted band in maps (default "carbon")
    derive = "soc_g_kg_from_organic_matter_pct"   # optional: computed from another column
    from = "om"
    pool = "soil"                           # optional: forest, soil or wetland (plausibility bounds)
    weights = "carbon_sd_mg_ha"             # optional: each plot's measurement sd (target units):
                                            # inverse-variance weights (sinks.learn.weights)
    [estimator]
    kind = "xgboost"                        # see sinks.learn.estimators.ESTIMATORS
    params = { n_estimators = 400, max_depth = 3, learning_rate = 0.05 }
    [validation]
    folds = 5
    schemes = ["random", "blocks", "knndm"] # reported side by side (default: all three)
    scheme = "knndm"                        # the honest one: calibrates intervals, AOA (default knndm)
    block_size = 500                        # optional block side (metres); default: variogram range
    seed = 0
    [intervals]
    level = 0.9
    method = "normalized"                   # normalized (default), mondrian (DI bins), split, or cqr
                                            # (conformalised quantile regression: a quantile estimator)
    neighbours = 10                         # plots whose mean |residual| is the difficulty (normalized)
    bins = 4                                # DI bins (mondrian)
    check = "fast"                          # or "refit": the held-out check with every fit redone
                                            # without the held-out fold (sinks.learn.refit_check)
    [tuning]                                # optional: nested in the chosen scheme (sinks.learn.tuning)
    search = "grid"                         # or "random": draws `budget` distinct combinations (seed)
    params = { max_depth = [2, 3], learning_rate = [0.03, 0.1] }   # candidates over [estimator] params
    budget = 20                             # most candidates; a larger grid is refused
    metric = "rmse"                         # rmse, mae or r2
    [selection]                             # optional: forward feature selection, nested likewise
    forward = true
    min_features = 2                        # start from the best subset of this size (CAST ffs)
    max_features = 8                        # optional
    metric = "rmse"
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sinks import validate
from sinks.errors import SpecError
from sinks.io import read_toml
from sinks.learn.estimators import ESTIMATORS, check_interval_level, check_param_names, check_params, is_quantile
from sinks.learn.refit_check import CHECKS
from sinks.learn.targets import DERIVATIONS
from sinks.learn.tuning import Selection, Tuning, parse_selection, parse_tuning
from sinks.validate import check_keys


@dataclass(frozen=True)
class Recipe:
    name: str
    features: Path
    target: str
    target_units: str = ""
    band: str = "carbon"
    derive: str | None = None
    derive_from: str | None = None
    pool: str | None = None
    weights: str | None = None  # column of each plot's measurement sd (target units)
    estimator: str = "xgboost"
    params: dict = field(default_factory=dict)
    folds: int = 5
    block_size: float | None = None  # None: the variogram range of the target (sinks.learn.cv)
    seed: int = 0
    interval_level: float = 0.9
    schemes: tuple = ("random", "blocks", "knndm")
    scheme: str = "knndm"
    interval_method: str = "normalized"
    interval_neighbours: int = 10
    interval_bins: int = 4
    interval_check: str = "fast"  # "refit": the fully nested check (sinks.learn.refit_check)
    description: str = ""
    tuning: Tuning | None = None        # [tuning]: nested hyperparameter search
    selection: Selection | None = None  # [selection]: nested forward feature selection
    path: Path | None = None
    raw: dict = field(default_factory=dict, compare=False)


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a training recipe TOML file and validate all of it (see :func:`parse_recipe`)."""
    path = Path(path)
    return parse_recipe(read_toml(path, "recipe"), base=path.resolve().parent, path=path)


TOP_KEYS = ("name", "description", "features", "target", "estimator", "validation", "intervals",
            "tuning", "selection")
TARGET_KEYS = ("column", "units", "band", "derive", "from", "pool", "weights")
ESTIMATOR_KEYS = ("kind", "params")
VALIDATION_KEYS = ("folds", "block_size", "seed", "schemes", "scheme")
INTERVAL_KEYS = ("level", "method", "neighbours", "bins", "check")
SCHEMES = ("random", "blocks", "knndm")
INTERVAL_METHODS = ("normalized", "mondrian", "split", "cqr")
POOLS = ("forest", "soil", "wetland")


def _check_units_match_column(column: str, units: str, at: str) -> None:
    """Stated units that contradict the column's own name (sinks's names end in their unit:
    ``carbon_mg_ha`` is Mg/ha; a ``co2e`` column is CO2e): a recipe saying ``kg C/ha`` for
    ``carbon_mg_ha`` reported its RMSE in kg C/ha, and a CO2e column stated in Mg C/ha maps 44/12
    too high."""
    compact = units.replace(" ", "").lower()
    if not compact:
        return
    name = column.lower()
    if name.endswith("_mg_ha") and not (compact.startswith("mg") or compact.startswith("t")):
        raise SpecError(f"{at}: units = {units!r} contradict the column {column!r}, whose name says Mg/ha; state "
                        "'Mg C/ha' or convert the column")
    concentration = name.endswith(("_g_kg", "_pct", "_percent"))  # soc_g_kg, om_pct
    if concentration and ("/ha" in compact or "ha-1" in compact or "ha⁻¹" in compact):
        raise SpecError(f"{at}: units = {units!r} contradict the column {column!r}, whose name says a "
                        "concentration (g/kg or %), not a stock density per ha; state its own units (\"g C/kg\", "
                        "\"%\") or give a stock column")
    if name.endswith("_g_kg") and compact in ("%", "percent", "%c"):
        raise SpecError(f"{at}: units = {units!r} contradict the column {column!r}, whose name says g/kg "
                        "(g/kg = % x 10); state \"g C/kg\" or convert the column")
    if ("co2" in name) != ("co2" in compact) and ("/ha" in compact or name.endswith("_ha")):
        raise SpecError(f"{at}: units = {units!r} and the column {column!r} disagree on CO2e against carbon "
                        "(t CO2e = t C x 44/12); state the column's own units")


def parse_recipe(data: dict, *, base: Path, path: Path | None = None) -> Recipe:
    """Validate a parsed recipe completely, before any work, and return it.

    Every section's keys (with a did-you-mean for a misspelt one), every value's type and range,
    the estimator kind, the estimator's parameter names (against the estimator's own parameters)
    and values (the estimator is fitted once on a tiny synthetic array, so a value the library
    rejects is found now, not after cross-validation), that the feature spec exists, and the
    ``[tuning]`` / ``[selection]`` sections (:mod:`sinks.learn.tuning`: candidate names and values
    checked as params are, one trial fit per value; a grid larger than its budget; ``min_features``
    against the spec's feature count); at least 3 folds (the held-out interval check and the
    nesting need them). Each
    problem is one :class:`~sinks.errors.SpecError` naming the file, the section and the key.
    """
    where = str(path or "recipe")
    check_keys(data, TOP_KEYS, where)
    name = validate.string(data, "name", where, default=path.stem if path else "recipe")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SpecError(f"{where}: 'description' must be a string, got {description!r}")
    features = validate.string(data, "features", where)

    target = validate.table(data, "target", where, required=True)
    at = f"{where} [target]"
    check_keys(target, TARGET_KEYS, at)
    column = validate.string(target, "column", at)
    units = target.get("units", "")
    if not isinstance(units, str):
        raise SpecError(f"{at}: 'units' must be a string such as \"Mg C/ha\", got {units!r}")
    band = validate.string(target, "band", at, default="carbon")
    if not band.replace("_", "").replace("-", "").isalnum():
        raise SpecError(f"{at}: 'band' = {band!r} must be a name of letters, digits, '_' and '-' (it names the map band)")
    derive = validate.string(target, "derive", at, default=None, choices=DERIVATIONS)
    derive_from = validate.string(target, "from", at, default=None)
    if (derive is None) != (derive_from is None):
        raise SpecError(f"{at}: derive and from go together: 'derive' names the conversion, "
                        "'from' the column it converts")
    pool = validate.string(target, "pool", at, default=None, choices=POOLS)
    if pool is not None and units.strip():
        from sinks.learn.targets import target_quantity

        if target_quantity(units, column) is None:
            raise SpecError(f"{at}: units = {units!r} for the {pool} pool is neither a carbon stock density "
                            "(\"Mg C/ha\", which maps, totals and crediting read) nor a concentration (\"g C/kg\", "
                            "\"%\"); convert the column and state its units")
    _check_units_match_column(column, units, at)
    weights = validate.string(target, "weights", at, default=None)

    estimator = validate.table(data, "estimator", where)
    at = f"{where} [estimator]"
    check_keys(estimator, ESTIMATOR_KEYS, at)
    kind = validate.string(estimator, "kind", at, default="xgboost", choices=ESTIMATORS)
    params = validate.table(estimator, "params", at)
    check_param_names(kind, params, f"{at} params")

    validation = validate.table(data, "validation", where)
    at = f"{where} [validation]"
    check_keys(validation, VALIDATION_KEYS, at)
    # 3 at least: an interval is calibrated on K - 1 folds and checked on the held-out one, and its
    # difficulty model's neighbours come from yet another fold; kNNDM and nested tuning need 3 as well
    # (with 2 folds the held-out check measured 39 % coverage at 90 %)
    folds = validate.number(validation, "folds", at, default=5, integer=True, minimum=3)
    block_size = validate.number(validation, "block_size", at, default=None, minimum=0,
                                 exclusive_minimum=True)
    schemes = validation.get("schemes", list(SCHEMES))
    if not isinstance(schemes, list) or not schemes or not all(isinstance(s, str) for s in schemes):
        raise SpecError(f"{at}: 'schemes' must be a list of scheme names such as {list(SCHEMES)}, got {schemes!r}")
    for s in schemes:
        if s not in SCHEMES:
            raise SpecError(f"{at}: 'schemes' names {s!r}, not one of {', '.join(SCHEMES)}"
                            f"{validate.did_you_mean(s, SCHEMES)}")
    scheme = validate.string(validation, "scheme", at, default="knndm", choices=SCHEMES)
    schemes = tuple(dict.fromkeys([*schemes, scheme]))  # the chosen scheme is always run
    seed = validate.number(validation, "seed", at, default=0, integer=True, minimum=0, maximum=2**32 - 1)

    intervals = validate.table(data, "intervals", where)
    at = f"{where} [intervals]"
    check_keys(intervals, INTERVAL_KEYS, at)
    level = intervals.get("level")
    if validate.looks_like_percentage(level):
        raise SpecError(f"{at}: 'level' = {level!r} looks like a percentage; the level is a fraction "
                        f"between 0 and 1: write level = {level / 100:g}")
    level = validate.number(intervals, "level", at, default=0.9, minimum=0, maximum=1,
                            exclusive_minimum=True, exclusive_maximum=True)
    method = validate.string(intervals, "method", at, default="normalized", choices=INTERVAL_METHODS)
    neighbours = validate.number(intervals, "neighbours", at, default=10, integer=True, minimum=1, maximum=1000)
    bins = validate.number(intervals, "bins", at, default=4, integer=True, minimum=1, maximum=50)
    check = validate.string(intervals, "check", at, default="fast", choices=CHECKS)

    features_path = (base / features).resolve()
    if not features_path.is_file():
        raise SpecError(f"{where}: 'features' = {features!r}: feature spec {features_path} not found "
                        "(the path is relative to the recipe file)")
    check_params(kind, params, f"{where} [estimator] params")
    from sinks.covariates.spec import load_spec

    feature_names = load_spec(features_path).feature_names
    for key, named in (("column", column), ("from", derive_from), ("weights", weights)):
        if named is not None and named in feature_names:  # the model would be fitted on its own target
            raise SpecError(f"{where} [target] {key} = {named!r} is also a feature of spec {features_path.name}: the "
                            "model would predict the target from itself (leakage); name another column")
    tuning_section = validate.table(data, "tuning", where)
    selection_section = validate.table(data, "selection", where)
    tuning = parse_tuning(tuning_section, kind=kind, params=params, where=where)
    selection = None
    if selection_section:
        selection = parse_selection(selection_section, params=params, n_features=len(feature_names),
                                    spec=features_path.name, where=where)
    if method == "cqr":
        if not is_quantile(kind):
            raise SpecError(f"{where} [intervals]: method = \"cqr\" (conformalised quantile regression) needs a "
                            f"quantile estimator ([estimator] kind = \"xgboost_quantile\" or \"quantile_forest\"), "
                            f"not {kind!r}")
        check_interval_level(kind, params, level, f"{where} [estimator] params")
        for value in (tuning.params.get("quantile_alpha", ()) if tuning else ()):  # each candidate needs the tails
            check_interval_level(kind, {**params, "quantile_alpha": value}, level, f"{where} [tuning] params")
    return Recipe(
        name=name, description=description, features=features_path, target=column,
        target_units=units, band=band, derive=derive, derive_from=derive_from, pool=pool, weights=weights,
        estimator=kind, params=dict(params), folds=folds, block_size=block_size, seed=seed,
        interval_level=level, schemes=schemes, scheme=scheme, interval_method=method,
        interval_neighbours=neighbours, interval_bins=bins, interval_check=check, tuning=tuning, selection=selection,
        path=path, raw=data,
    )
