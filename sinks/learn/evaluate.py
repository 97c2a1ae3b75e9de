"""External validation: score a model bundle on plots it was not trained on (``sinks evaluate``).

The table is a feature table from ``sinks extract`` (the bundle's feature columns and its target
column, x/y optional). It is read as training reads its table: the bundle's features must all be
there (else :class:`~sinks.errors.ModelMismatchError` naming the missing columns), a table that
carries another spec's fingerprint (``table.attrs["spec_fingerprint"]``, as ``extract`` sets and
Parquet keeps) is refused the same way, text and infinities are errors that name the rows, the
target must be plausible for the bundle's pool and units, and rows with a missing (empty/NaN)
target or feature are dropped and counted.

Scores, with the same definitions as the bundle's CV metrics (:func:`sinks.learn.cv.score`):
R², RMSE, relative RMSE (RMSE / mean observed), MAE, bias (mean predicted − observed), and the
interval's coverage and mean width at the bundle's level; overall, inside and outside the area of
applicability, and by DI bin (the bins of the bundle's held-out interval check, so the two tables
line up). Coverage here is an honest external check only if the plots were not used in training
and were drawn like the places the map is used for: the plots that are the bundle's training plots
(same ``plot_id`` as its ``oof.csv``, a location within about 1 m of one, or features far closer to
a training plot's than any two distinct training plots come: :data:`NEAR_COPY_SHARE`) are counted in
``training_plots`` (``sinks evaluate`` warns); a repeated ``plot_id`` is refused.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sinks.errors import InputError, ModelMismatchError
from sinks.io import atomic_path, sha256_frame
from sinks.learn.targets import check_extracted_with, check_not_infinite, feature_matrix, observed_target

#: Metric names of one part (overall, inside AOA, ...), in report order.
METRICS = ("n", "r2", "rmse", "rel_rmse", "mae", "bias", "coverage", "mean_width", "sd_width")


def score_predictions(observed, prediction, lower, upper) -> dict:
    """R², RMSE, relative RMSE, MAE, bias, interval coverage and width of paired arrays.

    Values that cannot be computed (no rows; R² of fewer than two or constant observations) are
    ``None``.
    """
    from sinks.learn.cv import score

    y = np.asarray(observed, dtype=float)
    p, lo, hi = (np.asarray(a, dtype=float) for a in (prediction, lower, upper))
    if len(y) == 0:
        return {name: (0 if name == "n" else None) for name in METRICS}
    s = score(y, p, scheme="external")
    width = hi - lo
    out = {"n": int(len(y)), "r2": s.r2, "rmse": s.rmse, "rel_rmse": s.rel_rmse, "mae": s.mae, "bias": s.bias,
           "coverage": float(np.mean((y >= lo) & (y <= hi))), "mean_width": float(width.mean()),
           "sd_width": float(width.std())}
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


@dataclass
class Evaluation:
    """A bundle scored on new plots. ``rows`` holds one row per usable plot."""

    bundle_id: str
    source: str
    target: str
    units: str
    level: float
    n: int
    dropped: int
    dropped_ids: list
    overall: dict
    share_inside_aoa: float | None
    inside_aoa: dict
    outside_aoa: dict
    by_di_bin: list
    aoa_threshold: float
    #: the bundle's own out-of-fold scores of its chosen scheme, for comparison
    cv: dict | None = None
    table_sha256: str = ""
    rows: pd.DataFrame = field(default=None, repr=False)
    #: plots scored that the bundle was trained on (then this is not external validation)
    training_plots: int = 0

    def as_dict(self) -> dict:
        """JSON-ready report (no per-plot rows; NaN as null)."""
        body = {k: getattr(self, k) for k in ("bundle_id", "source", "table_sha256", "target", "units", "level",
                                                "n", "dropped", "dropped_ids", "overall", "share_inside_aoa",
                                                "inside_aoa", "outside_aoa", "by_di_bin", "aoa_threshold", "cv",
                                                "training_plots")}
        return _json_safe(body)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _check_features(bundle, table: pd.DataFrame, source: str) -> list[str]:
    names = bundle.feature_names
    spec = bundle.metadata.get("features", {}).get("spec", "?")
    missing = [c for c in names if c not in table.columns]
    if missing:
        raise ModelMismatchError(
            f"{source}: lacks {len(missing)} of the {len(names)} feature column(s) bundle {bundle.bundle_id} "
            f"was trained on (spec {spec}): {', '.join(missing)}; found {', '.join(map(str, table.columns))}; "
            f"extract the plots with 'sinks extract' and the bundle's feature spec {spec}"
        )
    check_extracted_with(table, bundle.spec_fingerprint, spec, source, f"bundle {bundle.bundle_id}")
    return names


def _bin_edges(bundle, di: np.ndarray, bins: int) -> np.ndarray:
    """Inner DI edges: the bundle's held-out check bins when it has them, else quantiles of ``di``."""
    meta = bundle.metadata
    method = meta.get("interval", {}).get("method")
    check = (meta.get("interval_check") or {}).get(method) or {}
    rows = check.get("by_di_bin") or []
    edges = [r["di_from"] for r in rows if r.get("di_from") is not None]
    if edges:
        return np.asarray(edges, dtype=float)
    if len(di) == 0 or bins <= 1:
        return np.array([])
    return np.unique(np.quantile(di, np.arange(1, bins) / bins))


def evaluate(bundle, table: pd.DataFrame, *, source: str | None = None, di_bins: int = 4) -> Evaluation:
    """Score ``bundle`` (a :class:`~sinks.bundle.Bundle` or its folder) on the plots of ``table``.

    See the module docstring for the checks and the scores. ``source`` names the table in error
    messages (default ``table.attrs["source"]``).
    """
    if isinstance(bundle, (str, os.PathLike)):
        from sinks.bundle import load_bundle

        bundle = load_bundle(bundle)
    source = str(source or table.attrs.get("source") or "feature table")
    names = _check_features(bundle, table, source)
    if len(table) == 0:
        raise InputError(f"{source}: has no rows")
    target = bundle.metadata["target"]
    y, what = observed_target(table, target["column"], target.get("derive"), target.get("from"), source,
                              f"bundle {bundle.bundle_id}")
    check_not_infinite(y, what, source)
    X = feature_matrix(table, names, source)
    meta_target = bundle.metadata["target"]
    finite = np.isfinite(y)
    from sinks.learn.recipe import POOLS
    from sinks.learn.targets import check_target_values, target_quantity

    if meta_target.get("pool"):
        pools = np.full(len(table), meta_target["pool"], dtype=object)
    elif "pool" in table.columns:
        pools = table["pool"].where(table["pool"].isin(POOLS), None).to_numpy(dtype=object)
    else:
        pools = None
    units = meta_target.get("units") or ""
    check_target_values(y[finite], np.flatnonzero(finite), what=what, source=source, units=units,
                        quantity=target_quantity(units, meta_target["column"]),
                        pools=None if pools is None else pools[finite])
    keep = finite & np.isfinite(X).all(axis=1)
    if not keep.any():
        counts = [f"{what.split(' (')[0]} {int((~finite).sum())}"] if (~finite).any() else []
        counts += [f"{c} {int(n)}" for c, n in zip(names, np.isnan(X).sum(axis=0)) if n][:5]
        raise InputError(f"{source}: none of its {len(table)} rows has the target and every feature "
                         f"(missing values per column: {', '.join(counts)})")
    ids = table["plot_id"].to_numpy() if "plot_id" in table.columns else np.arange(len(table))
    if "plot_id" in table.columns:
        repeated = pd.unique(table["plot_id"][table["plot_id"].duplicated()].dropna())
        if len(repeated):
            raise InputError(f"{source}: plot_id repeated: {', '.join(map(str, repeated[:10]))}; score each plot "
                             "once (a repeated plot counts twice in every score)")
    seen = _training_plots(bundle, table)[keep]
    result = bundle.predict(X[keep])
    obs = y[keep]
    pred, lo, hi = (np.asarray(result[k], dtype=float) for k in ("prediction", "lower", "upper"))
    di = np.asarray(result["di"], dtype=float)
    # a training plot's features (to rounding, an Excel round trip): a copy under another id and place;
    # "near" is a tenth of the closest two distinct training plots come to each other
    seen |= di <= max(1e-6, NEAR_COPY_SHARE * bundle.aoa.closest_training_pair_di())
    inside = np.asarray(result["aoa"]) > 0.5
    rows = pd.DataFrame({"plot_id": ids[keep], "observed": obs, "prediction": pred, "lower": lo, "upper": hi,
                         "di": di, "aoa": inside.astype(int), "covered": ((obs >= lo) & (obs <= hi)).astype(int)})
    for c in ("x", "y"):
        if c in table.columns:
            rows.insert(1 + (c == "y"), c, pd.to_numeric(table[c], errors="coerce").to_numpy()[keep])
    if "error" in result:
        rows["expected_error"] = np.asarray(result["error"], dtype=float)

    def part(mask):
        return score_predictions(obs[mask], pred[mask], lo[mask], hi[mask])

    edges = _bin_edges(bundle, di, di_bins)
    which = np.searchsorted(edges, di, side="right")
    by_bin = []
    for b in range(len(edges) + 1):
        p = part(which == b)
        by_bin.append({"di_from": None if b == 0 else float(edges[b - 1]),
                       "di_to": None if b == len(edges) else float(edges[b]),
                       **{k: p[k] for k in ("n", "coverage", "mean_width", "rmse", "bias")}})
    meta = bundle.metadata
    chosen = meta.get("validation_setup", {}).get("scheme") or "spatial"
    cv_scores = (meta.get("validation") or {}).get(chosen)
    cv = None
    if cv_scores:
        cv = {"scheme": chosen, **{k: cv_scores.get(k) for k in ("r2", "rmse", "rel_rmse", "mae", "bias")}}
    interval = getattr(bundle, "interval", None)  # recalibrated (Bundle.at_level) or the bundle's own
    level = float(interval.level if interval is not None else meta["interval"]["level"])
    if cv is not None:
        check = (meta.get("interval_check") or {}).get(meta.get("interval", {}).get("method"))
        if not math.isclose(level, meta["interval"]["level"]):
            check = (meta.get("interval_check_by_level") or {}).get(f"{level:g}")
        if check:
            cv.update(coverage=check.get("coverage"), mean_width=check.get("mean_width"))
    return Evaluation(
        bundle_id=bundle.bundle_id, source=source, target=meta_target["column"], units=units, level=level,
        n=int(keep.sum()), dropped=int((~keep).sum()), dropped_ids=[_json_safe(v) for v in ids[~keep].tolist()],
        overall=part(np.ones(len(obs), dtype=bool)), share_inside_aoa=float(inside.mean()),
        inside_aoa=part(inside), outside_aoa=part(~inside), by_di_bin=by_bin,
        aoa_threshold=float(bundle.aoa.threshold), cv=cv, table_sha256=_table_hash(table), rows=rows,
        training_plots=int(seen.sum()),
    )


#: A plot within this distance of a training plot is taken for it: 1 CRS unit (1 m, or 1 ft) of
#: projected coordinates, 1e-5 degree (about 1 m) of longitude/latitude (a judgement: re-measured
#: plots of a permanent inventory lie within GNSS error of their first position).
SAME_PLOT_DISTANCE = {"projected": 1.0, "degrees": 1e-5}


#: A plot whose DI is below this share of the smallest DI between two distinct training plots is
#: counted as a copy of a training plot (a judgement: no two distinct training plots are that close).
NEAR_COPY_SHARE = 0.1


def _training_plots(bundle, table: pd.DataFrame) -> np.ndarray:
    """Which rows of ``table`` are plots the bundle was trained on (its ``oof.csv``): the same
    ``plot_id``, or a location within :data:`SAME_PLOT_DISTANCE` of one (renamed ids, a plot moved
    by rounding). False everywhere when neither can be told."""
    from scipy.spatial import cKDTree

    path = getattr(bundle, "path", None)
    oof = Path(path) / "oof.csv" if path is not None else None
    seen = np.zeros(len(table), dtype=bool)
    if oof is None or not oof.exists():
        return seen
    trained = pd.read_csv(oof, usecols=lambda c: c in ("plot_id", "x", "y"), dtype={"plot_id": str})  # ids as text
    if "plot_id" in table.columns and "plot_id" in trained.columns:
        seen |= table["plot_id"].astype(str).isin(set(trained["plot_id"].astype(str))).to_numpy()
    if {"x", "y"} <= set(table.columns) and {"x", "y"} <= set(trained.columns) and len(trained):
        xy = np.column_stack([pd.to_numeric(table[c], errors="coerce").to_numpy(float) for c in ("x", "y")])
        ref = trained[["x", "y"]].to_numpy(float)
        degrees = bool((np.abs(ref[:, 0]) <= 180).all() and (np.abs(ref[:, 1]) <= 90).all())
        finite = np.isfinite(xy).all(axis=1)
        if finite.any():
            d, _ = cKDTree(ref).query(xy[finite], k=1)
            seen[np.flatnonzero(finite)] |= d <= SAME_PLOT_DISTANCE["degrees" if degrees else "projected"]
    return seen


def _table_hash(table: pd.DataFrame) -> str:
    try:
        return sha256_frame(table)
    except TypeError:  # a column pandas cannot hash (geometry objects): the report goes without it
        return ""



def write_report(evaluation: Evaluation, path: str | os.PathLike, *, extra: dict | None = None) -> Path:
    """Write the evaluation as JSON, atomically (with versions; ``extra`` adds keys, e.g. paths)."""
    from sinks.bundle import versions

    body = {"kind": "sinks external validation", **evaluation.as_dict(), **(extra or {}), "versions": versions()}
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(body, indent=2, ensure_ascii=False), encoding="utf-8")
    return path
