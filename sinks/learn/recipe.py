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
    [estimator]
    kind = "xgboost"                        # see sinks.learn.estimators.ESTIMATORS
    params = { n_estimators = 400, max_depth = 3, learning_rate = 0.05 }
    [validation]
    folds = 5
    block_size = 500                        # spatial CV block side, CRS units of the feature table
    seed = 0
    [intervals]
    level = 0.9
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sinks.errors import SpecError
from sinks.io import read_toml


@dataclass(frozen=True)
class Recipe:
    name: str
    features: Path
    target: str
    target_units: str = ""
    band: str = "carbon"
    derive: str | None = None
    derive_from: str | None = None
    estimator: str = "xgboost"
    params: dict = field(default_factory=dict)
    folds: int = 5
    block_size: float = 1000.0
    seed: int = 0
    interval_level: float = 0.9
    description: str = ""
    path: Path | None = None
    raw: dict = field(default_factory=dict, compare=False)


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a training recipe TOML file."""
    path = Path(path)
    return parse_recipe(read_toml(path, "recipe"), base=path.resolve().parent, path=path)


def parse_recipe(data: dict, *, base: Path, path: Path | None = None) -> Recipe:
    where = str(path or "recipe")
    unknown = set(data) - {"name", "description", "features", "target", "estimator", "validation", "intervals"}
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("features", "target"):
        if key not in data:
            raise SpecError(f"{where}: missing '{key}'")
    target = data["target"]
    if "column" not in target:
        raise SpecError(f"{where}: [target] needs column")
    estimator = data.get("estimator", {})
    validation = data.get("validation", {})
    intervals = data.get("intervals", {})
    recipe = Recipe(
        name=data.get("name", path.stem if path else "recipe"),
        description=data.get("description", ""),
        features=(base / data["features"]).resolve(),
        target=target["column"],
        target_units=target.get("units", ""),
        band=target.get("band", "carbon"),
        derive=target.get("derive"),
        derive_from=target.get("from"),
        estimator=estimator.get("kind", "xgboost"),
        params=dict(estimator.get("params", {})),
        folds=int(validation.get("folds", 5)),
        block_size=float(validation.get("block_size", 1000.0)),
        seed=int(validation.get("seed", 0)),
        interval_level=float(intervals.get("level", 0.9)),
        path=path,
        raw=data,
    )
    if recipe.folds < 2:
        raise SpecError(f"{where}: [validation] folds must be at least 2")
    if bool(recipe.derive) != bool(recipe.derive_from):
        raise SpecError(f"{where}: [target] derive and from go together")
    return recipe
