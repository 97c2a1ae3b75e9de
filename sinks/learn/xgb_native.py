"""XGBoost predictions through libxgboost's C API, without importing the ``xgboost`` package.

Importing ``xgboost`` imports scikit-learn, and with it SciPy's statistics, pandas and pyarrow:
1.2-1.6 s and about 150 MiB in every process that does it (measured on this project's 2-core
machine; docs/mapping.md). A map needs none of that, only the trees' predictions, so
:func:`native_model` loads a bundle's ``model.json`` into the same shared library the package
uses (found by the package's own ``libpath.py``) and predicts with the same C function its
``Booster.inplace_predict`` calls (``XGBoosterPredictFromDense``): the predictions are the same
bits (tests/test_xgb_native.py). Where the library cannot be found or loaded, or its version
differs from the installed package's, :func:`native_model` returns None and the caller loads the
model through the package as before.

Only plain regression (kind ``xgboost``) goes this way; quantile models keep the package, whose
``predict_quantiles`` they need.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import json
import threading
from pathlib import Path

import numpy as np

_LOCK = threading.Lock()
_LIB: list = []  # [ctypes.CDLL or None] once looked up


def _find_library() -> str | None:
    """Path of the installed package's shared library, by the package's own ``libpath.py`` (loaded
    as a plain file, so the package's ``__init__`` is not run)."""
    spec = importlib.util.find_spec("xgboost")
    if spec is None or not spec.origin:
        return None
    source = Path(spec.origin).with_name("libpath.py")
    if not source.is_file():
        return None
    loader_spec = importlib.util.spec_from_file_location("_sinks_xgboost_libpath", source)
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    try:
        paths = module.find_lib_path()
    except Exception:  # noqa: BLE001 - XGBoostLibraryNotFound
        return None
    return paths[0] if paths else None


def _library():
    """The loaded libxgboost, or None where it cannot be used (see the module docstring)."""
    with _LOCK:
        if not _LIB:
            _LIB.append(_load())
        return _LIB[0]


def _load():
    try:
        path = _find_library()
        if path is None:
            return None
        lib = ctypes.cdll.LoadLibrary(path)
        major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        lib.XGBoostVersion(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
        package = importlib.metadata.version("xgboost").split("+")[0].split(".")[:3]
        if [int(p) for p in package if p.isdigit()][:3] != [major.value, minor.value, patch.value]:
            return None
        lib.XGBGetLastError.restype = ctypes.c_char_p
        lib.XGBoosterPredictFromDense  # noqa: B018 - the C API this module needs (xgboost >= 1.4)
        return lib
    except (OSError, AttributeError, ValueError, importlib.metadata.PackageNotFoundError):
        return None


class NativeBoosterError(RuntimeError):
    """An error reported by libxgboost."""


def _check(lib, code: int) -> None:
    if code != 0:
        raise NativeBoosterError(lib.XGBGetLastError().decode("utf-8", "replace"))


class NativeBooster:
    """A fitted XGBoost regressor loaded from its JSON model file, predicting through libxgboost.

    ``predict(X)`` gives what ``XGBRegressor.predict(X)`` gives for the same model (float32, one
    value per row; NaN is missing, as the package's default), using ``n_jobs`` threads (None or
    < 1: the library's default, every core). Predicting from several threads at once is safe (as
    the package's ``inplace_predict``); changing ``n_jobs`` meanwhile is not.
    """

    def __init__(self, lib, path: str | Path, n_jobs: int | None = None):
        self._lib = lib
        self._handle = ctypes.c_void_p()
        _check(lib, lib.XGBoosterCreate(None, ctypes.c_uint64(0), ctypes.byref(self._handle)))
        try:
            _check(lib, lib.XGBoosterLoadModel(self._handle, str(path).encode()))
            self._iteration_end = self._best_iteration_end()
        except NativeBoosterError:
            self.close()
            raise
        self.n_jobs = None
        self.set_params(n_jobs=n_jobs)

    def _best_iteration_end(self) -> int:
        """Trees to use: up to ``best_iteration`` when the model kept one (as ``XGBRegressor``)."""
        value, found = ctypes.c_char_p(), ctypes.c_int()
        _check(self._lib, self._lib.XGBoosterGetAttr(self._handle, b"best_iteration", ctypes.byref(value),
                                                     ctypes.byref(found)))
        return int(value.value) + 1 if found.value and value.value else 0

    def get_params(self, deep: bool = True) -> dict:
        return {"n_jobs": self.n_jobs}

    def set_params(self, **params) -> NativeBooster:
        unknown = set(params) - {"n_jobs"}
        if unknown:
            raise ValueError(f"NativeBooster has no parameter(s) {', '.join(sorted(unknown))}")
        n_jobs = params.get("n_jobs")
        threads = int(n_jobs) if n_jobs is not None and int(n_jobs) > 0 else 0  # 0: the library's default
        _check(self._lib, self._lib.XGBoosterSetParam(self._handle, b"nthread", str(threads).encode()))
        self.n_jobs = n_jobs
        return self

    def predict(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float32)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array of features, got shape {X.shape}")
        X = np.ascontiguousarray(X)
        interface = dict(X.__array_interface__)
        config = {"type": 0, "training": False, "iteration_begin": 0, "iteration_end": self._iteration_end,
                  "missing": float("nan"), "strict_shape": False, "cache_id": 0}
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        result = ctypes.POINTER(ctypes.c_float)()
        _check(self._lib, self._lib.XGBoosterPredictFromDense(
            self._handle, json.dumps(interface).encode(), json.dumps(config).encode(), None,
            ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(result)))
        out_shape = tuple(int(shape[i]) for i in range(dims.value))
        size = int(np.prod(out_shape)) if out_shape else 0
        # the library reuses this thread's buffer on its next call: copy now
        values = np.ctypeslib.as_array(result, shape=(size,)).copy() if size else np.zeros(0, np.float32)
        return values.reshape(out_shape) if len(out_shape) > 1 and out_shape[1] > 1 else values.reshape(-1)

    def close(self) -> None:
        if self._handle:
            self._lib.XGBoosterFree(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self):  # pragma: no cover - at interpreter exit the library may be gone
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __reduce__(self):
        raise TypeError("a NativeBooster is not picklable; load the bundle in each process")


def native_model(kind: str, path: str | Path, n_jobs: int | None = None) -> NativeBooster | None:
    """A :class:`NativeBooster` for a bundle's model file when ``kind`` is ``xgboost`` and the
    library is usable; None otherwise (the caller then loads the model through the package)."""
    if kind != "xgboost":
        return None
    lib = _library()
    if lib is None:
        return None
    try:
        return NativeBooster(lib, path, n_jobs)
    except NativeBoosterError:
        return None
