"""Quicklook figures: a map band with its nodata, and observed vs out-of-fold predictions.

Needs matplotlib (``pip install 'sinks[plot]'``); nothing else in sinks imports this module.
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


def plot_cv(bundle_folder: str | os.PathLike, *, ax=None):
    """Observed vs out-of-fold predicted for the random and spatial CV of a bundle."""
    plt = _pyplot()
    oof = pd.read_csv(Path(bundle_folder) / "oof.csv")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    for column, label in (("oof_random", "random CV"), ("oof_spatial", "spatial CV")):
        ax.scatter(oof["observed"], oof[column], s=10, alpha=0.6, label=label)
    top = float(np.nanmax(oof[["observed", "oof_random", "oof_spatial"]].to_numpy()))
    ax.plot([0, top], [0, top], color="grey", lw=1)
    ax.set_xlabel("observed")
    ax.set_ylabel("predicted out of fold")
    ax.legend()
    return ax
