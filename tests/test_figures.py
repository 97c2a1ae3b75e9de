"""Model-card figures (PNG beside MODEL_CARD.md): written, small, deterministic; skipped cleanly.

The bundle is trained on 150 synthetic plots spread over the Meuse grid (``features/meuse.toml``,
EPSG:28992) with the default schemes, so kNNDM folds and the prediction area are real.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sinks.covariates.spec import load_spec
from sinks.learn import card_figures as cf

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "features" / "meuse.toml"
FEATURES = load_spec(SPEC).feature_names
FIGURES = ["obs_vs_pred.png", "residual_map.png", "geodist.png", "di_histogram.png", "coverage_by_di.png"]
PNG = b"\x89PNG\r\n\x1a\n"

RECIPE = f"""name = "figures"
features = "{SPEC.as_posix()}"

[target]
column = "carbon_mg_ha"
units = "Mg C/ha"
pool = "forest"

[estimator]
kind = "xgboost"
params = {{ n_estimators = 30, max_depth = 2, n_jobs = 1 }}

[validation]
folds = 3
block_size = 600
"""


def _plots(n: int = 150, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"plot_id": [f"P{i:03d}" for i in range(n)],
                          "x": rng.uniform(178600, 181400, n), "y": rng.uniform(329800, 333600, n)})
    for name in FEATURES:
        frame[name] = rng.normal(size=n)
    frame["carbon_mg_ha"] = 80 + 20 * frame[FEATURES[0]] + rng.normal(0, 5, n)
    return frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``(bundle folder, metadata, oof table, prediction points)``."""
    from sinks.covariates.local import target_grid
    from sinks.learn.knndm import grid_prediction_points
    from sinks.learn.recipe import load_recipe
    from sinks.learn.train import train

    folder = tmp_path_factory.mktemp("figures")
    (folder / "recipe.toml").write_text(RECIPE)
    bundle = train(load_recipe(folder / "recipe.toml"), _plots(), folder / "bundle", progress=False)
    meta = json.loads((bundle / "metadata.json").read_text())
    points = grid_prediction_points(target_grid(load_spec(SPEC)), n=500)
    return bundle, meta, pd.read_csv(bundle / "oof.csv"), points


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    return struct.unpack(">II", data[16:24])


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_card_figures_are_written_small_and_referenced(trained, tmp_path):
    pytest.importorskip("matplotlib")
    _, meta, oof, points = trained
    result = cf.write_card_figures(tmp_path, meta, oof, prediction_xy=points)
    assert result.files == FIGURES and result.notes == []
    assert _files(tmp_path) == sorted(FIGURES)
    for name in FIGURES:
        width, height = _png_size(tmp_path / name)
        assert 200 < width <= 1000 and 200 < height <= 500, (name, width, height)
        assert (tmp_path / name).stat().st_size > 5000
        assert f"]({name})" in "\n".join(result.markdown)
    assert result.markdown[0] == "## Figures"
    json.dumps(result.as_dict())  # goes into metadata.json as it is


def test_card_figures_are_deterministic(trained, tmp_path):
    pytest.importorskip("matplotlib")
    _, meta, oof, points = trained
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    cf.write_card_figures(a, meta, oof, prediction_xy=points)
    cf.write_card_figures(b, meta, oof, prediction_xy=points)
    for name in FIGURES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_geodist_takes_the_distances_in_any_of_their_forms(trained, tmp_path):
    pytest.importorskip("matplotlib")
    from sinks.learn.knndm import nearest_neighbour_distances

    _, meta, oof, points = trained
    xy = oof[["x", "y"]].to_numpy()
    geo = nearest_neighbour_distances(xy, points, oof["fold_knndm"].to_numpy())
    forms = {"geodistances": geo, "frame": geo.to_frame(),
             "mapping": cf.card_distances(xy, {"random": oof["fold_random"], "knndm": oof["fold_knndm"]}, points)}
    for label, distances in forms.items():
        folder = tmp_path / label
        folder.mkdir()
        result = cf.write_card_figures(folder, meta, oof, distances=distances)
        assert "geodist.png" in result.files and result.notes == [], label
    mapping = forms["mapping"]
    assert set(mapping) == {"sample-to-sample", "prediction-to-sample", "CV: random", "CV: knndm"}
    assert len(mapping["prediction-to-sample"]) == len(points)


def test_a_figure_the_data_do_not_allow_is_noted_not_raised(trained, tmp_path):
    pytest.importorskip("matplotlib")
    _, meta, oof, _ = trained
    result = cf.write_card_figures(tmp_path, meta, oof.drop(columns=["x", "y", "cv_di"]))
    assert result.files == ["obs_vs_pred.png", "coverage_by_di.png"]
    text = "\n".join(result.markdown)
    for name in ("residual_map.png", "geodist.png", "di_histogram.png"):
        assert f"- {name} not drawn:" in text
        assert not (tmp_path / name).exists()
    geographic = {**meta, "training": {**meta["training"], "crs": "EPSG:4326"}}
    folder = tmp_path / "geo"
    folder.mkdir()
    result = cf.write_card_figures(folder, geographic, oof)
    assert "geodist.png" not in result.files and any("geographic" in n for n in result.notes)


def test_an_older_bundle_layout_still_gets_its_figures(trained, tmp_path):
    """Only oof_random / oof_spatial and no interval check: two panels, coverage from held-out columns."""
    pytest.importorskip("matplotlib")
    _, meta, oof, _ = trained
    old_meta = {k: v for k, v in meta.items() if k not in ("validation_setup", "interval_check")}
    old_oof = oof[["plot_id", "x", "y", "observed", "oof_random", "oof_spatial", "random_fold", "spatial_fold",
                   "cv_di", "inside_aoa", "heldout_lower", "heldout_upper"]]
    result = cf.write_card_figures(tmp_path, old_meta, old_oof)
    assert result.files == ["obs_vs_pred.png", "residual_map.png", "geodist.png", "di_histogram.png",
                            "coverage_by_di.png"], result.notes
    width, _ = _png_size(tmp_path / "obs_vs_pred.png")
    assert width <= 650  # two panels


def test_without_matplotlib_figures_are_skipped_with_a_note(trained, tmp_path, monkeypatch):
    _, meta, oof, points = trained
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert not cf.matplotlib_available()
    result = cf.write_card_figures(tmp_path, meta, oof, prediction_xy=points)
    assert result.files == [] and _files(tmp_path) == []
    assert result.markdown[0] == "## Figures"
    assert "matplotlib is not installed" in result.markdown[-1] and "sinks[plot]" in result.markdown[-1]
    assert result.notes == [cf.NO_MATPLOTLIB]


def test_plotting_quicklooks(trained, tmp_path):
    pytest.importorskip("matplotlib")
    from sinks.errors import OutputError
    from sinks.plotting import card_figures, plot_cv

    bundle, meta, _, _ = trained
    ax = plot_cv(bundle)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"{s} CV" for s in meta["validation_setup"]["schemes"]]
    before = _files(bundle)
    result = card_figures(bundle, tmp_path / "figs")
    assert result.files and _files(tmp_path / "figs") == sorted(result.files)
    assert _files(bundle) == before
    with pytest.raises(OutputError, match="is the bundle"):
        card_figures(bundle, bundle)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_a_trained_bundle_carries_its_figures(trained):
    """The PNGs are bundle files (checksummed) and the card shows them."""
    from sinks.bundle import load_bundle

    bundle, meta, _, _ = trained
    figures = meta["figures"]
    card = (bundle / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Figures" in card
    if not cf.matplotlib_available():
        assert figures["files"] == [] and "sinks[plot]" in card
        return
    assert figures["files"] == FIGURES and figures["notes"] == []
    for name in FIGURES:
        assert name in meta["files"] and f"]({name})" in card
    load_bundle(bundle)  # every figure verified against its checksum
