"""Wetland cores -> carbon stock to 1 m: hand-computed gap rule, conversion, bad input, real data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sinks.errors import ImplausibleValueError, InputError
from sinks.pools import wetland
from tests.test_pools_soil import run_stocks

SANDERMAN_RENAME = {"depth_min": "top_cm", "depth_max": "bottom_cm", "dry_bulk_density": "dry_bulk_density_g_cm3"}


def test_core_stock_complete_by_hand():
    # 0.5 g/cm3 x 0.05 = 0.025 g C/cm3 over 100 cm -> 2.5 g C/cm2 -> 250 Mg C/ha
    stock, gap, extra = wetland.core_stock([0, 50], [50, 100], [0.025, 0.025], 100)
    assert (stock, gap, extra) == (pytest.approx(250.0), 0.0, 0.0)


def test_core_stock_gap_and_extrapolation_by_hand():
    # measured 0-20 (0.02), 40-60 (0.01); gap 20-40 -> trapezoid 20*(0.02+0.01)/2 = 0.3;
    # 60-100 extrapolated at 0.01 -> 0.4; total g/cm2 = 0.4 + 0.3 + 0.2 + 0.4 = 1.3 -> 130 Mg C/ha
    stock, gap, extra = wetland.core_stock([0, 40], [20, 60], [0.02, 0.01], 100)
    assert stock == pytest.approx(130.0)
    assert gap == pytest.approx(20.0) and extra == pytest.approx(40.0)
    # truncated at the reference depth
    assert wetland.core_stock([0], [150], [0.02], 100)[0] == pytest.approx(200.0)


def test_organic_matter_below_the_conversions_range_is_a_gap_not_more_carbon_than_organic_matter():
    """Kauffman & Donato's intercept gives OC > OM below 4.94 % OM: such an interval is a gap."""
    converted, outside = wetland.converted_carbon([np.nan, np.nan, 0.05, np.nan], [0.03, 0.20, 0.01, 0.050],
                                                  "kauffman_donato_2012")
    assert list(outside) == [True, False, False, False] and np.isnan(converted[0]) and np.isnan(converted[2])
    assert converted[1] == pytest.approx(0.1119) and converted[3] == pytest.approx(0.04965)
    core = pd.DataFrame({"core_id": ["A"] * 3 + ["B"], "top_cm": [0, 10, 20, 0], "bottom_cm": [10, 20, 30, 10],
                         "dry_bulk_density_g_cm3": [0.5, 0.5, 0.5, 0.5],
                         "fraction_organic_matter": [0.20, 0.03, 0.20, 0.02]})
    with pytest.raises(InputError, match="below the range of the kauffman_donato_2012"):
        wetland.wetland_stocks(core)  # core B has nothing else
    result = wetland.wetland_stocks(core, drop_invalid=True, depth_cm=30)
    a = result.plots.set_index("plot_id").loc["A"]
    assert a["n_om_below_range"] == 1 and a["gap_filled_cm"] == 10
    assert a["carbon_mg_ha"] == pytest.approx(30 * 0.5 * 0.1119 * 100)  # the gap takes its neighbours' density
    assert list(result.plots["plot_id"]) == ["A"]
    crafted = wetland.wetland_stocks(core, depth_cm=30, conversion="craft_1991")  # through the origin: all usable
    assert crafted.plots["n_om_below_range"].sum() == 0


def test_organic_matter_conversion_kauffman():
    # %OC = 0.415 x 20 + 2.89 = 11.19 % -> 0.1119
    assert wetland.fraction_carbon_from_organic_matter([0.20])[0] == pytest.approx(0.1119)
    # Craft 1991: %OC = 0.40 x 20 + 0.0025 x 400 = 9 %
    assert wetland.fraction_carbon_from_organic_matter([0.20], "craft_1991")[0] == pytest.approx(0.09)


def _cores() -> pd.DataFrame:
    return pd.DataFrame({
        "core_id": ["C1", "C1", "C2", "C2"],
        "top_cm": [0, 50, 0, 20], "bottom_cm": [50, 100, 20, 40],
        "dry_bulk_density_g_cm3": [0.5, 0.5, 1.0, 1.0],
        "fraction_carbon": [0.05, 0.05, np.nan, 0.02],
        "fraction_organic_matter": [np.nan, np.nan, 0.20, np.nan],
    })


def test_wetland_stocks_flags_and_conversion():
    result = wetland.wetland_stocks(_cores())
    plots = result.plots.set_index("plot_id")
    assert plots.loc["C1", "carbon_mg_ha"] == pytest.approx(250.0)
    assert plots.loc["C1", "flag"] == "complete"
    # C2: 20 cm x 1.0 x 0.1119 + 20 cm x 0.02 + 60 cm x 0.02 (extrapolated) = 2.238 + 0.4 + 1.2 g/cm2
    assert plots.loc["C2", "carbon_mg_ha"] == pytest.approx(383.8)
    assert plots.loc["C2", "flag"] == "extrapolated" and plots.loc["C2", "n_om_converted"] == 1
    assert list(result.plots["plot_id"]) == ["C1", "C2"]
    half = wetland.wetland_stocks(_cores(), depth_cm=50).plots.set_index("plot_id")
    assert half.loc["C1", "carbon_mg_ha"] == pytest.approx(125.0)


@pytest.mark.parametrize("change, reason", [
    ({"dry_bulk_density_g_cm3": 3.0}, "above 2.65"),
    ({"fraction_carbon": 1.5}, r"fraction_carbon outside 0-1 \(in %\? divide by 100\)"),
    ({"fraction_carbon": -0.1}, "fraction_carbon outside 0-1"),
    ({"top_cm": 40.0}, "overlaps"),
])
def test_bad_intervals_are_reported(change, reason):
    frame = _cores()
    for column, value in change.items():
        frame.loc[1, column] = value
    with pytest.raises(InputError, match=reason) as info:
        wetland.wetland_stocks(frame)
    assert "2" in str(info.value).split("row(s)")[1]
    result = wetland.wetland_stocks(frame, drop_invalid=True)
    assert 2 in set(result.dropped["row"])


def test_carbon_in_percent_of_a_mineral_sediment_is_no_fraction_but_peat_is():
    """0.2-0.55 % carbon at 1.1-1.35 g/cm3 read as fractions made 4,512 Mg C/ha cores; a humified
    peat's 0.61 at 0.15 g/cm3 is a real fraction; above 0.7 (more than lignin) none is."""
    mineral = pd.DataFrame({"core_id": "M1", "top_cm": [0, 25, 50, 75], "bottom_cm": [25, 50, 75, 100],
                            "dry_bulk_density_g_cm3": [1.1, 1.2, 1.3, 1.35], "fraction_carbon": [0.55, 0.45, 0.3, 0.2]})
    with pytest.raises(ImplausibleValueError, match=r"4 of the 4 interval\(s\) denser than 0.8 g/cm3 hold more "
                                                    r"than 0.1 carbon.*in %"):
        wetland.wetland_stocks(mineral)
    # one dense, carbon-rich interval among ordinary cores (a peat-mineral transition) is a sample, not a unit
    in_fractions = mineral.assign(fraction_carbon=mineral["fraction_carbon"] / 100)
    transition = pd.concat([in_fractions, in_fractions.assign(core_id="M2"),
                            mineral.iloc[:1].assign(core_id="T1", fraction_carbon=0.105, dry_bulk_density_g_cm3=0.85)],
                           ignore_index=True)
    assert len(wetland.wetland_stocks(transition).plots) == transition["core_id"].nunique()
    stocks = wetland.wetland_stocks(mineral.assign(fraction_carbon=mineral["fraction_carbon"] / 100)).plots
    assert 30 < stocks["carbon_mg_ha"].iloc[0] < 60
    peat = mineral.assign(dry_bulk_density_g_cm3=[0.08, 0.1, 0.12, 0.15], fraction_carbon=[0.5, 0.55, 0.58, 0.61])
    assert wetland.wetland_stocks(peat).plots["carbon_mg_ha"].iloc[0] > 0
    frame = _cores()
    frame.loc[1, "fraction_carbon"] = 0.75
    with pytest.raises(InputError, match=r"fraction_carbon above 0.7, more carbon than any organic matter holds"):
        wetland.wetland_stocks(frame)
    assert 2 in set(wetland.wetland_stocks(frame, drop_invalid=True).dropped["row"])


def test_core_without_carbon_measure_is_reported():
    frame = _cores()
    frame.loc[[2, 3], ["fraction_carbon", "fraction_organic_matter"]] = np.nan
    with pytest.raises(InputError, match=r"core has no carbon measure .* row\(s\) 3, 4"):
        wetland.wetland_stocks(frame)
    result = wetland.wetland_stocks(frame, drop_invalid=True)
    assert list(result.plots["plot_id"]) == ["C1"] and list(result.dropped["row"]) == [3, 4]


def test_cli_wetland(tmp_path, capsys):
    src, cores, out = tmp_path / "i.csv", tmp_path / "c.csv", tmp_path / "w.csv"
    _cores().to_csv(src, index=False)
    pd.DataFrame({"core_id": ["C1", "C2"], "lon": [100.0, 101.0], "lat": [10.0, 11.0],
                  "habitat": ["mangrove", "mangrove"]}).to_csv(cores, index=False)
    assert run_stocks(["wetland", str(src), "--cores", str(cores), "--out", str(out), "--rename", "lon=x",
                       "--rename", "lat=y", "--crs", "EPSG:4326", "--depth-cm", "100"]) == 0
    assert "2 cores" in capsys.readouterr().out
    written = pd.read_csv(out)
    assert list(written["plot_id"]) == ["C1", "C2"] and set(written["habitat"]) == {"mangrove"}
    assert written["x"].tolist() == [100.0, 101.0]


def test_a_core_with_overlapping_intervals_is_dropped_whole():
    """Core M1145's shape (0-5 cm, then 5-100 beside 5-50 and 50-100): dropping only the
    overlapping rows carried the surface density to 1 m; the core is ambiguous, so it goes whole."""
    intervals = pd.DataFrame({"core_id": ["A"] * 4 + ["B"] * 2, "top_cm": [0, 5, 5, 50, 0, 50],
                              "bottom_cm": [5, 100, 50, 100, 50, 100],
                              "dry_bulk_density_g_cm3": [0.4, 0.6, 0.6, 0.7, 0.5, 0.6],
                              "fraction_carbon": [0.15, 0.1, 0.11, 0.09, 0.05, 0.04]})
    result = wetland.wetland_stocks(intervals, drop_invalid=True)
    assert result.plots["plot_id"].tolist() == ["B"]
    reasons = result.dropped.set_index("row")["reason"]
    assert reasons.loc[1] == "another horizon of the same profile/core overlaps: its depths are ambiguous"
    assert (reasons.loc[[2, 3, 4]] == "overlaps another horizon of the same profile/core").all()


def test_sanderman2018_mangrove_stocks(shared_data):
    folder = shared_data / "wetland" / "sanderman2018_mangrove"
    intervals = pd.read_csv(folder / "depthseries.csv").rename(columns=SANDERMAN_RENAME)
    cores = pd.read_csv(folder / "cores.csv").rename(columns={"longitude": "x", "latitude": "y"})
    with pytest.raises(InputError, match="overlaps"):
        wetland.wetland_stocks(intervals, cores)
    result = wetland.wetland_stocks(intervals, cores, drop_invalid=True, crs="EPSG:4326")
    plots = result.plots
    assert len(plots) > 800 and plots["carbon_mg_ha"].notna().all()
    # Sanderman et al. 2018: top-meter mangrove soil carbon 86-729 Mg C/ha across pixels,
    # 6.4 Pg C in total (a global mean near 361 Mg C/ha); our core mean must be of that order
    assert 280 < plots["carbon_mg_ha"].mean() < 440
    assert 250 < plots["carbon_mg_ha"].median() < 450
    assert set(plots["flag"]) <= {"complete", "extrapolated", "gaps_interpolated", "gaps_interpolated+extrapolated"}
    assert (plots["extrapolated_cm"] > 0).sum() == plots["flag"].str.contains("extrapolated").sum()
    assert (result.intervals["carbon_source"] == "om:kauffman_donato_2012").sum() > 100
    # never more organic carbon than organic matter: below 4.94 % OM the conversion is not used
    used = result.intervals[result.intervals["carbon_source"].str.startswith("om:")]
    assert (used["fraction_carbon_used"] <= used["fraction_organic_matter"]).all()
    below = result.intervals["carbon_source"] == "om_below_range:kauffman_donato_2012"
    assert below.sum() > 50 and result.intervals.loc[below, "carbon_density_g_cm3"].isna().all()
    assert plots["n_om_below_range"].sum() == below.sum()


def test_a_mineral_marsh_under_the_mangrove_conversion_is_pointed_to_craft_1991(tmp_path, capsys):
    """Its poor intervals became gaps filled from the richest: 509 Mg C/ha, 167.5 with craft_1991."""
    from sinks.cli import main

    pd.DataFrame({"core_id": "S1", "top_cm": [0, 20, 40, 60, 80], "bottom_cm": [20, 40, 60, 80, 100],
                  "dry_bulk_density_g_cm3": [0.9, 1.0, 1.1, 1.2, 1.2],
                  "fraction_organic_matter": [0.08, 0.05, 0.03, 0.02, 0.02]}).to_csv(tmp_path / "marsh.csv", index=False)
    assert main(["stocks", "wetland", str(tmp_path / "marsh.csv"), "--out", str(tmp_path / "m.csv")]) == 0
    assert "give it --conversion craft_1991" in capsys.readouterr().err
    assert main(["stocks", "wetland", str(tmp_path / "marsh.csv"), "--conversion", "craft_1991",
                 "--out", str(tmp_path / "m2.csv")]) == 0
    assert pd.read_csv(tmp_path / "m2.csv")["carbon_mg_ha"].iloc[0] == pytest.approx(167.5, abs=0.1)
