"""Predict a model bundle over a feature spec's grid into a Cloud-Optimized GeoTIFF.

Bands: the bundle's target band (e.g. ``carbon``, Mg C/ha), ``lower`` and ``upper`` (its
prediction interval), ``di`` (dissimilarity index) and ``aoa`` (1 inside the area of
applicability, 0 outside). A pixel where any feature is nodata is nodata in every band: the model
is not asked to guess from a partial view. Work goes window by window; with ``n_jobs > 1`` windows
are computed in threads (rasterio reads and XGBoost predictions release the GIL) and XGBoost gets one
thread each, so cores are not oversubscribed.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from rasterio.windows import Window
from tqdm.auto import tqdm

from sinks.bundle import Bundle, load_bundle
from sinks.cog import cog_writer
from sinks.covariates.extract import check_block
from sinks.covariates.local import LocalEngine, check_grid_size, target_grid
from sinks.covariates.spec import FeatureSpec, load_spec
from sinks.errors import InputError, ModelMismatchError

OUTPUT_BANDS = ("lower", "upper", "di", "aoa")
#: Working memory per window pixel of the prediction itself, beyond the features: the flat copy
#: (float32 and the model's float64), five output bands and the DI's distances (an upper bound).
PREDICT_BYTES_PER_PIXEL_FEATURE = 16
PREDICT_BYTES_PER_PIXEL = 64


class AOAWarning(UserWarning):
    """A map none of whose valid pixels lies inside the model's area of applicability."""


def check_compatible(bundle: Bundle, spec: FeatureSpec) -> None:
    """Refuse a spec whose features differ from those the bundle was trained on."""
    if spec.feature_names != bundle.feature_names:
        raise ModelMismatchError(
            f"bundle {bundle.bundle_id} was trained on features {bundle.feature_names} but spec "
            f"{spec.name!r} gives {spec.feature_names}"
        )
    if spec.fingerprint() != bundle.spec_fingerprint:
        raise ModelMismatchError(
            f"spec {spec.name!r} defines its features differently from the spec bundle "
            f"{bundle.bundle_id} was trained with (fingerprint {spec.fingerprint()[:12]} vs "
            f"{bundle.spec_fingerprint[:12]}); retrain, or use the original spec"
        )


def predict_window(engine: LocalEngine, bundle: Bundle, window: Window) -> np.ndarray:
    """Output bands on one window: (5, h, w) float32 with NaN where any feature is nodata."""
    features = engine.compute(window)
    n, h, w = features.shape
    flat = features.reshape(n, -1).T
    valid = np.isfinite(flat).all(axis=1)
    out = np.full((1 + len(OUTPUT_BANDS), h * w), np.nan, dtype=np.float32)
    if valid.any():
        result = bundle.predict(flat[valid])
        for i, key in enumerate(("prediction", *OUTPUT_BANDS)):
            out[i, valid] = result[key]
    return out.reshape(-1, h, w)


def predict_map(bundle: Bundle | str | os.PathLike, spec: FeatureSpec | str | os.PathLike,
                out: str | os.PathLike, *, block: int = 512, n_jobs: int = 1,
                progress: bool = True, max_pixels: float | None = None) -> Path:
    """Write the map of ``bundle`` over ``spec``'s grid to ``out`` (a COG, written atomically).

    Refused before anything is written: a spec that differs from the bundle's
    (:class:`~sinks.errors.ModelMismatchError`), ``block`` not a multiple of 16, ``n_jobs`` < 1, a
    grid above ``max_pixels`` (default :data:`sinks.covariates.local.MAX_PIXELS`) or windows needing
    more memory than is available (:class:`~sinks.errors.ResourceError`). A map with no valid pixel
    (every pixel lacks some feature) is an :class:`~sinks.errors.InputError` and leaves no file; a
    map none of whose valid pixels is inside the area of applicability is written with an
    :class:`AOAWarning`.
    """
    block = check_block(block)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise InputError(f"n_jobs must be a positive integer (threads), got {n_jobs!r}")
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    spec = spec if isinstance(spec, FeatureSpec) else load_spec(spec)
    check_compatible(bundle, spec)
    if n_jobs != 1 and hasattr(bundle.model, "set_params"):
        bundle.model.set_params(n_jobs=1)
    band_names = [bundle.band, *OUTPUT_BANDS]
    units = bundle.units
    band_tags = {
        bundle.band: {"units": units, "description": f"predicted {bundle.metadata['target']['column']}"},
        "lower": {"units": units, "description": f"lower bound of the {bundle.interval.level:.0%} prediction interval"},
        "upper": {"units": units, "description": f"upper bound of the {bundle.interval.level:.0%} prediction interval"},
        "di": {"units": "1", "description": "dissimilarity index (Meyer & Pebesma 2021)"},
        "aoa": {"units": "1", "description": f"1 = inside the area of applicability (DI <= {bundle.aoa.threshold:.4f})"},
    }
    tags = {"sinks_bundle_id": bundle.bundle_id, "sinks_version": bundle.metadata["versions"].get("sinks"),
            "sinks_spec": spec.name, "sinks_spec_fingerprint": spec.fingerprint(),
            "sinks_recipe": bundle.metadata["recipe"]["name"]}
    local, engines = threading.local(), []

    def work(window: Window) -> np.ndarray:
        engine = getattr(local, "engine", None)
        if engine is None:  # a GDAL dataset handle must not be shared between threads
            engine = local.engine = LocalEngine(spec, grid)
            engines.append(engine)
        return predict_window(engine, bundle, window)

    grid = target_grid(spec)
    check_grid_size(spec, grid, n_bands=len(band_names), max_pixels=max_pixels, what="map")
    with LocalEngine(spec, grid) as probe:
        n_feat = len(spec.features)
        probe.check_memory(block, n_jobs=n_jobs, what="map",
                           extra_per_pixel=PREDICT_BYTES_PER_PIXEL + PREDICT_BYTES_PER_PIXEL_FEATURE * n_feat)
    windows = list(grid.windows(block))
    counts = {"valid": 0, "inside": 0}
    aoa_band = 1 + OUTPUT_BANDS.index("aoa")
    try:
        with cog_writer(out, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                        band_names=band_names, blocksize=block, tags=tags, band_tags=band_tags) as dst:
            nodata = np.float32(dst.nodata)
            results = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(
                delayed(work)(w) for w in windows
            )
            for window, data in tqdm(zip(windows, results), total=len(windows), desc="map",
                                     unit="tile", disable=not progress):
                valid = np.isfinite(data[0])
                counts["valid"] += int(valid.sum())
                counts["inside"] += int((data[aoa_band][valid] == 1).sum())
                dst.write(np.where(np.isnan(data), nodata, data), window=window)
            if counts["valid"] == 0:  # inside the writer: the staging file is removed, nothing is left
                raise InputError(
                    f"map of bundle {bundle.bundle_id} over spec {spec.name!r}: no valid pixel in the "
                    f"{grid.width} x {grid.height} grid (every pixel lacks at least one of the features "
                    f"{', '.join(spec.feature_names)}); check the sources' nodata and valid masks and that "
                    "they overlap each other")
    finally:
        for engine in engines:
            engine.close()
    if counts["inside"] == 0:
        warnings.warn(
            f"none of the {counts['valid']:,} valid pixels of {out} is inside the area of applicability of "
            f"bundle {bundle.bundle_id} (DI > {bundle.aoa.threshold:.3g} everywhere): the covariates are "
            "unlike the training plots, so the predictions are extrapolations", AOAWarning, stacklevel=2)
    return Path(out)
