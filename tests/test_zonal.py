"""``sinks zonal``: exact partial-pixel weights, ellipsoidal areas in geographic and projected CRS
(checked against pyproj's Geod and, where installed, exactextract), the spatially correlated
interval of totals, and the nodata / outside-raster / outside-AOA shares."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine
from pyproj import CRS, Geod
from shapely.geometry.polygon import orient

from sinks.cli import main
from sinks.mapping.zonal import (EqualArea, ErrorModel, correlated_variance, mean_block_correlation,
                                 zonal_totals)
from sinks.pixels import coverage_fractions, pixel_boxes, pixel_window
from tests.test_change import T4326, make_map

GEOD = Geod(ellps="WGS84")
Z90 = 1.6448536269514722


def geod_ha(geom, crs=None) -> float:
    """Exact ellipsoidal area of a polygon whose edges are straight in ``crs`` (densified to 1e-5 units)."""
    dense = shapely.segmentize(geom, 1e-5 if crs is None else 1.0)
    if crs is not None:
        dense = gpd.GeoSeries([dense], crs=crs).to_crs(4326).iloc[0]
    return sum(abs(GEOD.geometry_area_perimeter(orient(p, 1.0))[0]) for p in getattr(dense, "geoms", [dense])) / 1e4


POLYS = {
    "sub-pixel triangle": shapely.Polygon([(100.0412, 30.1513), (100.0487, 30.1521), (100.0431, 30.1591)]),
    "quadrilateral": shapely.Polygon([(100.013, 30.117), (100.171, 30.13), (100.12, 30.011), (100.05, 30.05)]),
    "ring": shapely.Point(100.1, 30.1).buffer(0.05).difference(shapely.Point(100.1, 30.1).buffer(0.02)),
    "two parts": shapely.MultiPolygon([shapely.box(100.0033, 30.1833, 100.0188, 30.1977),
                                       shapely.box(100.1805, 30.0021, 100.1917, 30.0198)]),
}


@pytest.fixture(scope="module")
def geographic(tmp_path_factory):
    """EPSG:4326 map at 30°N, 0.01° pixels, values varying pixel to pixel."""
    tmp = tmp_path_factory.mktemp("zonal4326")
    rng = np.random.default_rng(5)
    carbon = rng.uniform(20, 90, (20, 20))
    make_map(tmp / "c.tif", carbon)
    polys = gpd.GeoDataFrame({"parcel_id": list(POLYS)}, geometry=list(POLYS.values()), crs=4326)
    return tmp, carbon.astype(np.float32).astype(float), polys


def test_pixel_area_is_the_ellipsoidal_cell(geographic):
    ea = EqualArea(CRS(4326), T4326)
    for row in (0, 10, 19):
        cell = pixel_boxes(T4326, np.array([row]), np.array([3]))[0]
        assert ea.pixel_ha(np.array([row]), np.array([3]))[0] == pytest.approx(geod_ha(cell), rel=1e-9)
    # a 0.01° cell at 30°N is about 107 ha, and cells shrink northwards
    a = ea.pixel_ha(np.array([0, 19]), np.array([0, 0]))
    assert 106 < a[1] < a[0] * 1.002 and a[0] < a[1]


def test_totals_match_an_exact_computation_in_a_geographic_crs(geographic):
    tmp, carbon, polys = geographic
    table = zonal_totals(tmp / "c.tif", polys, progress=False).set_index("parcel_id")
    rows, cols = np.mgrid[0:20, 0:20]
    boxes = pixel_boxes(T4326, rows.ravel(), cols.ravel())
    for name, geom in POLYS.items():
        pieces = shapely.intersection(geom, boxes)
        areas = np.array([geod_ha(p) if not p.is_empty else 0.0 for p in pieces])
        exact_total = float(np.sum(areas * carbon.ravel()))
        row = table.loc[name]
        assert row.total_t_c == pytest.approx(exact_total, rel=1e-7), name
        assert row.total_t_co2e == pytest.approx(exact_total * 44 / 12, rel=1e-7)
        assert row.area_ha == pytest.approx(geod_ha(geom), rel=1e-7)
        assert row.mapped_area_ha == pytest.approx(areas.sum(), rel=1e-7)
        assert row.pixels == int((areas > 0).sum())
        assert row.outside_raster_share == 0 and row.nodata_share == pytest.approx(0, abs=1e-9)
    # the sub-pixel triangle: one pixel, a small fraction of it, its own area not the pixel's
    tri = table.loc["sub-pixel triangle"]
    assert tri.pixels == 1 and tri.area_ha < 0.3 * 107
    assert tri.mean_mg_c_ha == pytest.approx(carbon[4, 4], rel=1e-9)


def test_fractions_match_exactextract():
    exactextract = pytest.importorskip("exactextract")
    from exactextract.raster import NumPyRasterSource

    h = w = 20
    values = np.arange(h * w, dtype=float).reshape(h, w)
    src = NumPyRasterSource(values, xmin=100.0, ymin=30.0, xmax=100.2, ymax=30.2, srs_wkt=CRS(4326).to_wkt())
    frame = gpd.GeoDataFrame({"k": range(len(POLYS))}, geometry=list(POLYS.values()), crs=4326)
    result = exactextract.exact_extract(src, frame, ["cell_id", "coverage"], output="pandas")
    for i, geom in enumerate(POLYS.values()):
        theirs = np.zeros(h * w)
        theirs[np.asarray(result["cell_id"][i], dtype=int)] = result["coverage"][i]
        window = pixel_window(geom, T4326, h, w)
        frac, _, _ = coverage_fractions(geom, T4326, window)
        ours = np.zeros((h, w))
        r0, c0, wh, ww = window
        ours[r0:r0 + wh, c0:c0 + ww] = frac
        np.testing.assert_allclose(ours.ravel(), theirs, atol=1e-6)


def test_coverage_against_brute_force_clipping():
    t = Affine(30, 0, 500000, 0, -30, 3300000)
    geom = shapely.Point(500700, 3299300).buffer(510).difference(shapely.box(500600, 3299000, 500660, 3299800))
    window = pixel_window(geom, t, 100, 100)
    frac, cx, cy = coverage_fractions(geom, t, window)
    r0, c0, h, w = window
    rows, cols = np.mgrid[r0:r0 + h, c0:c0 + w]
    pieces = shapely.intersection(geom, pixel_boxes(t, rows.ravel(), cols.ravel()))
    np.testing.assert_allclose(frac.ravel(), shapely.area(pieces) / 900, atol=1e-12)
    part = frac.ravel() > 0
    np.testing.assert_allclose(cx.ravel()[part], shapely.get_x(shapely.centroid(pieces[part])), atol=1e-6)
    assert frac.sum() * 900 == pytest.approx(geom.area, rel=1e-12)


def test_pixel_areas_across_the_antimeridian():
    """Taveuni (Fiji) in UTM 60S: pixels whose centres straddle 180 degrees. The longitude difference
    of the Jacobian wrapped by 360 degrees made a density of 2e7."""
    from affine import Affine

    from sinks.mapping.zonal import EqualArea

    ea = EqualArea(CRS.from_epsg(32760), Affine(30, 0, 819000, 0, -30, 8135000))
    x = np.array([819705.0, 816705.0])  # on the meridian, and 3 km west of it
    density = ea.density(x, np.array([8134610.85, 8134610.85]))
    assert density == pytest.approx([density[1], density[1]], rel=1e-4) and 0.99 < density[1] < 1.01


@pytest.mark.parametrize("crs,origin,corners,planar_error", [
    # UTM 48N far from its central meridian: planar areas 0.13 % too large
    (32648, (200000, 3400000), [(200500, 3399000), (205000, 3398000), (204000, 3394500), (201000, 3395500)], 1e-3),
    # Web Mercator at 30 N: a sphere's projection on WGS84 coordinates, which PROJ's areal scale
    # factor took for the ellipsoid (0.33 % high); planar areas are 33 % too large
    (3857, (11131949, 3503549), [(11135000, 3500000), (11150000, 3499000), (11148000, 3487000),
                                 (11136000, 3488000)], 0.3),
])
def test_projected_crs_gives_ellipsoidal_areas(tmp_path, crs, origin, corners, planar_error):
    """Totals in a projected CRS are ellipsoidal areas (Geod on the densified polygon), not planar."""
    t = Affine(30, 0, origin[0], 0, -30, origin[1])
    make_map(tmp_path / "u.tif", np.full((800, 800), 50.0), t, crs=f"EPSG:{crs}")
    poly = shapely.Polygon(corners)
    row = zonal_totals(tmp_path / "u.tif", gpd.GeoDataFrame({"id": [1]}, geometry=[poly], crs=crs),
                       progress=False).iloc[0]
    exact = geod_ha(poly, crs=crs)
    assert row.total_t_c / 50 == pytest.approx(exact, rel=1e-8)
    assert row.area_ha == pytest.approx(exact, rel=1e-8)
    assert poly.area / 1e4 / exact - 1 > planar_error  # what a planar sum would have got wrong


def test_polygons_in_another_crs_are_reprojected(geographic):
    tmp, _, polys = geographic
    utm = polys.to_crs(32647)
    a = zonal_totals(tmp / "c.tif", polys, progress=False)
    b = zonal_totals(tmp / "c.tif", utm, progress=False)
    # straight UTM edges are not straight lon/lat edges: the same polygons to within 1e-4
    np.testing.assert_allclose(b.total_t_c, a.total_t_c, rtol=1e-4)
    np.testing.assert_allclose(b.area_ha, a.area_ha, rtol=1e-4)


def test_shares_of_nodata_outside_raster_and_outside_aoa(tmp_path):
    carbon = np.full((20, 20), 40.0)
    carbon[:, 10:] = np.nan  # right half without data
    aoa = np.ones((20, 20))
    aoa[:5, :] = 0  # top quarter outside the AOA
    make_map(tmp_path / "m.tif", carbon, aoa=aoa)
    # box from x 100.05..100.15 (half in data), y 30.1..30.25 (the part above 30.2 is off the raster)
    poly = shapely.box(100.05, 30.10, 100.15, 30.25)
    row = zonal_totals(tmp_path / "m.tif", gpd.GeoDataFrame(geometry=[poly], crs=4326), progress=False).iloc[0]
    ea = EqualArea(CRS(4326), T4326)
    inside = geod_ha(shapely.box(100.05, 30.10, 100.15, 30.2))
    assert row.polygon == 1
    assert row.area_ha == pytest.approx(geod_ha(poly), rel=1e-7)
    assert row.outside_raster_share == pytest.approx(1 - inside / geod_ha(poly), rel=1e-6)
    assert row.nodata_share == pytest.approx(0.5, rel=1e-3)
    top = geod_ha(shapely.box(100.05, 30.15, 100.10, 30.2))
    assert row.outside_aoa_share == pytest.approx(top / row.mapped_area_ha, rel=1e-6)
    assert row.total_t_c == pytest.approx(40 * row.mapped_area_ha, rel=1e-7)
    assert row.pixels == 100 and row.pixels_valid == 50
    assert ea.pixel_ha(np.array([5]), np.array([5]))[0] > 0


# ---- the correlated-error interval -----------------------------------------------------------------

def test_correlated_variance_is_the_exact_quadratic_form():
    rng = np.random.default_rng(2)
    x, y, a = rng.uniform(0, 3000, 300), rng.uniform(0, 3000, 300), rng.uniform(0, 5, 300)
    model = ErrorModel(800.0, 0.0)
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    assert correlated_variance(x, y, a, model) == pytest.approx(a @ np.exp(-d / 800) @ a, rel=1e-12)
    nug = ErrorModel(800.0, 0.3)
    rho = np.where(d == 0, 1, 0.7 * np.exp(-d / 800))
    assert correlated_variance(x, y, a, nug) == pytest.approx(a @ rho @ a, rel=1e-12)


def test_mean_block_correlation_by_brute_force():
    model = ErrorModel(100.0)
    k, dx, dy = 5, 30.0, 20.0
    r, c = np.mgrid[0:k, 0:k]
    px, py = (c.ravel() * dx, r.ravel() * dy)
    d = np.hypot(px[:, None] - px[None, :], py[:, None] - py[None, :])
    assert mean_block_correlation(model, k, dx, dy) == pytest.approx(np.exp(-d / 100).mean(), rel=1e-12)


def test_interval_lies_between_independent_and_fully_correlated(geographic):
    tmp, _, polys = geographic
    sd = {}
    for r in (0.0, 500.0, 3000.0, 20000.0, None):
        sd[r] = zonal_totals(tmp / "c.tif", polys, error_range_m=r, progress=False).set_index("parcel_id").sd_t_c
    hw = 10.0  # make_map's half-width; lower is not clipped for these values (carbon >= 20)
    for name in POLYS:
        independent, full = sd[0.0][name], sd[None][name]
        if name == "sub-pixel triangle":  # one pixel: every model gives the same sd
            assert independent == pytest.approx(full, rel=1e-9)
            continue
        assert independent < sd[500.0][name] < sd[3000.0][name] < sd[20000.0][name] < full, name
    # fully correlated: sd of the total = sum of pixel sds, i.e. area x half-width / z
    table = zonal_totals(tmp / "c.tif", polys, progress=False).set_index("parcel_id")
    np.testing.assert_allclose(table.sd_t_c, table.mapped_area_ha * hw / Z90, rtol=1e-5)
    assert (table.error_model.str.contains("fully correlated")).all()
    np.testing.assert_allclose(table.upper_t_c - table.total_t_c, Z90 * table.sd_t_c, rtol=1e-9)


def test_nugget_narrows_and_range_from_tags(tmp_path):
    rng = np.random.default_rng(3)
    make_map(tmp_path / "m.tif", rng.uniform(30, 60, (20, 20)), tags={"sinks_error_range_m": "2500"})
    polys = gpd.GeoDataFrame(geometry=[POLYS["quadrilateral"]], crs=4326)
    tagged = zonal_totals(tmp_path / "m.tif", polys, progress=False).iloc[0]
    given = zonal_totals(tmp_path / "m.tif", polys, error_range_m=2500, progress=False).iloc[0]
    assert tagged.sd_t_c == pytest.approx(given.sd_t_c, rel=1e-12) and "map tags" in tagged.error_model
    nugget = zonal_totals(tmp_path / "m.tif", polys, error_range_m=2500, error_nugget=0.5, progress=False).iloc[0]
    independent = zonal_totals(tmp_path / "m.tif", polys, error_range_m=0, progress=False).iloc[0]
    assert independent.sd_t_c < nugget.sd_t_c < given.sd_t_c


def test_block_approximation_is_close_to_exact(tmp_path):
    """A polygon of ~2,600 pixels: 3x3 blocks (exact_limit 300) give the exact sd within 1 %."""
    t = Affine(30, 0, 500000, 0, -30, 3300000)
    rng = np.random.default_rng(4)
    carbon = rng.uniform(20, 100, (80, 80))
    make_map(tmp_path / "u.tif", carbon, t, crs="EPSG:32648", half_width=12.0)
    poly = gpd.GeoDataFrame(geometry=[shapely.Point(501200, 3298800).buffer(870)], crs=32648)
    for r in (300.0, 2000.0):
        exact = zonal_totals(tmp_path / "u.tif", poly, error_range_m=r, progress=False).iloc[0]
        approx = zonal_totals(tmp_path / "u.tif", poly, error_range_m=r, exact_limit=300, progress=False).iloc[0]
        assert exact.variance_method == "exact" and approx.variance_method.startswith("block approximation, 3x3")
        assert approx.sd_t_c == pytest.approx(exact.sd_t_c, rel=0.01)
        assert approx.total_t_c == pytest.approx(exact.total_t_c, rel=1e-12)


def test_sink_map_totals_and_cli(tmp_path, capsys):
    c1 = np.full((20, 20), 40.0)
    make_map(tmp_path / "a.tif", c1)
    make_map(tmp_path / "b.tif", c1 + 6)
    assert main(["change", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "--years", "2014", "2020",
                 "--out", str(tmp_path / "s.tif"), "--quiet"]) == 0
    polys = gpd.GeoDataFrame({"parcel_id": ["q"]}, geometry=[POLYS["quadrilateral"]], crs=4326)
    polys.to_file(tmp_path / "p.gpkg")
    assert main(["zonal", str(tmp_path / "s.tif"), str(tmp_path / "p.gpkg"), "--out", str(tmp_path / "z.csv"),
                 "--error-range-m", "1000", "--quiet"]) == 0
    row = pd.read_csv(tmp_path / "z.csv").iloc[0]
    assert row.parcel_id == "q"
    assert row.total_t_co2e_yr == pytest.approx(6 * 44 / 12 / 6 * geod_ha(POLYS["quadrilateral"]), rel=1e-6)
    assert row.lower_t_co2e_yr < row.total_t_co2e_yr < row.upper_t_co2e_yr
    assert "total_t_co2e_yr" in capsys.readouterr().out
    assert main(["zonal", str(tmp_path / "a.tif"), str(tmp_path / "p.gpkg"), "--out", str(tmp_path / "z.gpkg"),
                 "--quiet"]) == 0
    back = gpd.read_file(tmp_path / "z.gpkg")
    assert back.crs.to_epsg() == 4326 and back.total_t_c.iloc[0] == pytest.approx(40 * back.mapped_area_ha.iloc[0])


def test_id_column_in_any_case_and_the_polygons_columns_kept(tmp_path):
    make_map(tmp_path / "a.tif", np.full((20, 20), 40.0))
    polys = gpd.GeoDataFrame({"Parcel_ID": ["q"], "owner": ["village 3"]}, geometry=[POLYS["quadrilateral"]],
                             crs=4326)
    polys.to_file(tmp_path / "p.gpkg")
    assert main(["zonal", str(tmp_path / "a.tif"), str(tmp_path / "p.gpkg"), "--out", str(tmp_path / "z.gpkg"),
                 "--quiet"]) == 0
    back = gpd.read_file(tmp_path / "z.gpkg")
    assert list(back["Parcel_ID"]) == ["q"] and list(back["owner"]) == ["village 3"]
    assert "polygon" not in back.columns and back.total_t_c.iloc[0] > 0


def test_a_range_option_replaces_the_maps_pure_nugget_model(tmp_path):
    """A map whose residuals were pure nugget (tags: nugget 1): --error-range-m alone must widen the
    interval (nugget 0), not be overruled by the tag's nugget; a nugget alone goes with full correlation."""
    rng = np.random.default_rng(3)
    make_map(tmp_path / "m.tif", rng.uniform(30, 60, (20, 20)),
             tags={"sinks_error_range_m": "300", "sinks_error_nugget": "1"})
    polys = gpd.GeoDataFrame(geometry=[POLYS["quadrilateral"]], crs=4326)
    tagged = zonal_totals(tmp_path / "m.tif", polys, progress=False).iloc[0]
    ranged = zonal_totals(tmp_path / "m.tif", polys, error_range_m=5000, progress=False).iloc[0]
    assert ranged.sd_t_c > 3 * tagged.sd_t_c and "nugget" not in ranged.error_model.split("(")[0]
    full = zonal_totals(tmp_path / "m.tif", polys, error_nugget=0.0, progress=False).iloc[0]
    assert "fully correlated" in full.error_model and full.sd_t_c > ranged.sd_t_c


def test_a_polygon_partly_beyond_the_map_is_warned_about(tmp_path, capsys):
    """Its total counts the mapped part only: said on stderr, not just in a column."""
    from shapely.geometry import box

    make_map(tmp_path / "a.tif", np.full((20, 20), 40.0))
    polys = gpd.GeoDataFrame({"parcel_id": ["inside", "edge"]},
                             geometry=[box(100.05, 30.05, 100.1, 30.1), box(100.15, 30.05, 100.25, 30.1)], crs=4326)
    polys.to_file(tmp_path / "p.gpkg")
    for out in ("z.csv", "z.gpkg"):
        assert main(["zonal", str(tmp_path / "a.tif"), str(tmp_path / "p.gpkg"), "--out", str(tmp_path / out),
                     "--quiet"]) == 0
        err = capsys.readouterr().err
        assert "warning: 1 polygon(s) lie partly beyond the map or on its nodata (edge)" in err
    row = pd.read_csv(tmp_path / "z.csv").set_index("parcel_id").loc["edge"]
    assert row.outside_raster_share == pytest.approx(0.5, abs=0.01)
