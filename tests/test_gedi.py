"""GEDI L4A reader: synthetic granules (always run) and the two real granules (shared data)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from sinks.cli import main
from sinks.pools import gedi
from sinks.errors import InputError

GRANULE_ZIPS = (
    "GEDI04_A_2020036151358_O06515_02_T00198_02_002_01_V002.zip",
    "GEDI04_A_2021150031254_O13948_03_T06447_02_002_01_V002.zip",
)
# 2020-02-05 12:00 UTC and 2021-05-30 00:00 UTC in seconds since 2018-01-01 00:00 UTC
T_2020_02_05 = (pd.Timestamp("2020-02-05 12:00", tz="UTC") - pd.Timestamp("2018-01-01", tz="UTC")).total_seconds()
T_2021_05_30 = (pd.Timestamp("2021-05-30", tz="UTC") - pd.Timestamp("2018-01-01", tz="UTC")).total_seconds()
BIG_SHOT = 139480000300000098  # > 2**53: lost if it ever passes through float64


def beam_arrays(n: int, **overrides) -> dict[str, np.ndarray]:
    """A beam where every shot passes every filter, with ``overrides`` applied."""
    arrays = {
        "shot_number": np.arange(BIG_SHOT, BIG_SHOT + n, dtype=np.uint64),
        "lat_lowestmode": np.linspace(30.0, 30.1, n),
        "lon_lowestmode": np.linspace(104.0, 104.1, n),
        "agbd": np.linspace(10.0, 200.0, n).astype(np.float32),
        "agbd_se": np.full(n, 5.0, dtype=np.float32),
        "l4_quality_flag": np.ones(n, dtype=np.uint8),
        "l2_quality_flag": np.ones(n, dtype=np.uint8),
        "algorithm_run_flag": np.ones(n, dtype=np.uint8),
        "degrade_flag": np.zeros(n, dtype=np.uint8),
        "sensitivity": np.full(n, 0.97, dtype=np.float32),
        "delta_time": np.full(n, T_2020_02_05),
        "beam": np.zeros(n, dtype=np.uint16),
        "land_cover_data/leaf_off_flag": np.zeros(n, dtype=np.uint8),
        "land_cover_data/pft_class": np.full(n, 2, dtype=np.uint8),
    }
    arrays.update(overrides)
    return arrays


def write_granule(path: Path, beams: dict[str, dict[str, np.ndarray]], short_name="GEDI_L4A") -> Path:
    with h5py.File(path, "w") as h5:
        if short_name is not None:
            h5.attrs["short_name"] = short_name
        for beam, arrays in beams.items():
            group = h5.create_group(beam)
            group.attrs["description"] = "Full power beam"
            for name, values in arrays.items():
                group.create_dataset(name, data=values)
    return path


def zip_file(source: Path, target: Path, member: str | None = None) -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(source, member or source.name)
    return target


@pytest.fixture
def granule(tmp_path) -> Path:
    """Eight shots, each failing exactly one rule (or none), in two beams."""
    a = beam_arrays(
        8,
        agbd=np.array([50, -9999, 80, 90, 100, 110, 120, 130], dtype=np.float32),
        agbd_se=np.array([5, -9999, 8, 9, 10, 11, 12, 13], dtype=np.float32),
        l4_quality_flag=np.array([1, 0, 0, 1, 1, 1, 1, 1], dtype=np.uint8),
        degrade_flag=np.array([0, 0, 0, 74, 0, 0, 0, 0], dtype=np.uint8),
        sensitivity=np.array([0.97, 0.5, 0.97, 0.97, 0.92, 0.97, 0.97, 0.97], dtype=np.float32),
        **{"land_cover_data/leaf_off_flag": np.array([0, 0, 0, 0, 0, 1, 0, 0], dtype=np.uint8)},
        lon_lowestmode=np.array([104.0, 104.0, 104.0, 104.0, 104.0, 104.0, 110.0, 104.0]),
        lat_lowestmode=np.full(8, 30.0),
        delta_time=np.array([T_2020_02_05] * 7 + [T_2021_05_30]),
    )
    b = beam_arrays(2, shot_number=np.array([7, 8], dtype=np.uint64))
    return write_granule(tmp_path / "GEDI04_A_2020036151358_O06515_02_T00198_02_002_01_V002.h5",
                         {"BEAM0101": a, "BEAM1000": b})


# ---- reading -------------------------------------------------------------------------------


def test_read_granule_values_equal_the_file(granule):
    shots = gedi.read_granule(granule)
    assert len(shots) == 10
    with h5py.File(granule) as h5:
        expected = np.concatenate([h5["BEAM0101/agbd"][()], h5["BEAM1000/agbd"][()]])
        shot_numbers = np.concatenate([h5["BEAM0101/shot_number"][()], h5["BEAM1000/shot_number"][()]])
    np.testing.assert_array_equal(shots["agbd_mg_ha"].to_numpy(), expected.astype(np.float64))
    assert shots["shot_number"].tolist() == [str(int(s)) for s in shot_numbers]
    assert shots["shot_number"].iloc[0] == str(BIG_SHOT)  # exact, not rounded through float
    assert shots["beam_name"].tolist() == ["BEAM0101"] * 8 + ["BEAM1000"] * 2
    assert shots["beam_type"].iloc[0] == "Full power beam"
    assert (shots["product_version"] == "V002").all()
    # optional datasets absent from the synthetic file become missing values
    assert (shots["region_class"] == -1).all() and shots["elev_lowestmode_m"].isna().all()


def test_dates_from_delta_time(granule):
    shots = gedi.read_footprints(granule)
    assert shots["date"].iloc[0] == "2020-02-05" and shots["year"].iloc[0] == 2020
    assert shots["date"].iloc[7] == "2021-05-30" and shots["year"].iloc[7] == 2021


def test_zip_is_read_like_the_h5(granule, tmp_path):
    zipped = zip_file(granule, tmp_path / "g.zip")
    plain = gedi.read_footprints(granule).drop(columns=["source_file", "source_sha256"])
    from_zip = gedi.read_footprints(zipped)
    assert (from_zip["source_file"] == "g.zip").all()
    pd.testing.assert_frame_equal(plain, from_zip.drop(columns=["source_file", "source_sha256"]))


def test_large_zip_member_goes_through_a_temp_dir_that_is_removed(granule, tmp_path, monkeypatch):
    zipped = zip_file(granule, tmp_path / "g.zip")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(gedi, "IN_MEMORY_MAX_BYTES", 0)
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    shots = gedi.read_footprints(zipped)
    assert len(shots) == 10
    assert list(scratch.iterdir()) == []


# ---- filters -------------------------------------------------------------------------------


def test_recommended_quality_keeps_l4_flag_and_predicted(granule):
    shots = gedi.read_footprints(granule)
    kept, steps = gedi.filter_footprints(shots)
    assert [s.kept for s in steps] == [9, 8]
    assert "l4_quality_flag == 1" in steps[1].rule
    assert kept["agbd_mg_ha"].tolist()[:6] == [50, 90, 100, 110, 120, 130]


def test_all_shots_still_drops_fill_values(granule):
    shots = gedi.read_footprints(granule)
    kept, steps = gedi.filter_footprints(shots, quality="all")
    assert len(steps) == 1 and len(kept) == 9
    assert (kept["agbd_mg_ha"] != -9999).all()


def test_each_option_removes_its_shot(granule):
    shots = gedi.read_footprints(granule)
    kept, steps = gedi.filter_footprints(
        shots, exclude_degraded=True, min_sensitivity=0.95, exclude_leaf_off=True,
        bbox="103,29,105,31", start="2020-01-01", end="2020-12-31",
    )
    assert [s.kept for s in steps] == [9, 8, 7, 6, 5, 4, 3]
    assert kept["agbd_mg_ha"].tolist()[0] == 50
    assert set(kept["beam_name"]) == {"BEAM0101", "BEAM1000"}


def test_pft_classes(granule, tmp_path, capsys):
    shots = gedi.read_footprints(granule)
    shots.loc[0, "pft_class"] = 6
    kept, steps = gedi.filter_footprints(shots, pft_classes=[1, 2, 3, 4])
    assert steps[-1].rule == "pft_class in 1,2,3,4" and steps[-1].kept == 7
    assert 50 not in kept["agbd_mg_ha"].tolist()
    with pytest.raises(InputError, match="pft_classes is empty"):
        gedi.filter_footprints(shots, pft_classes=[])
    rc = main(["stocks", "gedi", str(granule), "--out", str(tmp_path / "o.csv"), "--pft", "tree"])
    assert rc == 2 and "--pft expects" in capsys.readouterr().err


def test_polygon_clip_in_another_crs(granule):
    import geopandas as gpd

    shots = gedi.read_footprints(granule)
    area = gpd.GeoDataFrame(geometry=[box(109, 29, 111, 31)], crs="EPSG:4326").to_crs("EPSG:3857")
    kept, steps = gedi.filter_footprints(shots, polygon=area)
    assert kept["agbd_mg_ha"].tolist() == [120]
    assert steps[-1].rule == "inside clip polygon"


def test_date_range_inclusive(granule):
    shots = gedi.read_footprints(granule)
    kept, _ = gedi.filter_footprints(shots, quality="all", start="2021-05-30", end="2021-05-30")
    assert kept["agbd_mg_ha"].tolist() == [130]


@pytest.mark.parametrize("kwargs, message", [
    ({"quality": "best"}, "quality must be one of"),
    ({"bbox": "1,2,3"}, "bbox must be"),
    ({"bbox": "5,0,4,1"}, "xmin<xmax"),
    ({"min_sensitivity": 1.5}, "0..1"),
    ({"start": "2021-01-01", "end": "2020-01-01"}, "is after end"),
    ({"start": "yesterday"}, "YYYY-MM-DD"),
    ({"polygon": box(0, 0, 1, 1).exterior}, "polygon or multipolygon"),
])
def test_bad_filter_options(granule, kwargs, message):
    shots = gedi.read_footprints(granule)
    with pytest.raises(InputError, match=message):
        gedi.filter_footprints(shots, **kwargs)


# ---- plot table ----------------------------------------------------------------------------


def test_plot_table_columns_and_carbon(granule):
    plots = gedi.read_gedi_l4a(granule)
    assert plots.crs.to_epsg() == 4326
    for column in ("plot_id", "area_ha", "year", "pool", "carbon_mg_ha", "carbon_sd_mg_ha",
                   "method", "granule", "product_version", "l4_quality_flag", "degrade_flag",
                   "sensitivity", "leaf_off_flag", "pft_class", "beam_name"):
        assert column in plots.columns
    np.testing.assert_allclose(plots["carbon_mg_ha"], plots["agbd_mg_ha"] * 0.47)
    np.testing.assert_allclose(plots["carbon_sd_mg_ha"], plots["agbd_se_mg_ha"] * 0.47)  # no interval given
    assert (plots["carbon_sd_source"] == "agbd_se").all()
    np.testing.assert_allclose(plots["area_ha"], np.pi * 12.5**2 / 10_000)
    assert plots["area_ha"].iloc[0] == pytest.approx(0.0491, abs=5e-5)
    assert (plots["pool"] == "forest").all()
    assert plots["plot_id"].iloc[0] == str(BIG_SHOT)
    assert plots.geometry.x.iloc[0] == 104.0 and plots.geometry.y.iloc[0] == 30.0


def test_carbon_fraction_and_parameter_table_override(granule, tmp_path):
    table = tmp_path / "params.csv"
    table.write_text("name,value,unit,source,confidence\nfootprint_diameter_m,20,m,my survey,test\n")
    plots = gedi.read_gedi_l4a(granule, carbon_fraction=0.5, parameters=table)
    np.testing.assert_allclose(plots["carbon_mg_ha"], plots["agbd_mg_ha"] * 0.5)
    np.testing.assert_allclose(plots["area_ha"], np.pi * 10.0**2 / 10_000)
    with pytest.raises(InputError, match="carbon fraction"):
        gedi.read_gedi_l4a(granule, carbon_fraction=47)


# ---- bad input -----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        gedi.read_gedi_l4a(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    bad = tmp_path / "granule.h5"
    bad.write_text("this is not HDF5")
    with pytest.raises(InputError, match=r"granule\.h5: not a readable HDF5"):
        gedi.read_gedi_l4a(bad)


def test_corrupt_h5_inside_zip(tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    zipped = zip_file(bad, tmp_path / "broken.zip")
    with pytest.raises(InputError, match=r"broken\.zip!broken\.h5: not a readable HDF5"):
        gedi.read_gedi_l4a(zipped)


def test_zip_without_h5(tmp_path):
    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "no granule here")
    with pytest.raises(InputError, match=r"empty\.zip: the zip holds no \.h5 file \(found: readme\.txt\)"):
        gedi.read_gedi_l4a(archive)


def test_truncated_zip(granule, tmp_path):
    zipped = zip_file(granule, tmp_path / "cut.zip")
    data = zipped.read_bytes()
    zipped.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.zip"):
        gedi.read_gedi_l4a(zipped)


def test_not_l4a(tmp_path):
    other = write_granule(tmp_path / "GEDI02_A.h5", {"BEAM0000": beam_arrays(2)}, short_name="GEDI_L2A")
    with pytest.raises(InputError, match=r"GEDI02_A\.h5: not a GEDI L4A granule \(product short_name is 'GEDI_L2A'"):
        gedi.read_gedi_l4a(other)
    bare = tmp_path / "plain.h5"
    with h5py.File(bare, "w") as h5:
        h5.create_dataset("x", data=[1, 2])
    with pytest.raises(InputError, match=r"plain\.h5: not a GEDI L4A granule"):
        gedi.read_gedi_l4a(bare)


def test_l4a_missing_dataset(tmp_path):
    arrays = beam_arrays(3)
    del arrays["agbd_se"]
    path = write_granule(tmp_path / "g.h5", {"BEAM0000": arrays})
    with pytest.raises(InputError, match=r"g\.h5: BEAM0000 lacks dataset\(s\) agbd_se"):
        gedi.read_gedi_l4a(path)


def test_same_granule_twice(granule, tmp_path):
    zipped = zip_file(granule, tmp_path / "again.zip")
    with pytest.raises(InputError, match="given twice"):
        gedi.read_gedi_l4a([granule, zipped])
    renamed = tmp_path / "renamed.h5"  # the same shots under another granule name
    renamed.write_bytes(granule.read_bytes())
    with pytest.raises(InputError, match="appear in more than one file.*given twice"):
        gedi.read_gedi_l4a([granule, renamed])


# ---- command line --------------------------------------------------------------------------


def test_cli_writes_plots_and_summary(granule, tmp_path, capsys):
    out = tmp_path / "plots.csv"
    rc = main(["stocks", "gedi", str(granule), "--out", str(out), "--bbox=103,29,105,31",
               "--exclude-degraded"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "10 shots read" in text and "8 kept by l4_quality_flag == 1" in text
    assert "7 kept by degrade_flag == 0" in text and "6 kept by inside bbox" in text
    table = pd.read_csv(out, dtype={"plot_id": str})
    assert len(table) == 6 and table["plot_id"].iloc[0] == str(BIG_SHOT)
    assert {"x", "y", "carbon_mg_ha"} <= set(table.columns)


def test_cli_empty_result_writes_nothing(granule, tmp_path, capsys):
    out = tmp_path / "plots.gpkg"
    rc = main(["stocks", "gedi", str(granule), "--out", str(out), "--bbox=0,0,1,1"])
    assert rc == 2 and not out.exists()
    assert "nothing written" in capsys.readouterr().err


def test_cli_bad_granule_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    bad.write_text("garbage")
    rc = main(["stocks", "gedi", str(bad), "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.zip" in err and "Traceback" not in err


def test_footprint_sd_comes_from_the_prediction_interval(tmp_path):
    """The 90 % interval's larger half over z(0.9), not agbd_se (the mean prediction's error); a
    lower bound given as the fill value is 0; a shot with no usable interval (no upper bound, or one
    not around agbd) falls back to agbd_se."""
    n = 4
    arrays = beam_arrays(n, agbd=np.array([100, 100, 100, 100], dtype=np.float32),
                         agbd_pi_lower=np.array([40, -9999, -9999, 110], dtype=np.float32),
                         agbd_pi_upper=np.array([200, 150, -9999, 190], dtype=np.float32))
    path = write_granule(tmp_path / "pi.h5", {"BEAM0000": arrays})
    with h5py.File(path, "a") as h5:
        h5["BEAM0000"].create_group("agbd_prediction").attrs["alpha"] = 0.1
    plots = gedi.read_gedi_l4a(path)
    z = 1.6448536269514722
    np.testing.assert_allclose(plots["carbon_sd_mg_ha"], 0.47 * np.array([100 / z, 100 / z, 5.0, 5.0]), rtol=1e-6)
    assert plots["carbon_sd_source"].tolist() == ["prediction interval"] * 2 + ["agbd_se"] * 2


# ---- the two real granules -----------------------------------------------------------------


def direct_read(zip_path: Path) -> dict[str, np.ndarray]:
    """Read every beam straight from the zipped HDF5 with h5py, independent of the reader."""
    with zipfile.ZipFile(zip_path) as archive:
        data = archive.read(archive.namelist()[0])
    columns: dict[str, list] = {k: [] for k in ("shot_number", "agbd", "agbd_se", "l4q", "lat", "lon")}
    with h5py.File(io.BytesIO(data), "r") as h5:
        for beam in sorted(k for k in h5 if k.startswith("BEAM")):
            columns["shot_number"].append(h5[beam]["shot_number"][()])
            columns["agbd"].append(h5[beam]["agbd"][()])
            columns["agbd_se"].append(h5[beam]["agbd_se"][()])
            columns["l4q"].append(h5[beam]["l4_quality_flag"][()])
            columns["lat"].append(h5[beam]["lat_lowestmode"][()])
            columns["lon"].append(h5[beam]["lon_lowestmode"][()])
    return {k: np.concatenate(v) for k, v in columns.items()}


@pytest.mark.parametrize("name", GRANULE_ZIPS)
def test_real_granule_counts_and_values(shared_data, name):
    path = shared_data / "gedi_l4a" / name
    raw = direct_read(path)
    result = gedi.read_gedi_l4a_steps(path)
    keep = (raw["l4q"] == 1) & (raw["agbd"] != -9999) & (raw["agbd_se"] != -9999)
    assert result.n_read == len(raw["agbd"])
    assert result.steps[-1].kept == keep.sum() == len(result.plots)
    plots = result.plots
    assert plots["plot_id"].tolist() == [str(int(s)) for s in raw["shot_number"][keep]]
    np.testing.assert_array_equal(plots["agbd_mg_ha"], raw["agbd"][keep].astype(np.float64))
    np.testing.assert_array_equal(plots["agbd_se_mg_ha"], raw["agbd_se"][keep].astype(np.float64))
    np.testing.assert_array_equal(plots.geometry.x, raw["lon"][keep])
    np.testing.assert_array_equal(plots.geometry.y, raw["lat"][keep])
    np.testing.assert_allclose(plots["carbon_mg_ha"], raw["agbd"][keep] * 0.47, rtol=1e-6)
    assert plots["plot_id"].is_unique
    assert (plots["product_version"] == "V002").all()
    assert plots["year"].iloc[0] == int(name[9:13])  # GEDI04_A_YYYYDDD... acquisition year
    # the footprint's sd from its 90 % prediction interval, a median 6.8 and 10.5 x agbd_se (docs/gedi.md)
    assert (plots["carbon_sd_source"] == "prediction interval").all()
    lower = plots["agbd_pi_lower_mg_ha"].where(plots["agbd_pi_lower_mg_ha"] != -9999, 0.0)  # below 0 in fit units
    half = np.maximum(plots["agbd_pi_upper_mg_ha"] - plots["agbd_mg_ha"], plots["agbd_mg_ha"] - lower)
    np.testing.assert_allclose(plots["carbon_sd_mg_ha"], 0.47 * half / 1.6448536269514722, rtol=1e-9)
    assert 5 < np.median(plots["carbon_sd_mg_ha"] / (0.47 * plots["agbd_se_mg_ha"])) < 14


def test_real_granules_together_and_measured_numbers(shared_data):
    paths = [shared_data / "gedi_l4a" / name for name in GRANULE_ZIPS]
    result = gedi.read_gedi_l4a_steps(paths)
    assert result.n_read == 1427
    assert [s.kept for s in result.steps] == [1333, 1054]
    by_granule = result.plots.groupby("source_file")["agbd_mg_ha"].agg(["count", "mean"])
    assert by_granule.loc[GRANULE_ZIPS[0], "count"] == 321
    assert by_granule.loc[GRANULE_ZIPS[1], "count"] == 733
    assert by_granule.loc[GRANULE_ZIPS[0], "mean"] == pytest.approx(35.48, abs=0.01)
    assert by_granule.loc[GRANULE_ZIPS[1], "mean"] == pytest.approx(284.12, abs=0.01)
    # every shot of the 2021 granule is flagged degraded although many pass l4_quality_flag
    degraded = gedi.read_gedi_l4a_steps(paths, exclude_degraded=True)
    assert degraded.steps[-1].kept == 321
    assert set(degraded.plots["source_file"]) == {GRANULE_ZIPS[0]}


def test_real_bbox_selects_one_granule(shared_data):
    paths = [shared_data / "gedi_l4a" / name for name in GRANULE_ZIPS]
    plots = gedi.read_gedi_l4a(paths, bbox=(-60, -10, -50, 0))
    assert len(plots) == 733
    assert plots.geometry.x.between(-60, -50).all() and plots.geometry.y.between(-10, 0).all()
