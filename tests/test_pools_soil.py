"""Soil horizons -> SOC stocks: hand-computed numbers, the equal-area spline, bad input, real data."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pandas as pd
import pytest

from sinks.errors import InputError, SinksError
from sinks.pools import soil
from sinks.pools.depth import fit_equal_area_spline, harmonise, parse_depths

ISIS_RENAME = {"SOURCEID": "profile_id", "UHDICM": "top_cm", "LHDICM": "bottom_cm", "ORCDRC": "soc_g_kg",
               "BLD": "bulk_density_g_cm3", "CRFVOL": "coarse_fragments_pct"}


def run_stocks(argv: list[str]) -> int:
    """Run ``sinks stocks ...`` through its registered parser (as ``sinks.cli.main`` does)."""
    from sinks.cli import stocks

    parser = argparse.ArgumentParser(prog="sinks")
    stocks.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["stocks", *argv])
    try:
        args.func(args)
    except SinksError as exc:
        print(f"error: {exc}")
        return exc.exit_code
    return 0


def test_horizon_stock_by_hand():
    # 20 g/kg x 1.3 g/cm3 x 30 cm x (1 - 10/100) = 0.1 * 20 * 1.3 * 30 * 0.9 = 70.2 Mg C/ha
    assert soil.horizon_stock_mg_ha(20.0, 1.3, 30.0, 10.0) == pytest.approx(70.2)
    assert soil.horizon_stock_mg_ha(10.0, 1.0, 10.0) == pytest.approx(10.0)


def test_organic_matter_conversion():
    assert soil.soc_g_kg_from_organic_matter_pct(np.array([10.0]))[0] == pytest.approx(58.0)
    assert soil.soc_g_kg_from_organic_matter_pct([10.0], conversion="pribyl_2010")[0] == pytest.approx(50.0)
    with pytest.raises(InputError, match="unknown organic matter conversion"):
        soil.soc_g_kg_from_organic_matter_pct([1.0], conversion="nope")


def test_bulk_density_ptf_by_hand():
    # Manrique & Jones 1991: 1.660 - 0.318 * sqrt(OC%); 40 g/kg = 4 % -> 1.660 - 0.636 = 1.024
    assert soil.bulk_density_from_ptf([40.0])[0] == pytest.approx(1.024)
    assert np.isnan(soil.bulk_density_from_ptf([500.0])[0])  # outside the function's range


@pytest.mark.parametrize("lam", [0.0, 0.1, 1.0])
def test_equal_area_spline_is_continuous_and_matches_fitted_means(lam):
    top, bottom = np.array([0, 10, 30, 60.0]), np.array([10, 25, 60, 100.0])
    y = np.array([20, 12, 5, 2.0])
    spline = fit_equal_area_spline(top, bottom, y, lam)
    means = [spline.mean(a, b) for a, b in zip(top, bottom)]
    np.testing.assert_allclose(means, spline.fitted_means, rtol=1e-10)
    for knot in (10.0, 25.0, 30.0, 60.0):
        assert spline(knot - 1e-9)[0] == pytest.approx(spline(knot + 1e-9)[0], abs=1e-6)


def test_equal_area_spline_preserves_mass_exactly_without_smoothing():
    top, bottom = np.array([0, 5, 20, 45.0]), np.array([5, 20, 45, 90.0])
    y = np.array([30, 18, 7, 3.0])
    spline = fit_equal_area_spline(top, bottom, y, lam=0.0)
    assert spline.integral(0, 90) == pytest.approx(float(np.sum(y * (bottom - top))), rel=1e-12)
    np.testing.assert_allclose(spline.fitted_means, y, rtol=1e-12)
    # with the default smoothing the fitted means move a little (1.2 % of the total here)
    smooth = fit_equal_area_spline(top, bottom, y, lam=0.1)
    assert smooth.integral(0, 90) == pytest.approx(float(np.sum(y * (bottom - top))), rel=0.02)


def test_overlap_harmonisation_by_hand_and_no_extrapolation():
    top, bottom, y = [0, 10, 40], [10, 40, 120], [3.0, 2.0, 1.0]
    means = harmonise(top, bottom, y, [(0, 30), (30, 100), (100, 150)], method="overlap")
    assert means[0] == pytest.approx((10 * 3 + 20 * 2) / 30)
    assert means[1] == pytest.approx((10 * 2 + 60 * 1) / 70)
    assert np.isnan(means[2])
    spline = harmonise(top, bottom, y, [(0, 120), (100, 150)], method="spline", lam=0.0)
    assert spline[0] * 120 == pytest.approx(30 + 60 + 80)
    assert np.isnan(spline[1])


def test_parse_depths():
    assert parse_depths("0-30,30-100") == [(0, 30), (30, 100)]
    with pytest.raises(InputError):
        parse_depths("30-10")


def _profile() -> pd.DataFrame:
    return pd.DataFrame({
        "profile_id": ["P1", "P1", "P1", "P2"],
        "top_cm": [0, 10, 30, 0], "bottom_cm": [10, 30, 100, 30],
        "soc_g_kg": [20.0, 10.0, 5.0, 8.0],
        "bulk_density_g_cm3": [1.0, 1.2, 1.4, np.nan],
        "coarse_fragments_pct": [0.0, 50.0, np.nan, np.nan],
    })


def test_soil_stocks_by_hand_with_overlap_method():
    result = soil.soil_stocks(_profile(), method="overlap")
    p1 = result.plots.set_index("plot_id").loc["P1"]
    # 0-30: 0.1*20*1.0*10 + 0.1*10*1.2*20*0.5 = 20 + 12 = 32; 30-100: 0.1*5*1.4*70 = 49
    assert p1["carbon_mg_ha_0_30"] == pytest.approx(32.0)
    assert p1["carbon_mg_ha_30_100"] == pytest.approx(49.0)
    assert p1["carbon_mg_ha"] == pytest.approx(32.0)
    assert p1["soc_g_kg_0_30"] == pytest.approx((20 * 10 + 10 * 20) / 30)
    p2 = result.plots.set_index("plot_id").loc["P2"]
    assert np.isnan(p2["carbon_mg_ha_0_30"]) and p2["soc_g_kg_0_30"] == pytest.approx(8.0)
    assert list(result.plots["plot_id"]) == ["P1", "P2"]
    assert set(result.plots["pool"]) == {"soil"}
    assert list(result.horizons["cf_source"]) == ["measured", "measured", "assumed_zero", "assumed_zero"]


def test_fill_bd_only_when_asked_and_flagged():
    plain = soil.soil_stocks(_profile(), method="overlap")
    assert "missing" in set(plain.horizons["bd_source"])
    filled = soil.soil_stocks(_profile(), method="overlap", fill_bd=True)
    row = filled.horizons[filled.horizons["profile_id"] == "P2"].iloc[0]
    assert row["bd_source"] == "ptf:manrique_jones_1991"
    expected_bd = 1.660 - 0.318 * np.sqrt(0.8)
    assert row["bd_used_g_cm3"] == pytest.approx(expected_bd)
    p2 = filled.plots.set_index("plot_id").loc["P2"]
    assert p2["carbon_mg_ha_0_30"] == pytest.approx(0.1 * 8 * expected_bd * 30)


def test_bd_from_same_profile_sample_rows():
    horizons = pd.DataFrame({"profile_id": ["A", "A", "A"], "top_cm": [0, 30, 5], "bottom_cm": [30, 60, 15],
                             "soc_g_kg": [10.0, 5.0, np.nan], "bulk_density_g_cm3": [np.nan, np.nan, 1.5]})
    result = soil.soil_stocks(horizons, method="overlap", depths="0-30")
    assert list(result.horizons["bd_source"]) == ["profile_sample", "missing"]
    assert result.plots["carbon_mg_ha"].iloc[0] == pytest.approx(0.1 * 10 * 1.5 * 30)


@pytest.mark.parametrize("change, reason", [
    ({"bulk_density_g_cm3": 2.9}, "above 2.65"),
    ({"soc_g_kg": 700.0}, "above 600"),
    ({"soc_g_kg": -1.0}, "negative soc_g_kg"),
    ({"coarse_fragments_pct": 120.0}, "coarse_fragments_pct outside"),
    ({"bottom_cm": 5.0, "top_cm": 10.0}, "negative thickness"),
    ({"top_cm": 5.0}, "overlaps"),
])
def test_bad_horizons_are_reported_with_rows(change, reason):
    horizons = _profile()
    for column, value in change.items():
        horizons.loc[1, column] = value
    with pytest.raises(InputError, match=reason) as info:
        soil.soil_stocks(horizons)
    assert re.search(r"row\(s\) (1, )?2\b", str(info.value))
    result = soil.soil_stocks(horizons, drop_invalid=True)
    assert 2 in set(result.dropped["row"])
    assert reason.split()[0] in " ".join(result.dropped["reason"])


def test_cli_fails_without_output_then_drops(tmp_path, capsys):
    horizons = _profile()
    horizons.loc[1, "bulk_density_g_cm3"] = 3.0
    horizons["x"], horizons["y"] = [500000.0] * 3 + [500100.0], [3300000.0] * 4
    src = tmp_path / "h.csv"
    horizons.rename(columns={"soc_g_kg": "OC"}).to_csv(src, index=False)
    out = tmp_path / "plots.gpkg"
    assert run_stocks(["soil", str(src), "--out", str(out), "--rename", "OC=soc_g_kg", "--crs", "EPSG:32648"]) == 2
    assert "row(s) 2" in capsys.readouterr().out and not out.exists()
    assert run_stocks(["soil", str(src), "--out", str(out), "--rename", "OC=soc_g_kg", "--crs", "EPSG:32648",
                       "--drop-invalid", "--depths", "0-30,30-100"]) == 0
    printed = capsys.readouterr().out
    assert "row 2:" in printed and "0-30 cm" in printed
    import geopandas as gpd

    plots = gpd.read_file(out)
    assert list(plots["plot_id"]) == ["P1", "P2"] and plots.crs.to_epsg() == 32648


def _read_isis(shared_data):
    folder = shared_data / "soil" / "isis"
    horizons = pd.read_csv(folder / "horizons.csv").rename(columns=ISIS_RENAME)
    sites = pd.read_csv(folder / "sites.csv").rename(columns={"SOURCEID": "profile_id", "LONWGS84": "x",
                                                                "LATWGS84": "y"})
    return horizons.merge(sites[["profile_id", "x", "y"]], on="profile_id", how="left")


def test_isis_stocks(shared_data):
    horizons = _read_isis(shared_data)
    with pytest.raises(InputError, match="overlaps"):
        soil.soil_stocks(horizons)
    result = soil.soil_stocks(horizons, drop_invalid=True, crs="EPSG:4326")
    plots = result.plots
    assert len(plots) == 785 and plots["plot_id"].is_unique and plots.crs.to_epsg() == 4326
    stock = plots["carbon_mg_ha_0_30"].dropna()
    assert len(stock) >= 150
    # topsoil stocks of mineral soils: tens of Mg C/ha (global 0-30 cm mean ~ 50-70 Mg C/ha)
    assert 30 < stock.median() < 90 and (stock > 0).all()
    assert set(result.horizons["bd_source"]) <= {"measured", "profile_sample", "missing"}
    filled = soil.soil_stocks(horizons, drop_invalid=True, fill_bd=True)
    assert filled.plots["carbon_mg_ha_0_30"].notna().sum() > 2 * len(stock)


def test_edgeroi_harmonised_concentration(shared_data):
    folder = shared_data / "soil" / "edgeroi"
    horizons = pd.read_csv(folder / "horizons.csv").rename(columns=ISIS_RENAME)
    result = soil.soil_stocks(horizons, depths="0-30", drop_invalid=True)
    plots = result.plots
    assert len(plots) == 359
    assert plots["carbon_mg_ha"].isna().all()  # no bulk density: no stock unless asked
    soc = plots["soc_g_kg_0_30"].dropna()
    assert len(soc) > 300 and 5 < soc.median() < 20
    overlap = soil.soil_stocks(horizons, depths="0-30", drop_invalid=True, method="overlap")
    both = pd.concat([plots["soc_g_kg_0_30"], overlap.plots["soc_g_kg_0_30"]], axis=1).dropna()
    assert np.corrcoef(both.iloc[:, 0], both.iloc[:, 1])[0, 1] > 0.95
    filled = soil.soil_stocks(horizons, depths="0-30", drop_invalid=True, fill_bd=True)
    assert (filled.horizons["bd_source"] == "ptf:manrique_jones_1991").all()
    assert filled.plots["carbon_mg_ha"].notna().sum() == len(soc)
