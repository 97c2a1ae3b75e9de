"""The local engine on tiny synthetic GeoTIFFs: alignment, masks, composites, footprints, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import Point, box

from sinks.cog import FLOAT_NODATA
from sinks.covariates import local
from sinks.covariates.extract import build_stack, extract
from sinks.covariates.local import LocalEngine, target_grid
from sinks.covariates.spec import load_spec
from sinks.errors import InputError, SpecError

CRS = "EPSG:32650"
ORIGIN = (500000.0, 3000000.0)  # top-left corner


def write_tif(path: Path, bands, *, res=10.0, origin=ORIGIN, crs=CRS, nodata=None, dtype="float32") -> Path:
    """A small north-up GeoTIFF with ``bands`` (list of 2-D arrays)."""
    bands = [np.asarray(b) for b in bands]
    profile = dict(driver="GTiff", width=bands[0].shape[1], height=bands[0].shape[0], count=len(bands),
                   dtype=dtype, transform=Affine(res, 0, origin[0], 0, -res, origin[1]), nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        for i, band in enumerate(bands, start=1):
            dst.write(band.astype(dtype), i)
    return path


def write_spec(path: Path, body: str, *, grid: str = 'like = "a"', res: float = 10.0, footprint: str = "point") -> Path:
    path.write_text(f'name = "t"\n[grid]\ncrs = "{CRS}"\nresolution = {res}\n{grid}\n'
                    f'[footprint]\nkind = "{footprint}"\n' + ("radius = 15\n" if footprint == "buffer" else "")
                    + body)
    return path


def points(xy, crs=CRS):
    return gpd.GeoDataFrame({"plot_id": [f"p{i}" for i in range(len(xy))]},
                            geometry=[Point(x, y) for x, y in xy], crs=crs)


@pytest.fixture
def two_band(tmp_path):
    red = np.arange(48, dtype=float).reshape(6, 8)
    nir = red * 2 + 10
    red[2, 3] = -1  # nodata
    write_tif(tmp_path / "a.tif", [red, nir], nodata=-1)
    return write_spec(tmp_path / "s.toml", """
[[sources]]
name = "a"
path = "a.tif"
bands = ["red", {name = "nir", index = 2, scale = 0.5, offset = 1}]
[[features]]
name = "red"
band = "a.red"
[[features]]
name = "ndvi"
expression = "(nir - red) / (nir + red)"
""")


def test_aligned_reads_nodata_scale_and_index(two_band):
    spec = load_spec(two_band)
    with LocalEngine(spec) as engine:
        assert engine.grid.shape == (6, 8)
        out = engine.compute(Window(0, 0, 8, 6))
    red = np.arange(48, dtype=np.float32).reshape(6, 8)
    nir = (red * 2 + 10) * 0.5 + 1
    assert np.isnan(out[0, 2, 3]) and np.isnan(out[1, 2, 3])  # nodata kept as NaN through the index
    red[2, 3] = np.nan
    np.testing.assert_allclose(out[0], red)
    np.testing.assert_allclose(out[1], (nir - red) / (nir + red), rtol=1e-6)
    # a window past the grid's edge reads NaN there, never wraps
    with LocalEngine(spec) as engine:
        edge = engine.compute(Window(6, 4, 4, 4))
    np.testing.assert_allclose(edge[0, :2, :2], red[4:6, 6:8])
    assert np.isnan(edge[0, 2:]).all() and np.isnan(edge[0, :, 2:]).all()


@pytest.mark.parametrize("which", ["grid source", "other source"])
def test_a_south_up_source_is_refused_as_such(tmp_path, which):
    """Its bounds (bottom above top, as rasterio gives them) were read as missing the grid altogether."""
    red = np.arange(48, dtype=float).reshape(6, 8)
    write_tif(tmp_path / "a.tif", [red])
    write_tif(tmp_path / "b.tif", [red * 3])
    flipped = tmp_path / ("a.tif" if which == "grid source" else "b.tif")
    with rasterio.open(flipped) as ds:
        data, profile = ds.read(), ds.profile
    t = profile["transform"]
    profile.update(transform=Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * profile["height"]))
    with rasterio.open(flipped, "w", **profile) as dst:
        dst.write(data[:, ::-1])
    spec = write_spec(tmp_path / "s.toml", """
[[sources]]
name = "a"
path = "a.tif"
bands = ["red"]
[[sources]]
name = "b"
path = "b.tif"
bands = ["v"]
[[features]]
name = "red"
band = "a.red"
[[features]]
name = "v"
band = "b.v"
""")
    with pytest.raises(InputError, match=f"{flipped.name}: not a north-up raster.*gdalwarp"):
        with LocalEngine(load_spec(spec)) as engine:
            engine.compute(Window(0, 0, 8, 6))


def test_stack_nodata_and_points_match_direct_reads(two_band, tmp_path):
    spec = load_spec(two_band)
    with pytest.raises(InputError, match="multiple of 16"):
        build_stack(spec, tmp_path / "stack.tif", block=4, progress=False)
    out = build_stack(spec, tmp_path / "stack.tif", block=16, progress=False)
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("red", "ndvi") and ds.nodata == FLOAT_NODATA
        stack = ds.read()
        assert stack[0, 2, 3] == FLOAT_NODATA and stack[0, 0, 1] == 1.0
    xy = [(ORIGIN[0] + 10 * c + 3, ORIGIN[1] - 10 * r - 7) for r, c in [(0, 0), (2, 3), (5, 7), (3, 1)]]
    table = extract(spec, points(xy), tile=2, progress=False)
    with rasterio.open(tmp_path / "a.tif") as src:
        direct = np.array([v[0] for v in src.sample(zip(table.x, table.y))], dtype=float)
    direct[direct == -1] = np.nan
    np.testing.assert_array_equal(table["red"].to_numpy(), direct)
    assert table["valid_pixels"].tolist() == [1, 0, 1, 1]
    assert list(table.columns[:3]) == ["plot_id", "x", "y"]


def test_valid_mask_applies_before_resampling(tmp_path):
    # cloud flag in band 2 masks band 1 on the 10 m grid; the 20 m grid averages only clear pixels
    value = np.full((4, 4), 10.0)
    value[0, 0] = 1000.0  # a cloud: bright, flagged
    flag = np.zeros((4, 4))
    flag[0, 0] = 1
    write_tif(tmp_path / "a.tif", [value, flag])
    spec = load_spec(write_spec(tmp_path / "s.toml", """
[[sources]]
name = "a"
path = "a.tif"
bands = ["v", "flag"]
valid = "flag == 0"
resampling = "average"
[[features]]
name = "v"
band = "a.v"
""", grid=f"extent = [{ORIGIN[0]}, {ORIGIN[1] - 40}, {ORIGIN[0] + 40}, {ORIGIN[1]}]", res=20.0))
    with LocalEngine(spec) as engine:
        out = engine.compute(Window(0, 0, 2, 2))
    np.testing.assert_allclose(out[0], 10.0)  # the cloud never leaks into the average


def test_reprojected_source_and_composite_median(tmp_path):
    scenes = []
    for k, v in enumerate([1.0, 5.0, 3.0]):
        arr = np.full((6, 6), v)
        if k == 1:
            arr[0, 0] = np.nan  # masked in one scene: the median of the other two
        scenes.append(write_tif(tmp_path / f"s{k}.tif", [arr], nodata=np.nan))
    spec = load_spec(write_spec(tmp_path / "s.toml", f"""
[[sources]]
name = "a"
paths = {[p.name for p in scenes]}
composite = "median"
bands = ["v"]
[[features]]
name = "v"
band = "a.v"
""", grid='like = "a"'))
    with LocalEngine(spec) as engine:
        out = engine.compute(Window(0, 0, 6, 6))[0]
    assert out[0, 0] == 2.0 and (out.ravel()[1:] == 3.0).all()
    # the same scenes on a grid in another CRS (geographic) are reprojected, values kept
    text = (tmp_path / "s.toml").read_text().replace(f'crs = "{CRS}"', 'crs = "EPSG:4326"')
    from rasterio.warp import transform_bounds

    w, s_, e, n = transform_bounds(CRS, "EPSG:4326", ORIGIN[0] + 10, ORIGIN[1] - 50, ORIGIN[0] + 50, ORIGIN[1] - 10)
    text = text.replace('resolution = 10.0\nlike = "a"', f"resolution = 0.0001\nextent = [{w}, {s_}, {e}, {n}]")
    (tmp_path / "g.toml").write_text(text)
    with LocalEngine(load_spec(tmp_path / "g.toml")) as engine:
        geo = engine.compute(Window(0, 0, 2, 2))[0]
    assert np.isfinite(geo).all() and np.allclose(geo[np.isfinite(geo)], 3.0)


def _brute_force_buffer(values, cx, cy, radius, res=10.0):
    rows, cols = np.mgrid[0: values.shape[0], 0: values.shape[1]]
    x, y = ORIGIN[0] + (cols + 0.5) * res, ORIGIN[1] - (rows + 0.5) * res
    inside = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    return np.nanmean(values[inside]), inside.sum()


def test_buffer_and_polygon_footprints_against_brute_force(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.normal(size=(30, 40))
    values[rng.random(values.shape) < 0.1] = np.nan
    write_tif(tmp_path / "a.tif", [values], nodata=np.nan)
    body = '[[sources]]\nname = "a"\npath = "a.tif"\nbands = ["v"]\n[[features]]\nname = "v"\nband = "a.v"\n'
    spec = load_spec(write_spec(tmp_path / "b.toml", body, footprint="buffer"))
    xy = np.column_stack([ORIGIN[0] + rng.uniform(0, 400, 50), ORIGIN[1] - rng.uniform(0, 300, 50)])
    table = extract(spec, points(xy.tolist()), tile=8, progress=False)
    for (cx, cy), got, n in zip(xy, table["v"], table["footprint_pixels"]):
        expected, count = _brute_force_buffer(values, cx, cy, 15.0)
        assert n == count and np.isclose(got, expected, equal_nan=True)
    polys = gpd.GeoDataFrame({"plot_id": [1, 2]}, geometry=[box(ORIGIN[0] + 20, ORIGIN[1] - 50, ORIGIN[0] + 60, ORIGIN[1] - 10),
                                                           box(ORIGIN[0] + 101, ORIGIN[1] - 104, ORIGIN[0] + 103, ORIGIN[1] - 102)], crs=CRS)
    ptable = extract(load_spec(write_spec(tmp_path / "p.toml", body, footprint="polygon")), polys, progress=False)
    assert ptable["footprint_pixels"].tolist() == [16, 1]  # 4 x 4 pixel centres; a tiny polygon gets its pixel
    assert np.isclose(ptable["v"][0], np.nanmean(values[1:5, 2:6]))
    assert np.isclose(ptable["v"][1], np.float32(values[10, 10]), equal_nan=True)


def test_sparse_points_are_split_into_small_windows(two_band, monkeypatch):
    import sinks.covariates.extract as ex

    monkeypatch.setattr(ex, "SPARSE_PIXELS_PER_PLOT", 1)
    spec = load_spec(two_band)
    xy = [(ORIGIN[0] + 5, ORIGIN[1] - 5), (ORIGIN[0] + 75, ORIGIN[1] - 55)]
    seen = []
    original = LocalEngine.compute
    monkeypatch.setattr(LocalEngine, "compute", lambda self, w: seen.append(w) or original(self, w))
    table = extract(spec, points(xy), progress=False)
    assert [(w.width, w.height) for w in seen] == [(1, 1), (1, 1)]
    assert table["red"].tolist() == [0.0, 47.0]


def test_twi_feature_is_whole_grid_and_cached(tmp_path, monkeypatch):
    y = np.arange(12)[:, None] * 10.0
    dem = 100 - 0.1 * y + np.zeros((12, 9))
    write_tif(tmp_path / "a.tif", [dem])
    spec = load_spec(write_spec(tmp_path / "s.toml", """
[[sources]]
name = "a"
path = "a.tif"
bands = ["z"]
[[features]]
name = "twi"
terrain = "twi"
band = "a.z"
[[features]]
name = "slope"
terrain = "slope"
band = "a.z"
"""))
    local._FLOW_CACHE.clear()
    with LocalEngine(spec) as engine:
        top = engine.compute(Window(0, 0, 9, 6))[0]
        bottom = engine.compute(Window(0, 6, 9, 6))[0]
    # windows see the whole grid's flow: row r drains r + 1 cells above it
    np.testing.assert_allclose(bottom[2, 1:-1], np.log(9 * 10.0 / 0.1), rtol=1e-6)
    np.testing.assert_allclose(top[3, 1:-1], np.log(4 * 10.0 / 0.1), rtol=1e-6)
    assert len(local._FLOW_CACHE) == 1
    monkeypatch.setenv("SINKS_FLOW_MAX_PIXELS", "50")
    local._FLOW_CACHE.clear()
    with LocalEngine(spec) as engine, pytest.raises(SpecError, match="precompute TWI"):
        engine.compute(Window(0, 0, 2, 2))


# -- bad input ---------------------------------------------------------------------------------

BODY = '[[sources]]\nname = "a"\npath = "a.tif"\nbands = ["v"]\n[[features]]\nname = "v"\nband = "a.v"\n'


def test_raster_without_crs(tmp_path):
    write_tif(tmp_path / "a.tif", [np.ones((3, 3))], crs=None)
    spec = load_spec(write_spec(tmp_path / "s.toml", BODY, grid="extent = [500000, 2999970, 500030, 3000000]"))
    with pytest.raises(InputError, match=r"a\.tif: raster has no CRS"):
        LocalEngine(spec)


def test_disjoint_extent(tmp_path):
    write_tif(tmp_path / "a.tif", [np.ones((3, 3))])
    spec = load_spec(write_spec(tmp_path / "s.toml", BODY, grid="extent = [0, 0, 30, 30]"))
    with pytest.raises(InputError, match=r"a\.tif: raster does not overlap the target grid"):
        LocalEngine(spec)


def test_plots_outside_grid_are_named(tmp_path):
    write_tif(tmp_path / "a.tif", [np.ones((3, 3))])
    spec = load_spec(write_spec(tmp_path / "s.toml", BODY))
    plots = points([(ORIGIN[0] + 5, ORIGIN[1] - 5), (ORIGIN[0] - 500, ORIGIN[1])])
    with pytest.raises(InputError, match=r"1 of 2 plot\(s\) lie outside .*plot_id p1"):
        extract(spec, plots, progress=False)
    with pytest.raises(InputError, match="no CRS"):
        extract(spec, plots.set_crs(None, allow_override=True), progress=False)


def test_band_the_source_lacks(tmp_path):
    write_tif(tmp_path / "a.tif", [np.ones((3, 3))])
    spec = load_spec(write_spec(tmp_path / "s.toml", BODY.replace('bands = ["v"]', 'bands = ["v", "nir"]')
                                + '[[features]]\nname = "nir"\nband = "a.nir"\n'))
    with pytest.raises(SpecError, match=r"a\.tif: source 'a' names band 'nir' at index 2, but the raster has 1 band"):
        LocalEngine(spec)


def test_expression_with_unknown_name(tmp_path):
    write_tif(tmp_path / "a.tif", [np.ones((3, 3))])
    with pytest.raises(SpecError, match=r"feature 'ratio': expression names 'swir'"):
        load_spec(write_spec(tmp_path / "s.toml", BODY + '[[features]]\nname = "ratio"\nexpression = "v / swir"\n'))


def test_corrupt_raster(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"II*\x00 this is not a tiff")
    spec = load_spec(write_spec(tmp_path / "s.toml", BODY, grid="extent = [500000, 2999970, 500030, 3000000]"))
    with pytest.raises(InputError, match=r"a\.tif: cannot open raster"):
        LocalEngine(spec)


def test_truncated_raster_fails_midway_and_build_stack_leaves_nothing(tmp_path):
    # a valid header whose later tiles are cut off: opening works, reading the second window fails
    big = np.arange(256 * 256, dtype="float32").reshape(256, 256)
    src = tmp_path / "full.tif"
    with rasterio.open(src, "w", driver="GTiff", width=256, height=256, count=1, dtype="float32", crs=CRS,
                       transform=Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), tiled=True, blockxsize=64,
                       blockysize=64) as dst:
        dst.write(big, 1)
    data = src.read_bytes()
    (tmp_path / "a.tif").write_bytes(data[: len(data) // 2])
    spec = load_spec(write_spec(tmp_path / "s.toml", BODY))
    out = tmp_path / "out" / "stack.tif"
    with pytest.raises(InputError, match=r"a\.tif: cannot read band\(s\) v of source 'a'"):
        build_stack(spec, out, block=64, progress=False)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == []  # no partial or staging file either


def test_target_grid_snaps_reprojected_extent(tmp_path):
    write_tif(tmp_path / "a.tif", [np.ones((3, 4))], res=10.0)
    spec = load_spec(write_spec(tmp_path / "s.toml", BODY, res=25.0))
    grid = target_grid(spec)
    assert grid.transform.a == 25.0 and grid.transform.c % 25 == 0 and grid.transform.f % 25 == 0
    left, bottom, right, top = grid.bounds
    assert left <= ORIGIN[0] and top >= ORIGIN[1] and right >= ORIGIN[0] + 40 and bottom <= ORIGIN[1] - 30
    assert list(grid.windows(1)) and sum(w.width * w.height for w in grid.windows(1)) == grid.width * grid.height


def test_an_extent_snaps_to_the_sources_pixels_not_to_multiples_of_the_resolution(tmp_path):
    """A 30 m source at x = 400,000 (not a multiple of 30): an extent cut on its pixels was moved
    10 m onto multiples of 30 and every pixel resampled (188 Mg C/ha off the full map)."""
    values = np.arange(400, dtype=float).reshape(20, 20)
    write_tif(tmp_path / "a.tif", [values], res=30.0, origin=(400000.0, 3310000.0))
    spec = load_spec(write_spec(tmp_path / "s.toml", BODY, res=30.0,
                                grid="extent = [400090, 3309700, 400300, 3309910]"))  # pixels 3-9, rows 3-9
    grid = target_grid(spec)
    assert (grid.transform.c, grid.transform.f, grid.width, grid.height) == (400090.0, 3309910.0, 7, 7)
    out = build_stack(spec, tmp_path / "stack.tif", block=16, progress=False)
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(1), values[3:10, 3:10].astype("float32"))


def test_a_categorical_like_source_off_the_grid_is_not_interpolated(tmp_path):
    """A 250 m class raster as the `like` source of a 100 m grid was resampled bilinearly: classes 1
    and 5 read 2.2 at a plot."""
    classes = np.array([[1, 1, 5, 5], [1, 1, 5, 5], [3, 3, 7, 7], [3, 3, 7, 7]], dtype=float).repeat(5, 0).repeat(5, 1)
    write_tif(tmp_path / "a.tif", [classes], res=250.0)
    body = ('[[sources]]\nname = "a"\npath = "a.tif"\nbands = ["c"]\nresampling = "bilinear"\n'
            '[[features]]\nname = "klass"\nband = "a.c"\ncategorical = true\n')
    spec = load_spec(write_spec(tmp_path / "s.toml", body, res=100.0))
    with pytest.raises(SpecError, match=r"categorical feature\(s\) klass of source 'a' would be resampled with "
                                        r"'bilinear'.*set resampling = \"nearest\""):
        LocalEngine(spec)
    aligned = load_spec(write_spec(tmp_path / "t.toml", body, res=250.0))  # on the source's own pixels: fine
    with LocalEngine(aligned):
        pass


def test_missing_raster_named(tmp_path):
    spec = load_spec(write_spec(tmp_path / "s.toml", BODY, grid="extent = [0, 0, 30, 30]"))
    with pytest.raises(InputError, match=r"a\.tif: raster not found"):
        LocalEngine(spec)
    assert os.listdir(tmp_path) == ["s.toml"]


def test_window_arrays_are_freed_without_the_cyclic_collector():
    """evaluate() must not leave a reference cycle holding the window's arrays: a map or stack job
    would otherwise grow by every window until Python's cyclic collector happens to run."""
    import gc
    import weakref

    from sinks.covariates.expressions import evaluate

    gc.disable()
    try:
        band = np.ones((64, 64), dtype=np.float32)
        alive = weakref.ref(band)
        result = evaluate("(nir - red) / (nir + red) + 1", {"nir": band, "red": band * 0.5})
        del band
        assert alive() is None and result.shape == (64, 64)
    finally:
        gc.enable()


def test_grid_size_and_window_memory_guards(tmp_path, monkeypatch):
    from sinks.covariates.local import check_grid_size
    from sinks.errors import ResourceError

    write_tif(tmp_path / "a.tif", [np.ones((6, 8))])
    spec = load_spec(write_spec(tmp_path / "s.toml", BODY))
    with LocalEngine(spec) as engine:
        assert check_grid_size("spec 't'", engine.grid, n_bands=2) == 6 * 8 * 2 * 4
        with pytest.raises(ResourceError, match=r"spec 't': .*8 x 6 = 48 pixels.*check \[grid\].*--max-pixels 48"):
            check_grid_size("spec 't'", engine.grid, n_bands=2, max_pixels=47)
        with pytest.raises(ResourceError, match=r"stack s.tif: .*it is the stack's own grid .*--max-pixels 48"):
            check_grid_size("stack s.tif", engine.grid, n_bands=2, max_pixels=47, from_spec=False)
        small = engine.window_bytes(16)
        assert 0 < small == engine.window_bytes(512)  # a window never exceeds the grid
        monkeypatch.setattr(local, "available_memory", lambda: small)
        with pytest.raises(ResourceError, match="needs about .* of memory.*--block"):
            engine.check_memory(512)
        monkeypatch.setattr(local, "available_memory", lambda: None)  # unknown: not refused
        assert engine.check_memory(512) == small


def test_window_memory_counts_a_source_finer_than_the_grid(tmp_path):
    # a 10 m source on a 1 km grid: a window of 4 x 4 grid pixels reads ~400 x 400 source pixels
    write_tif(tmp_path / "a.tif", [np.ones((400, 400))])
    coarse = load_spec(write_spec(tmp_path / "c.toml", BODY, res=1000.0))
    with LocalEngine(coarse) as c:
        assert c.grid.shape == (4, 4)
        assert c.window_bytes(512) >= 400 * 400 * 9  # float copy, masked read and mask per source pixel


def test_degree_crs_with_metre_resolution_is_refused_at_load(tmp_path):
    text = write_spec(tmp_path / "s.toml", BODY).read_text().replace(CRS, "EPSG:4326").replace("resolution = 10.0", "resolution = 30")
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(SpecError, match=r"resolution = 30 is in degrees for EPSG:4326.*UTM.*0.00027 degrees"):
        load_spec(tmp_path / "s.toml")
    text = text.replace("resolution = 30", "resolution = 0.00027")
    (tmp_path / "s.toml").write_text(text)
    assert load_spec(tmp_path / "s.toml").grid.resolution == (0.00027, 0.00027)


def test_spec_typo_suggests_the_key(tmp_path):
    write_tif(tmp_path / "a.tif", [np.ones((3, 3))])
    with pytest.raises(SpecError, match=r"unknown key 'bnad' \(did you mean 'band'\?\)"):
        load_spec(write_spec(tmp_path / "s.toml", BODY.replace('band = "a.v"', 'bnad = "a.v"')))


def test_a_rasters_own_scale_and_offset_apply_unless_the_spec_gives_them(tmp_path):
    import rasterio

    write_tif(tmp_path / "a.tif", [np.full((3, 3), 1388.0)])
    with rasterio.open(tmp_path / "a.tif", "r+") as ds:
        ds.scales, ds.offsets = (0.0001,), (-0.1,)
    spec = load_spec(write_spec(tmp_path / "s.toml", BODY, grid="extent = [500000, 2999970, 500030, 3000000]"))
    with LocalEngine(spec) as engine:
        np.testing.assert_allclose(engine.compute(Window(0, 0, 3, 3))[0], 1388 * 0.0001 - 0.1, rtol=1e-6)
    explicit = BODY.replace('bands = ["v"]', 'bands = [{name = "v", index = 1, scale = 0.001}]')
    assert explicit != BODY
    spec = load_spec(write_spec(tmp_path / "e.toml", explicit, grid="extent = [500000, 2999970, 500030, 3000000]"))
    with LocalEngine(spec) as engine:
        np.testing.assert_allclose(engine.compute(Window(0, 0, 3, 3))[0], 1.388, rtol=1e-6)  # the spec's wins
