"""Matched controls: a dynamic baseline from pixels outside the project (VM0047-style).

Project pixels are the pixels whose centres fall in the eligible parcels; the control pool is every
pixel that no parcel touches, with data in both epochs, inside the AOA and with every covariate.
Balance compares the whole project (matched or not) with the matched controls, so project pixels
left unmatched by the caliper count against it.
Each project pixel is matched to its nearest control (Euclidean distance of the standardised
covariates and starting stock, each standardised by the pooled sd of project and pool) without
replacement, within a caliper on every covariate (``caliper`` pooled sds). The balance table gives
the standardised mean difference of each covariate, SMD = (mean_project − mean_controls) /
sqrt((var_project + var_controls) / 2), before and after matching; balance passes when every |SMD|
after matching is at most ``smd_threshold`` (0.25, the threshold the VM0047 area-based approach uses
for its control plots; unchecked against the methodology's text). The baseline rate is the matched
controls' mean sink (t CO2e/ha/yr), floored at 0 (a declining control never raises the credits). A
failing balance is reported and its baseline not used: the parcels are then not credited.
"""

from __future__ import annotations

import math

import numpy as np

from sinks.errors import InputError

#: Caliper in pooled sds of each covariate: sinks' default, after the 0.25-sd caliper common in
#: matching practice (Rosenbaum & Rubin 1985, The American Statistician 39:33-38, as recalled: there
#: on the propensity score's logit, not per covariate; unchecked). --caliper changes it (a departure).
CALIPER = 0.25
SMD_THRESHOLD = 0.25
#: Largest grid (pixels) read whole for matching.
MAX_PIXELS = 50_000_000
#: Control pixels the correlated error of their mean is computed on at most (O(n^2) pairs).
ERROR_SAMPLE = 4000


def _smd(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0 or b.size == 0:
        return math.nan
    pooled = math.sqrt((a.var(ddof=1 if a.size > 1 else 0) + b.var(ddof=1 if b.size > 1 else 0)) / 2)
    diff = float(a.mean() - b.mean())
    return 0.0 if pooled == 0 and diff == 0 else (diff / pooled if pooled > 0 else math.inf)


def _mean_error_sd(x: np.ndarray, y: np.ndarray, sd: np.ndarray, model, seed: int = 0) -> float:
    """sd of the mean map error of pixels at (x, y) with error sds ``sd``, under the error ``model``
    (:class:`sinks.mapping.zonal.ErrorModel`; fully correlated without a range). Above
    :data:`ERROR_SAMPLE` pixels a seeded random subset stands for them, which overstates the
    uncorrelated part (conservative)."""
    from sinks.mapping.zonal import ErrorModel, correlated_variance

    model = model or ErrorModel(None)
    if len(sd) > ERROR_SAMPLE and model.range_m not in (None, 0):
        pick = np.random.default_rng(seed).choice(len(sd), ERROR_SAMPLE, replace=False)
        x, y, sd = x[pick], y[pick], sd[pick]
    return math.sqrt(max(correlated_variance(x, y, sd / len(sd), model), 0.0))


def forest_history_share(path, until_year: float, *, crs, transform, width: int, height: int) -> np.ndarray | None:
    """Share of the years up to ``until_year`` each pixel of the maps' grid was forest (value 1).

    ``path``: a forest / non-forest history raster with one band per year, named by the year in its
    band descriptions (as the eligibility layer ``forest_history``; 1 forest, 0 non-forest, other
    values or nodata unknown), read onto the maps' grid by nearest neighbour (rasterio WarpedVRT).
    NaN where no year is known; None when no band is a year up to ``until_year``.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    with rasterio.open(path) as src:
        bands = [i for i, d in enumerate(src.descriptions, start=1)
                 if d and d.strip().isdigit() and int(d) <= until_year]
        if not bands:
            return None
        with WarpedVRT(src, crs=crs, transform=transform, width=width, height=height,
                       resampling=Resampling.nearest) as vrt:
            values = vrt.read(bands)
    known = (values == 0) | (values == 1)
    count = known.sum(axis=0)
    forest = (values == 1).sum(axis=0)
    return np.where(count > 0, forest / np.maximum(count, 1), np.nan)


def match_controls(sink_path, carbon1_path, covariates_path, project_geoms, all_geoms, *, caliper: float = CALIPER,
                   smd_threshold: float = SMD_THRESHOLD, seed: int = 0, error_model=None,
                   history_path=None, history_until: float | None = None) -> dict:
    """Match project pixels to control pixels; returns the balance table and the baseline rate.

    ``sink_path``: the stock-change map (bands sink, lower, upper, aoa); ``carbon1_path``: the first
    epoch's carbon map (the starting stock); ``covariates_path``: a raster on the same grid whose
    bands are the covariates (named by their descriptions); geometries in the maps' CRS.
    ``error_model``: the spatial correlation of the map's errors (as for the parcels' totals), used
    for the uncertainty of the controls' mean sink; None (or a geographic CRS): fully correlated.
    ``history_path``: the forest-history layer; its share of forest years up to ``history_until``
    (:func:`forest_history_share`) is then matched on too (land history, as VM0047 asks).
    """
    import rasterio
    from rasterio.features import geometry_mask
    from scipy.spatial import cKDTree

    if not (0 < caliper <= 10):
        raise InputError(f"--caliper must be in (0, 10] pooled standard deviations, got {caliper!r}")
    with rasterio.open(sink_path) as sk, rasterio.open(carbon1_path) as c1, rasterio.open(covariates_path) as cv:
        if cv.crs != sk.crs or cv.transform != sk.transform or (cv.width, cv.height) != (sk.width, sk.height):
            raise InputError(f"{covariates_path}: the control covariates are not on the maps' grid ({cv.crs} "
                             f"{cv.width}x{cv.height} vs {sk.crs} {sk.width}x{sk.height}); stack them on the maps' grid")
        if sk.width * sk.height > MAX_PIXELS:
            raise InputError(f"matched controls read the maps whole; {sk.width}x{sk.height} pixels is above "
                             f"{MAX_PIXELS:.0e}: crop the maps around the project")
        from rasterio.windows import Window

        from sinks.mapping.change import SINK_BANDS, read_bands, read_map_info
        from sinks.stats import sd_from_interval

        info, start_info = read_map_info(sink_path), read_map_info(carbon1_path)
        info.require(SINK_BANDS)
        start_info.require(["carbon"])
        whole = Window(0, 0, sk.width, sk.height)
        sink, lower, upper, aoa = read_bands(sk, [info.bands[b] for b in SINK_BANDS], whole, sk.nodata,
                                             sink_max=info.sink_max(), interval=(0, 1, 2), aoa=3)
        sink_sd = sd_from_interval(sink, lower, upper, info.level("lower"))
        start = read_bands(c1, [start_info.bands["carbon"]], whole, c1.nodata, stock=0,
                           stock_max=start_info.stock_max())[0]
        cov = cv.read().astype(float)
        if cv.nodata is not None:
            cov[cov == cv.nodata] = np.nan
        names = [d or f"band_{i}" for i, d in enumerate(cv.descriptions, start=1)]
        shape, transform = (sk.height, sk.width), sk.transform
        geographic = bool(sk.crs and sk.crs.is_geographic)
        sk_crs = sk.crs
    features = np.concatenate([cov, start[None]])
    names = [*names, "starting_stock"]
    if history_path is not None and history_until is not None:
        share = forest_history_share(history_path, history_until, crs=sk_crs, transform=transform,
                                     width=shape[1], height=shape[0])
        if share is not None:
            features = np.concatenate([features, share[None]])
            names = [*names, "forest_history_share"]
    valid = np.isfinite(sink) & np.isfinite(features).all(axis=0)
    project = ~geometry_mask(list(project_geoms), out_shape=shape, transform=transform) & valid
    touched = ~geometry_mask(list(all_geoms), out_shape=shape, transform=transform, all_touched=True)
    pool = valid & ~touched & (aoa == 1)
    xp, xc = features[:, project].T, features[:, pool].T
    out = {"covariates": names, "caliper_sd": caliper, "smd_threshold": smd_threshold,
           "project_pixels": int(project.sum()), "pool_pixels": int(pool.sum()), "method":
           "nearest neighbour on standardised covariates + starting stock (+ the share of forest years in the "
           "land history), without replacement, within a caliper on each covariate"}
    if xp.shape[0] == 0 or xc.shape[0] == 0:
        out.update(matched=0, balance=[], passed=False, baseline_tco2e_ha_yr=None,
                   reason="no project pixel or no control pixel with data")
        return out
    both = np.vstack([xp, xc])
    sd = both.std(axis=0)
    sd[sd == 0] = 1.0
    zp, zc = (xp - both.mean(axis=0)) / sd, (xc - both.mean(axis=0)) / sd
    tree = cKDTree(zc)
    k = min(zc.shape[0], 20)
    dist, idx = tree.query(zp, k=k)
    dist, idx = dist.reshape(len(zp), -1), idx.reshape(len(zp), -1)
    order = np.random.default_rng(seed).permutation(len(zp))
    order = order[np.argsort(dist[order, 0], kind="stable")]  # closest first, ties in random order
    used = np.zeros(len(zc), bool)
    pairs = []
    for i in order:
        for d, j in zip(dist[i], idx[i]):
            if j >= len(zc) or used[j]:
                continue
            if np.all(np.abs(zp[i] - zc[j]) <= caliper):
                used[j] = True
                pairs.append((i, j))
            break  # nearest unused only; beyond the caliper the pixel stays unmatched
    ci = np.array([c for _, c in pairs], dtype=int)
    balance = []
    for f, name in enumerate(names):
        before = _smd(xp[:, f], xc[:, f])
        after = _smd(xp[:, f], xc[ci, f]) if len(pairs) else math.nan  # the whole project vs its controls
        balance.append({"covariate": name, "mean_project": float(xp[:, f].mean()),
                        "mean_controls": float(xc[ci, f].mean()) if len(pairs) else None,
                        "smd_before": before, "smd_after": after,
                        "passed": bool(math.isfinite(after) and abs(after) <= smd_threshold)})
    matched_share = len(pairs) / len(zp)
    passed = bool(len(pairs) and all(b["passed"] for b in balance))
    control_sink = sink[pool][ci] if len(pairs) else np.array([])
    rate = float(control_sink.mean()) if len(pairs) else None
    rate_sd = None
    if len(pairs):
        # the controls' mean sink is uncertain twice over: the map's error in those pixels (correlated
        # by the error model; fully correlated without one: the mean of their sd, conservative), and
        # the sampling of the controls (sd / sqrt(n), pixels as independent draws); in quadrature
        rows, cols = np.nonzero(pool)
        cx, cy = transform @ (cols[ci] + 0.5, rows[ci] + 0.5)
        model = error_model if (error_model is not None and not geographic) else None
        map_sd = _mean_error_sd(np.asarray(cx), np.asarray(cy), sink_sd[pool][ci], model, seed)
        sampling_se = float(control_sink.std(ddof=1) / math.sqrt(len(pairs))) if len(pairs) > 1 else 0.0
        rate_sd = math.hypot(map_sd, sampling_se)
    out.update(matched=len(pairs), matched_share=matched_share, balance=balance, passed=passed,
               control_rate_tco2e_ha_yr=rate,
               baseline_tco2e_ha_yr=max(rate, 0.0) if (passed and rate is not None) else None,
               baseline_sd_tco2e_ha_yr=rate_sd if (passed and rate is not None) else None,
               baseline_sd_method="hypot(sd of the controls' mean map error (" + (
                   (error_model.describe() if error_model is not None and not geographic else
                    "fully correlated: the mean of their per-pixel sink sd")) + "), sd of the controls' sinks / "
                   "sqrt(matched))",
               reason=("balance passed: every |SMD| <= %g" % smd_threshold) if passed else
               ("balance failed: " + ", ".join(f"{b['covariate']} SMD {b['smd_after']:.2f}" for b in balance
                                               if not b["passed"]) if len(pairs) else "no project pixel matched"))
    return out
