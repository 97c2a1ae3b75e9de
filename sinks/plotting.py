"""Quicklook figures: a map band with its nodata, and observed vs out-of-fold predictions.

Needs matplotlib (``pip install 'sinks[plot]'``); nothing else in sinks imports this module. The
model card's PNG figures and the external-validation figure are drawn by
:mod:`sinks.learn.card_figures` (pyplot-free); :func:`card_figures` draws them for a bundle folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from sinks.errors import require


def _pyplot():
    require("matplotlib", "plot")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_map_band(path: str | os.PathLike, band: str = "carbon", *, ax=None, cmap: str = "YlGn"):
    """Show one named band of a map (nodata blank), with a colour bar labelled with its units."""
    plt = _pyplot()
    with rasterio.open(path) as src:
        index = list(src.descriptions).index(band) + 1
        data = src.read(index, masked=True)
        units = src.tags(index).get("units", "")
        left, bottom, right, top = src.bounds
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(data, cmap=cmap, extent=(left, right, bottom, top))
    ax.set_title(f"{Path(path).name}: {band}")
    ax.figure.colorbar(image, ax=ax, label=f"{band} ({units})" if units else band)
    return ax


def _bundle_tables(bundle_folder) -> tuple[dict, pd.DataFrame]:
    import json

    folder = Path(bundle_folder)
    meta_path = folder / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    return meta, pd.read_csv(folder / "oof.csv")


def plot_cv(bundle_folder: str | os.PathLike, *, ax=None):
    """Observed vs out-of-fold predicted for every CV scheme of a bundle (random, blocks, kNNDM)."""
    from sinks.learn.card_figures import _schemes

    plt = _pyplot()
    meta, oof = _bundle_tables(bundle_folder)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    columns = [f"oof_{s}" for s in _schemes(meta, oof)]
    for column in columns:
        ax.scatter(oof["observed"], oof[column], s=10, alpha=0.6, label=f"{column[4:]} CV")
    top = float(np.nanmax(oof[["observed", *columns]].to_numpy()))
    ax.plot([0, top], [0, top], color="grey", lw=1)
    ax.set_xlabel("observed")
    ax.set_ylabel("predicted out of fold")
    ax.legend()
    return ax


def card_figures(bundle_folder: str | os.PathLike, out: str | os.PathLike | None = None, *, prediction_xy=None):
    """Draw a bundle's model-card figures (PNG) into the folder ``out`` (default ``BUNDLE-figures``
    in the current folder), e.g. for a bundle made before bundles carried them; returns the
    :class:`~sinks.learn.card_figures.CardFigures`. The bundle itself is never written to (its
    files are checksummed).
    """
    from sinks.errors import OutputError
    from sinks.learn.card_figures import write_card_figures

    meta, oof = _bundle_tables(bundle_folder)
    out = Path(out) if out is not None else Path(f"{Path(bundle_folder).resolve().name}-figures")
    if out.resolve() == Path(bundle_folder).resolve():
        raise OutputError(f"{out}: is the bundle; draw its figures into another folder")
    out.mkdir(exist_ok=True)
    return write_card_figures(out, meta, oof, prediction_xy=prediction_xy)
