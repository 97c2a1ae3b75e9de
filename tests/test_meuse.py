"""The real Meuse case (vendored, PyPI-sourced): extract 12 covariates, train, check skill.

Floor for random 5-fold CV R² of topsoil organic carbon: 0.40. Justification: the shared data's
README gives R² ≈ 0.46 for a random forest on `om` with 5-fold CV; our XGBoost recipe measured
0.49-0.59 over five fold seeds (0.49 with the recipe's seed 0), and a random forest 0.46-0.52 in the
same run. A floor of 0.40 sits below that spread yet far above what a broken chain gives (shuffled
features or a misaligned grid give R² near or below 0). R² is unchanged by the linear
organic-matter -> organic-carbon conversion.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import rasterio

from sinks.cli import main


def test_meuse_extract_and_train(repo, tmp_path, capsys):
    points = repo / "sinks" / "datasets" / "meuse" / "meuse_points.csv"
    table = tmp_path / "meuse_features.csv"
    assert main(["extract", str(repo / "features" / "meuse.toml"), str(points), "--crs", "EPSG:28992",
                 "--row-ids", "--out", str(table), "--quiet"]) == 0
    features = pd.read_csv(table)
    assert len(features) == 155
    # values equal direct reads of the rasters at the points (all on one aligned grid)
    with rasterio.open(repo / "sinks" / "datasets" / "meuse" / "covariates" / "dem.tif") as src:
        direct = np.array([v[0] for v in src.sample(zip(features.x, features.y))], dtype=float)
        direct[direct == src.nodata] = np.nan
    np.testing.assert_array_equal(features["elevation"].to_numpy(), direct)

    (tmp_path / "models").mkdir()
    bundle = tmp_path / "models" / "meuse_soc"
    assert main(["train", str(repo / "training" / "meuse.toml"), str(table), "--out", str(bundle), "--quiet"]) == 0
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["target"]["units"] == "g C/kg"
    assert meta["validation"]["random"]["r2"] > 0.40
    assert meta["validation"]["spatial"]["r2"] > 0.20  # measured 0.34-0.51 over fold seeds
    assert meta["training"]["n"] >= 145  # 2 samples lack om, a few sit on nodata cells
    oof = pd.read_csv(bundle / "oof.csv")
    om = pd.read_csv(points)["om"].to_numpy()
    assert np.isclose(oof["observed"].max(), np.nanmax(om) * 10 * 0.58)  # van Bemmelen factor
    assert "R2" in capsys.readouterr().out
