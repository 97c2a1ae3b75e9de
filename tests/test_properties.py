"""Property-based tests (hypothesis) of the pools' units and formulas.

- stocks add up over depth intervals (soil, wetland) and over plot area (forest);
- tree biomass is monotone in diameter, height and wood density;
- results do not depend on row order;
- unit conversions round-trip.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sinks.io import HA_PER_MU
from sinks.pools import forest, plausibility, soil, wetland
from sinks.pools.allometry import chave2014_eq4, chave2014_eq7
from sinks.pools.depth import fit_equal_area_spline

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])

dbh = st.floats(5.0, 150.0)
heights = st.floats(2.0, 60.0)
densities = st.floats(0.2, 1.1)
positive = st.floats(1e-3, 1e4, allow_nan=False, allow_infinity=False)


# ---- profiles and cores ------------------------------------------------------------------------

@st.composite
def profile(draw, depth: float = 100.0):
    """One soil profile of contiguous horizons from 0 to ``depth`` cm (cuts at whole cm)."""
    n = draw(st.integers(1, 6))
    cuts = sorted(set(draw(st.lists(st.integers(1, int(depth) - 1), min_size=n - 1, max_size=n - 1))))
    edges = [0, *cuts, int(depth)]
    k = len(edges) - 1
    return pd.DataFrame({
        "profile_id": "A",
        "top_cm": edges[:-1], "bottom_cm": edges[1:],
        "soc_g_kg": draw(st.lists(st.floats(1.0, 120.0), min_size=k, max_size=k)),
        "bulk_density_g_cm3": draw(st.lists(st.floats(0.3, 1.7), min_size=k, max_size=k)),
    })


@given(profile())
@FAST
def test_soil_stocks_add_up_over_depth_intervals_overlap(horizons):
    split = soil.soil_stocks(horizons, depths="0-30,30-100", method="overlap", allow_implausible=True).plots.iloc[0]
    whole = soil.soil_stocks(horizons, depths="0-100", method="overlap", allow_implausible=True).plots.iloc[0]
    assert split["carbon_mg_ha_0_30"] + split["carbon_mg_ha_30_100"] == pytest.approx(whole["carbon_mg_ha_0_100"])
    # and the whole equals the sum of the horizon stocks (SOC x BD x thickness x 0.1)
    by_hand = (0.1 * horizons["soc_g_kg"] * horizons["bulk_density_g_cm3"]
               * (horizons["bottom_cm"] - horizons["top_cm"])).sum()
    assert whole["carbon_mg_ha_0_100"] == pytest.approx(by_hand)


@given(profile())
@FAST
def test_soil_stocks_add_up_over_depth_intervals_spline(horizons):
    split = soil.soil_stocks(horizons, depths="0-30,30-100", method="spline", allow_implausible=True).plots.iloc[0]
    whole = soil.soil_stocks(horizons, depths="0-100", method="spline", allow_implausible=True).plots.iloc[0]
    # the spline's means are clipped at 0 (a density cannot be negative): additive where none is
    assume(split["carbon_mg_ha_0_30"] > 0 and split["carbon_mg_ha_30_100"] > 0)
    spline = fit_equal_area_spline(horizons["top_cm"], horizons["bottom_cm"],
                                   0.1 * horizons["soc_g_kg"] * horizons["bulk_density_g_cm3"], 0.1)
    assume(spline.integral(0, 100) > 0)
    assert split["carbon_mg_ha_0_30"] + split["carbon_mg_ha_30_100"] == pytest.approx(
        whole["carbon_mg_ha_0_100"], rel=1e-6)


@given(st.lists(st.floats(0.001, 0.1), min_size=1, max_size=5), st.integers(31, 99))
@FAST
def test_wetland_stock_adds_up_over_depth(densities_g_cm3, cut):
    n = len(densities_g_cm3)
    edges = np.linspace(0, 100, n + 1)
    top, bottom = edges[:-1], edges[1:]
    whole, gap, extra = wetland.core_stock(top, bottom, densities_g_cm3, 100.0)
    assert gap == 0 and extra == 0
    upper = wetland.core_stock(top, bottom, densities_g_cm3, float(cut))[0]
    # the part below ``cut``: each interval's overlap with cut-100 cm, g C/cm3 x cm x 100 = Mg C/ha
    lower = sum(d * max(0.0, min(b, 100) - max(a, cut)) * 100 for a, b, d in zip(top, bottom, densities_g_cm3))
    assert upper + lower == pytest.approx(whole)
    assert whole == pytest.approx(sum(d * (b - a) * 100 for a, b, d in zip(top, bottom, densities_g_cm3)))


@given(st.floats(0.01, 0.1), st.floats(0.2, 1.5), st.integers(1, 99))
@FAST
def test_wetland_splitting_an_interval_changes_nothing(fc, dbd, cut):
    one = pd.DataFrame({"core_id": "C", "top_cm": [0], "bottom_cm": [100], "dry_bulk_density_g_cm3": [dbd],
                        "fraction_carbon": [fc]})
    two = pd.DataFrame({"core_id": "C", "top_cm": [0, cut], "bottom_cm": [cut, 100],
                        "dry_bulk_density_g_cm3": [dbd, dbd], "fraction_carbon": [fc, fc]})
    a = wetland.wetland_stocks(one).plots["carbon_mg_ha"].iloc[0]
    b = wetland.wetland_stocks(two).plots["carbon_mg_ha"].iloc[0]
    assert a == pytest.approx(b) == pytest.approx(dbd * fc * 100 * 100)


# ---- forest plots over area ----------------------------------------------------------------------

@st.composite
def tree_list(draw, max_trees: int = 30):
    n = draw(st.integers(2, max_trees))
    return pd.DataFrame({
        "plot_id": draw(st.lists(st.sampled_from(["P1", "P2", "P3"]), min_size=n, max_size=n)),
        "tree_id": np.arange(n),
        "species": draw(st.lists(st.sampled_from(["Cunninghamia lanceolata", "Pinus massoniana",
                                                  "Quercus variabilis", "unknown tree"]), min_size=n, max_size=n)),
        "dbh_cm": draw(st.lists(st.floats(5.0, 80.0), min_size=n, max_size=n)),
        "height_m": draw(st.lists(st.floats(3.0, 40.0), min_size=n, max_size=n)),
        # measured wood density: no plot-mean fallback, which would tie a tree to its neighbours
        "wood_density_g_cm3": draw(st.lists(st.floats(0.25, 0.9), min_size=n, max_size=n)),
    })


def _plots(area: float = 0.04) -> pd.DataFrame:
    return pd.DataFrame({"plot_id": ["P1", "P2", "P3"], "area_ha": area})


@given(tree_list(), st.floats(0.01, 1.0))
@SLOW
def test_carbon_per_ha_times_area_is_the_trees_total(trees, area):
    result = forest.forest_stocks(trees, _plots(area), allow_implausible=True)
    per_plot = result.trees.groupby("plot_id")["carbon_mg"].sum()
    for row in result.plots.itertuples():
        assert row.carbon_mg_ha * row.area_ha == pytest.approx(per_plot.get(row.plot_id, 0.0))


@given(tree_list(), st.floats(0.01, 1.0), st.floats(0.1, 0.9))
@SLOW
def test_splitting_a_plot_keeps_its_total(trees, area, share):
    """A plot cut in two (its trees and its area) has the same total carbon as the whole."""
    whole = forest.forest_stocks(trees.assign(plot_id="W"), pd.DataFrame({"plot_id": ["W"], "area_ha": [area]}),
                                 allow_implausible=True).plots.iloc[0]
    halves = trees.assign(plot_id=np.where(np.arange(len(trees)) % 2 == 0, "A", "B"))
    parts = forest.forest_stocks(halves, pd.DataFrame({"plot_id": ["A", "B"],
                                                       "area_ha": [area * share, area * (1 - share)]}),
                                 allow_implausible=True).plots
    total = (parts["carbon_mg_ha"] * parts["area_ha"]).sum()
    assert total == pytest.approx(whole["carbon_mg_ha"] * area)
    assert parts["area_ha"].sum() == pytest.approx(area)


@given(tree_list(), st.floats(0.01, 1.0))
@SLOW
def test_duplicating_trees_and_area_keeps_the_density(trees, area):
    doubled = pd.concat([trees, trees.assign(tree_id=trees["tree_id"] + 10_000)], ignore_index=True)
    one = forest.forest_stocks(trees, _plots(area), allow_implausible=True).plots
    two = forest.forest_stocks(doubled, _plots(2 * area), allow_implausible=True).plots
    np.testing.assert_allclose(one["carbon_mg_ha"], two["carbon_mg_ha"], rtol=1e-12)


# ---- monotone in dbh, height, wood density ------------------------------------------------------

@given(dbh, dbh, heights, densities)
@FAST
def test_eq4_monotone_in_dbh(d1, d2, h, wd):
    lo, hi = sorted((d1, d2))
    assert chave2014_eq4(lo, h, wd) <= chave2014_eq4(hi, h, wd)


@given(dbh, heights, heights, densities)
@FAST
def test_eq4_monotone_in_height(d, h1, h2, wd):
    lo, hi = sorted((h1, h2))
    assert chave2014_eq4(d, lo, wd) <= chave2014_eq4(d, hi, wd)


@given(dbh, heights, densities, densities)
@FAST
def test_eq4_monotone_in_wood_density(d, h, w1, w2):
    lo, hi = sorted((w1, w2))
    assert chave2014_eq4(d, h, lo) <= chave2014_eq4(d, h, hi)


@given(dbh, dbh, densities, densities, st.floats(-0.5, 1.5))
@FAST
def test_eq7_monotone_in_dbh_and_wood_density(d1, d2, w1, w2, e):
    (dl, dh), (wl, wh) = sorted((d1, d2)), sorted((w1, w2))
    assert chave2014_eq7(dl, wl, e) <= chave2014_eq7(dh, wl, e) <= chave2014_eq7(dh, wh, e)


@given(tree_list(max_trees=12), st.integers(0, 11), st.floats(1.0, 1.5), st.sampled_from(["dbh_cm", "height_m"]))
@SLOW
def test_plot_stock_monotone_in_one_trees_size(trees, which, factor, column):
    """Growing one tree (its diameter or height) never lowers its plot's stock."""
    which = which % len(trees)
    bigger = trees.copy()
    bigger.loc[which, column] = bigger.loc[which, column] * factor
    a = forest.forest_stocks(trees, _plots(), allow_implausible=True).trees["agb_mg"]
    b = forest.forest_stocks(bigger, _plots(), allow_implausible=True).trees["agb_mg"]
    assert b.iloc[which] >= a.iloc[which] * (1 - 1e-12)
    np.testing.assert_allclose(np.delete(a.to_numpy(), which), np.delete(b.to_numpy(), which))


@given(tree_list(max_trees=12), st.floats(0.3, 0.6), st.floats(0.0, 0.5))
@SLOW
def test_plot_stock_monotone_in_wood_density(trees, base, extra):
    trees = trees.drop(columns="wood_density_g_cm3")
    low = forest.forest_stocks(trees.assign(wood_density_g_cm3=base), _plots(), allow_implausible=True).plots
    high = forest.forest_stocks(trees.assign(wood_density_g_cm3=base + extra), _plots(), allow_implausible=True).plots
    assert (high["carbon_mg_ha"].to_numpy() >= low["carbon_mg_ha"].to_numpy() * (1 - 1e-12)).all()


# ---- row order ----------------------------------------------------------------------------------

@given(tree_list(), st.randoms(use_true_random=False))
@SLOW
def test_forest_stocks_do_not_depend_on_row_order(trees, rnd):
    order = list(range(len(trees)))
    rnd.shuffle(order)
    a = forest.forest_stocks(trees, _plots(), allow_implausible=True).plots.set_index("plot_id")
    b = forest.forest_stocks(trees.iloc[order], _plots().iloc[::-1], allow_implausible=True).plots.set_index("plot_id")
    np.testing.assert_allclose(a.loc[["P1", "P2", "P3"], "carbon_mg_ha"], b.loc[["P1", "P2", "P3"], "carbon_mg_ha"],
                               rtol=1e-12)


@given(st.lists(profile(), min_size=1, max_size=3), st.randoms(use_true_random=False),
       st.sampled_from(["overlap", "spline"]))
@SLOW
def test_soil_stocks_do_not_depend_on_row_order(profiles, rnd, method):
    horizons = pd.concat([p.assign(profile_id=f"S{i}") for i, p in enumerate(profiles)], ignore_index=True)
    order = list(range(len(horizons)))
    rnd.shuffle(order)
    a = soil.soil_stocks(horizons, method=method, allow_implausible=True).plots.set_index("plot_id").sort_index()
    b = soil.soil_stocks(horizons.iloc[order], method=method, allow_implausible=True).plots.set_index("plot_id").sort_index()
    for column in ("carbon_mg_ha_0_30", "carbon_mg_ha_30_100", "soc_g_kg_0_30"):
        np.testing.assert_allclose(a[column], b[column], rtol=1e-9)


@given(st.lists(st.lists(st.floats(0.005, 0.08), min_size=1, max_size=4), min_size=1, max_size=3),
       st.randoms(use_true_random=False))
@SLOW
def test_wetland_stocks_do_not_depend_on_row_order(cores, rnd):
    rows = []
    for c, fractions in enumerate(cores):
        edges = np.linspace(0, 80, len(fractions) + 1)
        for k, fc in enumerate(fractions):
            rows.append({"core_id": f"C{c}", "top_cm": edges[k], "bottom_cm": edges[k + 1],
                         "dry_bulk_density_g_cm3": 0.4 + 0.1 * k, "fraction_carbon": fc})
    intervals = pd.DataFrame(rows)
    order = list(range(len(intervals)))
    rnd.shuffle(order)
    a = wetland.wetland_stocks(intervals).plots.set_index("plot_id").sort_index()
    b = wetland.wetland_stocks(intervals.iloc[order]).plots.set_index("plot_id").sort_index()
    np.testing.assert_allclose(a["carbon_mg_ha"], b["carbon_mg_ha"], rtol=1e-12)


# ---- unit conversions ---------------------------------------------------------------------------

@given(positive)
@FAST
def test_unit_conversions_round_trip(x):
    assert plausibility.mu_from_ha(plausibility.ha_from_mu(x)) == pytest.approx(x)
    assert plausibility.ha_from_mu(15.0 * x) == pytest.approx(x)  # 15 mu = 1 ha
    assert plausibility.ha_from_mu(x) == pytest.approx(x * HA_PER_MU)
    assert plausibility.carbon_from_co2e(plausibility.co2e_from_carbon(x)) == pytest.approx(x)
    assert plausibility.co2e_from_carbon(12.0 * x) == pytest.approx(44.0 * x)
    assert plausibility.pct_from_g_kg(plausibility.g_kg_from_pct(x)) == pytest.approx(x)
    assert plausibility.m_from_cm(plausibility.cm_from_m(x)) == pytest.approx(x)
    assert plausibility.cm_from_mm(10.0 * x) == pytest.approx(x)


@given(st.lists(positive, min_size=1, max_size=8))
@FAST
def test_array_conversions_match_scalar_ones(values):
    arr = np.array(values)
    np.testing.assert_allclose(plausibility.ha_from_mu(arr), [plausibility.ha_from_mu(v) for v in values])
    np.testing.assert_allclose(plausibility.co2e_from_carbon(arr), arr * 44 / 12)


@given(st.lists(st.floats(5.0, 80.0), min_size=1, max_size=10))
@FAST
def test_dbh_mm_column_converts_to_cm(values):
    trees = pd.DataFrame({"plot_id": "P", "tree_id": range(len(values)), "dbh_mm": np.array(values) * 10})
    out = forest.normalise_units(trees)
    np.testing.assert_allclose(out["dbh_cm"], values)


@given(st.floats(1.0, 100.0), st.floats(0.5, 1.6), st.floats(1.0, 50.0))
@FAST
def test_horizon_stock_units(soc_pct, bd, thickness):
    """% -> g/kg (x10) in the stock equation: 1 % SOC x 1 g/cm3 x 1 cm = 1 Mg C/ha."""
    stock = soil.horizon_stock_mg_ha(plausibility.g_kg_from_pct(soc_pct), bd, thickness)
    assert stock == pytest.approx(soc_pct * bd * thickness)
    assert plausibility.co2e_from_carbon(stock) == pytest.approx(stock * 44 / 12)


@given(st.floats(0.001, 1000.0))
@FAST
def test_forest_area_in_mu_equals_area_in_ha(area_mu):
    """The same plot given in ha or converted from mu gives the same density."""
    trees = pd.DataFrame({"plot_id": "P", "tree_id": [1, 2], "dbh_cm": [20.0, 30.0], "height_m": [15.0, 20.0],
                          "species": "Pinus massoniana"})
    ha = plausibility.ha_from_mu(area_mu)
    a = forest.forest_stocks(trees, pd.DataFrame({"plot_id": ["P"], "area_ha": [ha]}), allow_implausible=True)
    total = a.trees["carbon_mg"].sum()
    assert a.plots["carbon_mg_ha"].iloc[0] == pytest.approx(total / ha)
    assert a.plots["carbon_mg_ha"].iloc[0] * ha == pytest.approx(total)
