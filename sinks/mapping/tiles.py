"""The tile function of a map job: one window of covariates in, the map's bands out.

:class:`TileJob` describes a job in plain, picklable values (the bundle's folder, the feature spec
or the covariate stack, the grid, the bands to write, threads per worker), so the same job runs in
this process, in worker processes or on Dask workers: each worker opens its own datasets and loads
its own bundle once (:func:`context`), and :func:`compute_tile` maps one window. It depends on
nothing but the job and the window, so every executor gives the same bands bit for bit.

Two inputs: a feature spec, whose features are computed on each window by the local engine
(:class:`~sinks.covariates.local.LocalEngine`), or a prebuilt covariate stack (``sinks stack``, or
the user's own multi-band raster whose band descriptions are the bundle's feature names), read
window by window (:func:`check_stack` matches its bands and grid against the bundle first).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from rasterio.windows import Window

from sinks.cog import band_scales, nodata_in_dtype, read_window, undeclared_nodata
from sinks.constants import ALL_ZERO_MIN_BANDS
from sinks.errors import InputError, ModelMismatchError
from sinks.pixels import describe_grid


@dataclass(frozen=True)
class TileJob:
    """Everything a worker needs to map one window; plain values only (it is pickled to workers).

    ``bands`` are the output band names in file order; ``keys`` the matching keys of
    :meth:`sinks.bundle.Bundle.predict`'s result (``prediction`` for the target band). ``stack``
    and ``stack_indexes`` (1-based band of each feature) replace ``spec`` when mapping from a stack.
    ``threads`` is the model's thread count in each worker; ``cache_workers`` the number of worker
    processes sharing GDAL's block cache budget (1: tiles run in the main process; see
    :func:`sinks.mapping.executors.limit_gdal_cache`); ``level`` the interval level when it is
    not the bundle's own.
    """

    bundle_path: str
    grid: object
    bands: tuple[str, ...]
    keys: tuple[str, ...]
    spec: object = None
    stack: str | None = None
    stack_indexes: tuple[int, ...] | None = None
    threads: int = 1
    cache_workers: int = 1
    level: float | None = None  # interval level when not the bundle's own (Bundle.at_level)
    key: str = field(default="", compare=False)


class Tile(NamedTuple):
    """One computed window: its index, the bands (float32, NaN = nodata) and pixel counts."""

    index: int
    window: Window
    data: np.ndarray | None
    valid: int
    inside: int  # valid pixels inside the area of applicability; -1 when the aoa was not computed


# ---- per-process context: the bundle, and a pool of open datasets -------------------------------

_LOCK = threading.Lock()
_BUNDLES: dict[str, object] = {}
_READERS: dict[str, list] = {}  # job key -> idle readers (a GDAL handle serves one thread at a time)


def set_threads(model, threads: int) -> None:
    """Give the model ``threads`` threads (XGBoost and scikit-learn estimators with ``n_jobs``)."""
    try:
        if "n_jobs" in model.get_params():
            model.set_params(n_jobs=int(threads))
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - a model without params
        pass


def _name(job: TileJob) -> str:
    return job.key or job.bundle_path


def seed_bundle(job: TileJob, bundle) -> None:
    """Use an already loaded bundle for ``job`` in this process (serial and thread executors)."""
    with _LOCK:
        _BUNDLES[_name(job)] = bundle


def forget(job: TileJob) -> None:
    """Drop this process's cached bundle for ``job`` and close its datasets."""
    with _LOCK:
        _BUNDLES.pop(_name(job), None)
        readers = _READERS.pop(_name(job), [])
    for reader in readers:
        reader.close()


def _bundle(job: TileJob):
    with _LOCK:
        bundle = _BUNDLES.get(_name(job))
        if bundle is None:
            from sinks.bundle import load_bundle

            bundle = load_bundle(job.bundle_path, predict_only=True)
            bundle = _BUNDLES[_name(job)] = bundle.at_level(job.level) if job.level else bundle
            set_threads(bundle.model, job.threads)
            _limit_blas(job.threads)
    return bundle


def _limit_blas(threads: int) -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=int(threads), user_api="blas")
    except Exception:  # noqa: BLE001 - threadpoolctl is optional; the model's own threads are set above
        pass


@contextlib.contextmanager
def _reader(job: TileJob):
    """An open reader of ``job``'s inputs for this call, taken from (and returned to) the pool."""
    with _LOCK:
        idle = _READERS.setdefault(_name(job), [])
        reader = idle.pop() if idle else None
    if reader is None:
        reader = StackReader(job) if job.stack else _SpecReader(job)
    try:
        yield reader
    finally:
        with _LOCK:
            _READERS.setdefault(_name(job), []).append(reader)


class _SpecReader:
    def __init__(self, job: TileJob):
        from sinks.covariates.local import LocalEngine

        self.engine = LocalEngine(job.spec, job.grid)

    def read(self, window: Window) -> np.ndarray:
        return self.engine.compute(window)

    def close(self) -> None:
        self.engine.close()


class StackReader:
    """The bundle's features, in its order, from a covariate stack: float32, NaN where nodata."""

    def __init__(self, job: TileJob):
        import rasterio

        self.ds = rasterio.open(job.stack)
        self.indexes = list(job.stack_indexes)
        self.nodata = [nodata_in_dtype(self.ds.nodatavals[i - 1], self.ds.dtypes[i - 1]) for i in self.indexes]
        self.rescale = [(s, o) if (s, o) != (1.0, 0.0) else None for s, o in band_scales(self.ds, self.indexes)]
        from rasterio.enums import MaskFlags

        flags = [self.ds.mask_flag_enums[i - 1] for i in self.indexes]
        self.masked = any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags)
        # the bands a fill of 0 everywhere is looked for in: categorical ones (class 0, a one-hot
        # reference class) are 0 at real places
        bundle = _bundle(job)
        categorical = set(bundle.metadata.get("features", {}).get("categorical") or ())
        self.continuous = [j for j, name in enumerate(bundle.feature_names) if name not in categorical]

    def read(self, window: Window) -> np.ndarray:
        raw = read_window(self.ds, self.indexes, window)
        with np.errstate(over="ignore"):  # a float64 nodata beyond float32's range: masked just below
            data = raw if raw.dtype == np.float32 else raw.astype(np.float32)
        for i, nodata in enumerate(self.nodata):
            if nodata is not None:
                data[i][raw[i] == nodata] = np.nan
            if self.rescale[i] is not None:
                scale, offset = self.rescale[i]
                data[i] = data[i] * np.float32(scale) + np.float32(offset)
        masks = self.ds.read_masks(self.indexes, window=window) if self.masked else None
        for i, nodata in enumerate(self.nodata):
            found = None if nodata is not None else undeclared_nodata(raw[i] if masks is None else raw[i][masks[i] > 0])
            if found:
                value, count = found
                raise InputError(
                    f"{self.ds.name}: band {self.indexes[i]} ({self.ds.descriptions[self.indexes[i] - 1]}) holds {value:g} at {count} pixel(s) "
                    f"of a window, a common nodata value, but the stack declares no nodata for it; declare it "
                    f"(gdal_edit.py -a_nodata {value:g} {self.ds.name}) and map again")
        if masks is not None:
            data[masks == 0] = np.nan
        if len(self.continuous) >= ALL_ZERO_MIN_BANDS:
            zero = (raw[self.continuous] == 0).all(axis=0) & np.isfinite(data).all(axis=0)
            if zero.any():
                row, col = (int(i[0]) for i in np.nonzero(zero))
                raise InputError(
                    f"{self.ds.name}: {int(zero.sum())} pixel(s) of a window hold 0 in every one of the "
                    f"{len(self.continuous)} continuous feature bands (first at row {window.row_off + row}, column "
                    f"{window.col_off + col}), which is a fill value where there is no data, not a place; "
                    f"declare it (gdal_edit.py -a_nodata 0 {self.ds.name}) or mask those pixels, and map again")
        return data

    def close(self) -> None:
        self.ds.close()


# ---- the tile function ------------------------------------------------------------------------

def predict_rows(bundle, X: np.ndarray, keys) -> dict[str, np.ndarray]:
    """The requested ``keys`` of the bundle's prediction for rows ``X``: the target alone from the
    model (:meth:`~sinks.bundle.Bundle.predict_target`, no interval or DI work), else every band
    (:meth:`~sinks.bundle.Bundle.predict`)."""
    if tuple(keys) == ("prediction",):
        return {"prediction": bundle.predict_target(X)}
    return bundle.predict(X)


def compute_tile(job: TileJob, index: int, window: Window) -> Tile:
    """Map one window of ``job``: the output bands, ``(len(job.bands), h, w)`` float32, NaN where
    any feature is nodata (the model is not asked to guess from a partial view)."""
    bundle = _bundle(job)
    with _reader(job) as reader:
        features = reader.read(window)
    n, h, w = features.shape
    flat = features.reshape(n, -1)
    valid = np.isfinite(flat).all(axis=0)
    out = np.full((len(job.bands), h * w), np.nan, dtype=np.float32)
    n_valid = int(valid.sum())
    inside = -1
    if n_valid:
        X = np.ascontiguousarray(flat[:, valid].T)
        result = predict_rows(bundle, X, job.keys)
        for i, key in enumerate(job.keys):
            out[i, valid] = result[key]
        if "aoa" in result:
            inside = int(np.count_nonzero(np.asarray(result["aoa"]) == 1))
    elif tuple(job.keys) != ("prediction",):
        inside = 0
    return Tile(index, window, out.reshape(-1, h, w), n_valid, inside)


# ---- checking a covariate stack against a bundle --------------------------------------------------

def check_stack(path: str | os.PathLike, bundle, *, grid=None) -> tuple[tuple[int, ...], object]:
    """Match a covariate stack's bands to ``bundle``'s features; returns (1-based band index of
    each feature, the stack's grid).

    Refused with :class:`~sinks.errors.ModelMismatchError`, naming the bands: unnamed bands, missing,
    extra or duplicated feature names (with a did-you-mean for a near miss), a stack built from a
    spec other than the bundle's (its ``sinks_spec_fingerprint`` tag), a CRS other than the
    bundle's training grid, and a grid other than ``grid`` (the spec's, when one is given).
    """
    import difflib

    import rasterio
    from pyproj import CRS
    from rasterio.errors import RasterioIOError

    from sinks.covariates.local import TargetGrid

    path = str(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: stack not found")
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"{path}: cannot open stack raster ({exc})") from exc
    with ds:
        names = list(ds.descriptions)
        tags = ds.tags()
        features = bundle.feature_names
        unnamed = [i for i, d in enumerate(names, start=1) if not d]
        if unnamed:
            raise ModelMismatchError(
                f"{path}: band(s) {', '.join(map(str, unnamed))} have no description; name each band as "
                f"the bundle's features ({', '.join(features)}), e.g. with 'sinks stack' or gdal_edit.py -mo")
        dupes = sorted({d for d in names if names.count(d) > 1})
        if dupes:
            raise ModelMismatchError(f"{path}: band name(s) {', '.join(dupes)} appear more than once")
        missing = [f for f in features if f not in names]
        extra = [d for d in names if d not in features]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing band(s) {', '.join(missing)}")
            if extra:
                hints = []
                for d in extra:
                    close = difflib.get_close_matches(d, missing, n=1, cutoff=0.6) or [
                        f for f in missing if f.lower() == d.lower()]
                    shown = repr(d) if d != d.strip() else d  # a stray space shows
                    hints.append(f"{shown} (did you mean {close[0]!r}?)" if close else shown)
                parts.append(f"extra band(s) {', '.join(hints)}")
            raise ModelMismatchError(
                f"{path}: the stack's bands do not match bundle {bundle.bundle_id}: {'; '.join(parts)}; "
                f"the bundle's features are {', '.join(features)}")
        fingerprint = tags.get("sinks_spec_fingerprint")
        if fingerprint and fingerprint != bundle.spec_fingerprint:
            raise ModelMismatchError(
                f"{path}: the stack was built from spec {tags.get('sinks_spec', '?')!r} (fingerprint "
                f"{fingerprint[:12]}), which defines its features differently from the spec bundle "
                f"{bundle.bundle_id} was trained with ({bundle.spec_fingerprint[:12]}); rebuild the stack "
                "with the bundle's spec")
        if ds.crs is None:
            raise InputError(f"{path}: stack has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:32648 {path})")
        t = ds.transform
        if not (t.b == 0 and t.d == 0 and t.a > 0 and t.e < 0):
            raise InputError(f"{path}: stack is not a north-up grid (transform {tuple(t)[:6]}); warp it first")
        stack_grid = TargetGrid(CRS.from_user_input(ds.crs), t, ds.width, ds.height)
        trained_crs = bundle.metadata.get("features", {}).get("grid_crs")
        if trained_crs and CRS.from_user_input(trained_crs) != stack_grid.crs:
            raise ModelMismatchError(
                f"{path}: the stack's CRS {stack_grid.crs.to_string()} is not the CRS the bundle's features "
                f"were computed in ({trained_crs}); rebuild the stack on the spec's grid")
        trained_res = bundle.metadata.get("features", {}).get("grid_resolution")
        if trained_res and not np.allclose((abs(t.a), abs(t.e)), trained_res, rtol=1e-6, atol=0):
            raise ModelMismatchError(
                f"{path}: the stack's pixels are {abs(t.a):g} x {abs(t.e):g}, but the bundle's features were computed "
                f"on {trained_res[0]:g} x {trained_res[1]:g} pixels (slope, indices and footprints change with the "
                "pixel size); rebuild the stack with 'sinks stack' on the bundle's spec")
        if grid is not None and not same_grid(grid, stack_grid):
            raise ModelMismatchError(
                f"{path}: the stack's grid ({describe_grid(stack_grid)}) differs from the spec's grid "
                f"({describe_grid(grid)}); rebuild the stack with 'sinks stack SPEC', or map without the spec")
        return tuple(names.index(f) + 1 for f in features), stack_grid


def same_grid(a, b) -> bool:
    return (a.crs == b.crs and a.width == b.width and a.height == b.height
            and np.allclose(tuple(a.transform)[:6], tuple(b.transform)[:6], rtol=0, atol=1e-6 * abs(a.transform.a)))

