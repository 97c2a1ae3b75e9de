"""Predict a model bundle wall to wall into a Cloud-Optimized GeoTIFF, tile by tile.

Bands (``bands=``, ``--bands``; default every band the bundle gives): the bundle's target band
(e.g. ``carbon``, Mg C/ha), ``lower`` and ``upper`` (its prediction interval), ``di``
(dissimilarity index), ``aoa`` (1 inside the area of applicability, 0 outside) and ``error`` (when
the bundle has an error profile). A pixel where any feature is nodata is nodata in every band: the
model is not asked to guess from a partial view.

Inputs: a feature spec, whose features are computed window by window, or a prebuilt covariate
stack (``stack=``, ``--stack``) whose band names are the bundle's features. The tile function
(:func:`sinks.mapping.tiles.compute_tile`) runs on an executor (:mod:`sinks.mapping.executors`:
serial, threads, processes, Dask); finished tiles are checkpointed as they come
(:mod:`sinks.mapping.resume`), so memory is bounded by the tile size and a killed job resumes, and
the map is assembled from them into a COG with overviews (several threads) and a STAC Item
(:mod:`sinks.mapping.stac`). The bytes are the same whatever the executor, the number of workers and
the interruptions.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

from sinks.bundle import Bundle, load_bundle
from sinks.covariates.spec import FeatureSpec, load_spec
from sinks.errors import InputError, ModelMismatchError, ResourceError
from sinks.mapping.change import check_map_year, level_percent
from sinks.validate import check_block, did_you_mean

#: Working memory per window pixel of the prediction itself, beyond the features: the flat copy
#: (float32 and the model's float64), five output bands and the DI's distances (an upper bound).
PREDICT_BYTES_PER_PIXEL_FEATURE = 16
PREDICT_BYTES_PER_PIXEL = 64
#: Version of the checkpoint layout; part of the checkpoint key.
CHECKPOINT_FORMAT = 1


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


def available_bands(bundle: Bundle) -> dict[str, str]:
    """``{band name: key of Bundle.predict's result}`` in the default order."""
    keys = bundle.output_keys()
    return {(bundle.band if key == "prediction" else key): key for key in keys}


def parse_bands(bands, available: dict[str, str]) -> list[str]:
    """The bands to write, in the order given (``None``: every available band but ``error``, which
    is written when asked for)."""
    if bands is None:
        return [b for b in available if b != "error"]
    names = [b.strip() for b in (bands.split(",") if isinstance(bands, str) else bands)]
    if not names or any(not n for n in names):
        raise InputError(f"--bands: give band names separated by commas, e.g. {','.join(available)}")
    unknown = [n for n in names if n not in available]
    if unknown:
        hint = " ('error' needs a bundle with an error profile)" if "error" in unknown else \
            did_you_mean(unknown[0].lower(), available) or did_you_mean(unknown[0], available)
        raise InputError(f"--bands: unknown band(s) {', '.join(unknown)}; this bundle gives "
                         f"{', '.join(available)}{hint}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"--bands: band(s) {', '.join(dupes)} named twice")
    return names


def _band_tags(bundle: Bundle) -> dict[str, dict[str, str]]:
    units, level = bundle.units, bundle.interval.level
    return {
        bundle.band: {"units": units, "description": f"predicted {bundle.metadata['target']['column']}"},
        "lower": {"units": units, "description": f"lower bound of the {level_percent(level)} prediction interval"},
        "upper": {"units": units, "description": f"upper bound of the {level_percent(level)} prediction interval"},
        "di": {"units": "1", "description": "dissimilarity index (Meyer & Pebesma 2021)"},
        "aoa": {"units": "1", "description": f"1 = inside the area of applicability (DI <= {bundle.aoa.threshold:.4f})"},
        "error": {"units": units, "description": "expected absolute error at the pixel's DI (error profile)"},
    }


def _check_stack_memory(n_features: int, block: int, n_jobs: int, grid) -> None:
    from sinks.covariates.local import MEMORY_FRACTION, _gib, available_memory

    side = min(block, max(grid.width, grid.height))
    per_pixel = n_features * (4 + 4 + PREDICT_BYTES_PER_PIXEL_FEATURE) + PREDICT_BYTES_PER_PIXEL
    need = per_pixel * side * side * max(1, n_jobs)
    have = available_memory()
    if have is not None and need > MEMORY_FRACTION * have:
        raise ResourceError(
            f"a map window of {block} x {block} pixels{f' with {n_jobs} jobs' if n_jobs > 1 else ''} needs about "
            f"{_gib(need)} of memory, more than {MEMORY_FRACTION:.0%} of the {_gib(have)} available; use a smaller "
            "--block" + (" or fewer --jobs" if n_jobs > 1 else ""))


def predict_map(bundle: Bundle | str | os.PathLike, spec: FeatureSpec | str | os.PathLike | None,
                out: str | os.PathLike, *, stack: str | os.PathLike | None = None, bands=None,
                block: int = 512, n_jobs: int = 1, executor: str | None = None, scheduler=None,
                progress: bool = True, max_pixels: float | None = None, resume: bool = True,
                stac: str | os.PathLike | bool | None = None, level: float | None = None,
                year: float | None = None) -> Path:
    """Write the map of ``bundle`` to ``out`` (a COG, written atomically); returns its path.

    Inputs: ``spec`` (the features computed per window), or ``stack`` (a covariate raster whose
    band descriptions are the bundle's feature names; with a ``spec`` too, its grid must be the
    spec's). ``bands``: names or a comma-separated string (default: every band the bundle gives).
    ``executor``: ``serial``, ``threads``, ``processes`` or ``dask`` (with ``scheduler``, an address
    or a ``distributed.Client``); default serial for ``n_jobs`` = 1, else threads. ``n_jobs``: tiles
    computed at once (workers); the model gets ``cores // n_jobs`` threads in each. ``resume``: keep
    finished tiles of an interrupted run and reuse them (see :mod:`sinks.mapping.resume`). ``stac``:
    where to write the STAC Item (default ``NAME.stac.json`` beside the map; ``False``: none).
    ``level``: the interval level of ``lower``/``upper`` (default the bundle's; another level is
    recalibrated on the bundle's calibration plots, :meth:`~sinks.bundle.Bundle.at_level`).
    ``year``: the year the covariates show, written as the ``sinks_year`` tag, which ``sinks change``
    and ``sinks credit`` check their ``--years`` against.

    Refused before anything is written: a spec that differs from the bundle's, or a stack whose
    bands or grid do not match (:class:`~sinks.errors.ModelMismatchError`), ``block`` not a multiple
    of 16, ``n_jobs`` < 1, unknown bands, a grid above ``max_pixels`` (default
    :data:`sinks.covariates.local.MAX_PIXELS`) or windows needing more memory than is available
    (:class:`~sinks.errors.ResourceError`). A map with no valid pixel (every pixel lacks some feature)
    is an :class:`~sinks.errors.InputError` and leaves no file; a map none of whose valid pixels is
    inside the area of applicability is written with an :class:`AOAWarning`.
    """
    if year is not None:
        year = check_map_year(year)
    from sinks.covariates.local import LocalEngine, check_grid_size, target_grid
    from sinks.mapping import executors as ex
    from sinks.mapping.tiles import TileJob, check_stack, forget, seed_bundle, set_threads
    from sinks.threads import available_cores

    ex.limit_gdal_cache()  # before this process reads any raster (GDAL reads it once)
    block = check_block(block)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise InputError(f"n_jobs must be a positive integer (workers), got {n_jobs!r}")
    executor = executor or ("serial" if n_jobs == 1 else "threads")
    if executor not in ex.EXECUTORS:
        raise InputError(f"unknown executor {executor!r}; choose one of {', '.join(ex.EXECUTORS)}")
    if scheduler is not None and executor != "dask":
        raise InputError("--scheduler is for --executor dask")
    if spec is None and stack is None:
        raise InputError("give a feature spec or a covariate stack (--stack) to map from")
    out = Path(out)
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, predict_only=True)
    if level is not None:
        bundle = bundle.at_level(level)
    grid = None
    if spec is not None:
        spec = spec if isinstance(spec, FeatureSpec) else load_spec(spec)
        check_compatible(bundle, spec)
        grid = target_grid(spec)
    stack_indexes = None
    if stack is not None:
        stack_indexes, grid = check_stack(stack, bundle, grid=grid)
    available = available_bands(bundle)
    names = parse_bands(bands, available)
    band_tags = _band_tags(bundle)
    check_grid_size(_what(spec, stack), grid, n_bands=len(names), max_pixels=max_pixels, what="map",
                    from_spec=stack is None)
    n_feat = len(bundle.feature_names)
    if stack is None:
        with LocalEngine(spec, grid) as probe:
            probe.check_memory(block, n_jobs=n_jobs, what="map",
                               extra_per_pixel=PREDICT_BYTES_PER_PIXEL + PREDICT_BYTES_PER_PIXEL_FEATURE * n_feat)
    else:
        _check_stack_memory(n_feat, block, n_jobs, grid)

    from sinks.cog import FLOAT_NODATA
    from sinks.io import kept_on_stop
    from sinks.mapping.resume import TileStore, file_stamp, job_key

    inputs = [str(stack)] if stack is not None else [p for s in spec.sources for p in s.paths]
    key_parts = {
        "format": CHECKPOINT_FORMAT, "bundle": bundle.bundle_id, "bands": names, "block": block,
        "level": bundle.interval.level,
        "spec": spec.fingerprint() if spec is not None else None,
        "stack": list(stack_indexes) if stack is not None else None,
        "inputs": [file_stamp(p) for p in inputs if os.path.exists(p)],
        "grid": [grid.crs.to_wkt(), list(grid.transform)[:6], grid.width, grid.height],
        "nodata": FLOAT_NODATA, "sinks": bundle.metadata.get("versions", {}).get("sinks"),
    }
    key = job_key(key_parts)
    runner = ex.make_executor(executor, workers=n_jobs, scheduler=scheduler)
    threads = runner.threads_per_worker(available_cores())
    job = TileJob(bundle_path=str(bundle.path), grid=grid, bands=tuple(names),
                  keys=tuple(available[n] for n in names), spec=spec if stack is None else None,
                  stack=str(stack) if stack is not None else None, stack_indexes=stack_indexes,
                  threads=threads, cache_workers=runner.processes,
                  key=key,
                  level=None if level is None else bundle.interval.level)
    if executor in ("serial", "threads"):
        set_threads(bundle.model, threads)
        seed_bundle(job, bundle)
    store = TileStore.for_output(out, key, nodata=FLOAT_NODATA, transform=grid.transform, n_bands=len(names))
    windows = list(enumerate(grid.windows(block)))
    hashes = _Hashes({"bundle_id": bundle.bundle_id,
                      **{f"bundle/{k}": v for k, v in bundle.metadata.get("files", {}).items()}},
                     [*inputs, *([spec.path] if spec is not None and spec.path else [])])
    tags = {"sinks_bundle_id": bundle.bundle_id, "sinks_version": bundle.metadata["versions"].get("sinks"),
            "sinks_recipe": bundle.metadata["recipe"]["name"], "sinks_bands": ",".join(names),
            "sinks_interval_level": bundle.interval.level}
    if year is not None:  # the epoch the covariates show, checked by change and credit against --years
        tags["sinks_year"] = f"{year:g}"
    pool = bundle.metadata["target"].get("pool")
    if pool:  # the stock bound change, zonal and credit hold the map to (MapInfo.stock_max)
        tags["sinks_pool"] = pool
    errors = bundle.metadata.get("error_variogram")  # read back by zonal totals and crediting
    if errors and errors.get("range_m") is not None:
        tags.update(sinks_error_range_m=f"{errors['range_m']:.6g}", sinks_error_nugget=f"{errors['nugget_share']:.6g}")
    elif errors:  # fitted, but a range the plots' spacing cannot resolve (sinks.learn.train.residual_error_model)
        tags["sinks_error_model"] = (f"fully correlated: the residual variogram's fitted range "
                                     f"{errors['practical_range_m']:.3g} m is below its first lag")
    if spec is not None:
        tags.update(sinks_spec=spec.name, sinks_spec_fingerprint=spec.fingerprint())
    else:
        tags.update(sinks_stack=os.path.basename(str(stack)))
    finished = False

    def kept_tiles() -> str | None:
        kept = resume and store.owned and store.count()
        return (f"{kept} of {len(windows)} tiles are finished and kept in {store.folder}: rerun the same command to "
                "resume from them") if kept else None

    with kept_on_stop(kept_tiles):  # a SIGTERM then says the finished tiles are kept
        try:
            done = store.open({"arguments": key_parts, "output": str(out.resolve()), "bands": names}) if resume else {}
            if not resume:
                store.open({"arguments": key_parts})
                for index in store.done():
                    store.path(index).unlink(missing_ok=True)
            counts = _run(runner, job, store, windows, done, progress)
            runner.close()  # idle workers hold memory: gone before the COG step
            ex.release_job(job)  # and this process's readers, with their cached stack blocks
            if counts["valid"] == 0:
                store.remove()
                finished = True
                raise InputError(
                    f"map of bundle {bundle.bundle_id} over {_what(spec, stack)}: no valid pixel in the "
                    f"{grid.width} x {grid.height} grid (every pixel lacks at least one of the features "
                    f"{', '.join(bundle.feature_names)}); check the sources' nodata and valid masks and that "
                    "they overlap each other")
            _assemble(store, out, grid=grid, windows=windows, names=names, band_tags=band_tags, tags=tags,
                      block=block, bundle=bundle, hashes=hashes, stac=stac,
                      parameters={"bands": names, "block": block, "input": "stack" if stack is not None else "spec",
                                  "executor": executor, "workers": n_jobs,
                                  "interval_level": bundle.interval.level})
            store.remove()
            finished = True
        except BaseException as exc:
            note = kept_tiles()
            if note:
                exc.add_note(note)
            raise
        finally:
            if not finished:
                (store.release if resume and store.count() else store.remove)()
            runner.close()
            forget(job)
            hashes.cancel()
    if counts["aoa_known"] and counts["inside"] == 0:
        warnings.warn(
            f"none of the {counts['valid']:,} valid pixels of {out} is inside the area of applicability of "
            f"bundle {bundle.bundle_id} (DI > {bundle.aoa.threshold:.3g} everywhere): the covariates are "
            "unlike the training plots, so the predictions are extrapolations", AOAWarning, stacklevel=2)
    return out


def _what(spec, stack) -> str:
    return f"spec {spec.name!r}" if stack is None else f"stack {stack}"


def _run(runner, job, store, windows, done, progress) -> dict:
    from tqdm.auto import tqdm

    counts = {"valid": 0, "inside": 0, "aoa_known": True}

    def add(valid: int, inside: int) -> None:
        counts["valid"] += valid
        if inside < 0:
            counts["aoa_known"] = False
        else:
            counts["inside"] += inside

    todo = [(i, w) for i, w in windows if i not in done]
    pixels = {i: int(w.width * w.height) for i, w in windows}
    for index, (valid, inside) in done.items():
        add(valid, inside)
    total = sum(pixels.values())
    with tqdm(total=total, initial=total - sum(pixels[i] for i, _ in todo), unit="px", unit_scale=True,
              desc="map", disable=not progress, smoothing=0.1) as bar:
        n_done = len(done)
        bar.set_postfix_str(f"{n_done}/{len(windows)} tiles", refresh=False)
        for tile in runner.tiles(job, todo, store if runner.writes_on_workers else None):
            if tile.data is not None:
                store.write(tile)
            add(tile.valid, tile.inside)
            n_done += 1
            bar.set_postfix_str(f"{n_done}/{len(windows)} tiles", refresh=False)
            bar.update(pixels[tile.index])
    return counts


def _assemble(store, out: Path, *, grid, windows, names, band_tags, tags, block, bundle, hashes, stac,
              parameters) -> None:
    """The tiles -> one COG at ``out`` (and its STAC Item), both renamed into place at the end."""
    from sinks.cog import FLOAT_NODATA, to_cog
    from sinks.io import atomic_path
    from sinks.mapping.stac import map_item, stac_path, write_item

    vrt = store.write_vrt(store.folder / "map.vrt", grid=grid, windows=windows, band_names=names,
                          band_tags={n: band_tags[n] for n in names}, tags=tags,
                          units={n: band_tags[n]["units"] for n in names})
    item_path = None if stac is False else Path(stac) if stac not in (None, True) else stac_path(out)
    with contextlib.ExitStack() as stack:
        item_tmp = stack.enter_context(atomic_path(item_path)) if item_path is not None else None
        with atomic_path(out) as tmp:
            to_cog(vrt, tmp, blocksize=block)
            if item_tmp is not None:
                bands = [{"name": n, "unit": band_tags[n]["units"], "description": band_tags[n]["description"]}
                         for n in names]
                item = map_item(tmp, grid=grid, bands=bands, bundle=bundle, inputs=hashes.result(),
                                parameters=parameters, nodata=FLOAT_NODATA, href=_relative_href(out, item_path))
                item["id"] = f"{out.stem}-{bundle.bundle_id}"
                write_item(item, item_tmp)


def _relative_href(target: Path, item_path: Path) -> str:
    """``target`` as a STAC href relative to the item's folder (``./map.tif`` beside it)."""
    rel = os.path.relpath(Path(target).resolve(), Path(item_path).resolve().parent)
    return Path(rel).as_posix() if rel.startswith("..") else f"./{Path(rel).as_posix()}"


class _Hashes:
    """sha256 of the input files, computed in a background thread while the map runs."""

    def __init__(self, bundle_files: dict, paths):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sinks-hash")
        self._base = bundle_files
        self._future = self._pool.submit(self._hash, [str(p) for p in paths])

    @staticmethod
    def _hash(paths) -> dict[str, str]:
        from sinks.io import sha256_file

        return {os.path.abspath(p): sha256_file(p) for p in dict.fromkeys(paths) if os.path.isfile(p)}

    def result(self) -> dict[str, str]:
        return {**self._base, **self._future.result()}

    def cancel(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
