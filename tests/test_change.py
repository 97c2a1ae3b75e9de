"""``sinks change``: stock-difference arithmetic, the epoch-correlated interval, AOA of both epochs,
nodata, tags, and windows that bound the memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import rasterio
from affine import Affine

from sinks.cli import main
from sinks.cog import cog_writer
from sinks.errors import InputError
from sinks.mapping.change import CO2_PER_C, read_map_info, stock_change

Z90 = 1.6448536269514722
T4326 = Affine(0.01, 0, 100.0, 0, -0.01, 30.2)


def make_map(path, carbon, transform=T4326, *, crs="EPSG:4326", bundle="bundle-a", level=0.9, units="Mg C/ha",
             half_width=10.0, aoa=None, lower=None, upper=None, describe_level=True, bands=None, tags=None,
             blocksize=16):
    """A carbon map as ``sinks map`` writes it (bands carbon, lower, upper, di, aoa; -9999 nodata)."""
    carbon = np.asarray(carbon, dtype=float)
    h, w = carbon.shape
    lower = np.maximum(carbon - half_width, 0) if lower is None else lower
    upper = carbon + half_width if upper is None else upper
    if aoa is None:
        aoa = np.ones_like(carbon)
        aoa[:, : w // 4] = 0
    text = f"lower bound of the {level:.0%} prediction interval" if describe_level else "lower bound"
    band_tags = {"carbon": {"units": units}, "lower": {"units": units, "description": text},
                 "upper": {"units": units, "description": text.replace("lower", "upper")},
                 "di": {"units": "1"}, "aoa": {"units": "1"}}
    stack = {"carbon": carbon, "lower": lower, "upper": upper, "di": np.zeros_like(carbon), "aoa": aoa}
    names = list(bands or stack)
    data = np.stack([np.where(np.isnan(stack[n]), -9999.0, stack[n]) for n in names]).astype("float32")
    all_tags = {"sinks_bundle_id": bundle} if bundle else {}
    all_tags.update(tags or {})
    with cog_writer(path, crs=crs, transform=transform, width=w, height=h, band_names=names,
                    blocksize=blocksize, tags=all_tags, band_tags=band_tags) as dst:
        dst.write(data)
    return path


def _read(path):
    with rasterio.open(path) as ds:
        data = ds.read().astype(float)
        data[data == ds.nodata] = np.nan
        return data, ds.descriptions, ds.tags(), [ds.tags(i) for i in range(1, ds.count + 1)]


@pytest.fixture
def epochs(tmp_path):
    rng = np.random.default_rng(0)
    c1 = rng.uniform(20, 120, (48, 40))
    c2 = c1 + rng.normal(8, 5, c1.shape)
    aoa2 = np.ones_like(c1)
    aoa2[-10:, :] = 0
    c1[3, 5] = np.nan  # nodata in the first epoch only
    c2[7, 9] = np.nan  # and in the second only
    hw1, hw2 = rng.uniform(5, 15, c1.shape), rng.uniform(5, 25, c1.shape)
    # lower bounds clipped at 0, as sinks map writes them (the upper side then gives the half-width)
    make_map(tmp_path / "t1.tif", c1, lower=np.maximum(c1 - hw1, 0), upper=c1 + hw1)
    make_map(tmp_path / "t2.tif", c2, lower=np.maximum(c2 - hw2, 0), upper=c2 + hw2, aoa=aoa2)
    return tmp_path, c1, c2, hw1, hw2, aoa2


@pytest.mark.parametrize("rho", [0.0, 0.6, 1.0, -1.0])
def test_sink_arithmetic_and_interval(epochs, rho):
    tmp, c1, c2, hw1, hw2, aoa2 = epochs
    out = stock_change(tmp / "t1.tif", tmp / "t2.tif", 2012, 2020, tmp / "sink.tif", epoch_correlation=rho,
                       block=16, progress=False)
    data, names, tags, band_tags = _read(out)
    assert names == ("sink", "lower", "upper", "aoa")
    c1f, c2f = c1.astype(np.float32).astype(float), c2.astype(np.float32).astype(float)
    sink = (c2f - c1f) * 44 / 12 / 8
    s1, s2 = hw1.astype(np.float32) / Z90, hw2.astype(np.float32) / Z90
    sd = np.sqrt(np.maximum(s1 ** 2 + s2 ** 2 - 2 * rho * s1 * s2, 0)) * 44 / 12 / 8
    valid = np.isfinite(c1) & np.isfinite(c2)
    np.testing.assert_allclose(data[0][valid], sink[valid], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(data[1][valid], (sink - Z90 * sd)[valid], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(data[2][valid], (sink + Z90 * sd)[valid], rtol=1e-4, atol=1e-3)
    assert np.isnan(data[:, 3, 5]).all() and np.isnan(data[:, 7, 9]).all()
    assert np.isfinite(data[:, valid]).all()
    # AOA: both epochs inside (map 1 outside in its left quarter, map 2 in its last 10 rows)
    expected_aoa = np.ones_like(c1)
    expected_aoa[:, :10] = 0
    expected_aoa[-10:, :] = 0
    np.testing.assert_array_equal(data[3][valid], expected_aoa[valid])
    assert tags["sinks_epoch_correlation"] == f"{rho:g}"
    assert tags["sinks_years"] == "2012 2020" and tags["sinks_bundle_id"] == "bundle-a"
    assert band_tags[0]["units"] == "t CO2e/ha/yr" and band_tags[1]["interval_level"] == "0.9"
    with rasterio.open(out) as ds:
        assert ds.units[0] == "t CO2e/ha/yr"  # GDAL's unit type, as gdalinfo and QGIS show it
    assert "Eq. 2.5" in tags["sinks_method"]


def test_interval_width_orders_by_correlation(epochs):
    tmp = epochs[0]
    widths = {}
    for rho in (-1.0, 0.0, 0.5, 1.0):
        out = stock_change(tmp / "t1.tif", tmp / "t2.tif", 2012, 2020, tmp / f"s{rho}.tif", epoch_correlation=rho,
                           block=16, progress=False)
        data = _read(out)[0]
        widths[rho] = np.nanmean(data[2] - data[1])
    assert widths[-1.0] > widths[0.0] > widths[0.5] > widths[1.0] > 0


def test_clipped_lower_bound_uses_the_upper_half_width(tmp_path):
    """A carbon map's lower bound is clipped at 0: the sd comes from the unclipped side."""
    c1 = np.full((16, 16), 3.0)
    c2 = np.full((16, 16), 13.0)
    make_map(tmp_path / "a.tif", c1, half_width=10.0)  # lower clipped to 0, upper 13
    make_map(tmp_path / "b.tif", c2, half_width=10.0)
    data = _read(stock_change(tmp_path / "a.tif", tmp_path / "b.tif", 2010, 2020, tmp_path / "s.tif",
                              progress=False, block=16))[0]
    sd = np.sqrt(2) * 10 / Z90 * CO2_PER_C / 10
    np.testing.assert_allclose(data[0], 10 * CO2_PER_C / 10, rtol=1e-6)
    np.testing.assert_allclose(data[2] - data[0], Z90 * sd, rtol=1e-5)


def test_output_level_and_level_from_tag(tmp_path):
    c = np.full((16, 16), 50.0)
    make_map(tmp_path / "a.tif", c, describe_level=False, tags={"sinks_interval_level": "0.8"})
    make_map(tmp_path / "b.tif", c + 10, describe_level=False, tags={"sinks_interval_level": "0.8"})
    assert read_map_info(tmp_path / "a.tif").level() == 0.8
    data = _read(stock_change(tmp_path / "a.tif", tmp_path / "b.tif", 2010, 2020, tmp_path / "s.tif",
                              level=0.95, progress=False, block=16))[0]
    z80, z95 = 1.2815515655446004, 1.959963984540054
    sd = np.sqrt(2) * 10 / z80 * CO2_PER_C / 10
    np.testing.assert_allclose(data[2] - data[0], z95 * sd, rtol=1e-5)


def test_windows_give_the_same_map(epochs):
    tmp = epochs[0]
    small = _read(stock_change(tmp / "t1.tif", tmp / "t2.tif", 2012, 2020, tmp / "a.tif", block=16, progress=False))[0]
    large = _read(stock_change(tmp / "t1.tif", tmp / "t2.tif", 2012, 2020, tmp / "b.tif", block=512, progress=False))[0]
    np.testing.assert_array_equal(small, large)


def test_memory_is_bounded_by_the_window(tmp_path):
    """A 1024² pair of maps differenced in 64² windows: Python-side peak far below one full band stack."""
    rng = np.random.default_rng(1)
    c = rng.uniform(10, 100, (1024, 1024)).astype(np.float32)
    make_map(tmp_path / "a.tif", c, blocksize=256)
    make_map(tmp_path / "b.tif", c + 5, blocksize=256)
    del c
    tracemalloc.start()
    try:
        stock_change(tmp_path / "a.tif", tmp_path / "b.tif", 2015, 2020, tmp_path / "s.tif", block=64,
                     progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_band_f64 = 1024 * 1024 * 8
    assert peak < one_band_f64 / 2, f"peak {peak / 1e6:.1f} MB"
    data = _read(tmp_path / "s.tif")[0]
    np.testing.assert_allclose(data[0], 5 * CO2_PER_C / 5, rtol=1e-5)


def test_different_models_allowed_when_asked(tmp_path):
    c = np.full((16, 16), 40.0)
    make_map(tmp_path / "a.tif", c, bundle="one")
    make_map(tmp_path / "b.tif", c + 1, bundle="two")
    out = stock_change(tmp_path / "a.tif", tmp_path / "b.tif", 2010, 2011, tmp_path / "s.tif",
                       allow_different_models=True, progress=False, block=16)
    tags = _read(out)[2]
    assert tags["sinks_allow_different_models"] == "true"
    assert (tags["sinks_bundle_id_t1"], tags["sinks_bundle_id_t2"]) == ("one", "two")
    assert "sinks_bundle_id" not in tags


def _as_uint16(src, dst, scale=0.5, nodata=65535):
    """A copy of a map stored as uint16 with a GDAL scale (value = raw x scale), tags kept."""
    with rasterio.open(src) as ds:
        data, profile = ds.read(masked=True), ds.profile
        tags, descriptions = ds.tags(), ds.descriptions
        band_tags = [ds.tags(i) for i in range(1, ds.count + 1)]
    profile.update(dtype="uint16", nodata=nodata, driver="GTiff")
    with rasterio.open(dst, "w", **profile) as out:
        out.write(np.where(data.mask, nodata, np.round(data.filled(0) / scale)).astype("uint16"))
        out.update_tags(**tags)
        for i, (name, own) in enumerate(zip(descriptions, band_tags), start=1):
            out.set_band_description(i, name)
            out.update_tags(i, **own)
        out.scales = [scale] * profile["count"]
    return dst


def test_maps_stored_as_scaled_integers_are_read_as_their_values(epochs):
    """A uint16 map with scale 0.5 gave a sink and zonal totals exactly 2 x too large."""
    from sinks.mapping.zonal import zonal_totals

    tmp = epochs[0]
    plain = stock_change(tmp / "t1.tif", tmp / "t2.tif", 2012, 2020, tmp / "plain.tif", block=16, progress=False)
    a, b = _as_uint16(tmp / "t1.tif", tmp / "u1.tif"), _as_uint16(tmp / "t2.tif", tmp / "u2.tif")
    scaled = stock_change(a, b, 2012, 2020, tmp / "scaled.tif", block=16, progress=False)
    np.testing.assert_allclose(_read(scaled)[0][0], _read(plain)[0][0], atol=0.5 * 2 * 44 / 12 / 8, equal_nan=True)
    import geopandas as gpd
    from shapely.geometry import box

    parcels = gpd.GeoDataFrame({"parcel_id": ["p"]}, geometry=[box(100.05, 30.0, 100.3, 29.85)], crs="EPSG:4326")
    one, two = (zonal_totals(m, parcels, id_column="parcel_id", progress=False) for m in (tmp / "t1.tif", a))
    assert two["total_t_c"].iloc[0] == pytest.approx(one["total_t_c"].iloc[0], rel=1e-3)


def test_t_c_per_ha_and_mg_c_per_ha_are_one_unit(epochs):
    tmp, c1, c2 = epochs[:3]
    make_map(tmp / "tc.tif", np.nan_to_num(c2, nan=50.0), units="t C/ha")
    stock_change(tmp / "t1.tif", tmp / "tc.tif", 2012, 2020, tmp / "s.tif", block=16, progress=False)


def test_maps_of_two_pools_refused_even_with_different_models_allowed(tmp_path):
    c = np.full((16, 16), 40.0)
    make_map(tmp_path / "a.tif", c, bundle="one", tags={"sinks_pool": "forest"})
    make_map(tmp_path / "b.tif", c + 1, bundle="two", tags={"sinks_pool": "soil"})
    with pytest.raises(InputError, match="forest pool but .* the soil pool"):
        stock_change(tmp_path / "a.tif", tmp_path / "b.tif", 2010, 2011, tmp_path / "s.tif",
                     allow_different_models=True, progress=False, block=16)
    assert not (tmp_path / "s.tif").exists()


def test_cli_change(epochs, capsys):
    tmp = epochs[0]
    code = main(["change", str(tmp / "t1.tif"), str(tmp / "t2.tif"), "--years", "2012", "2020",
                 "--out", str(tmp / "cli.tif"), "--epoch-correlation", "0.3", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "epoch correlation 0.3" in capsys.readouterr().out
    assert _read(tmp / "cli.tif")[2]["sinks_epoch_correlation"] == "0.3"
