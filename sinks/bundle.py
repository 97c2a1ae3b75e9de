"""Model bundles: save, load and verify a fitted model with everything needed to use it honestly.

A bundle is a folder::

    model.json        the fitted estimator in a safe format (XGBoost JSON; never a pickle)
    metadata.json     bundle id, recipe, feature names, feature-spec fingerprint, target and units,
                      CV metrics of every scheme (pooled and per fold, with W), the interval
                      calibration and its held-out-fold check, the DI -> error profile,
                      training-data hash, versions, and the sha256 of every other file
    aoa.npz           area-of-applicability reference (standardised, weighted training predictors)
    calibration.npz   |out-of-fold residual| of each training plot (the intervals' difficulty)
    oof.csv           out-of-fold predictions and folds of every CV scheme, per training plot
    tuning.csv        with [tuning] / [selection]: every candidate evaluated, per outer fold and for
                      the final choice, with its inner score (pooled and per inner fold)
    MODEL_CARD.md     the same, for people

:func:`load_bundle` checks every file against its recorded sha256 before using it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sinks.errors import InputError, ModelMismatchError
from sinks.io import atomic_path, sha256_file
from sinks.learn.aoa import AOAReference, ErrorProfile
from sinks.learn.intervals import AdaptiveInterval, ConformalInterval, QuantileInterval

if TYPE_CHECKING:
    import pandas as pd

#: 2: the interval's difficulty s is the nearest plot's neighbourhood mean (``plot_s`` in
#: calibration.npz) and the AOA stores its search rotation; bundles of format 1 must be retrained.
FORMAT_VERSION = 2


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
    interval: ConformalInterval | AdaptiveInterval | QuantileInterval
    aoa: AOAReference
    #: |out-of-fold residual| per training plot, aligned with ``aoa.train`` (adaptive intervals)
    abs_residual: np.ndarray | None = None
    error_profile: ErrorProfile | None = None
    #: (s, DI) of each calibration plot, so that the interval can be recalibrated at another level
    calibration_difficulty: tuple[np.ndarray, np.ndarray] | None = None
    #: s̄ per training plot: a map location's difficulty s is the s̄ of its nearest plot
    #: (:func:`sinks.learn.intervals.plot_difficulty`)
    plot_difficulty: np.ndarray | None = None

    def __repr__(self) -> str:  # not the dataclass's: that prints every array and the whole metadata
        return (f"Bundle({self.bundle_id}, {self.metadata['estimator']['kind']}, target "
                f"{self.metadata['target']['column']!r}, {len(self.feature_names)} features, "
                f"{self.interval.level:g} interval, path={str(self.path)!r})")

    @property
    def bundle_id(self) -> str:
        return self.metadata["bundle_id"]

    @property
    def feature_names(self) -> list[str]:
        return list(self.metadata["features"]["names"])

    @property
    def model_features(self) -> list[str]:
        """The model's input features in order: the selected ones (``[selection]``), else all of
        :attr:`feature_names`. Use these for the model itself (e.g. Earth Engine tree strings)."""
        return list(self.metadata["features"].get("selected") or self.feature_names)

    def model_input(self, X: np.ndarray) -> np.ndarray:
        """The model's columns of ``X`` (columns in :attr:`feature_names` order, as maps compute them)."""
        names, used = self.feature_names, self.model_features
        if used == names:
            return X
        index = {n: i for i, n in enumerate(names)}
        return X[:, [index[n] for n in used]]

    @property
    def spec_fingerprint(self) -> str:
        return self.metadata["features"]["spec_fingerprint"]

    @property
    def band(self) -> str:
        return self.metadata["target"]["band"]

    @property
    def units(self) -> str:
        return self.metadata["target"]["units"]

    def at_level(self, level: float) -> "Bundle":
        """This bundle with its interval recalibrated at ``level`` (a fraction, e.g. 0.8).

        The same method, calibration plots and difficulty model, only the conformal quantile(s)
        change (σ's coefficients do not depend on the level). The held-out check in the metadata
        (``interval_check_by_level``) says how each level covered. Bundles written before the
        calibration plots' difficulty was stored cannot be recalibrated: retrain them. A level that
        needs more calibration plots than the bundle has (⌈level / (1 − level)⌉) is refused.
        """
        from sinks.learn.intervals import calibrate_adaptive, min_per_bin, quantile_or_largest

        if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
            raise InputError(f"interval level must be a fraction between 0 and 1 (e.g. 0.9), got {level!r}")
        if math.isclose(level, self.interval.level):
            return self
        iv = self.interval
        n = None if self.abs_residual is None else len(self.abs_residual)
        if n is not None and n < min_per_bin(level):
            # the conformal quantile would be beyond the largest calibration residual: an interval
            # that covers less than it says (training refuses such a level for the same reason)
            raise InputError(f"bundle {self.path}: a {level:g} interval needs at least {min_per_bin(level)} calibration "
                             f"plots and this bundle has {n}; the highest level they support is "
                             f"{math.floor(n / (n + 1) * 1000) / 1000:g}")
        if isinstance(iv, QuantileInterval):
            raise ModelMismatchError(f"bundle {self.path}: its CQR interval is calibrated at {iv.level:g} on the "
                                     f"model's {iv.quantiles} quantiles; map at that level, or retrain with "
                                     f"[intervals] level = {level:g}")
        if isinstance(iv, AdaptiveInterval):
            if self.calibration_difficulty is None or self.abs_residual is None:
                raise ModelMismatchError(f"bundle {self.path}: its calibration cannot be redone at level "
                                         f"{level:g} (made before sinks stored the calibration plots' "
                                         f"difficulty); map at its own level {iv.level:g}, or retrain it")
            s, di = self.calibration_difficulty
            new = calibrate_adaptive(self.abs_residual, s, di, level=level, method=iv.method,
                                     bins=iv.bins or max(1, len(iv.quantiles)), neighbours=iv.neighbours,
                                     residuals_from=iv.residuals_from, lower_bound=iv.lower_bound)
        else:
            if self.abs_residual is None:
                raise ModelMismatchError(f"bundle {self.path}: no calibration residuals to recalibrate at "
                                         f"level {level:g}; retrain it")
            new = replace(iv, level=float(level), half_width=quantile_or_largest(self.abs_residual, level))
        return replace(self, interval=new)

    def query_workers(self) -> int:
        """Threads of the DI / neighbour queries: the model's own thread count (its ``n_jobs``, 0 or
        -1 = all cores), or 1 for a model without one. The queries run after the model's predict,
        never beside it, so they use the same threads without oversubscribing; a mapping worker that
        gives its model one thread (``set_n_jobs(model, 1)``) gets single-threaded queries too."""
        from sinks.threads import effective_n_jobs

        try:
            params = self.model.get_params()
        except Exception:  # noqa: BLE001 - a model without get_params
            return 1
        if "n_jobs" not in params:
            return 1
        return effective_n_jobs(params["n_jobs"])

    def output_keys(self) -> tuple[str, ...]:
        """The keys of :meth:`predict`'s result, in order."""
        return ("prediction", "lower", "upper", "di", "aoa") + (("error",) if self.error_profile is not None else ())

    def _rows(self, X) -> np.ndarray:
        """``X`` as float32 rows x :attr:`feature_names`: a DataFrame's columns matched by name (in
        any order), an array's by position; values beyond float32's range become inf."""
        names = self.feature_names
        if hasattr(X, "columns"):
            missing = [n for n in names if n not in X.columns]
            if missing:
                raise ModelMismatchError(f"bundle {self.bundle_id}: the table lacks feature column(s) "
                                         f"{', '.join(missing)} (its features: {', '.join(names)})")
            X = X[names]
            text = [n for n in names if X[n].dtype.kind not in "biuf"]
            if text:
                raise ModelMismatchError(f"bundle {self.bundle_id}: feature column(s) {', '.join(text)} hold "
                                         "text, not numbers (read with a decimal comma, or a unit in the cell?)")
        with np.errstate(over="ignore"):
            try:
                X = np.asarray(X, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise ModelMismatchError(f"bundle {self.bundle_id}: rows are not numbers ({exc})") from None
        if X.ndim != 2 or X.shape[1] != len(names):
            got = f"an array with {X.shape[1]} columns" if X.ndim == 2 else f"a {X.ndim}-D array"
            raise ModelMismatchError(f"bundle {self.bundle_id} expects rows of {len(names)} features "
                                     f"({', '.join(names)}), got {got}")
        return X

    def _finite_rows(self, X, compute, empty: dict[str, float]) -> dict[str, np.ndarray]:
        """``compute(rows)`` on the rows whose every feature is finite; the others (and zero rows)
        get ``empty``'s value per key: a row with a missing feature is not predicted (the model was
        trained without missing values), as maps leave such pixels nodata."""
        finite = np.isfinite(X).all(axis=1)
        if finite.all() and len(X):
            return compute(X)
        out = {key: np.full(len(X), value, dtype=np.float32) for key, value in empty.items()}
        if finite.any():
            for key, values in compute(X[finite]).items():
                out[key][finite] = values
        return out

    def predict_target(self, X) -> np.ndarray:
        """The model's prediction alone (float32), as :meth:`predict` gives it, without the
        interval and DI work (a map of the target band alone)."""
        return self._finite_rows(self._rows(X), lambda rows: {"prediction": self._model_predict(self.model_input(rows))},
                                 {"prediction": np.nan})["prediction"]

    def _model_predict(self, X_model: np.ndarray) -> np.ndarray:
        """The model's prediction (float32), held at the interval's physical lower bound (0 for a
        stock: a regressor may extrapolate below it, and the interval's lower end is held there too,
        so that lower <= prediction)."""
        prediction = np.asarray(self.model.predict(X_model), dtype=np.float32)
        if self.interval.lower_bound is not None:
            np.maximum(prediction, np.float32(self.interval.lower_bound), out=prediction)
        return prediction

    def predict(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Prediction, interval bounds, DI and AOA (1 inside, 0 outside) for rows of ``X`` (an array
        of rows x :attr:`feature_names`, or a DataFrame with those columns in any order).

        A row with a missing or non-finite feature gets NaN and ``aoa`` 0 (not a guess from the
        training mean); zero rows give empty arrays.

        With an adaptive interval (bundles from ``sinks train``), ``lower``/``upper`` differ per row:
        ``prediction ± q · σ``, σ from the row's DI and its nearest training plot's neighbourhood
        (one nearest-plot query gives both; see :mod:`sinks.learn.intervals`); with an error
        profile, ``error`` is the expected absolute error at the row's DI (CAST's errorProfiles).
        """
        empty = {key: (0.0 if key == "aoa" else np.nan) for key in self.output_keys()}
        return self._finite_rows(self._rows(X), self._predict_rows, empty)

    def _predict_rows(self, X: np.ndarray) -> dict[str, np.ndarray]:
        X = self.model_input(X)  # the selected features, when [selection] chose some
        prediction = self._model_predict(X)
        workers = self.query_workers()
        if isinstance(self.interval, AdaptiveInterval) and self.plot_difficulty is not None:
            di64, nearest = self.aoa.nearest(X, workers=workers)
            s = self.plot_difficulty[nearest]
            lower, upper = self.interval.apply(prediction.astype(np.float64), s, di64)
        elif isinstance(self.interval, QuantileInterval):  # CQR: the model's own conditional quantiles
            from sinks.learn.estimators import predict_quantiles

            tails = predict_quantiles(self.metadata["estimator"]["kind"], self.model, X, self.interval.quantiles)
            lower, upper = self.interval.apply(tails[:, 0], tails[:, 1])
            # separate models: a point prediction outside its quantiles' interval widens it to there
            lower, upper = np.minimum(lower, prediction), np.maximum(upper, prediction)
            di64 = self.aoa.dissimilarity(X, workers=workers)
        else:
            di64 = self.aoa.dissimilarity(X, workers=workers)
            lower, upper = self.interval.apply(prediction)
        di = di64.astype(np.float32)
        out = {"prediction": prediction, "lower": np.asarray(lower, dtype=np.float32),
               "upper": np.asarray(upper, dtype=np.float32), "di": di,
               "aoa": (di <= self.aoa.threshold).astype(np.float32)}
        if self.error_profile is not None:
            out["error"] = self.error_profile(di64).astype(np.float32)
        return out


def _digest(files: dict[str, str], metadata: dict) -> str:
    body = json.dumps({"files": files, "metadata": metadata}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def save_bundle(folder: str | os.PathLike, *, kind: str, model, metadata: dict, aoa: AOAReference,
                oof: pd.DataFrame, calibration: dict[str, np.ndarray] | None = None,
                distance_xy: tuple[np.ndarray, np.ndarray | None] | None = None,
                tables: dict[str, pd.DataFrame] | None = None) -> Path:
    """Write a bundle folder atomically; returns its path. ``metadata`` gets ids, hashes, versions.

    ``calibration`` (arrays, e.g. ``abs_residual``) is written to ``calibration.npz``; ``tables``
    (``{"tuning.csv": frame}``) as CSV files, checksummed like every other file. ``distance_xy``:
    the plots' and the prediction area's points in metres, for the card's distance figure.
    """
    for name in tables or {}:
        if not name.endswith(".csv") or "/" in name or name in ("oof.csv",):
            raise ValueError(f"bundle table name {name!r} must be a plain NAME.csv other than oof.csv")
    folder = Path(folder)
    with atomic_path(folder, suffix="", folder_kind="bundle") as tmp:
        tmp.mkdir()
        from sinks.learn.estimators import save_model

        save_model(kind, model, tmp)
        aoa.save(tmp / "aoa.npz")
        if calibration:
            np.savez_compressed(tmp / "calibration.npz", **calibration)
        oof.to_csv(tmp / "oof.csv", index=False)
        for name, frame in (tables or {}).items():
            frame.to_csv(tmp / name, index=False)
        from sinks.learn.card_figures import write_card_figures

        plots_m, prediction_m = distance_xy if distance_xy is not None else (None, None)
        figures = write_card_figures(tmp, metadata, oof, prediction_xy=prediction_m, distance_xy=plots_m)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        meta = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
            **metadata,
            "estimator": {**metadata.get("estimator", {}), "kind": kind},
            "files": files,
            "figures": figures.as_dict(),
        }
        meta["bundle_id"] = _digest(files, meta)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        (tmp / "MODEL_CARD.md").write_text(model_card(meta), encoding="utf-8")
    return folder


#: Files :func:`load_bundle` reads besides metadata.json; each must be listed with its checksum.
READ_FILES = ("model.json", "model.skops", "aoa.npz", "calibration.npz")
#: Largest metadata.json read (a bundle's is tens of kB; its per-plot arrays live in the .npz files).
METADATA_MAX_BYTES = 64 * 2**20


def load_bundle(folder: str | os.PathLike, *, predict_only: bool = False) -> Bundle:
    """Load and verify a bundle (every file's sha256 must match its metadata).

    ``predict_only``: the bundle is only asked to predict (maps), so an XGBoost regressor is loaded
    as a :class:`~sinks.learn.xgb_native.NativeBooster` where the library allows (the same
    predictions, without importing the xgboost package and scikit-learn); its ``model`` then has
    ``predict`` and ``n_jobs`` only.
    """
    folder = Path(folder)
    meta_path = folder / "metadata.json"
    if not meta_path.exists():
        raise ModelMismatchError(f"{folder}: not a model bundle (no metadata.json)")
    if meta_path.is_symlink() or not meta_path.is_file() or meta_path.stat().st_size > METADATA_MAX_BYTES:
        raise ModelMismatchError(f"{meta_path}: not a regular metadata file of the bundle's folder (a link, a device "
                                 f"or over {METADATA_MAX_BYTES // 2**20} MiB); the bundle was altered")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelMismatchError(f"{meta_path}: corrupt metadata ({exc})") from exc
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise ModelMismatchError(f"{meta_path}: not a bundle's metadata (no format_version); the file was "
                                 "replaced or corrupted: retrain the bundle with `sinks train`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelMismatchError(f"{folder}: bundle format {meta.get('format_version')} is not {FORMAT_VERSION} "
                                 "(this version of sinks); retrain it with `sinks train`")
    lacking = [key for key, kind in (("bundle_id", str), ("files", dict)) if not isinstance(meta.get(key), kind)]
    if lacking:
        raise ModelMismatchError(f"{meta_path}: not a bundle's metadata (no {' or '.join(lacking)}); the file was "
                                 "replaced or corrupted: retrain the bundle with `sinks train`")
    for name, digest in meta["files"].items():
        path = folder / name
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
            raise ModelMismatchError(f"{meta_path}: bundle file name {name!r} is not a plain file name in the "
                                     "bundle's folder; the metadata was forged or corrupted")
        if not path.exists():
            raise ModelMismatchError(f"{folder}: bundle file {name} is missing")
        if not path.is_file() or (path.is_symlink() and path.resolve().parent != folder.resolve()):
            raise ModelMismatchError(f"{path}: bundle file {name} is not a regular file of the bundle's folder "
                                     "(a link out of it, a device or a folder); the bundle was altered")
        if sha256_file(path) != digest:
            raise ModelMismatchError(f"{path}: checksum differs from the bundle's metadata; the bundle was altered or corrupted")
    # every file the loader reads must be listed (and so checked above): a forged metadata that leaves
    # one out would read a link out of the folder, a device or another model unchecked
    unlisted = [name for name in READ_FILES if os.path.lexists(folder / name) and name not in meta["files"]]
    if unlisted or not any(name in meta["files"] for name in ("model.json", "model.skops")):
        raise ModelMismatchError(f"{meta_path}: does not list {', '.join(unlisted) or 'a model file'}, which the "
                                 "bundle is read from; the metadata was forged or corrupted: retrain the bundle")
    stripped = {k: v for k, v in meta.items() if k != "bundle_id"}
    if _digest(meta["files"], stripped) != meta.get("bundle_id"):
        raise ModelMismatchError(f"{meta_path}: metadata was edited after the bundle was made (bundle id mismatch)")
    try:
        record = meta["interval"]
        if record.get("method") == "cqr":
            interval = QuantileInterval(**record)
        elif "method" in record:
            interval = AdaptiveInterval(**record)
        else:
            interval = ConformalInterval(**record)
        profile = ErrorProfile(**meta["error_profile"]) if meta.get("error_profile") else None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ModelMismatchError(f"{meta_path}: the interval or error profile in the metadata is not one this "
                                 f"version of sinks writes ({exc}); retrain the bundle with `sinks train`") from exc
    abs_residual, difficulty, plot_s = None, None, None
    if (folder / "calibration.npz").exists():
        try:
            with np.load(folder / "calibration.npz", allow_pickle=False) as data:
                abs_residual = np.asarray(data["abs_residual"], dtype=np.float64)
                if "s" in data and "di" in data:
                    difficulty = (np.asarray(data["s"], dtype=np.float64), np.asarray(data["di"], dtype=np.float64))
                if "plot_s" in data:
                    plot_s = np.asarray(data["plot_s"], dtype=np.float64)
        except (ValueError, KeyError, OSError, TypeError) as exc:  # object arrays, a missing key, a damaged zip
            raise ModelMismatchError(f"{folder / 'calibration.npz'}: unreadable calibration ({exc}); retrain the "
                                     "bundle with `sinks train`") from exc
    if isinstance(interval, AdaptiveInterval) and plot_s is None:
        raise ModelMismatchError(f"{folder}: calibration.npz lacks the plots' difficulty (plot_s) that its "
                                 f"{interval.method} interval needs; retrain it with `sinks train`")
    try:
        aoa = AOAReference.load(folder / "aoa.npz")
    except (ValueError, KeyError, OSError, TypeError) as exc:  # object arrays, a missing key, a damaged zip
        raise ModelMismatchError(f"{folder / 'aoa.npz'}: unreadable area-of-applicability reference ({exc}); "
                                 "retrain the bundle with `sinks train`") from exc
    if plot_s is not None and len(plot_s) != len(aoa.train):
        raise ModelMismatchError(f"{folder}: calibration.npz has {len(plot_s)} plot difficulties for the "
                                 f"{len(aoa.train)} training plots of aoa.npz; retrain the bundle with `sinks train`")
    kind = meta["estimator"]["kind"]
    model = None
    if predict_only:
        from sinks.learn.xgb_native import native_model

        model = native_model(kind, folder / "model.json")
    if model is None:
        from sinks.learn.estimators import load_model

        model = load_model(kind, folder)
    n_model, n_meta = getattr(model, "n_features_in_", None), len(meta["features"].get("selected")
                                                                   or meta["features"]["names"])
    if n_model is not None and n_model != n_meta:
        raise ModelMismatchError(f"{folder}: its model takes {n_model} features but its metadata names {n_meta}; "
                                 "the model file was swapped: retrain the bundle with `sinks train`")
    return Bundle(folder, meta, model, interval, aoa, abs_residual, profile, difficulty, plot_s)


def _f(value, fmt: str = ".3g") -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, fmt)


def _pct(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def _check_row(name: str, check: dict, used: str | None) -> str:
    """A model-card table row of a held-out interval check: coverage overall, inside and outside
    the AOA (with their n), mean and sd of the width."""
    mark = " (used)" if name == used else ""
    return (f"| {name}{mark} | {_pct(check['coverage'])} | {_pct(check['inside_aoa']['coverage'])} "
            f"(n {check['inside_aoa']['n']}) | {_pct(check['outside_aoa']['coverage'])} "
            f"(n {check['outside_aoa']['n']}) | {_f(check['mean_width'])} | {_f(check['sd_width'])} |")


def _selected_line(meta: dict) -> list[str]:
    features = meta["features"]
    selected = features.get("selected")
    if not selected or list(selected) == list(features["names"]):
        return []
    return [f"- the model uses {len(selected)} of them, chosen by forward selection: {', '.join(selected)} "
            "(maps still compute all the spec's features)"]


def _weights_line(meta: dict) -> list[str]:
    """The card's line on plot weights by measurement variance (empty when the fit was unweighted)."""
    w = meta.get("weights")
    if not w:
        return []
    plain = w.get("unweighted") or {}
    scores = (f"; unweighted, the same CV gave R² {_f(plain['r2'])}, RMSE {_f(plain['rmse'])}"
              if {"r2", "rmse"} <= set(plain) else "")
    return [f"- plots weighted by measurement variance from column `{w['column']}`: {w['method']}, "
            f"τ² = {_f(w['tau2'])} (mean sd² {_f(w['mean_sd2'])}), weights {_f(w['weight_range'][0])}–"
            f"{_f(w['weight_range'][1])}{scores}"]


def _tuning_section(meta: dict) -> list[str]:
    """The model card's "Tuning and feature selection" section (empty without [tuning]/[selection])."""
    tu = meta.get("tuning")
    if not tu:
        return []
    final = tu["final"]
    lines = ["", "## Tuning and feature selection", "",
             f"Nested inside the {tu['scheme']} folds: for each outer fold the choice was made by "
             f"{tu['inner']}, then that model predicted the fold. The {tu['scheme']} row above is these "
             "nested predictions (honest about the tuning), and they calibrate the intervals; the other "
             "schemes were run with the final choice, so they are not nested and optimistic by the tuning. "
             f"Order: {tu['order']}. {tu['fits']} fits in all; every candidate is in `{tu['table']}`."]
    if tu.get("tuning"):
        t = tu["tuning"]
        lines.append(f"Search: {t['search']} over {', '.join(t['params'])} ({tu.get('candidates', '?')} of "
                     f"{t['grid_size']} combinations, budget {t['budget']}), metric {t['metric']}.")
    if tu.get("selection"):
        sel = tu["selection"]
        lines.append(f"Selection: {sel['method']}, min_features {sel['min_features']}"
                     + (f", max_features {sel['max_features']}" if sel.get("max_features") else "")
                     + f", metric {sel['metric']}.")
    lines += ["", "| fold | features | params | inner score | outer score |", "|---|---|---|---|---|"]
    for o in tu["outer"]:
        lines.append(f"| {o['fold']} | {', '.join(o['features'])} | {json.dumps(o['params'])} | "
                     f"{_f(o['inner_score'])} | {_f(o['outer_score'])} |")
    lines.append(f"| final (all folds) | {', '.join(final['features'])} | {json.dumps(final['params'])} | "
                 f"{_f(final['inner_score'])} | – |")
    lines += ["", f"{final['metric']} of the final choice's own (non-nested) CV: {_f(final['inner_score'])}; "
              f"of the nested predictions: {_f(tu.get('nested_score'))}. The gap is the optimism of "
              "reporting the tuned CV score."]
    return lines


def model_card(meta: dict) -> str:
    """A human-readable model card (Markdown) from a bundle's metadata."""
    target, cv = meta["target"], meta["validation"]
    units = target["units"]
    setup = meta.get("validation_setup", {})
    lines = [
        f"# Model card: {meta['recipe']['name']}",
        "",
        f"- bundle id: `{meta['bundle_id']}`, created {meta['created']} with sinks {meta['versions'].get('sinks')}",
        f"- predicts **{target['column']}** ({units or 'units not given'}) as map band `{target['band']}`",
        f"- estimator: {meta['estimator']['kind']} with {json.dumps(meta['estimator'].get('params', {}))}",
        f"- features ({len(meta['features']['names'])}) from spec `{meta['features']['spec']}` "
        f"(fingerprint `{meta['features']['spec_fingerprint'][:12]}`): {', '.join(meta['features']['names'])}",
        f"- trained on {meta['training']['n']} plots (table sha256 `{meta['training']['sha256'][:12]}`); "
        f"{meta['training']['dropped']} dropped for missing values",
        *_selected_line(meta),
        *_weights_line(meta),
        "",
        "## Validation (out-of-fold, pooled over folds)",
        "",
        "W: Wasserstein distance between the scheme's test-to-train nearest-neighbour distances and the "
        "map's prediction-to-plot distances (smaller = the CV resembles the map's situation).",
        "",
        "| scheme | folds | R² | RMSE | rel. RMSE | MAE | bias | W |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in cv.items():
        if name == "spatial" and "scheme" in s and s["scheme"] != "spatial" and s["scheme"] in cv:
            continue  # the alias of the chosen scheme
        mark = " (chosen)" if name == setup.get("scheme") else ""
        if s.get("tuning"):
            mark += " (nested tuning)" if s["tuning"] == "nested" else " (not nested: optimistic)"
        lines.append(f"| {name}{mark} | {s['folds']} | {_f(s['r2'], '.3f')} | {_f(s['rmse'])} | "
                     f"{_f(s.get('rel_rmse'), '.1%')} | {_f(s['mae'])} | {_f(s['bias'])} | {_f(s.get('W'))} |")
    lines.append("")
    if "block_size" in setup and setup.get("block_size") is not None:
        vg = setup.get("variogram") or {}
        lines.append(f"Spatial blocks of {setup['block_size']:g} CRS units ({setup.get('block_size_from', 'recipe')}; "
                     f"{setup.get('n_blocks', '?')} blocks with plots); variogram of the target: "
                     f"{vg.get('model', '–')} model, practical range {_f(vg.get('range'), '.4g')}"
                     + (f" ({vg['note']})" if vg.get("note") else "") + ".")
    if "knndm" in setup:
        kn = setup["knndm"]
        lines.append(f"kNNDM folds: {kn['method']} (q = {kn['q']}, KS p = {_f(kn['ks_pvalue'], '.3f')}), "
                     f"fold sizes {kn['fold_sizes']}.")
    if "prediction_area" in setup:
        pa = setup["prediction_area"]
        lines.append(f"Prediction area: {pa['area']}, {pa['points']} sample points, median distance to the "
                     f"nearest plot {_f(pa.get('median_distance_to_plots'), '.4g')} CRS units.")
    lines.append("Quote the chosen scheme's row for a map.")
    lines += _tuning_section(meta)
    for name, rows in meta.get("validation_folds", {}).items():
        lines += ["", f"### Per fold: {name}", "", "| fold | n | R² | RMSE | rel. RMSE | MAE | bias |",
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['fold']} | {r['n']} | {_f(r['r2'], '.3f')} | {_f(r['rmse'])} | "
                         f"{_f(r['rel_rmse'], '.1%')} | {_f(r['mae'])} | {_f(r['bias'])} |")
    iv = meta["interval"]
    lines += ["", "## Prediction intervals", ""]
    if iv.get("method") == "cqr":
        lines.append(f"{iv['level']:.0%} intervals by conformalised quantile regression (Romano et al. 2019): the "
                     f"model's {', '.join(_f(q) for q in iv['quantiles'])} conditional quantiles widened by "
                     f"q = {_f(iv['q'])} {units}, calibrated on {iv['n_calibration']} {iv['residuals_from']} "
                     "out-of-fold quantile predictions.")
        lines += ["", "The guarantee is marginal (on average over locations exchangeable with the plots), "
                  "not per pixel, and there is none outside the area of applicability.", ""]
    elif "method" in iv:
        desc = {"normalized": "normalised conformal (σ from the DI and the mean |residual| around the nearest plot)",
                "mondrian": "Mondrian conformal by DI bin", "split": "split conformal, one width"}[iv["method"]]
        a, b, c = iv["coef"]
        lines.append(f"{iv['level']:.0%} intervals, {desc}, calibrated on {iv['n_calibration']} "
                     f"{iv['residuals_from']} out-of-fold residuals: half-width = q · σ, q = "
                     f"{', '.join(_f(q) for q in iv['quantiles'])}"
                     + (f" (DI bins split at {', '.join(_f(e) for e in iv['bin_edges'])})" if iv["bin_edges"] else "")
                     + (f", σ = {a:.3g} + {b:.3g}·s + {c:.3g}·DI {units}" if iv["method"] == "normalized" else "")
                     + ".")
        lines += ["", "The guarantee is marginal (on average over locations exchangeable with the plots), "
                  "not per pixel, and there is none outside the area of applicability.", ""]
    else:
        lines.append(f"{iv['level']:.0%} split-conformal intervals, half-width {iv['half_width']:.3g} {units}, "
                     f"calibrated on {iv['n_calibration']} {iv['residuals_from']} out-of-fold residuals.")
    checks = meta.get("interval_check")
    if checks:
        lines += ["Coverage measured on held-out folds only (calibrated on the other K−1 folds):", "",
                  "| method | coverage | inside AOA | outside AOA | mean width | sd width | width–DI ρ |",
                  "|---|---|---|---|---|---|---|"]
        lines += [_check_row(name, ch, iv.get("method")) + f" {_f(ch.get('width_di_spearman'), '.2f')} |"
                  for name, ch in checks.items()]
        lines += ["", "The outside-AOA column is over the few training plots beyond the AOA threshold (few by "
                  "construction, and less unlike the plots than the map's pixels outside the AOA): it is not the "
                  "map's coverage there, where no interval guarantee holds."]
        refit = meta.get("interval_check_refit")
        if refit:
            lines += ["", f"Refit check (`[intervals] check = \"refit\"`, {refit['fits']} fits): for each fold, the "
                      "models, residuals, AOA and calibration behind its interval refitted without it:", "",
                      "| method | coverage | inside AOA | outside AOA | mean width | sd width |", "|---|---|---|---|---|---|"]
            lines += [_check_row(name, ch, iv.get("method")) for name, ch in refit["methods"].items()]
        else:
            lines += ["", "The calibration residuals of this check come from fold models that saw the held-out "
                      "fold, and the AOA's weights from the final model (`[intervals] check = \"refit\"` "
                      "redoes every fit without it; docs/learn.md)."]
        used = checks.get(iv.get("method"))
        if used:
            lines += ["", f"Per fold ({iv['method']}):", "", "| fold | n | coverage | mean width |", "|---|---|---|---|"]
            for r in used["per_fold"]:
                lines.append(f"| {r['fold']} | {r['n']} | {_pct(r['coverage'])} | {_f(r['mean_width'])} |")
            lines += ["", f"By DI quartile of the held-out plots ({iv['method']}):", "",
                      "| DI from | DI to | n | coverage | mean width |", "|---|---|---|---|---|"]
            for r in used["by_di_bin"]:
                lines.append(f"| {_f(r['di_from'])} | {_f(r['di_to'])} | {r['n']} | {_pct(r['coverage'])} | "
                             f"{_f(r['mean_width'])} |")
    lines += [
        "",
        "## Area of applicability",
        "",
        f"Dissimilarity-index threshold {meta['aoa']['threshold']:.3f} (Meyer & Pebesma 2021). Map pixels "
        "with DI above it are outside the area of applicability (band `aoa` = 0): treat their "
        "predictions as extrapolation.",
    ]
    ep = meta.get("error_profile")
    if ep:
        probe = np.quantile(ep["di"], [0, 0.25, 0.5, 0.75, 1]) if ep["di"] else []
        values = np.interp(probe, ep["di"], ep["error"]) if ep["di"] else []
        lines += ["", f"Expected absolute error by DI ({ep['method']}, {ep['scheme']}-CV, {ep['n']} plots): "
                  + ", ".join(f"DI {d:.3g}: {e:.3g} {units}" for d, e in zip(probe, values))
                  + "; held at the last value beyond the largest training DI."]
    figures = (meta.get("figures") or {}).get("markdown")
    if figures:
        lines += ["", *figures]
    return "\n".join(lines) + "\n"
