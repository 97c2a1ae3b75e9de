"""Earth Engine without a network: offline initialization and a numpy interpreter of EE graphs.

:func:`offline_ee` initializes ``earthengine-api`` as its own test suite does (``ee/apitestcase.py``):
the cloud-API resource install, the algorithm list (the wheel's ``ee/tests/algorithms.json``
snapshot) and the data-catalog fetch are patched, so ``ee.Initialize(None, '', project=...)``
needs no credentials; then every call that would reach the server raises :class:`NetworkCall`.

:func:`run_graph` evaluates a serialized graph (``ee.serializer.encode(obj, for_cloud_api=True)``)
over small numpy arrays: an image is an ordered mapping band -> (values, mask), a collection a list
of images, ``Image.load``/``ImageCollection.load`` read from the dictionaries passed in. Only the
per-pixel algorithms the feature-spec compiler emits are implemented (an unknown one raises), with
Earth Engine's semantics: masks propagate through every operation (a result is valid where all its
inputs are), ``divide``/``mod`` by zero give 0, ``updateMask`` keeps a pixel where the mask image
is valid and non-zero, reducers over a collection ignore masked pixels.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict

import numpy as np


class NetworkCall(RuntimeError):
    """Raised by every Earth Engine call that would go to the server in offline tests."""


_PATCHED = ("computeValue", "getMapId", "getDownloadId", "getThumbId", "getTableDownloadId",
            "exportImage", "exportTable", "getAsset", "listImages", "listAssets",
            "getTaskStatus", "getTaskList", "newTaskId", "getInfo", "_execute_cloud_call")


@contextlib.contextmanager
def offline_ee(project: str = "offline-test"):
    """Context manager: ``ee`` initialized offline; any server call raises :class:`NetworkCall`."""
    import ee
    from ee import _state, apitestcase

    saved = {name: getattr(ee.data, name) for name in (*_PATCHED, "_install_cloud_api_resource", "getAlgorithms")}
    saved_stac = ee.deprecation._FetchDataCatalogStac

    def refuse(*args, **kwargs):
        raise NetworkCall("offline test: an Earth Engine server call was made")

    try:
        ee.Reset()
        ee.data._install_cloud_api_resource = lambda: None
        ee.data.getAlgorithms = apitestcase.GetAlgorithms
        ee.deprecation._FetchDataCatalogStac = lambda: {}
        for name in _PATCHED:
            setattr(ee.data, name, refuse)
        ee.Initialize(None, "", project=project)
        yield ee
    finally:
        for name, value in saved.items():
            setattr(ee.data, name, value)
        ee.deprecation._FetchDataCatalogStac = saved_stac
        _state.reset_state()


def encode(obj) -> dict:
    """The cloud-API serialization of an EE object (what the server would receive)."""
    import ee

    return ee.serializer.encode(obj, for_cloud_api=True)


def inline(graph: dict):
    """The serialized graph as one nested tree: every ``valueReference`` replaced by its value."""
    values = graph["values"]

    def expand(node):
        if isinstance(node, dict):
            if set(node) == {"valueReference"}:
                return expand(values[node["valueReference"]])
            if "functionDefinitionValue" in node:
                fdef = node["functionDefinitionValue"]
                return {"functionDefinitionValue": {"argumentNames": fdef["argumentNames"],
                                                    "body": expand(values[fdef["body"]])}}
            return {k: expand(v) for k, v in node.items()}
        if isinstance(node, list):
            return [expand(v) for v in node]
        return node

    return expand(values[graph["result"]])


def function_names(graph: dict) -> list[str]:
    """Every ``functionName`` in a serialized graph, in a depth-first order (repeats kept)."""
    found: list[str] = []
    graph = inline(graph) if "values" in graph and "result" in graph else graph

    def walk(node):
        if isinstance(node, dict):
            if "functionName" in node:
                found.append(node["functionName"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(graph)
    return found


def invocations(graph: dict, name: str) -> list[dict]:
    """The ``arguments`` of every invocation of ``name`` in a serialized graph."""
    found: list[dict] = []
    graph = inline(graph) if "values" in graph and "result" in graph else graph

    def walk(node):
        if isinstance(node, dict):
            if node.get("functionName") == name:
                found.append(node["arguments"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(graph)
    return found


# -- interpreter ------------------------------------------------------------------------------
Image = OrderedDict  # band name -> (values float64 array, mask bool array)


class _Reducer(str):
    pass


class _Scene(OrderedDict):
    """A collection's image, knowing its position (the interpreter's system:index)."""

    position: int


def _image(bands: dict[str, np.ndarray]) -> Image:
    """An interpreter image from arrays (NaN = masked)."""
    return Image((k, (np.nan_to_num(np.asarray(v, dtype=np.float64)), np.isfinite(v))) for k, v in bands.items())


def to_arrays(image: Image) -> dict[str, np.ndarray]:
    """Band -> float array with NaN where masked."""
    return {k: np.where(m, v, np.nan) for k, (v, m) in image.items()}


class Interpreter:
    """Evaluate serialized EE graphs over arrays of one ``shape``."""

    def __init__(self, shape, images: dict | None = None, collections: dict | None = None):
        self.shape = tuple(shape)
        self.images = {k: _image(v) for k, v in (images or {}).items()}
        self.collections = {k: [_image(s) for s in v] for k, v in (collections or {}).items()}
        self.filters: list[dict] = []

    # graph walking
    def run(self, graph: dict):
        self.values = graph["values"]
        self.cache: dict[str, object] = {}
        return self._ref(graph["result"], {})

    def _ref(self, key: str, env: dict):
        if env:
            return self._node(self.values[key], env)
        if key not in self.cache:
            self.cache[key] = self._node(self.values[key], env)
        return self.cache[key]

    def _node(self, node: dict, env: dict):
        if "constantValue" in node:
            return node["constantValue"]
        if "valueReference" in node:
            return self._ref(node["valueReference"], env)
        if "argumentReference" in node:
            return env[node["argumentReference"]]
        if "arrayValue" in node:
            return [self._node(v, env) for v in node["arrayValue"]["values"]]
        if "dictionaryValue" in node:
            return {k: self._node(v, env) for k, v in node["dictionaryValue"]["values"].items()}
        if "functionDefinitionValue" in node:
            fdef = node["functionDefinitionValue"]
            return lambda *args: self._ref(fdef["body"], {**env, **dict(zip(fdef["argumentNames"], args))})
        if "functionInvocationValue" in node:
            call = node["functionInvocationValue"]
            name = call["functionName"]
            if name.startswith("Filter.") or name in ("DateRange", "Feature") or name.startswith("GeometryConstructors."):
                return {"function": name, "arguments": call["arguments"]}
            args = {k: self._node(v, env) for k, v in call["arguments"].items()}
            method = getattr(self, "f_" + name.replace(".", "_"), None)
            if method is None:
                raise NotImplementedError(f"interpreter: no {name}")
            return method(**args)
        raise NotImplementedError(f"interpreter: node {sorted(node)}")

    # helpers
    def _const(self, value) -> Image:
        if isinstance(value, OrderedDict):
            return value
        values = value if isinstance(value, list) else [value]
        names = ["constant"] if len(values) == 1 else [f"constant_{i}" for i in range(len(values))]
        return Image((n, (np.full(self.shape, float(v)), np.ones(self.shape, bool))) for n, v in zip(names, values))

    def _pair(self, a, b, fn) -> Image:
        a, b = self._const(a), self._const(b)
        if len(a) == 1 and len(b) > 1:
            names, pa, pb = list(b), list(a.values()) * len(b), list(b.values())
        elif len(b) == 1:
            names, pa, pb = list(a), list(a.values()), list(b.values()) * len(a)
        elif len(a) == len(b):
            names, pa, pb = list(a), list(a.values()), list(b.values())
        else:
            raise ValueError("band counts differ")
        out = Image()
        with np.errstate(all="ignore"):
            for n, (va, ma), (vb, mb) in zip(names, pa, pb):
                out[n] = (np.asarray(fn(va, vb), dtype=np.float64), ma & mb)
        return out

    def _unary(self, img, fn) -> Image:
        with np.errstate(all="ignore"):
            return Image((n, (np.asarray(fn(v), dtype=np.float64), m)) for n, (v, m) in self._const(img).items())

    # loading, collections
    def f_Image_load(self, id, **_):
        return self.images[id]

    def f_ImageCollection_load(self, id, **_):
        scenes = []
        for position, scene in enumerate(self.collections[id]):
            scene = _Scene(scene)
            scene.position = position  # stands in for system:index: collections given in one order
            scenes.append(scene)
        return scenes

    def f_Image_linkCollection(self, input, imageCollection, linkedBands=None, **_):
        out = Image(input)
        for band in linkedBands:
            out[band] = imageCollection[input.position][band]
        return out

    def f_ImageCollection_merge(self, collection1, collection2):
        return collection1 + collection2

    def f_Collection_filter(self, collection, filter):
        self.filters.append(filter)
        return collection

    def f_Collection_map(self, collection, baseAlgorithm, **_):
        return [baseAlgorithm(img) for img in collection]

    def _reduce(self, collection, fn) -> Image:
        out = Image()
        for n in collection[0]:
            stack = np.stack([np.where(img[n][1], img[n][0], np.nan) for img in collection])
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                value = fn(stack, axis=0)
            out[n] = (np.nan_to_num(value), np.isfinite(value))
        return out

    def f_reduce_median(self, collection):
        return self._reduce(collection, np.nanmedian)

    def f_reduce_mean(self, collection):
        return self._reduce(collection, np.nanmean)

    def f_reduce_min(self, collection):
        return self._reduce(collection, np.nanmin)

    def f_reduce_max(self, collection):
        return self._reduce(collection, np.nanmax)

    def f_Reducer_firstNonNull(self):
        return _Reducer("first")

    def f_ImageCollection_reduce(self, collection, reducer, parallelScale=None):
        if reducer != "first":
            raise NotImplementedError(f"interpreter: ImageCollection.reduce with {reducer}")

        def first(stack, axis):
            index = np.argmax(np.isfinite(stack), axis=axis)
            return np.take_along_axis(stack, index[None], axis=axis)[0]

        return Image((f"{n}_first", v) for n, v in self._reduce(collection, first).items())

    # bands
    def f_Image_constant(self, value):
        return self._const(value)

    def f_Image_select(self, input, bandSelectors, newNames=None):
        names = newNames or bandSelectors
        return Image((new, input[old]) for old, new in zip(bandSelectors, names))

    def f_Image_rename(self, input, names):
        return Image(zip(names, input.values()))

    def f_Image_addBands(self, dstImg, srcImg, names=None, overwrite=False):
        out = Image(dstImg)
        for n, v in srcImg.items():
            out[n] = v
        return out

    def f_Image_toFloat(self, value):
        return value

    def f_Image_toInt64(self, value):
        return self._unary(value, np.trunc)

    def f_Image_resample(self, image, mode=None):
        return image

    def f_Projection(self, crs, transform=None):
        return {"crs": crs, "transform": transform}

    def f_Image_reproject(self, image, crs=None, crsTransform=None, scale=None):
        # the arrays are already on the grid; keep its pixel size for Terrain.* (metres, projected CRS)
        self.pixel_size = (abs(crsTransform[0]), abs(crsTransform[4])) if crsTransform else (scale, scale)
        return image

    # terrain: ee.Terrain.slope / aspect "compute the local gradient using the 4-connected neighbors
    # of each pixel, so missing values will occur around the edges" (Earth Engine API reference);
    # here: central differences of the 4 neighbours, masked unless all 4 are valid. Aspect in degrees
    # clockwise from north, 0=N 90=E (the reference's convention), of the downslope direction.
    def _gradient(self, image):
        (z, m), = self._const(image).values()
        dx, dy = self.pixel_size
        zp = np.pad(np.where(m, z, np.nan), 1, constant_values=np.nan)
        dzdx = (zp[1:-1, 2:] - zp[1:-1, :-2]) / (2 * dx)
        dzdy = (zp[2:, 1:-1] - zp[:-2, 1:-1]) / (2 * dy)  # toward south, as sinks.covariates.terrain
        return dzdx, dzdy, np.isfinite(dzdx) & np.isfinite(dzdy)

    def f_Terrain_slope(self, input):
        dzdx, dzdy, ok = self._gradient(input)
        return Image([("slope", (np.nan_to_num(np.degrees(np.arctan(np.hypot(dzdx, dzdy)))), ok))])

    def f_Terrain_aspect(self, input):
        dzdx, dzdy, ok = self._gradient(input)
        return Image([("aspect", (np.nan_to_num(np.degrees(np.arctan2(-dzdx, dzdy)) % 360.0), ok))])

    def f_Kernel_fixed(self, width, height, weights, x=-1, y=-1, normalize=False):
        w = np.asarray(weights, dtype=np.float64)
        if normalize:
            w = w / w.sum()
        cx = width // 2 if x == -1 else x
        cy = height // 2 if y == -1 else y
        return {"weights": w, "focus": (cy, cx)}

    def f_Image_convolve(self, image, kernel):
        """Weighted sum over the kernel; a pixel is valid where every non-zero-weight input is."""
        w, (cy, cx) = kernel["weights"], kernel["focus"]
        out = Image()
        for n, (v, m) in self._const(image).items():
            h, wd = w.shape
            vp = np.pad(np.where(m, v, np.nan), ((cy, h - cy - 1), (cx, wd - cx - 1)), constant_values=np.nan)
            total = np.zeros(self.shape)
            for i in range(h):
                for j in range(wd):
                    if w[i, j] != 0:
                        total = total + w[i, j] * vp[i:i + self.shape[0], j:j + self.shape[1]]
            out[n] = (np.nan_to_num(total), np.isfinite(total))
        return out

    # masks
    def f_Image_updateMask(self, image, mask):
        mask = self._const(mask)
        masks = list(mask.values()) * (len(image) if len(mask) == 1 else 1)
        return Image((n, (v, m & mm & (mv != 0))) for (n, (v, m)), (mv, mm) in zip(image.items(), masks))

    def f_Image_mask(self, image):
        return Image((n, (m.astype(np.float64), np.ones(self.shape, bool))) for n, (v, m) in image.items())

    def f_Image_unmask(self, input, value=None, sameFootprint=True):
        fill = self._const(0 if value is None else value)
        fills = list(fill.values()) * (len(input) if len(fill) == 1 else 1)
        return Image((n, (np.where(m, v, fv), m | fm)) for (n, (v, m)), (fv, fm) in zip(input.items(), fills))

    def f_Image_reduce(self, image, reducer):
        fn = {"min": np.min, "max": np.max}[reducer]
        vals = np.stack([v for v, _ in image.values()])
        masks = np.stack([m for _, m in image.values()])
        return Image([(reducer, (fn(np.where(masks, vals, np.inf if reducer == "min" else -np.inf), axis=0), masks.any(axis=0)))])

    def f_Reducer_min(self):
        return _Reducer("min")

    def f_Reducer_max(self):
        return _Reducer("max")

    # arithmetic
    def f_Image_add(self, image1, image2):
        return self._pair(image1, image2, np.add)

    def f_Image_subtract(self, image1, image2):
        return self._pair(image1, image2, np.subtract)

    def f_Image_multiply(self, image1, image2):
        return self._pair(image1, image2, np.multiply)

    def f_Image_divide(self, image1, image2):  # EE: x / 0 = 0
        return self._pair(image1, image2, lambda a, b: np.where(b != 0, a / np.where(b != 0, b, 1), 0.0))

    def f_Image_mod(self, image1, image2):
        return self._pair(image1, image2, lambda a, b: np.where(b != 0, np.fmod(a, np.where(b != 0, b, 1)), 0.0))

    def f_Image_pow(self, image1, image2):
        return self._pair(image1, image2, np.power)

    def f_Image_min(self, image1, image2):
        return self._pair(image1, image2, np.minimum)

    def f_Image_max(self, image1, image2):
        return self._pair(image1, image2, np.maximum)

    def f_Image_lt(self, image1, image2):
        return self._pair(image1, image2, np.less)

    def f_Image_lte(self, image1, image2):
        return self._pair(image1, image2, np.less_equal)

    def f_Image_gt(self, image1, image2):
        return self._pair(image1, image2, np.greater)

    def f_Image_gte(self, image1, image2):
        return self._pair(image1, image2, np.greater_equal)

    def f_Image_eq(self, image1, image2):
        return self._pair(image1, image2, np.equal)

    def f_Image_neq(self, image1, image2):
        return self._pair(image1, image2, np.not_equal)

    def f_Image_and(self, image1, image2):
        return self._pair(image1, image2, lambda a, b: (a != 0) & (b != 0))

    def f_Image_or(self, image1, image2):
        return self._pair(image1, image2, lambda a, b: (a != 0) | (b != 0))

    def f_Image_not(self, value):
        return self._unary(value, lambda v: v == 0)

    def f_Image_rightShift(self, image1, image2):
        return self._pair(image1, image2, lambda a, b: np.right_shift(a.astype(np.int64), b.astype(np.int64)))

    def f_Image_bitwiseAnd(self, image1, image2):
        return self._pair(image1, image2, lambda a, b: np.bitwise_and(a.astype(np.int64), b.astype(np.int64)))

    def f_Image_normalizedDifference(self, input, bandNames):
        a, b = Image([("a", input[bandNames[0]])]), Image([("b", input[bandNames[1]])])
        return self.f_Image_rename(self.f_Image_divide(self.f_Image_subtract(a, b), self.f_Image_add(a, b)), ["nd"])

    def f_Image_sqrt(self, value):
        return self._unary(value, np.sqrt)

    def f_Image_log(self, value):
        return self._unary(value, np.log)

    def f_Image_log10(self, value):
        return self._unary(value, np.log10)

    def f_Image_exp(self, value):
        return self._unary(value, np.exp)

    def f_Image_abs(self, value):
        return self._unary(value, np.abs)

    def f_Image_cos(self, value):
        return self._unary(value, np.cos)

    def f_Image_sin(self, value):
        return self._unary(value, np.sin)


def run_graph(obj, shape, *, images=None, collections=None) -> dict[str, np.ndarray]:
    """Evaluate an EE image offline; band -> float array (NaN where masked)."""
    result = Interpreter(shape, images, collections).run(encode(obj))
    return to_arrays(result)
