"""Bad-input catalogue of ``sinks change`` and ``sinks zonal``: every case is one clean line on
stderr, a non-zero exit, and the output folder byte-for-byte as before. Polygons in another CRS
are reprojected, not refused (tests/test_zonal.py)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

from sinks.cli import main
from tests.badinput import assert_refused
from tests.test_change import make_map

C = np.full((20, 20), 50.0)
BOX = shapely.box(100.02, 30.02, 100.13, 30.14)


@pytest.fixture
def ws(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")
    make_map(tmp_path / "t1.tif", C)
    make_map(tmp_path / "t2.tif", C + 5)
    gpd.GeoDataFrame({"parcel_id": ["p1"]}, geometry=[BOX], crs=4326).to_file(tmp_path / "p.gpkg")
    return tmp_path


def _change(ws, *extra, t1=None, t2=None, out=None):
    return ["change", t1 or ws / "t1.tif", t2 or ws / "t2.tif", "--years", "2015", "2020",
            "--out", out or ws / "out" / "sink.tif", "--quiet", *extra]


def _zonal(ws, *extra, map_=None, polys=None, out=None):
    return ["zonal", map_ or ws / "t1.tif", polys or ws / "p.gpkg", "--out", out or ws / "out" / "z.csv",
            "--quiet", *extra]


def _polys(ws, geoms, crs=4326, ids=None, name="bad.gpkg"):
    ids = ids or [f"p{i + 1}" for i in range(len(geoms))]
    frame = gpd.GeoDataFrame({"parcel_id": ids}, geometry=geoms, crs=crs)
    frame.to_file(ws / name)
    return ws / name


# ---- sinks change ----------------------------------------------------------------------------------

def test_change_output_exists(ws, capsys):
    (ws / "out" / "sink.tif").write_bytes(b"old")
    assert_refused(_change(ws), capsys, keywords=["exists", "--overwrite"], watch=ws / "out")


def test_change_years_not_increasing(ws, capsys):
    argv = _change(ws)
    argv[argv.index("--years") + 1:argv.index("--years") + 3] = ["2020", "2020"]
    assert_refused(argv, capsys, keywords=["--years", "later"], watch=ws / "out")


def test_change_different_grids(ws, capsys):
    make_map(ws / "shifted.tif", C, Affine(0.01, 0, 100.005, 0, -0.01, 30.2))
    assert_refused(_change(ws, t2=ws / "shifted.tif"), capsys, keywords=["different grids"], watch=ws / "out")
    make_map(ws / "nudged.tif", C, Affine(0.01, 0, 100.0000271, 0, -0.01, 30.2))  # 3 m east: both origins shown
    assert_refused(_change(ws, t2=ws / "nudged.tif"), capsys, watch=ws / "out",
                   keywords=["different grids", "from (100, 30.2)", "from (100.0000271, 30.2)"])


def test_change_different_crs(ws, capsys):
    make_map(ws / "utm.tif", C, Affine(30, 0, 500000, 0, -30, 3300000), crs="EPSG:32648")
    assert_refused(_change(ws, t2=ws / "utm.tif"), capsys, keywords=["different grids", "EPSG:32648"],
                   watch=ws / "out")


def test_change_different_units(ws, capsys):
    make_map(ws / "kg.tif", C, units="kg C/m2")
    assert_refused(_change(ws, t2=ws / "kg.tif"), capsys, keywords=["kg C/m2", "not a carbon stock density in Mg C/ha"],
                   watch=ws / "out")


def test_change_not_a_stock_density(ws, capsys):
    make_map(ws / "a.tif", C, units="g C/kg")
    make_map(ws / "b.tif", C, units="g C/kg")
    assert_refused(_change(ws, t1=ws / "a.tif", t2=ws / "b.tif"), capsys, keywords=["g C/kg", "Mg C/ha"],
                   watch=ws / "out")


def test_change_different_bundles(ws, capsys):
    make_map(ws / "other.tif", C, bundle="bundle-b")
    assert_refused(_change(ws, t2=ws / "other.tif"), capsys,
                   keywords=["bundle-a", "bundle-b", "--allow-different-models"], watch=ws / "out")


def test_change_missing_band(ws, capsys):
    make_map(ws / "noaoa.tif", C, bands=["carbon", "lower", "upper", "di"])
    assert_refused(_change(ws, t2=ws / "noaoa.tif"), capsys, keywords=["missing band", "aoa"], watch=ws / "out")


def test_change_unknown_interval_level(ws, capsys):
    make_map(ws / "a.tif", C, describe_level=False)
    make_map(ws / "b.tif", C + 1, describe_level=False)
    assert_refused(_change(ws, t1=ws / "a.tif", t2=ws / "b.tif"), capsys,
                   keywords=["level", "sinks_interval_level"], watch=ws / "out")


def test_change_epoch_correlation_out_of_range(ws, capsys):
    assert_refused(_change(ws, "--epoch-correlation", "1.5"), capsys, keywords=["--epoch-correlation", "-1 and 1"],
                   watch=ws / "out")


def test_change_map_not_found(ws, capsys):
    assert_refused(_change(ws, t1=ws / "nope.tif"), capsys, keywords=["nope.tif", "not found"], watch=ws / "out")


def test_change_not_a_raster(ws, capsys):
    (ws / "text.tif").write_text("not a raster")
    assert_refused(_change(ws, t1=ws / "text.tif"), capsys, keywords=["text.tif", "raster"], watch=ws / "out")


@pytest.mark.parametrize("lower, upper, message", [
    (C + 10, C - 10, "lower band is above its value band"),  # lower and upper swapped
    (C - 10, C - 5, "upper band is below its value band"),
    (C, C, "no width"),
], ids=["swapped", "upper below", "zero width"])
def test_change_interval_that_does_not_hold_the_stock(ws, capsys, lower, upper, message):
    """Read as a half-width, a swapped interval counted as no uncertainty at all."""
    make_map(ws / "t2.tif", C + 5, lower=lower + 5, upper=upper + 5)
    assert_refused(_change(ws), capsys, keywords=["t2.tif", message, "row 0, column 0", "nodata"], watch=ws / "out")


def test_a_zero_width_interval_at_zero_carbon_is_a_map_sinks_writes(ws, capsys):
    """CQR whose calibration shrank to 0 holds bare land at 0, 0, 0: that map is read, not refused."""
    bare = C.copy()
    bare[:5] = 0.0
    make_map(ws / "t2.tif", bare, lower=np.where(bare == 0, 0.0, bare - 10), upper=np.where(bare == 0, 0.0, bare + 10))
    assert main([str(a) for a in _change(ws)]) == 0, capsys.readouterr().err


def test_change_years_other_than_the_maps_own(ws, capsys):
    """Asserted years set the rate: 2019-2020 for maps of 2015 and 2020 made the sink 5 x larger."""
    make_map(ws / "t1.tif", C, tags={"sinks_year": "2015"})
    argv = _change(ws)
    argv[argv.index("--years") + 1] = "2019"
    assert_refused(argv, capsys, keywords=["t1.tif", "shows 2015", "sinks_year", "--years gives 2019"],
                   watch=ws / "out")
    assert main([str(a) for a in _change(ws)]) == 0, capsys.readouterr().err  # its own year: accepted
    # without --years: the maps' own years, when both state one
    argv = _change(ws, "--overwrite")
    del argv[argv.index("--years"):argv.index("--years") + 3]
    assert_refused(argv, capsys, keywords=["give --years Y1 Y2", "t2.tif", "sinks map --year"], watch=ws / "out")
    make_map(ws / "t2.tif", C + 5, tags={"sinks_year": "2020"})
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    import rasterio

    with rasterio.open(ws / "out" / "sink.tif") as ds:
        assert ds.tags()["sinks_years"].split() == ["2015", "2020"]


def test_change_aoa_band_not_a_flag(ws, capsys):
    make_map(ws / "t2.tif", C + 5, aoa=np.full_like(C, 0.37))
    assert_refused(_change(ws), capsys, keywords=["t2.tif", "aoa band", "neither 0 nor 1", "0.37"], watch=ws / "out")


def test_change_output_is_an_input(ws, capsys):
    assert_refused(_change(ws, "--overwrite", out=ws / "t2.tif"), capsys, keywords=["also an input"], watch=ws)


def test_change_no_common_valid_pixel(ws, capsys):
    a = C.copy()
    a[:, :10] = np.nan
    b = C.copy()
    b[:, 10:] = np.nan
    make_map(ws / "a.tif", a)
    make_map(ws / "b.tif", b)
    assert_refused(_change(ws, t1=ws / "a.tif", t2=ws / "b.tif"), capsys, keywords=["no pixel valid"],
                   watch=ws / "out")


def test_change_one_file_for_both_epochs(ws, capsys):
    assert_refused(_change(ws, t2=ws / "t1.tif"), capsys, keywords=["t1.tif", "both epochs"], watch=ws / "out")
    import shutil

    shutil.copyfile(ws / "t1.tif", ws / "copy.tif")  # a copy of one epoch given as the other
    assert_refused(_change(ws, t2=ws / "copy.tif"), capsys, keywords=["t1.tif", "copy.tif", "byte for byte"],
                   watch=ws / "out")


def _untagged_nodata(ws):
    """t1.tif with its corner as -9999 and the nodata tag removed (a map from another tool)."""
    import rasterio

    a = C.copy()
    a[10:15, 5:10] = np.nan  # inside the parcel
    make_map(ws / "untagged.tif", a)
    with rasterio.open(ws / "untagged.tif", "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        ds.nodata = None
    return ws / "untagged.tif"


def test_an_undeclared_nodata_value_is_not_summed_as_carbon(ws, capsys):
    keywords = ["untagged.tif", "-9999", "a common nodata value", "declare it", "gdal_edit.py -a_nodata"]
    assert_refused(_zonal(ws, map_=_untagged_nodata(ws)), capsys, keywords=keywords, watch=ws / "out")
    assert_refused(_change(ws, t1=_untagged_nodata(ws)), capsys, keywords=keywords, watch=ws / "out")


def test_a_sink_map_that_lost_its_nodata_is_not_summed(ws, capsys):
    """A sink map re-saved without its nodata: -9999 t CO2e/ha/yr was summed (-50,751 for -692 t/yr);
    a value no nodata list holds is caught by the bound: the whole forest maximum lost within the
    map's years."""
    import rasterio

    from sinks.mapping.change import stock_change

    rng = np.random.default_rng(1)
    make_map(ws / "f1.tif", C, tags={"sinks_pool": "forest"})
    make_map(ws / "f2.tif", C + rng.normal(5, 1, C.shape), tags={"sinks_pool": "forest"})
    sink = stock_change(ws / "f1.tif", ws / "f2.tif", 2015, 2020, ws / "sink.tif", progress=False, block=16)
    with rasterio.open(sink) as ds:
        assert ds.tags()["sinks_pool"] == "forest"
    for name, value, keywords in (("nond.tif", -9999.0, ["nond.tif", "-9999", "a common nodata value"]),
                                  ("odd.tif", -1500.0, ["odd.tif", "beyond ±1,369 t CO2e/ha/yr", "within 5 year"])):
        import shutil

        shutil.copyfile(sink, ws / name)
        with rasterio.open(ws / name, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
            data = ds.read(1)
            data[10:15, 5:10] = value
            ds.write(data, 1)
            ds.nodata = None
        assert_refused(_zonal(ws, map_=ws / name), capsys, keywords=keywords, watch=ws / "out")


def test_zonal_refuses_to_total_the_error_band(ws, capsys):
    bands = ["carbon", "lower", "upper", "di", "aoa", "error"]
    make_map(ws / "err.tif", C, bands=bands[:5])
    import rasterio

    from sinks.cog import cog_writer

    with rasterio.open(ws / "err.tif") as ds:
        data, tags, profile = ds.read(), ds.tags(), ds.profile
        band_tags = {n: {k: v for k, v in ds.tags(i + 1).items() if k != "name"} for i, n in enumerate(bands[:5])}
    band_tags["error"] = {"units": "Mg C/ha"}
    with cog_writer(ws / "err6.tif", crs=profile["crs"], transform=profile["transform"], width=data.shape[2],
                    height=data.shape[1], band_names=bands, blocksize=16, tags=tags, band_tags=band_tags) as dst:
        dst.write(np.concatenate([data, data[:1] * 0 + 3]).astype("float32"))
    assert_refused(_zonal(ws, "--band", "error", map_=ws / "err6.tif"), capsys,
                   keywords=["band 'error'", "error profile", "not a quantity to total"], watch=ws / "out")


def test_a_stock_above_the_pools_maximum_is_refused(ws, capsys):
    """A forest map in kg/ha (or edited): above the forest maximum of the map's sinks_pool tag, and
    without the tag above the loosest pool bound; change, zonal and so credit refuse it."""
    kg = C * 1000
    make_map(ws / "forest_kg.tif", kg, tags={"sinks_pool": "forest"})
    forest = ["forest_kg.tif", "above 1,867 Mg C/ha", "the forest maximum", "another unit"]
    assert_refused(_change(ws, t2=ws / "forest_kg.tif"), capsys, keywords=forest, watch=ws / "out")
    assert_refused(_zonal(ws, map_=ws / "forest_kg.tif"), capsys, keywords=forest, watch=ws / "out")
    make_map(ws / "untagged_kg.tif", kg * 1000)
    assert_refused(_zonal(ws, map_=ws / "untagged_kg.tif"), capsys, watch=ws / "out",
                   keywords=["untagged_kg.tif", "above 8,700 Mg C/ha", "no sinks_pool tag"])
    make_map(ws / "soil.tif", C + 2000, tags={"sinks_pool": "soil"})  # a deep organic soil: within its bound
    assert main([str(a) for a in _zonal(ws, map_=ws / "soil.tif", out=ws / "z_soil.csv")]) == 0


def test_a_truncated_map_is_named(ws, capsys):
    make_map(ws / "big.tif", np.random.default_rng(0).uniform(20, 80, (200, 200)), blocksize=64)
    whole = (ws / "big.tif").read_bytes()
    (ws / "cut.tif").write_bytes(whole[:len(whole) // 3])
    argv = _zonal(ws, map_=ws / "cut.tif", polys=_polys(ws, [shapely.box(100.0, 29.0, 102.0, 31.0)]))
    assert_refused(argv, capsys, keywords=["cut.tif", "truncated or corrupt"], watch=ws / "out")


# ---- sinks zonal -----------------------------------------------------------------------------------

def test_zonal_swapped_interval(ws, capsys):
    make_map(ws / "t1.tif", C, lower=C + 10, upper=C - 10)
    assert_refused(_zonal(ws), capsys, keywords=["t1.tif", "lower band is above its value band", "swapped"],
                   watch=ws / "out")


def test_zonal_geojson_of_projected_coordinates_without_crs(ws, capsys):
    """GeoJSON without a 'crs' member reads as WGS84: projected numbers then land nowhere."""
    import json

    utm = gpd.GeoSeries([BOX], crs=4326).to_crs(32647)
    feature = {"type": "Feature", "properties": {"parcel_id": "p1"}, "geometry": shapely.geometry.mapping(utm[0])}
    path = ws / "utm.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    assert_refused(_zonal(ws, polys=path), capsys, keywords=["utm.geojson", "not longitudes and latitudes",
                                                             "--crs", "RFC 7946"], watch=ws / "out")
    assert main([str(a) for a in _zonal(ws, "--crs", "EPSG:32647", polys=path)]) == 0, capsys.readouterr().err
    assert main([str(a) for a in _zonal(ws, "--overwrite", out=ws / "out" / "ref.csv")]) == 0
    import pandas as pd

    got, ref = (pd.read_csv(ws / "out" / name) for name in ("z.csv", "ref.csv"))
    assert got["total_t_c"].iloc[0] == pytest.approx(ref["total_t_c"].iloc[0], rel=1e-6)


def test_zonal_output_exists(ws, capsys):
    (ws / "out" / "z.csv").write_text("old")
    assert_refused(_zonal(ws), capsys, keywords=["exists", "--overwrite"], watch=ws / "out")


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_zonal_polygons_without_crs(ws, capsys):
    gpd.GeoDataFrame({"parcel_id": ["p1"]}, geometry=[BOX]).to_file(ws / "nocrs.gpkg")
    assert_refused(_zonal(ws, polys=ws / "nocrs.gpkg"), capsys, keywords=["no crs", "--crs"], watch=ws / "out")


def test_zonal_self_intersecting_polygon_named(ws, capsys):
    bowtie = shapely.Polygon([(100.02, 30.02), (100.1, 30.1), (100.1, 30.02), (100.02, 30.1)])
    path = _polys(ws, [BOX, bowtie], ids=["fine", "bowtie"])
    line = assert_refused(_zonal(ws, polys=path), capsys, keywords=["bowtie", "self-intersection", "never repairs"],
                          watch=ws / "out")
    assert "fine" not in line.split("cannot be used")[1]


def test_zonal_polygon_outside_raster(ws, capsys):
    path = _polys(ws, [BOX, shapely.box(110, 40, 110.1, 40.1)], ids=["in", "far"])
    assert_refused(_zonal(ws, polys=path), capsys, keywords=["outside the raster", "far"], watch=ws / "out")


def test_zonal_unknown_band(ws, capsys):
    assert_refused(_zonal(ws, "--band", "carbn"), capsys, keywords=["no band 'carbn'", "did you mean 'carbon'"],
                   watch=ws / "out")


def test_zonal_band_not_a_quantity(ws, capsys):
    assert_refused(_zonal(ws, "--band", "aoa"), capsys, keywords=["aoa", "not a quantity"], watch=ws / "out")


def test_zonal_concentration_map(ws, capsys):
    make_map(ws / "soc.tif", C, units="g C/kg")
    assert_refused(_zonal(ws, map_=ws / "soc.tif"), capsys, keywords=["g C/kg", "Mg C/ha"], watch=ws / "out")


def test_zonal_points_not_polygons(ws, capsys):
    path = _polys(ws, [shapely.Point(100.05, 30.05)])
    assert_refused(_zonal(ws, polys=path), capsys, keywords=["p1", "Point", "not a polygon"], watch=ws / "out")


def test_zonal_duplicate_ids(ws, capsys):
    path = _polys(ws, [BOX, BOX], ids=["same", "same"])
    assert_refused(_zonal(ws, polys=path), capsys, keywords=["parcel_id", "repeated", "same"], watch=ws / "out")


def test_zonal_unknown_id_column(ws, capsys):
    assert_refused(_zonal(ws, "--id", "plot"), capsys, keywords=["'plot'", "--id"], watch=ws / "out")


def test_zonal_bad_output_extension(ws, capsys):
    assert_refused(_zonal(ws, out=ws / "out" / "z.txt"), capsys, keywords=["z.txt", ".csv"], watch=ws / "out")


def test_zonal_negative_error_range(ws, capsys):
    assert_refused(_zonal(ws, "--error-range-m", "-5"), capsys, keywords=["--error-range-m"], watch=ws / "out")


def test_zonal_level_in_percent(ws, capsys):
    assert_refused(_zonal(ws, "--level", "90"), capsys, keywords=["--level", "0.9"], watch=ws / "out")


def test_zonal_map_missing_interval_band(ws, capsys):
    make_map(ws / "bare.tif", C, bands=["carbon", "aoa"])
    assert_refused(_zonal(ws, map_=ws / "bare.tif"), capsys, keywords=["missing band", "lower"], watch=ws / "out")


def test_zonal_polygons_not_found(ws, capsys):
    assert_refused(_zonal(ws, polys=ws / "none.gpkg"), capsys, keywords=["none.gpkg", "not found"], watch=ws / "out")


def test_zonal_bad_error_range_tag(ws, capsys):
    make_map(ws / "tagged.tif", C, tags={"sinks_error_range_m": "far"})
    assert_refused(_zonal(ws, map_=ws / "tagged.tif"), capsys, keywords=["sinks_error_range_m", "far"],
                   watch=ws / "out")
