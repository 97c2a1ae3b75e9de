"""The ``sinks`` command: help for every step, and one clear line for bad input."""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import Point

from sinks.cli import COMMANDS, build_parser, main
from sinks.demo.world import make_world


def test_help_lists_every_step(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in text


@pytest.mark.parametrize("argv", [[c] for c in COMMANDS if c != "stocks"]
                         + [["stocks", p] for p in ("forest", "soil", "wetland", "gedi")] + [["stocks"]])
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: sinks" in capsys.readouterr().out


def test_version_and_entry_point():
    done = subprocess.run([sys.executable, "-m", "sinks.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("sinks ")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"), size=150, seed=3)


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def _one_clean_line(err: str):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_stocks_missing_file_and_column(world, tmp_path, capsys):
    code, err = _run(["stocks", "forest", str(tmp_path / "nope.csv"), "--plots", str(world.plots),
                      "--out", str(tmp_path / "o.gpkg")], capsys)
    assert code != 0 and "file not found" in _one_clean_line(err)
    pd.read_csv(world.trees).drop(columns="dbh_cm").to_csv(tmp_path / "t.csv", index=False)
    code, err = _run(["stocks", "forest", str(tmp_path / "t.csv"), "--plots", str(world.plots),
                      "--out", str(tmp_path / "o.gpkg")], capsys)
    assert code != 0 and "missing required column(s) dbh_cm" in _one_clean_line(err)
    assert not (tmp_path / "o.gpkg").exists()


def test_debug_shows_the_traceback_and_keeps_the_exit_status(world, tmp_path, capsys):
    """With --debug an InputError came out as exit 1 (a bug) instead of its documented 2."""
    argv = ["stocks", "forest", str(tmp_path / "nope.csv"), "--plots", str(world.plots), "--out", str(tmp_path / "o.csv")]
    code, err = _run(argv + ["--debug"], capsys)
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].endswith("file not found")


def test_extract_crs_mismatch_and_uncovered_plots(world, tmp_path, capsys):
    spec = tmp_path / "features" / "demo.toml"
    spec.parent.mkdir()
    from importlib import resources

    text = resources.files("sinks.demo").joinpath("demo_county.features.toml").read_text()
    spec.write_text(text.replace('"../data/', f'"{world.folder}/'))
    plots = gpd.read_file(world.plots)
    # metre coordinates declared as degrees: a CRS mismatch puts them off the grid
    table = pd.DataFrame({"plot_id": plots.plot_id, "x": plots.geometry.x, "y": plots.geometry.y})
    table.to_csv(tmp_path / "plots.csv", index=False)
    out = tmp_path / "f.csv"
    code, err = _run(["extract", str(spec), str(tmp_path / "plots.csv"), "--crs", "EPSG:4326", "--out", str(out)], capsys)
    line = _one_clean_line(err)
    assert code != 0 and "CRS mismatch" in line and "projected coordinates" in line
    # correct CRS but a plot 50 km away: the rasters do not cover it
    far = gpd.GeoDataFrame({"plot_id": ["far"]}, geometry=[Point(plots.geometry.x[0] + 50_000, plots.geometry.y[0])],
                           crs=plots.crs)
    far.to_file(tmp_path / "far.gpkg")
    code, err = _run(["extract", str(spec), str(tmp_path / "far.gpkg"), "--out", str(out)], capsys)
    assert code != 0 and "far" in _one_clean_line(err)
    code, err = _run(["extract", str(spec), str(tmp_path / "plots.csv"), "--out", str(out)], capsys)
    assert code != 0 and "no CRS" in _one_clean_line(err)
    assert not out.exists()


def test_train_and_map_bad_input(world, tmp_path, capsys):
    code, err = _run(["train", str(tmp_path / "missing.toml"), str(world.trees), "--out", str(tmp_path / "b")], capsys)
    assert code != 0 and "recipe not found" in _one_clean_line(err)
    code, err = _run(["map", str(tmp_path), str(tmp_path / "x.toml"), "--out", str(tmp_path / "m.tif")], capsys)
    assert code != 0 and "not a model bundle" in _one_clean_line(err)
    assert not (tmp_path / "m.tif").exists()


def test_parser_builds_without_optional_extras():
    assert build_parser().prog == "sinks"
