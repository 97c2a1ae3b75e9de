"""Terrain derivatives against surfaces with known answers; TWI flow routing on known flow paths."""

from __future__ import annotations

import numpy as np
import pytest

from sinks.covariates import terrain

D = 10.0  # pixel size, m


def _plane(rows, cols, east, north):
    """z rising by ``east`` m/m toward east and ``north`` m/m toward north (row 0 is north)."""
    y = -np.arange(rows)[:, None] * D
    x = np.arange(cols)[None, :] * D
    return 100.0 + east * x + north * y


@pytest.mark.parametrize("east, north, aspect_deg", [(0.1, 0.0, 270.0), (0.0, 0.2, 180.0), (-0.3, -0.3, 45.0)])
def test_plane_slope_aspect(east, north, aspect_deg):
    z = _plane(7, 9, east, north)
    inner = (slice(1, -1), slice(1, -1))
    expected_slope = np.degrees(np.arctan(np.hypot(east, north)))
    np.testing.assert_allclose(terrain.slope(z, D, D)[inner], expected_slope, rtol=1e-6)
    np.testing.assert_allclose(terrain.aspect(z, D, D)[inner], aspect_deg, atol=1e-6)
    np.testing.assert_allclose(terrain.northness(z, D, D)[inner], np.cos(np.radians(aspect_deg)), atol=1e-9)
    np.testing.assert_allclose(terrain.eastness(z, D, D)[inner], np.sin(np.radians(aspect_deg)), atol=1e-9)
    np.testing.assert_allclose(terrain.curvature(z, D, D)[inner], 0.0, atol=1e-9)
    np.testing.assert_allclose(terrain.tpi(z)[inner], 0.0, atol=1e-9)
    assert np.isnan(terrain.slope(z, D, D)[0]).all() and np.isnan(terrain.slope(z, D, D)[:, -1]).all()


def test_paraboloid_curvature_and_tpi():
    # z = k (x^2 + y^2): Laplacian 4k everywhere; Zevenbergen-Thorne curvature = -100 * 4k (1/100 m)
    k = 0.01
    rows = cols = 11
    y, x = np.mgrid[0:rows, 0:cols] * D
    z = k * ((x - 50) ** 2 + (y - 50) ** 2)
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(terrain.curvature(z, D, D)[inner], -100 * 4 * k, rtol=1e-9)
    # TPI: centre minus mean of 8 neighbours = -k * (4 * D^2 + 4 * 2 D^2) / 8 = -1.5 k D^2
    np.testing.assert_allclose(terrain.tpi(z)[inner], -1.5 * k * D**2, rtol=1e-9)
    # a dome (negative k) is convex: positive curvature
    assert (terrain.curvature(-z, D, D)[inner] > 0).all()


def test_flat_ground_aspect_undefined_northness_zero():
    z = np.full((5, 5), 3.0)
    assert np.isnan(terrain.aspect(z, D, D)[2, 2])
    assert terrain.northness(z, D, D)[2, 2] == 0.0 and terrain.slope(z, D, D)[2, 2] == 0.0


def test_twi_on_a_plane_matches_the_formula():
    # a plane dipping south at tan b = 0.1: D8 sends every cell to the one below, so the area draining
    # through row r is (r + 1) cells and a = (r + 1) D^2 / D.
    z = _plane(20, 15, 0.0, 0.1)
    area = terrain.flow_accumulation(z, D, D)
    np.testing.assert_array_equal(area / D**2, np.repeat(np.arange(1, 21)[:, None], 15, axis=1))
    twi = terrain.twi_grid(z, D, D)
    rows = np.arange(20)[1:-1]
    np.testing.assert_allclose(twi[1:-1, 1:-1], np.repeat(np.log((rows + 1) * D / 0.1)[:, None], 13, axis=1), rtol=1e-6)
    assert np.isnan(twi[0]).all() and np.isnan(twi[:, 0]).all()  # no Horn slope on the border


def test_flow_fills_a_pit_and_routes_to_the_outlet():
    # a cone-shaped bowl draining through one notch: every cell must end up at the notch
    n = 21
    y, x = np.mgrid[0:n, 0:n]
    z = 100.0 - np.hypot(x - 10, y - 10) * -1.0  # bowl: lowest in the centre (a pit)
    z[10, 10] = 50.0  # deep pit
    z[0, :] = z[:, 0] = z[-1, :] = z[:, -1] = 200.0  # a rim...
    z[0, 10] = 0.0  # ...with one notch
    area = terrain.flow_accumulation(z, 1.0, 1.0)
    assert area[0, 10] == n * n  # everything drains out through the notch
    filled = terrain.fill_depressions(z)
    assert (filled >= z).all() and filled[10, 10] > 100.0  # the pit was filled to the spill level


def test_flow_nodata_and_geographic_spacing():
    z = _plane(10, 8, 0.0, 0.1)
    z[4, 3] = np.nan
    area = terrain.flow_accumulation(z, np.full(10, 5.0), np.full(10, 10.0))
    assert np.isnan(area[4, 3])
    assert np.nansum(area) > 0 and (area[~np.isnan(area)] >= 50.0).all()  # each cell counts itself (5 x 10 m^2)
    # nothing flows through the nodata cell: the cell below it drains only itself
    assert area[5, 3] == 50.0


def test_expressions_reject_unknown_and_unsafe():
    from sinks.covariates import expressions
    from sinks.errors import SpecError

    with pytest.raises(SpecError, match="unknown name 'swir'"):
        expressions.evaluate("(nir - swir) / (nir + swir)", {"nir": np.ones(2), "red": np.ones(2)})
    for bad in ("__import__('os')", "nir[0]", "'a'", "nir.__class__.x()", "lambda: 1"):
        with pytest.raises(SpecError):
            expressions.parse(bad)
    out = expressions.evaluate("(nir - red) / (nir + red)", {"nir": np.array([3.0, 0.0]), "red": np.array([1.0, 0.0])})
    assert out[0] == 0.5 and np.isnan(out[1])


def test_expression_functions_take_their_number_of_arguments():
    """numpy's extra positional argument is the output array: max(red, nir, swir1) used to write
    max(red, nir) into swir1. Now min/max fold any number, and wrong counts are refused when parsed."""
    from sinks.covariates import expressions
    from sinks.errors import SpecError

    values = {"red": np.array([0.05, 0.3, np.nan]), "nir": np.array([0.35, 0.1, 0.2]), "swir1": np.array([0.14, 0.5, 0.1])}
    before = values["swir1"].copy()
    np.testing.assert_array_equal(expressions.evaluate("max(red, nir, swir1)", values), [0.35, 0.5, 0.2])
    np.testing.assert_array_equal(expressions.evaluate("min(red, nir, swir1)", values), [0.05, 0.1, 0.1])
    np.testing.assert_array_equal(values["swir1"], before)  # the inputs are untouched
    for bad, message in (("abs(red, nir)", "abs\\(\\) takes 1"), ("max(red)", "max\\(\\) takes 2 or more"),
                         ("bit(red)", "bit\\(\\) takes 2"), ("sqr(nir)", "did you mean 'sqrt'")):
        with pytest.raises(SpecError, match=message):
            expressions.parse(bad)


def test_a_constant_in_min_or_max_clamps_but_never_fills_nodata():
    """max(nir, 0.05) turned every nodata pixel into 0.05, a valid-looking covariate."""
    from sinks.covariates import expressions

    values = {"nir": np.array([0.02, 0.4, np.nan]), "red": np.array([np.nan, 0.1, 0.3])}
    out = expressions.evaluate("max(nir, 0.05)", values)
    np.testing.assert_array_equal(out[:2], [0.05, 0.4])
    assert np.isnan(out[2])
    assert np.isnan(expressions.evaluate("min(max(nir, 0), 1)", values)[2])
    np.testing.assert_array_equal(expressions.evaluate("max(nir, red)", values), [0.02, 0.4, 0.3])  # images: ignored
    both_nodata = {"nir": np.array([np.nan]), "red": np.array([np.nan])}
    assert np.isnan(expressions.evaluate("max(nir, red, 0.5)", both_nodata)[0])
    assert expressions.evaluate("max(2, 3)", {}) == 3.0
