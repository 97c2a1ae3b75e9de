"""Figures of a model card, as PNG beside ``MODEL_CARD.md``, and of an external validation.

:func:`write_card_figures` draws, from a bundle's metadata and its ``oof.csv`` table:

``obs_vs_pred.png``     observed against out-of-fold predicted, one panel per CV scheme
``residual_map.png``    the out-of-fold residuals of the chosen scheme at the plots (x/y)
``geodist.png``         nearest-neighbour distance distributions as CAST's ``geodist`` draws them:
                        sample-to-sample, prediction-to-sample and CV test-to-train per scheme
                        (density and ECDF)
``di_histogram.png``    the training plots' cross-validation DI, with the AOA threshold
``coverage_by_di.png``  held-out interval coverage and mean width by DI bin, per interval method

matplotlib is the optional extra ``sinks[plot]``. Without it no figure is drawn and the Markdown
says so; a figure that cannot be drawn from the data given is left out with a note. Drawing never
raises, so a bundle is always written. Figures are drawn on :class:`matplotlib.figure.Figure`
objects rendered by Agg (no pyplot, no global backend switch) at 100 dpi, with no timestamp or
software tag in the PNG, so the same inputs give the same bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

DPI = 100
#: Scatter plots draw at most this many plots (a seeded random subsample above it).
MAX_POINTS = 20000
NO_MATPLOTLIB = ("Figures were not drawn: matplotlib is not installed "
                 "(install the plot extra: `pip install 'sinks[plot]'`).")

COLOURS = {"sample-to-sample": "#7f7f7f", "prediction-to-sample": "#d62728"}
SCHEME_COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


@dataclass
class CardFigures:
    """What :func:`write_card_figures` wrote: file names (in the folder), Markdown lines, notes."""

    files: list = field(default_factory=list)
    markdown: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(width: float, height: float, **kwargs):
    """A matplotlib Figure (no pyplot): rendered by Agg when saved as PNG."""
    from matplotlib.figure import Figure

    kwargs.setdefault("layout", "constrained")
    return Figure(figsize=(width, height), dpi=DPI, **kwargs)


def save_png(fig, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG at :data:`DPI`, without metadata that changes from run to run, atomically
    (a figure that fails leaves no half file and never replaces an existing one)."""
    from sinks.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    return Path(path)


def _subsample(n: int, limit: int = MAX_POINTS) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, limit, replace=False))


def _fmt(value, spec: str = ".3g") -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def _units(metadata: dict) -> str:
    return (metadata.get("target") or {}).get("units") or ""


def _schemes(metadata: dict, oof: pd.DataFrame) -> list[str]:
    setup = metadata.get("validation_setup") or {}
    listed = [s for s in setup.get("schemes") or [] if f"oof_{s}" in oof.columns]
    if listed:
        return listed
    return [s for s in ("random", "spatial") if f"oof_{s}" in oof.columns]


def _chosen(metadata: dict, oof: pd.DataFrame) -> str:
    chosen = (metadata.get("validation_setup") or {}).get("scheme")
    return chosen if chosen and f"oof_{chosen}" in oof.columns else "spatial"


# ---- the figures ----------------------------------------------------------------------------------


def draw_observed_predicted(metadata: dict, oof: pd.DataFrame):
    schemes = _schemes(metadata, oof)
    if not schemes:
        raise ValueError("oof.csv has no out-of-fold prediction columns (oof_SCHEME)")
    chosen = _chosen(metadata, oof)
    units = _units(metadata)
    rows = _subsample(len(oof))
    obs = oof["observed"].to_numpy(float)
    values = np.concatenate([obs] + [oof[f"oof_{s}"].to_numpy(float) for s in schemes])
    lo, hi = np.nanmin(values), np.nanmax(values)
    pad = 0.03 * (hi - lo or 1.0)
    fig = new_figure(3.0 * len(schemes), 3.9)
    axes = fig.subplots(1, len(schemes), sharex=True, sharey=True, squeeze=False)[0]
    validation = metadata.get("validation") or {}
    for ax, scheme, colour in zip(axes, schemes, SCHEME_COLOURS * 3):
        pred = oof[f"oof_{scheme}"].to_numpy(float)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=1, zorder=1)
        ax.scatter(obs[rows], pred[rows], s=8, alpha=0.6, color=colour, edgecolors="none", zorder=2)
        s = validation.get(scheme) or {}
        mark = " (chosen)" if scheme == chosen else ""
        ax.set_title(f"{scheme} CV{mark}\nR² {_fmt(s.get('r2'), '.3f')}, RMSE {_fmt(s.get('rmse'))}", fontsize=9)
        ax.set_xlabel(f"observed ({units})" if units else "observed", fontsize=8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("predicted out of fold", fontsize=8)
    return fig


def draw_residual_map(metadata: dict, oof: pd.DataFrame, xy=None):
    chosen = _chosen(metadata, oof)
    if f"oof_{chosen}" not in oof.columns:
        raise ValueError(f"oof.csv has no column oof_{chosen}")
    if xy is None:
        if not {"x", "y"} <= set(oof.columns):
            raise ValueError("no plot coordinates (x, y)")
        xy = oof[["x", "y"]].to_numpy(float)
    xy = np.asarray(xy, dtype=float)
    residual = oof["observed"].to_numpy(float) - oof[f"oof_{chosen}"].to_numpy(float)
    rows = _subsample(len(residual))
    limit = float(np.nanquantile(np.abs(residual), 0.98)) or 1.0
    units = _units(metadata)
    fig = new_figure(5.0, 4.2)
    ax = fig.subplots()
    points = ax.scatter(xy[rows, 0], xy[rows, 1], c=residual[rows], cmap="RdBu", vmin=-limit, vmax=limit,
                        s=14, edgecolors="0.6", linewidths=0.3)
    fig.colorbar(points, ax=ax, label=f"observed − predicted ({units})" if units else "observed − predicted")
    ax.set_aspect("equal", adjustable="datalim")
    crs = (metadata.get("training") or {}).get("crs")
    ax.set_xlabel(f"x ({crs})" if crs else "x", fontsize=8)
    ax.set_ylabel("y", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"Out-of-fold residuals, {chosen} CV", fontsize=9)
    return fig


def card_distances(xy, folds: Mapping[str, np.ndarray] | None = None, prediction_xy=None) -> dict[str, np.ndarray]:
    """``{label: distances}`` for :func:`draw_geodist`: sample-to-sample, prediction-to-sample (with
    ``prediction_xy``) and ``CV: SCHEME`` test-to-train for each fold assignment in ``folds``."""
    from sinks.learn.knndm import cv_distances, prediction_to_sample_distances, sample_to_sample_distances

    xy = np.asarray(xy, dtype=float)
    out = {"sample-to-sample": sample_to_sample_distances(xy)}
    if prediction_xy is not None and len(prediction_xy):
        out["prediction-to-sample"] = prediction_to_sample_distances(xy, np.asarray(prediction_xy, dtype=float))
    for scheme, f in (folds or {}).items():
        f = np.asarray(f)
        if len(np.unique(f)) > 1:
            out[f"CV: {scheme}"] = cv_distances(xy, f)
    return out


def _as_distances(distances) -> dict[str, np.ndarray]:
    if distances is None:
        return {}
    if hasattr(distances, "to_frame"):  # knndm.GeoDistances
        distances = distances.to_frame()
    if isinstance(distances, pd.DataFrame):
        return {str(w): g["dist"].to_numpy(float) for w, g in distances.groupby("what", sort=False)}
    return {str(k): np.asarray(v, dtype=float) for k, v in dict(distances).items()}


def draw_geodist(distances: Mapping[str, np.ndarray], *, units: str = "CRS units"):
    from scipy import stats

    parts = {k: v[np.isfinite(v)] for k, v in distances.items() if len(v)}
    parts = {k: v for k, v in parts.items() if len(v)}
    if not parts:
        raise ValueError("no distances")
    reference = parts.get("prediction-to-sample")
    top = max(float(np.quantile(v, 0.99)) for v in parts.values()) or 1.0
    grid = np.linspace(0, top, 256)
    fig = new_figure(8.0, 3.4)
    density, ecdf = fig.subplots(1, 2)
    cv_index = 0
    for label, d in parts.items():
        if label in COLOURS:
            colour, style = COLOURS[label], "-"
        else:
            colour, style = SCHEME_COLOURS[cv_index % len(SCHEME_COLOURS)], "--"
            cv_index += 1
        name = label
        if reference is not None and label.startswith("CV"):
            name += f" (W {stats.wasserstein_distance(d, reference):.3g})"
        if len(d) > 1 and np.ptp(d) > 0:
            try:
                kde = stats.gaussian_kde(d)
                density.plot(grid, kde(grid), color=colour, ls=style, lw=1.4, label=name)
            except (np.linalg.LinAlgError, ValueError):
                pass
        x = np.sort(d)
        ecdf.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=colour, ls=style, lw=1.4, label=name)
    for ax, what in ((density, "density"), (ecdf, "ECDF")):
        ax.set_xlim(0, top)
        ax.set_xlabel(f"nearest-neighbour distance ({units})", fontsize=8)
        ax.set_ylabel(what, fontsize=8)
        ax.tick_params(labelsize=7)
    density.set_ylim(bottom=0)
    ecdf.set_ylim(0, 1.02)
    ecdf.legend(fontsize=7, loc="lower right")
    density.set_title("Nearest-neighbour distances (geodist)", fontsize=9)
    return fig


def draw_di_histogram(metadata: dict, oof: pd.DataFrame):
    if "cv_di" not in oof.columns:
        raise ValueError("oof.csv has no cv_di column")
    di = oof["cv_di"].to_numpy(float)
    di = di[np.isfinite(di)]
    threshold = float((metadata.get("aoa") or {})["threshold"])
    fig = new_figure(5.0, 3.4)
    ax = fig.subplots()
    ax.hist(di, bins=30, color="#1f77b4", alpha=0.8)
    ax.axvline(threshold, color="#d62728", lw=1.5, label=f"AOA threshold {threshold:.3g}")
    inside = float(np.mean(di <= threshold)) if len(di) else float("nan")
    ax.set_title(f"Dissimilarity index of the training plots (CV); {inside:.0%} inside the AOA", fontsize=9)
    ax.set_xlabel("DI", fontsize=8)
    ax.set_ylabel("plots", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return fig


def _bin_labels(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        lo, hi = r.get("di_from"), r.get("di_to")
        out.append(f"≤ {hi:.3g}" if lo is None and hi is not None else
                   f"> {lo:.3g}" if hi is None and lo is not None else
                   "all" if lo is None else f"{lo:.3g}–{hi:.3g}")
    return out


def draw_coverage_by_di(metadata: dict, oof: pd.DataFrame | None = None, *, external: list | None = None):
    """Coverage and mean width by DI bin: of each held-out interval check in the metadata, and of
    an external validation's ``by_di_bin`` rows (``external``) when given."""
    iv = metadata.get("interval") or {}
    level = iv.get("level")
    checks = {name: ch["by_di_bin"] for name, ch in (metadata.get("interval_check") or {}).items()
              if ch.get("by_di_bin")}
    series = {f"{name} (held-out{', used' if name == iv.get('method') else ''})": rows
              for name, rows in checks.items()}
    if not series and oof is not None and {"heldout_lower", "heldout_upper", "cv_di"} <= set(oof.columns):
        di = oof["cv_di"].to_numpy(float)
        edges = np.unique(np.quantile(di, [0.25, 0.5, 0.75]))
        which = np.searchsorted(edges, di, side="right")
        covered = ((oof["observed"] >= oof["heldout_lower"]) & (oof["observed"] <= oof["heldout_upper"])).to_numpy()
        width = (oof["heldout_upper"] - oof["heldout_lower"]).to_numpy(float)
        rows = []
        for b in range(len(edges) + 1):
            m = which == b
            rows.append({"di_from": None if b == 0 else float(edges[b - 1]),
                         "di_to": None if b == len(edges) else float(edges[b]), "n": int(m.sum()),
                         "coverage": float(covered[m].mean()) if m.any() else None,
                         "mean_width": float(width[m].mean()) if m.any() else None})
        series["held-out"] = rows
    if external:
        series["external plots"] = external
    if not series:
        raise ValueError("no interval check by DI bin in the metadata")
    units = _units(metadata)
    first = next(iter(series.values()))
    labels = _bin_labels(first)
    fig = new_figure(8.0, 3.4)
    cov_ax, width_ax = fig.subplots(1, 2)
    for i, (name, rows) in enumerate(series.items()):
        x = np.arange(len(rows))
        cov = np.array([np.nan if r.get("coverage") is None else r["coverage"] for r in rows], dtype=float)
        wid = np.array([np.nan if r.get("mean_width") is None else r["mean_width"] for r in rows], dtype=float)
        style = {"color": SCHEME_COLOURS[i % len(SCHEME_COLOURS)], "marker": "o", "ms": 4,
                 "lw": 2.0 if "used" in name or name == "external plots" else 1.0}
        cov_ax.plot(x, 100 * cov, label=name, **style)
        width_ax.plot(x, wid, label=name, **style)
    if level is not None:
        cov_ax.axhline(100 * level, color="grey", ls="--", lw=1, label=f"nominal {level:.0%}")
    for ax in (cov_ax, width_ax):
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_xlabel("DI bin", fontsize=8)
        ax.tick_params(labelsize=7)
    cov_ax.set_ylabel("coverage (%)", fontsize=8)
    covs = [100 * r["coverage"] for rs in series.values() for r in rs if r.get("coverage") is not None]
    cov_ax.set_ylim(max(0.0, min([50.0, *covs]) - 5), 101)
    width_ax.set_ylabel(f"mean interval width ({units})" if units else "mean interval width", fontsize=8)
    width_ax.set_ylim(bottom=0)
    cov_ax.legend(fontsize=6, loc="lower left")
    cov_ax.set_title("Interval coverage by DI bin", fontsize=9)
    width_ax.set_title("Interval width by DI bin", fontsize=9)
    return fig


# ---- the model card's figures ---------------------------------------------------------------------

CAPTIONS = {
    "obs_vs_pred.png": "Observed against out-of-fold predicted, one panel per CV scheme (grey: 1:1).",
    "residual_map.png": "Out-of-fold residuals (observed − predicted) of the chosen scheme at the plots.",
    "geodist.png": "Nearest-neighbour distances as CAST's geodist draws them: sample-to-sample, "
                   "prediction-to-sample (the map's situation) and each CV scheme's test-to-train "
                   "(W: Wasserstein distance to prediction-to-sample).",
    "di_histogram.png": "Cross-validation dissimilarity index of the training plots, with the AOA threshold.",
    "coverage_by_di.png": "Interval coverage (on held-out folds) and mean width by DI bin, per interval method.",
}


def _geographic(metadata: dict) -> bool:
    crs = (metadata.get("training") or {}).get("crs") or (metadata.get("features") or {}).get("grid_crs")
    if not crs:
        return False
    try:
        from pyproj import CRS

        return CRS.from_user_input(crs).is_geographic
    except Exception:  # noqa: BLE001 - an unreadable CRS: treat the coordinates as planar
        return False


def write_card_figures(folder: str | os.PathLike, metadata: dict, oof: pd.DataFrame, *, xy=None,
                       distances=None, prediction_xy=None, distance_xy=None) -> CardFigures:
    """Draw the model card's figures into ``folder``; returns the files written and Markdown lines.

    ``metadata`` is the bundle's metadata (``validation``, ``validation_setup``, ``interval``,
    ``interval_check``, ``aoa``, ``target``), ``oof`` its ``oof.csv`` table. ``xy`` are the plot
    coordinates (default the table's ``x``/``y``). ``distances`` are the geodist distributions:
    a :class:`~sinks.learn.knndm.GeoDistances`, its ``to_frame()`` table (``dist``, ``what``) or a
    mapping ``{label: distances}``; without them they are computed from ``xy``, the table's
    ``fold_SCHEME`` columns and ``prediction_xy`` (points of the prediction area; without those the
    prediction-to-sample curve is missing). ``distance_xy``: the plots in metres
    (:func:`sinks.learn.knndm.metric_coordinates`, as ``sinks train`` measures distances), in the
    frame of ``prediction_xy``; it replaces ``xy`` for the distances. Never raises: without matplotlib no figure is drawn,
    and a figure the data do not allow is left out; both are said in the Markdown and ``notes``.
    """
    folder = Path(folder)
    result = CardFigures()
    if not matplotlib_available():
        result.notes.append(NO_MATPLOTLIB)
        result.markdown = ["## Figures", "", NO_MATPLOTLIB]
        return result
    units = "CRS units" if distance_xy is None else "m"
    if xy is None and {"x", "y"} <= set(oof.columns):
        xy = oof[["x", "y"]].to_numpy(float)

    def geodist():
        given = _as_distances(distances)
        if not given:
            plots = xy if distance_xy is None else distance_xy
            if distance_xy is None and _geographic(metadata):
                raise ValueError("the plots' CRS is geographic (degrees); distances need projected coordinates")
            if plots is None:
                raise ValueError("no plot coordinates (x, y)")
            folds = {s: oof[f"fold_{s}"].to_numpy() for s in _schemes(metadata, oof) if f"fold_{s}" in oof.columns}
            given = card_distances(plots, folds, prediction_xy)
        return draw_geodist(given, units=units)

    makers = {
        "obs_vs_pred.png": lambda: draw_observed_predicted(metadata, oof),
        "residual_map.png": lambda: draw_residual_map(metadata, oof, xy),
        "geodist.png": geodist,
        "di_histogram.png": lambda: draw_di_histogram(metadata, oof),
        "coverage_by_di.png": lambda: draw_coverage_by_di(metadata, oof),
    }
    for name, make in makers.items():
        try:
            fig = make()
            save_png(fig, folder / name)
        except Exception as exc:  # noqa: BLE001 - a figure must never stop a bundle from being written
            result.notes.append(f"{name} not drawn: {exc}")
            continue
        result.files.append(name)
    result.markdown = ["## Figures", ""]
    for name in result.files:
        result.markdown += [f"![{CAPTIONS[name]}]({name})", "", CAPTIONS[name], ""]
    result.markdown += [f"- {note}" for note in result.notes]
    while result.markdown and result.markdown[-1] == "":
        result.markdown.pop()
    return result


# ---- external validation --------------------------------------------------------------------------


def draw_evaluation(evaluation, metadata: dict | None = None):
    """Figure of an external validation (:class:`sinks.learn.evaluate.Evaluation`): observed against
    predicted with the intervals, inside/outside the AOA; coverage and width by DI bin."""
    rows = evaluation.rows
    units = evaluation.units
    fig = new_figure(8.0, 3.6)
    ax, cov_ax = fig.subplots(1, 2)
    obs, pred = rows["observed"].to_numpy(float), rows["prediction"].to_numpy(float)
    lo, hi = rows["lower"].to_numpy(float), rows["upper"].to_numpy(float)
    inside = rows["aoa"].to_numpy() > 0
    pick = _subsample(len(rows), 5000)
    lim = [np.nanmin(np.concatenate([obs, lo])), np.nanmax(np.concatenate([obs, hi]))]
    for mask, colour, label in ((inside, "#1f77b4", "inside AOA"), (~inside, "#d62728", "outside AOA")):
        m = np.zeros(len(rows), dtype=bool)
        m[pick] = True
        m &= mask
        if m.any():
            ax.errorbar(obs[m], pred[m], yerr=[pred[m] - lo[m], hi[m] - pred[m]], fmt="o", ms=3, lw=0.6,
                        alpha=0.6, color=colour, label=f"{label} (n {int(mask.sum())})")
    ax.plot(lim, lim, color="grey", lw=1)
    o = evaluation.overall
    ax.set_title(f"External plots: R² {_fmt(o['r2'], '.3f')}, RMSE {_fmt(o['rmse'])}, "
                 f"coverage {_fmt(o['coverage'], '.1%')}", fontsize=9)
    ax.set_xlabel(f"observed ({units})" if units else "observed", fontsize=8)
    ax.set_ylabel(f"predicted, {evaluation.level:.0%} interval", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper left")
    labels = _bin_labels(evaluation.by_di_bin)
    x = np.arange(len(labels))
    cov = np.array([np.nan if r["coverage"] is None else 100 * r["coverage"] for r in evaluation.by_di_bin])
    n = [r["n"] for r in evaluation.by_di_bin]
    cov_ax.bar(x, np.nan_to_num(cov), color="#1f77b4", alpha=0.8)
    for xi, c, k in zip(x, cov, n):
        cov_ax.text(xi, (0 if np.isnan(c) else c) + 1, f"n {k}", ha="center", fontsize=7)
    cov_ax.axhline(100 * evaluation.level, color="grey", ls="--", lw=1, label=f"nominal {evaluation.level:.0%}")
    cov_ax.set_xticks(x)
    cov_ax.set_xticklabels(labels, fontsize=7)
    cov_ax.set_ylim(0, 110)
    cov_ax.set_xlabel(f"DI bin (AOA threshold {evaluation.aoa_threshold:.3g})", fontsize=8)
    cov_ax.set_ylabel("coverage (%)", fontsize=8)
    cov_ax.tick_params(labelsize=7)
    cov_ax.legend(fontsize=7, loc="lower left")
    cov_ax.set_title("Coverage by DI bin", fontsize=9)
    return fig
