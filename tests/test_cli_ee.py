"""``sinks extract|stack --engine ee``, offline: every server call refused or answered by the test."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sinks.cli import main
from sinks.covariates.spec import load_spec

ee_api = pytest.importorskip("ee")

from tests.ee_offline import encode, invocations, offline_ee  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEM_FEATURES = ["elevation", "slope", "aspect", "northness", "eastness", "tpi"]


@pytest.fixture()
def ee(monkeypatch):
    """Offline ``ee``; ``ee.Initialize`` records the project the command passed instead of signing in."""
    with offline_ee() as module:
        projects = []
        monkeypatch.setattr(module, "Initialize", lambda *args, project=None, **kwargs: projects.append(project))
        module.projects = projects
        yield module


@pytest.fixture()
def plots_csv(tmp_path):
    path = tmp_path / "plots.csv"
    pd.DataFrame({"plot_id": ["p1", "p2"], "x": [104.05, 104.10], "y": [30.65, 30.70],
                  "carbon_mg_ha": [81.5, 40.2]}).to_csv(path, index=False)
    return path


def test_extract_on_earth_engine(ee, monkeypatch, plots_csv, tmp_path, capsys):
    requests = []

    def answer(obj, *args, **kwargs):
        requests.append(encode(obj))
        rows = [{"_row": i, "_one_count": 1, "_valid_count": 1,
                 **{f"{name}_mean": 500.0 + i for name in DEM_FEATURES}} for i in range(2)]
        return {"type": "FeatureCollection", "features": [{"properties": p} for p in rows]}

    monkeypatch.setattr(ee.data, "computeValue", answer)
    out = tmp_path / "features.csv"
    code = main(["extract", str(REPO / "features" / "dem.toml"), str(plots_csv), "--crs", "EPSG:4326",
                 "--engine", "ee", "--ee-project", "my-project", "--out", str(out)])
    assert code == 0 and ee.projects == ["my-project"]
    table = pd.read_csv(out)
    assert table["plot_id"].tolist() == ["p1", "p2"] and table["elevation"].tolist() == [500.0, 501.0]
    assert table["carbon_mg_ha"].tolist() == [81.5, 40.2]  # the plot table's columns come along
    assert "(ee engine)" in capsys.readouterr().out
    call = invocations(requests[0], "Image.reduceRegions")[0]
    assert "EPSG:32650" in str(call["crs"])  # sampled on the spec's grid, not the plots' CRS


def test_stack_exports_on_earth_engine(ee, monkeypatch, tmp_path, capsys):
    spec_path = tmp_path / "dem.toml"
    text = (REPO / "features" / "dem.toml").read_text()
    spec_path.write_text(text.replace('like = "dem"', "extent = [400000, 3300000, 430000, 3330000]"))
    started = []
    monkeypatch.setattr(ee.data, "newTaskId", lambda count=1: ["TASK123"])
    monkeypatch.setattr(ee.data, "exportImage",
                        lambda request_id, config: started.append(config) or {"name": "projects/p/operations/TASK123"})
    code = main(["stack", str(spec_path), "--engine", "ee", "--ee-project", "my-project", "--bucket", "carbon-maps",
                 "--out", "county/dem", "--tile-pixels", "512"])
    assert code == 0 and ee.projects == ["my-project"]
    options = started[0]["fileExportOptions"]
    assert options["cloudStorageDestination"] == {"bucket": "carbon-maps", "filenamePrefix": "county/dem"}
    assert options["geoTiffOptions"]["tileDimensions"] == {"width": 512, "height": 512}
    assert load_spec(spec_path).feature_names == DEM_FEATURES
    printed = capsys.readouterr().out
    assert "TASK123" in printed and "gs://carbon-maps/county/dem" in printed
    assert not (tmp_path / "county").exists()  # nothing written locally


@pytest.mark.parametrize("extra, message", [
    (["--engine", "ee", "--ee-project", "p"], "--bucket BUCKET or --drive-folder FOLDER"),
    (["--engine", "ee", "--bucket", "b"], "--ee-project PROJECT"),
    (["--bucket", "b"], "are for --engine ee"),
    (["--ee-project", "p"], "--ee-project is for --engine ee"),
    (["--engine", "ee", "--bucket", "b", "--ee-project", "p"], "grid has no extent"),  # found before the sign-in
    (["--engine", "ee", "--bucket", "b", "--ee-project", "p", "--tile-pixels", "100"], "multiple of 256"),
])
def test_stack_engine_options_are_checked(ee, tmp_path, capsys, extra, message):
    out = tmp_path / "stack.tif"
    assert main(["stack", str(REPO / "features" / "dem.toml"), "--out", str(out), *extra]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and ee.projects == []


def test_extract_failed_sign_in_is_one_line(monkeypatch, plots_csv, tmp_path, capsys):
    def no_credentials(*args, **kwargs):
        raise ee_api.EEException("Please authorize access to your Earth Engine account")

    monkeypatch.setattr(ee_api, "Initialize", no_credentials)
    out = tmp_path / "features.csv"
    code = main(["extract", str(REPO / "features" / "dem.toml"), str(plots_csv), "--crs", "EPSG:4326",
                 "--engine", "ee", "--ee-project", "my-project", "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "earthengine authenticate" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _dem_bundle(tmp_path):
    """A small bundle trained on the DEM spec's features (on an explicit extent, so no local raster)."""
    import numpy as np

    from sinks.learn.recipe import parse_recipe
    from sinks.learn.train import train

    spec_path = tmp_path / "dem.toml"
    text = (REPO / "features" / "dem.toml").read_text()
    spec_path.write_text(text.replace('like = "dem"', "extent = [400000, 3300000, 430000, 3330000]"))
    rng = np.random.default_rng(1)
    n = 60
    table = pd.DataFrame({"plot_id": range(n), "x": rng.uniform(400000, 430000, n), "y": rng.uniform(3300000, 3330000, n),
                          **{name: rng.normal(size=n) for name in DEM_FEATURES}})
    table["carbon_mg_ha"] = 60 + 15 * table["elevation"] + rng.normal(0, 3, n)
    recipe = parse_recipe({"name": "dem", "features": str(spec_path),
                           "target": {"column": "carbon_mg_ha", "units": "Mg C/ha"},
                           "estimator": {"kind": "random_forest", "params": {"n_estimators": 5, "max_depth": 3}},
                           "validation": {"folds": 3, "schemes": ["random"], "scheme": "random"}},
                          base=tmp_path, path=tmp_path / "r.toml")
    return train(recipe, table, tmp_path / "bundle", progress=False), spec_path


def test_map_exports_on_earth_engine(ee, monkeypatch, tmp_path, capsys):
    bundle, spec_path = _dem_bundle(tmp_path)
    started = []
    monkeypatch.setattr(ee.data, "newTaskId", lambda count=1: ["TASK9"])
    monkeypatch.setattr(ee.data, "exportImage",
                        lambda request_id, config: started.append(config) or {"name": "projects/p/operations/TASK9"})
    code = main(["map", str(bundle), str(spec_path), "--engine", "ee", "--ee-project", "my-project",
                 "--drive-folder", "maps", "--out", "county/carbon"])
    assert code == 0, capsys.readouterr().err
    assert ee.projects == ["my-project"]
    assert started[0]["fileExportOptions"]["driveDestination"] == {"folder": "maps", "filenamePrefix": "county/carbon"}
    assert invocations(encode(started[0]["expression"]), "Classifier.decisionTreeEnsemble")
    assert "TASK9" in capsys.readouterr().out
    assert not (tmp_path / "county").exists()


@pytest.mark.parametrize("extra, message", [
    (["--engine", "ee", "--ee-project", "p"], "--bucket BUCKET or --drive-folder FOLDER"),
    (["--engine", "ee", "--ee-project", "p", "--bucket", "b", "--bands", "carbon,lower"], "prediction band only"),
    (["--bucket", "b"], "are for --engine ee"),
    (["--trees", "gs://b/t.txt"], "--trees is for --engine ee"),
    (["--engine", "ee", "--ee-project", "p", "--bucket", "b", "--year", "2025"], "--year tags a local map"),
])
def test_map_engine_options_are_checked(ee, tmp_path, capsys, extra, message):
    bundle, spec_path = _dem_bundle(tmp_path)
    out = tmp_path / "map.tif"
    capsys.readouterr()
    assert main(["map", str(bundle), str(spec_path), "--out", str(out), *extra]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and ee.projects == []
