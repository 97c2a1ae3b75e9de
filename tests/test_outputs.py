"""Outputs never destroy what the user did not ask to replace; tables in Chinese-office encodings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sinks.errors import InputError, OutputError
from sinks.io import atomic_path, check_outputs, read_table, write_table, write_tables
from tests.badinput import tree_hash


@pytest.fixture()
def user_folder(tmp_path):
    folder = tmp_path / "myproject"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return folder


@pytest.mark.parametrize("kind", ["table", "raster", "json", "gpkg"])
def test_file_output_naming_a_folder_is_refused(user_folder, kind):
    before = tree_hash(user_folder)
    for path in (str(user_folder), str(user_folder) + "/"):
        with pytest.raises(OutputError, match="is a folder"):
            check_outputs({path: kind}, overwrite=True)
    assert tree_hash(user_folder) == before


def test_folder_that_is_not_a_bundle_is_never_replaced(user_folder):
    before = tree_hash(user_folder)
    with pytest.raises(OutputError, match="not a sinks bundle"):
        check_outputs({user_folder: "bundle"}, overwrite=True)
    with pytest.raises(OutputError, match="not a sinks bundle"):
        with atomic_path(user_folder, suffix="", folder_kind="bundle") as tmp:
            tmp.mkdir()
    assert tree_hash(user_folder) == before


def test_a_user_folder_with_a_metadata_json_is_not_taken_for_a_bundle(user_folder):
    """A file named metadata.json does not make a folder a bundle: --overwrite used to delete it all."""
    (user_folder / "metadata.json").write_text('{"title": "county inventory 2024"}')
    before = tree_hash(user_folder)
    for path_check in (lambda: check_outputs({user_folder: "bundle"}, overwrite=True),
                       lambda: atomic_path(user_folder, suffix="", folder_kind="bundle").__enter__()):
        with pytest.raises(OutputError, match="not a sinks bundle"):
            path_check()
    assert tree_hash(user_folder) == before


def test_files_added_to_a_bundle_are_never_deleted_by_overwrite(tmp_path):
    import json

    bundle = tmp_path / "model"
    bundle.mkdir()
    (bundle / "metadata.json").write_text(json.dumps({"bundle_id": "abc", "files": {"model.json": "x"}}))
    (bundle / "model.json").write_text("{}")
    (bundle / "MODEL_CARD.md").write_text("card")
    check_outputs({bundle: "bundle"}, overwrite=True)  # a bundle as sinks wrote it is replaceable
    (bundle / "my_notes.txt").write_text("field notes")
    before = tree_hash(bundle)
    with pytest.raises(OutputError, match=r"also holds files sinks did not write \(my_notes.txt\)"):
        check_outputs({bundle: "bundle"}, overwrite=True)
    with pytest.raises(OutputError, match="my_notes.txt"):
        atomic_path(bundle, suffix="", folder_kind="bundle").__enter__()
    assert tree_hash(bundle) == before


def test_files_added_to_a_demo_workspace_are_never_deleted_by_overwrite(tmp_path):
    """`sinks demo --overwrite` deleted reports/my_notes.txt and my_credit.json in the workspace."""
    import json

    from sinks.io import FOLDER_MARKERS, workspace_files

    ws = tmp_path / "demo"
    (ws / "reports").mkdir(parents=True)
    (ws / "reports" / "credits.json").write_text("{}")
    marker = ws / FOLDER_MARKERS["workspace"]
    marker.write_text(json.dumps({"sinks": "demo workspace", "complete": True, "files": workspace_files(ws)}))
    check_outputs({ws: "workspace"}, overwrite=True)  # a workspace as sinks wrote it is replaceable
    (ws / "reports" / "my_notes.txt").write_text("notes")
    (ws / "my_credit.json").write_text("{}")
    before = tree_hash(ws)
    with pytest.raises(OutputError, match=r"files sinks did not write \(my_credit.json, reports/my_notes.txt\)"):
        check_outputs({ws: "workspace"}, overwrite=True)
    assert tree_hash(ws) == before
    marker.write_text(json.dumps({"sinks": "demo workspace", "complete": True}))  # no list: every file is the user's
    with pytest.raises(OutputError, match="reports/credits.json"):
        check_outputs({ws: "workspace"}, overwrite=True)


def test_a_file_never_replaces_a_folder_even_from_python(user_folder):
    before = tree_hash(user_folder)
    with pytest.raises(OutputError, match="is a folder"):
        write_table(pd.DataFrame({"a": [1]}), user_folder / "sub")  # no extension check needed to refuse
    with pytest.raises(OutputError):
        with atomic_path(user_folder) as tmp:
            tmp.write_text("x")
    assert tree_hash(user_folder) == before


def test_existing_file_needs_overwrite(tmp_path):
    out = tmp_path / "t.csv"
    out.write_text("old")
    with pytest.raises(OutputError, match="--overwrite"):
        check_outputs({out: "table"})
    check_outputs({out: "table"}, overwrite=True)


@pytest.mark.parametrize("outputs, inputs, message", [
    ({"t.txt": "table"}, [], "unknown output format"),
    ({"m.csv": "raster"}, [], "unknown output format"),
    ({"r.gpkg": "json"}, [], "unknown output format"),
    ({"r.json": "json", "r.gpkg": "gpkg", "r2.gpkg": "table"}, ["r2.gpkg"], "is also an input"),
    ({"missing/t.csv": "table"}, [], "does not exist"),
    ({"t.shp": "table"}, [], "Shapefile is not written.*10 characters.*gpkg"),
])
def test_output_checks(tmp_path, outputs, inputs, message):
    outputs = {tmp_path / p: k for p, k in outputs.items()}
    with pytest.raises(OutputError, match=message):
        check_outputs(outputs, inputs=[tmp_path / p for p in inputs])


def test_same_path_twice_is_refused(tmp_path):
    with pytest.raises(OutputError, match="two outputs"):
        check_outputs({f"{tmp_path}/a.csv": "table", f"{tmp_path}/./a.csv": "table"})


def test_read_only_folder_is_refused(tmp_path):
    import os

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(OutputError, match="not writable"):
            check_outputs({folder / "t.csv": "table"})
    finally:
        folder.chmod(0o700)


def test_tables_that_belong_together_appear_together(tmp_path):
    good = pd.DataFrame({"a": [1, 2]})
    plots, trees = tmp_path / "plots.csv", tmp_path / "trees.gpkg"
    with pytest.raises(InputError, match="needs geometry"):
        write_tables({plots: good, trees: good})  # the second cannot be written: neither appears
    assert not plots.exists() and not trees.exists()
    assert list(tmp_path.iterdir()) == []
    write_tables({plots: good, tmp_path / "trees.csv": good})
    assert plots.exists() and (tmp_path / "trees.csv").exists()


def test_gbk_csv_is_detected_and_encoding_can_be_given(tmp_path):
    text = "plot_id,树种,dbh_cm\n1,杉木,12.5\n2,马尾松,20.1\n"
    path = tmp_path / "gbk.csv"
    path.write_bytes(text.encode("gbk"))
    frame = read_table(path)
    assert list(frame.columns) == ["plot_id", "树种", "dbh_cm"] and frame["树种"].tolist() == ["杉木", "马尾松"]
    assert read_table(path, encoding="gb18030")["树种"].tolist() == ["杉木", "马尾松"]
    (tmp_path / "bom.csv").write_bytes(text.encode("utf-8-sig"))
    assert list(read_table(tmp_path / "bom.csv").columns)[0] == "plot_id"
    with pytest.raises(InputError, match="not an encoding"):
        read_table(path, encoding="klingon")
    with pytest.raises(InputError, match="cannot decode"):
        read_table(path, encoding="utf-8")


@pytest.mark.parametrize("sep, label", [(";", "semicolon"), ("\t", "tab")])
def test_wrong_delimiter_lists_the_columns_found(tmp_path, sep, label):
    path = tmp_path / "t.csv"
    path.write_text(sep.join(["plot_id", "tree_id", "dbh_cm"]) + "\n" + sep.join("112") + "\n")
    with pytest.raises(InputError, match=f"{label}-separated") as info:
        read_table(path, required=("dbh_cm",))
    assert "plot_id" in str(info.value)


def test_padded_headers_are_read_and_a_missing_column_names_what_was_found(tmp_path):
    """' plot_id ' was reported missing; DBH_cm for dbh_cm gave no hint."""
    from sinks.pools.forest import forest_stocks

    path = tmp_path / "t.csv"
    path.write_text(" plot_id ,tree_id, DBH_cm\nP1,1,20\n")
    frame = read_table(path)
    assert list(frame.columns) == ["plot_id", "tree_id", "DBH_cm"]
    with pytest.raises(InputError, match=r"missing required column\(s\) dbh_cm \(did you mean 'DBH_cm'\?\); "
                                         r"found plot_id, tree_id, DBH_cm"):
        forest_stocks(frame, pd.DataFrame({"plot_id": ["P1"], "area_ha": [0.04]}), n_draws=0)


def test_decimal_commas_are_named_not_misread(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('plot_id,tree_id,dbh_cm,species\nA,1,"12,5",Pinus massoniana\nA,2,30,"Cunninghamia, sp"\n')
    with pytest.raises(InputError, match=r"column 'dbh_cm' holds numbers written with a comma \('12,5'\)"):
        read_table(path)
    path.write_text('plot_id,tree_id,dbh_cm,species\nA,1,12.5,"Cunninghamia, sp"\n')
    assert read_table(path)["dbh_cm"].iloc[0] == 12.5  # a comma in text is text


def test_failed_demo_keeps_the_users_empty_folder(tmp_path, monkeypatch):
    import sinks.demo.run as demo_run

    out = tmp_path / "ws"
    out.mkdir()

    def broken(folder, **kwargs):
        (folder / "data").mkdir()
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(demo_run, "_run_steps", broken)
    with pytest.raises(RuntimeError):
        demo_run.run_demo(out, size=150, progress=False)
    assert out.is_dir() and list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]


def test_a_figure_that_fails_to_save_leaves_an_existing_file(tmp_path):
    from sinks.learn.card_figures import save_png

    class Broken:
        def savefig(self, path, **kwargs):
            open(path, "wb").write(b"half")
            raise RuntimeError("simulated failure")

    target = tmp_path / "obs_vs_pred.png"
    target.write_bytes(b"the user's figure")
    with pytest.raises(RuntimeError):
        save_png(Broken(), target)
    assert target.read_bytes() == b"the user's figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obs_vs_pred.png"]


def test_no_shapefile_is_written_from_python_either(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    frame = gpd.GeoDataFrame({"stock_change_tco2e": [1.0]}, geometry=[Point(0, 0)], crs="EPSG:4326")
    with pytest.raises(OutputError, match="Shapefile is not written"):
        write_table(frame, tmp_path / "t.shp")
    assert list(tmp_path.iterdir()) == []


def test_lon_lat_columns_get_a_rename_hint():
    from sinks.io import to_geodataframe

    with pytest.raises(InputError, match="--rename Lon=x --rename Lat=y and give --crs EPSG:4326"):
        to_geodataframe(pd.DataFrame({"Lon": [104.1], "Lat": [30.6]}), source="t.csv")


def test_a_geopackage_of_several_layers_is_refused(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    frame = gpd.GeoDataFrame({"parcel_id": ["a"]}, geometry=[Point(0, 0)], crs="EPSG:4326")
    frame.to_file(tmp_path / "two.gpkg", layer="parcels_2020")
    frame.to_file(tmp_path / "two.gpkg", layer="parcels_2025")
    with pytest.raises(InputError, match="holds 2 layers \\(parcels_2020, parcels_2025\\)"):
        read_table(tmp_path / "two.gpkg")
    frame.to_file(tmp_path / "one.gpkg")
    assert len(read_table(tmp_path / "one.gpkg")) == 1


def test_a_rename_onto_an_existing_column_is_refused():
    """--rename start_date=parcel_id on a file with parcel_id gave two columns of one name (a report
    of pandas Series for ids, or internal errors); a chain of renames stays fine."""
    from sinks.io import check_columns

    frame = pd.DataFrame({"parcel_id": ["a"], "start_date": ["2020-01-01"], "x": [1.0]})
    with pytest.raises(InputError, match=r"t.csv: --rename start_date=parcel_id: the file already has a column "
                                         r"'parcel_id'.*--rename parcel_id=parcel_id_original"):
        check_columns(frame, "t.csv", rename={"start_date": "parcel_id"})
    with pytest.raises(InputError, match="two columns the name 'y'"):
        check_columns(frame, "t.csv", rename={"start_date": "y", "x": "y"})
    chained = check_columns(frame, "t.csv", rename={"parcel_id": "old_id", "start_date": "parcel_id"})
    assert list(chained.columns) == ["old_id", "parcel_id", "x"]


def test_a_geopackage_on_a_full_disk_is_one_output_error(tmp_path, monkeypatch):
    """SQLite's failed commit (pyogrio's DataSourceError with SQL in it) was an internal error."""
    import geopandas as gpd
    import shapely

    import sinks.io
    from tests.badinput import file_size_limit

    frame = gpd.GeoDataFrame({"name": ["x" * 50] * 2000}, geometry=[shapely.Point(i, i) for i in range(2000)],
                             crs=4326)
    monkeypatch.setattr(sinks.io, "free_bytes", lambda folder: 2**20)
    with file_size_limit(150_000), pytest.raises(OutputError, match=r"g.gpkg: writing failed \(DataSourceError.*"
                                                                     r"the disk holding .* is full \(1 MiB free\)"):
        write_table(frame, tmp_path / "g.gpkg")
    assert list(tmp_path.iterdir()) == []


def test_a_column_named_twice_is_refused(tmp_path):
    """pandas reads the second 'ndvi' as 'ndvi.1': a feature table then seemed to lack a column."""
    path = tmp_path / "t.csv"
    path.write_text("plot_id,ndvi,ndvi,x\nA,0.5,0.6,1\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"t.csv: the header names column\(s\) 'ndvi' more than once"):
        read_table(path)
    path.write_text("plot_id,ndvi,ndmi,x\nA,0.5,0.6,1\n", encoding="utf-8")
    assert list(read_table(path).columns) == ["plot_id", "ndvi", "ndmi", "x"]


def test_messages_name_the_output_not_its_hidden_staging():
    """A write failure named '/proc/.s.tif.17906.sgsmqh9u.partial.tif', a file the user never named."""
    from sinks.cli import _os_message
    from sinks.io import staged_for

    assert staged_for("/data/.s.tif.17906.sgsmqh9u.partial.tif") == Path("/data/s.tif")
    assert staged_for("/data/.m.tif.resume-0123abcd/0007.tif") == Path("/data/m.tif")
    assert staged_for("/data/plain.tif") == Path("/data/plain.tif")
    message = _os_message(FileNotFoundError(2, "No such file or directory", "/data/.s.tif.1.abc.partial.tif"))
    assert message.startswith("/data/s.tif: No such file or directory")
