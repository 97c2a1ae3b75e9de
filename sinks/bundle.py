"""Model bundles: save, load and verify a fitted model with everything needed to use it honestly.

A bundle is a folder::

    model.json        the fitted estimator in a safe format (XGBoost JSON; never a pickle)
    metadata.json     bundle id, recipe, feature names, feature-spec fingerprint, target and units,
                      CV metrics (random and spatial), interval calibration, training-data hash,
                      versions, and the sha256 of every other file
    aoa.npz           area-of-applicability reference (standardised, weighted training predictors)
    oof.csv           out-of-fold predictions of both CV schemes, per training plot
    MODEL_CARD.md     the same, for people

:func:`load_bundle` checks every file against its recorded sha256 before using it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from sinks.errors import ModelMismatchError
from sinks.io import atomic_path, sha256_file
from sinks.learn.aoa import AOAReference
from sinks.learn.estimators import load_model, save_model
from sinks.learn.intervals import ConformalInterval

FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    """Versions of sinks and the libraries whose behaviour a result depends on."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("sinks", "numpy", "pandas", "scikit-learn", "xgboost", "rasterio", "geopandas", "pyproj"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:  # pragma: no cover
        pass
    return out


@dataclass
class Bundle:
    """A loaded bundle: predict with intervals, dissimilarity index and AOA in one call."""

    path: Path
    metadata: dict
    model: object
    interval: ConformalInterval
    aoa: AOAReference

    @property
    def bundle_id(self) -> str:
        return self.metadata["bundle_id"]

    @property
    def feature_names(self) -> list[str]:
        return list(self.metadata["features"]["names"])

    @property
    def spec_fingerprint(self) -> str:
        return self.metadata["features"]["spec_fingerprint"]

    @property
    def band(self) -> str:
        return self.metadata["target"]["band"]

    @property
    def units(self) -> str:
        return self.metadata["target"]["units"]

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Prediction, interval bounds, DI and AOA (1 inside, 0 outside) for rows of ``X``."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ModelMismatchError(
                f"bundle {self.bundle_id} expects {len(self.feature_names)} features "
                f"({', '.join(self.feature_names)}), got an array with {X.shape[-1]} columns"
            )
        prediction = self.model.predict(X).astype(np.float32)
        lower, upper = self.interval.apply(prediction)
        di = self.aoa.dissimilarity(X).astype(np.float32)
        return {"prediction": prediction, "lower": lower, "upper": upper, "di": di,
                "aoa": (di <= self.aoa.threshold).astype(np.float32)}


def _digest(files: dict[str, str], metadata: dict) -> str:
    body = json.dumps({"files": files, "metadata": metadata}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def save_bundle(folder: str | os.PathLike, *, kind: str, model, metadata: dict, aoa: AOAReference,
                oof: pd.DataFrame) -> Path:
    """Write a bundle folder atomically; returns its path. ``metadata`` gets ids, hashes, versions."""
    folder = Path(folder)
    with atomic_path(folder, suffix="", folder_kind="bundle") as tmp:
        tmp.mkdir()
        save_model(kind, model, tmp)
        aoa.save(tmp / "aoa.npz")
        oof.to_csv(tmp / "oof.csv", index=False)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        meta = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
            **metadata,
            "estimator": {**metadata.get("estimator", {}), "kind": kind},
            "files": files,
        }
        meta["bundle_id"] = _digest(files, meta)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        (tmp / "MODEL_CARD.md").write_text(model_card(meta), encoding="utf-8")
    return folder


def load_bundle(folder: str | os.PathLike) -> Bundle:
    """Load and verify a bundle (every file's sha256 must match its metadata)."""
    folder = Path(folder)
    meta_path = folder / "metadata.json"
    if not meta_path.exists():
        raise ModelMismatchError(f"{folder}: not a model bundle (no metadata.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelMismatchError(f"{meta_path}: corrupt metadata ({exc})") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelMismatchError(f"{folder}: bundle format {meta.get('format_version')} is not {FORMAT_VERSION}")
    for name, digest in meta.get("files", {}).items():
        path = folder / name
        if not path.exists():
            raise ModelMismatchError(f"{folder}: bundle file {name} is missing")
        if sha256_file(path) != digest:
            raise ModelMismatchError(f"{path}: checksum differs from the bundle's metadata; the bundle was altered or corrupted")
    stripped = {k: v for k, v in meta.items() if k != "bundle_id"}
    if _digest(meta["files"], stripped) != meta.get("bundle_id"):
        raise ModelMismatchError(f"{meta_path}: metadata was edited after the bundle was made (bundle id mismatch)")
    interval = ConformalInterval(**meta["interval"])
    return Bundle(folder, meta, load_model(meta["estimator"]["kind"], folder), interval,
                  AOAReference.load(folder / "aoa.npz"))


def model_card(meta: dict) -> str:
    """A short human-readable model card (Markdown) from a bundle's metadata."""
    target, cv = meta["target"], meta["validation"]
    lines = [
        f"# Model card: {meta['recipe']['name']}",
        "",
        f"- bundle id: `{meta['bundle_id']}`, created {meta['created']} with sinks {meta['versions'].get('sinks')}",
        f"- predicts **{target['column']}** ({target['units'] or 'units not given'}) as map band `{target['band']}`",
        f"- estimator: {meta['estimator']['kind']} with {json.dumps(meta['estimator'].get('params', {}))}",
        f"- features ({len(meta['features']['names'])}) from spec `{meta['features']['spec']}` "
        f"(fingerprint `{meta['features']['spec_fingerprint'][:12]}`): {', '.join(meta['features']['names'])}",
        f"- trained on {meta['training']['n']} plots (table sha256 `{meta['training']['sha256'][:12]}`); "
        f"{meta['training']['dropped']} dropped for missing values",
        "",
        "## Validation (out-of-fold)",
        "",
        "| scheme | folds | R² | RMSE | MAE | bias |",
        "|---|---|---|---|---|---|",
    ]
    for s in cv.values():
        lines.append(f"| {s['scheme']} | {s['folds']} | {s['r2']:.3f} | {s['rmse']:.3g} | {s['mae']:.3g} | {s['bias']:.3g} |")
    iv = meta["interval"]
    lines += [
        "",
        f"Spatial blocks of {meta['validation_setup']['block_size']:g} CRS units. Trust the spatial row for "
        "mapping: it scores predictions away from the training plots.",
        "",
        "## Prediction intervals",
        "",
        f"{iv['level']:.0%} split-conformal intervals, half-width {iv['half_width']:.3g} {target['units']}, "
        f"calibrated on {iv['n_calibration']} {iv['residuals_from']} out-of-fold residuals "
        f"(empirical coverage there: {meta['interval_coverage']:.1%}).",
        "",
        "## Area of applicability",
        "",
        f"Dissimilarity-index threshold {meta['aoa']['threshold']:.3f} (Meyer & Pebesma 2021). Map pixels "
        "with DI above it are outside the area of applicability (band `aoa` = 0): treat their "
        "predictions as extrapolation.",
    ]
    return "\n".join(lines) + "\n"
