"""Bad-input catalogue of ``sinks train``: recipe mistakes, target problems, tables and outputs.

Every case must be refused before any fitting with one line on stderr that names the file,
section, key, column or rows, a non-zero exit, no traceback, and the work folder byte-for-byte as
it was (see :mod:`tests.badinput`). The table is synthetic: 60 plots over 3 x 3 km with the 12
feature columns of ``features/meuse.toml`` and a forest carbon stock target.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sinks.cli import main
from sinks.covariates.spec import load_spec
from tests.badinput import assert_refused, tree_hash

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "features" / "meuse.toml"
FEATURES = load_spec(SPEC).feature_names


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def to_toml(data: dict) -> str:
    """A small TOML writer for recipes (top-level scalars, then one level of sections)."""
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, section in data.items():
        if isinstance(section, dict):
            lines.append(f"\n[{name}]")
            lines += [f"{k} = {_value(v)}" for k, v in section.items()]
    return "\n".join(lines) + "\n"


def base_recipe() -> dict:
    return {
        "name": "synthetic",
        "features": str(SPEC),
        "target": {"column": "carbon_mg_ha", "units": "Mg C/ha", "band": "carbon", "pool": "forest"},
        "estimator": {"kind": "xgboost", "params": {"n_estimators": 20, "max_depth": 2, "n_jobs": 1}},
        "validation": {"folds": 3, "block_size": 500, "seed": 0},
        "intervals": {"level": 0.9},
    }


def base_table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"plot_id": [f"P{i:03d}" for i in range(n)],
                          "x": 178440 + rng.uniform(0, 3000, n), "y": 329600 + rng.uniform(0, 3000, n)})  # on the spec grid
    for name in FEATURES:
        frame[name] = rng.normal(size=n)
    frame["carbon_mg_ha"] = 80 + 20 * frame[FEATURES[0]] + rng.normal(0, 5, n)
    frame["pool"] = "forest"
    return frame


@pytest.fixture
def work(tmp_path):
    """``(folder, recipe_path, table_path)`` with a good recipe and table in a fresh folder."""
    folder = tmp_path / "work"
    folder.mkdir()
    recipe, table = folder / "recipe.toml", folder / "features.csv"
    recipe.write_text(to_toml(base_recipe()))
    base_table().to_csv(table, index=False)
    return folder, recipe, table


def _argv(recipe, table, out, *extra):
    return ["train", str(recipe), str(table), "--out", str(out), "--quiet", *extra]


# ---- recipe mistakes: found when the recipe is loaded, before the table is read ------------------

def _edit(section, key, value=None, *, drop=None):
    def apply(recipe):
        target = recipe if section is None else recipe.setdefault(section, {})
        if drop:
            target.pop(drop)
        if key is not None:
            target[key] = value
        return recipe
    return apply


RECIPE_CASES = {
    "top-level typo": (_edit(None, "featurs", str(SPEC), drop="features"), ["featurs", "did you mean 'features'"]),
    "target key typo": (_edit("target", "colum", "carbon_mg_ha", drop="column"), ["[target]", "colum", "'column'"]),
    "estimator key typo": (_edit("estimator", "parms", {"max_depth": 2}, drop="params"), ["[estimator]", "parms", "'params'"]),
    "validation key typo": (_edit("validation", "fold", 5, drop="folds"), ["[validation]", "'fold'", "'folds'"]),
    "intervals key typo": (_edit("intervals", "levle", 0.9, drop="level"), ["[intervals]", "levle", "'level'"]),
    "folds 1": (_edit("validation", "folds", 1), ["[validation]", "folds", ">= 3"]),
    "folds 2": (_edit("validation", "folds", 2), ["[validation]", "folds", ">= 3"]),
    "folds not integer": (_edit("validation", "folds", 2.5), ["folds", "integer"]),
    "folds as text": (_edit("validation", "folds", "5"), ["folds", "integer", "'5'"]),
    "block_size 0": (_edit("validation", "block_size", 0), ["block_size", "> 0"]),
    "block_size negative": (_edit("validation", "block_size", -500), ["block_size", "> 0"]),
    "seed not integer": (_edit("validation", "seed", 1.5), ["seed", "integer"]),
    "level as percent": (_edit("intervals", "level", 90), ["level", "percentage", "0.9"]),
    "level 1": (_edit("intervals", "level", 1.0), ["[intervals]", "level", "< 1"]),
    "level 0": (_edit("intervals", "level", 0), ["level", "> 0"]),
    "level 1.5 (not a percentage)": (_edit("intervals", "level", 1.5), ["[intervals]", "level", "< 1"]),
    "neighbours beyond the plots": (_edit("intervals", "neighbours", 100), ["[intervals]", "neighbours = 100",
                                                                           "other folds"]),
    "param NaN": (_edit("estimator", "params", {"learning_rate": float("nan")}),
                  ["[estimator] params", "learning_rate", "not a finite number"]),
    "param infinite": (_edit("estimator", "params", {"reg_lambda": float("inf")}), ["reg_lambda", "not a finite number"]),
    "estimator kind typo": (_edit("estimator", "kind", "xgbost"), ["kind", "xgbost", "did you mean 'xgboost'"]),
    "param name typo": (_edit("estimator", "params", {"max_dept": 3}), ["params", "max_dept", "did you mean 'max_depth'"]),
    "param rejected: max_depth -1": (_edit("estimator", "params", {"max_depth": -1}), ["[estimator] params", "max_depth", "-1"]),
    "param rejected: objective": (_edit("estimator", "params", {"objective": "nonsense"}), ["[estimator] params", "objective", "nonsense"]),
    "param not numeric": (_edit("estimator", "params", {"learning_rate": "fast"}), ["params", "learning_rate", "must be a number", "fast"]),
    "param out of range: n_estimators": (_edit("estimator", "params", {"n_estimators": 0}), ["params", "n_estimators", ">= 1"]),
    "param out of range: subsample": (_edit("estimator", "params", {"subsample": 2.0}), ["params", "subsample"]),
    "param unusable: early stopping": (_edit("estimator", "params", {"early_stopping_rounds": 10}), ["early_stopping_rounds", "n_estimators"]),
    "param: named monotone constraints": (_edit("estimator", "params", {"monotone_constraints": {"elevation": 1}}),
                                          ["monotone_constraints", "not supported", "list"]),
    "param: constraints for more features than the spec": (
        _edit("estimator", "params", {"monotone_constraints": [1] + [0] * 13}), ["monotone_constraint", "14 vs. 12"]),
    "params not a table": (_edit("estimator", "params", "max_depth=3"), ["params", "must be a table"]),
    "feature spec missing": (_edit(None, "features", "nowhere/spec.toml"), ["features", "nowhere", "not found"]),
    "units contradict the column's name": (_edit("target", "units", "kg C/ha", drop="pool"),
                                           ["[target]", "'kg C/ha'", "'carbon_mg_ha'", "Mg/ha"]),
    "stock units for a concentration column": (
        lambda r: _edit("target", "units", "Mg C/ha", drop="pool")(_edit("target", "column", "soc_g_kg")(r)),
        ["[target]", "'Mg C/ha'", "'soc_g_kg'", "concentration"]),
    "CO2e units for a carbon column": (_edit("target", "units", "t CO2e/ha", drop="pool"),
                                       ["CO2e against carbon", "44/12"]),
    "target column is a feature": (_edit("target", "column", FEATURES[0]),
                                   ["[target] column", repr(FEATURES[0]), "also a feature", "leakage"]),
    "derive unknown": (_edit("target", "derive", "soc_from_om"), ["derive", "soc_from_om", "soc_g_kg_from_organic_matter_pct"]),
    "derive without from": (_edit("target", "derive", "soc_g_kg_from_organic_matter_pct"), ["derive and from"]),
    "pool typo": (_edit("target", "pool", "forrest"), ["pool", "forrest", "did you mean 'forest'"]),
    "units neither stock nor concentration": (lambda r: _edit("target", "units", "kg C/ha")(_edit("target", "pool", "forest")(r)),
                                              ["units", "kg C/ha", "Mg C/ha"]),
    "target not a table": (_edit(None, "target", "carbon_mg_ha"), ["target", "must be a table"]),
    "target section missing": (_edit(None, None, drop="target"), ["missing [target]"]),
}


@pytest.mark.parametrize("case", list(RECIPE_CASES))
def test_recipe_mistakes_are_refused_at_load(work, capsys, case):
    folder, recipe, table = work
    edit, keywords = RECIPE_CASES[case]
    recipe.write_text(to_toml(edit(base_recipe())))
    line = assert_refused(_argv(recipe, table, folder / "model"), capsys,
                          keywords=[str(recipe), *keywords], watch=folder.parent)
    assert "sinks train: error:" in line


def test_recipe_not_toml_and_missing(work, capsys):
    folder, recipe, table = work
    recipe.write_text("name = 'x\n[target\n")
    assert_refused(_argv(recipe, table, folder / "model"), capsys, keywords=["recipe.toml", "not valid TOML"],
                   watch=folder.parent)
    assert_refused(_argv(folder / "none.toml", table, folder / "model"), capsys,
                   keywords=["none.toml", "recipe not found"], watch=folder.parent)


# ---- target and table problems: found before any fitting -----------------------------------------

def _table_edit(fn):
    def apply(frame):
        result = fn(frame)
        return frame if result is None else result
    return apply


def _nan_rows(frame):
    frame.loc[5:, FEATURES[3]] = np.nan


TABLE_CASES = {
    "constant target": (_table_edit(lambda f: f.__setitem__("carbon_mg_ha", 42.0)),
                        ["carbon_mg_ha", "constant", "42"]),
    "negative target": (_table_edit(lambda f: f.loc.__setitem__(([3, 7], "carbon_mg_ha"), -12.0)),
                        ["carbon_mg_ha", "row(s) 4, 8", "negative"]),
    "x1000 slip (pool from recipe)": (_table_edit(lambda f: f.__setitem__("carbon_mg_ha", f["carbon_mg_ha"] * 1000)),
                                      ["carbon_mg_ha", "plausible maximum", "forest", "Mg C/ha", "x1000"]),
    "duplicated plot ids": (_table_edit(lambda f: f.loc.__setitem__((10, "plot_id"), "P002")),
                            ["plot_id", "P002", "rows 3, 11", "more than once"]),
    "infinite feature": (_table_edit(lambda f: f.loc.__setitem__(([2, 9], FEATURES[5]), np.inf)),
                         [FEATURES[5], "infinite", "2 row(s)", "3, 10"]),
    "unmasked nodata feature": (_table_edit(lambda f: f.loc.__setitem__(([3, 7], FEATURES[2]), -9999.0)),
                                [FEATURES[2], "row(s) 4, 8", "-9999", "nodata value that was not masked"]),
    "float32-lowest feature": (_table_edit(lambda f: f.loc.__setitem__((5, FEATURES[0]), float(np.finfo(np.float32).min))),
                               [FEATURES[0], "row(s) 6", "nodata value"]),
    "infinite target": (_table_edit(lambda f: f.loc.__setitem__((4, "carbon_mg_ha"), np.inf)),
                        ["carbon_mg_ha", "row(s) 5", "infinite"]),
    "too many missing": (_table_edit(_nan_rows), ["only 5 of 60 rows", "usable", f"{FEATURES[3]} 55"]),
    "text in target": (_table_edit(lambda f: f.__setitem__("carbon_mg_ha", f["carbon_mg_ha"].astype(object))
                                   or f.loc.__setitem__((6, "carbon_mg_ha"), "12,5")),
                       ["carbon_mg_ha", "row(s) 7", "not numbers", "12,5"]),
    "missing feature columns": (_table_edit(lambda f: f.drop(columns=[FEATURES[1], FEATURES[2]])),
                                ["lacks 2 of the 12 feature column", FEATURES[1], FEATURES[2], "sinks extract"]),
    "missing target column": (_table_edit(lambda f: f.drop(columns=["carbon_mg_ha"])),
                              ["no target column", "carbon_mg_ha", "[target] column"]),
    "missing x/y values": (_table_edit(lambda f: f.loc.__setitem__((0, "x"), np.nan)), ["row(s) 1", "x/y"]),
    "x/y in degrees for a metric grid": (
        _table_edit(lambda f: f.assign(x=5.7 + (f["x"] - 178440) / 7e4, y=50.96 + (f["y"] - 329600) / 1.1e5)),
        ["60 of 60 usable plots lie outside the grid of spec 'meuse'", "EPSG:28992", "longitude/latitude degrees",
         "--crs"]),
    "x and y swapped": (_table_edit(lambda f: f.assign(x=f["y"], y=f["x"])), ["outside the grid", "x and y swapped"]),
    "every plot at one location": (_table_edit(lambda f: f.assign(x=179000.0, y=330000.0)),
                                   ["all 60 usable plots share one location", "x 179000, y 330000"]),
}


@pytest.mark.parametrize("case", list(TABLE_CASES))
def test_target_and_table_problems_are_refused(work, capsys, case):
    folder, recipe, table = work
    edit, keywords = TABLE_CASES[case]
    edit(base_table()).to_csv(table, index=False)
    assert_refused(_argv(recipe, table, folder / "model"), capsys, keywords=[str(table), *keywords],
                   watch=folder.parent)


def test_x1000_slip_with_pool_from_the_table(work, capsys):
    folder, recipe, table = work
    data = base_recipe()
    del data["target"]["pool"]
    recipe.write_text(to_toml(data))
    frame = base_table()
    frame.loc[[1, 2], "carbon_mg_ha"] *= 1000
    frame.to_csv(table, index=False)
    assert_refused(_argv(recipe, table, folder / "model"), capsys,
                   keywords=["row(s) 2, 3", "plausible maximum", "forest"], watch=folder.parent)


def test_negative_concentration_target(work, capsys):
    folder, recipe, table = work
    data = base_recipe()
    data["target"] = {"column": "soc", "units": "g C/kg", "pool": "soil"}
    recipe.write_text(to_toml(data))
    frame = base_table()
    frame["soc"] = frame["carbon_mg_ha"] / 4
    frame.loc[0, "soc"] = -1
    frame.to_csv(table, index=False)
    assert_refused(_argv(recipe, table, folder / "model"), capsys,
                   keywords=["'soc'", "row(s) 1", "negative", "concentration"], watch=folder.parent)


@pytest.mark.parametrize("units, limit", [("g C/kg", "600 g C/kg"), ("%", "60 %")])
def test_a_concentration_beyond_pure_organic_matter_is_refused(work, capsys, units, limit):
    """Meuse's organic matter x 1000 trained to an RMSE of 1.4e4 g C/kg."""
    folder, recipe, table = work
    data = base_recipe()
    data["target"] = {"column": "soc", "units": units, "pool": "soil"}
    recipe.write_text(to_toml(data))
    frame = base_table()
    frame["soc"] = frame["carbon_mg_ha"] / 40
    frame.loc[[2, 5], "soc"] = 700.0
    frame.to_csv(table, index=False)
    assert_refused(_argv(recipe, table, folder / "model"), capsys,
                   keywords=["'soc'", "row(s) 3, 6", f"exceed {limit}", "pure organic matter", "unit slip"],
                   watch=folder.parent)


def test_a_percentage_that_is_not_carbon_is_not_bounded_as_carbon(work, capsys):
    """A bare % target without a pool (organic matter of peat, canopy cover) is not held to 60 % carbon."""
    from sinks.cli import main

    folder, recipe, table = work
    data = base_recipe()
    data["target"] = {"column": "cover", "units": "%"}
    recipe.write_text(to_toml(data))
    frame = base_table().drop(columns="pool")
    frame["cover"] = np.clip(frame["carbon_mg_ha"], 0, 100)
    frame.loc[2, "cover"] = 85.0
    frame.to_csv(table, index=False)
    assert main(_argv(recipe, table, folder / "model")) == 0


def test_too_few_plots(work, capsys):
    folder, recipe, table = work
    base_table(n=8).to_csv(table, index=False)
    assert_refused(_argv(recipe, table, folder / "model"), capsys,
                   keywords=["the table has 8 usable rows", "at least 10"], watch=folder.parent)


def test_too_few_blocks_for_the_folds(work, capsys):
    folder, recipe, table = work
    data = base_recipe()
    data["validation"]["block_size"] = 2000  # 3 x 3 km: at most 4 blocks
    data["validation"]["folds"] = 5
    recipe.write_text(to_toml(data))
    assert_refused(_argv(recipe, table, folder / "model"), capsys,
                   keywords=["spatial block", "2000", "5 folds", "block_size"], watch=folder.parent)


def test_interval_level_needs_enough_plots(work, capsys):
    folder, recipe, table = work
    data = base_recipe()
    data["intervals"]["level"] = 0.99
    recipe.write_text(to_toml(data))
    assert_refused(_argv(recipe, table, folder / "model"), capsys,
                   keywords=["0.99 interval needs at least 99 calibration plots", "the table has 60 usable rows",
                             "the highest level 60 plots support is 0.983"], watch=folder.parent)


# ---- tables that cannot be read -------------------------------------------------------------------

def test_missing_table(work, capsys):
    folder, recipe, _ = work
    assert_refused(_argv(recipe, folder / "nope.csv", folder / "model"), capsys,
                   keywords=["nope.csv", "not found"], watch=folder.parent)


def test_table_without_xy(work, capsys):
    folder, recipe, table = work
    base_table().drop(columns=["x", "y"]).to_csv(table, index=False)
    assert_refused(_argv(recipe, table, folder / "model"), capsys,
                   keywords=[str(table), "missing required column", "x, y"], watch=folder.parent)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_corrupt_table(work, capsys, suffix):
    folder, recipe, _ = work
    table = folder / f"garbage{suffix}"
    table.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)))
    assert_refused(_argv(recipe, table, folder / "model"), capsys, keywords=[str(table)], watch=folder.parent)


# ---- outputs: never destroy a user's folder ------------------------------------------------------

def _user_folder(folder: Path) -> Path:
    mine = folder / "myproject"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "field.txt").write_text("plot 7 re-measured\n")
    (mine / "data.csv").write_text("a,b\n1,2\n")
    return mine


@pytest.mark.parametrize("overwrite", [False, True])
def test_out_naming_a_user_folder_is_never_replaced(work, capsys, overwrite):
    folder, recipe, table = work
    mine = _user_folder(folder)
    before = tree_hash(mine)
    extra = ["--overwrite"] if overwrite else []
    assert_refused(_argv(recipe, table, mine, *extra), capsys,
                   keywords=["myproject", "not a sinks bundle", "never replaces"], watch=folder.parent)
    assert tree_hash(mine) == before


def test_out_parent_missing_and_out_a_file(work, capsys):
    folder, recipe, table = work
    assert_refused(_argv(recipe, table, folder / "no" / "such" / "model"), capsys,
                   keywords=["does not exist", "create it first"], watch=folder.parent)
    assert_refused(_argv(recipe, table, table), capsys, keywords=["features.csv", "is a file"], watch=folder.parent)


def test_existing_bundle_needs_overwrite_and_is_replaced_with_it(work, capsys):
    folder, recipe, table = work
    out = folder / "model"
    assert main(_argv(recipe, table, out)) == 0
    first = json.loads((out / "metadata.json").read_text())
    assert first["target"]["pool"] == "forest" and first["training"]["n"] == 60
    assert_refused(_argv(recipe, table, out), capsys, keywords=["model", "bundle exists", "--overwrite"],
                   watch=folder.parent)

    data = base_recipe()
    data["validation"]["seed"] = 1
    recipe.write_text(to_toml(data))
    capsys.readouterr()
    assert main(_argv(recipe, table, out, "--overwrite")) == 0
    second = json.loads((out / "metadata.json").read_text())
    assert second["validation_setup"]["seed"] == 1 and second["bundle_id"] != first["bundle_id"]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no staging left
    assert "bundle" in capsys.readouterr().out


def test_empty_folder_becomes_a_bundle(work, capsys):
    folder, recipe, table = work
    out = folder / "empty"
    out.mkdir()
    assert main(_argv(recipe, table, out)) == 0
    assert (out / "metadata.json").is_file()


def test_a_table_extracted_with_another_spec_is_refused(work, tmp_path):
    """Same feature names, other definitions (the fingerprint extract stamps): evaluate refused such a
    table, train fitted it."""
    from sinks.errors import ModelMismatchError
    from sinks.learn.recipe import load_recipe
    from sinks.learn.train import train

    folder, recipe, _ = work
    table = base_table()
    table.attrs.update(spec="meuse", spec_fingerprint="0" * 64)
    with pytest.raises(ModelMismatchError, match="extracted with spec 'meuse' .fingerprint 000000000000.*defines the "
                                                 "features differently"):
        train(load_recipe(recipe), table, tmp_path / "model", progress=False)
    assert not (tmp_path / "model").exists()


def test_a_constant_feature_is_warned_about(work, capsys):
    """One value at every plot (a raster band of a single value): trained, but said."""
    from sinks.cli import main

    folder, recipe, table = work
    base_table().assign(**{FEATURES[4]: 0.5}).to_csv(table, index=False)
    assert main(_argv(recipe, table, folder / "model")) == 0
    err = capsys.readouterr().err
    assert f"sinks train: warning: feature(s) {FEATURES[4]} hold one value at every usable plot" in err
    meta = json.loads((folder / "model" / "metadata.json").read_text())
    assert meta["training"]["constant_features"] == [FEATURES[4]]


def test_plots_sharing_a_location_or_off_the_grid_are_warned_about(work, capsys):
    """Remeasured or duplicated plots and a few plots off the grid: trained, but said and recorded."""
    from sinks.cli import main

    folder, recipe, table = work
    frame = base_table()
    copies = frame.iloc[:6].assign(plot_id=[f"D{i}" for i in range(6)])  # the same plots under new ids
    frame = pd.concat([frame, copies], ignore_index=True)
    frame.loc[[20, 21], "x"] += 50_000  # 50 km off the grid
    frame.to_csv(table, index=False)
    assert main(_argv(recipe, table, folder / "model")) == 0
    err = capsys.readouterr().err
    assert "warning: 12 plots share their x, y with another plot" in err
    assert "warning: 2 plots lie outside the spec's grid" in err
    meta = json.loads((folder / "model" / "metadata.json").read_text())
    assert meta["training"]["plots_sharing_a_location"] == 12 and meta["training"]["plots_outside_grid"] == 2


def test_blocks_smaller_than_the_plot_spacing_are_warned_about(work, capsys):
    """block_size = 0.5 (meant as km) made 'blocks' CV random CV: R2 0.556 against 0.263, labelled spatial."""
    from sinks.cli import main

    folder, recipe, table = work
    assert main(_argv(recipe, table, folder / "model")) == 0
    assert "smaller than the plots' median spacing" not in capsys.readouterr().err
    data = base_recipe()
    data["validation"]["block_size"] = 50
    recipe.write_text(to_toml(data))
    assert main(_argv(recipe, table, folder / "model2")) == 0
    err = capsys.readouterr().err
    assert "warning: blocks of 50 m are smaller than the plots' median spacing" in err
    spacing = json.loads((folder / "model2" / "metadata.json").read_text())["validation_setup"]["plot_spacing_m"]
    assert 100 < spacing < 400
