"""Tree height from diameter: height-diameter (H-D) models fitted on a height sample, or published.

Fitted models follow the BIOMASS R package's ``modelHD`` (Rejou-Mechain et al. 2017) exactly, so
that its reference heights reproduce:

- ``log1``: ln H = a + b ln D
- ``log2``: ln H = a + b ln D + c (ln D)^2
- ``michaelis``: H = A D / (B + D)  (Michaelis-Menten)
- ``weibull``: H = a (1 - exp(-(D / b)^c))

fitted by (weighted) least squares; with ``weighted=True`` each tree weighs D^2 H (its volume
proxy), as ``modelHD(useWeight=TRUE)``. Log models predict exp(fit + RSE_log^2 / 2)
(Baskerville 1972 correction). ``rse_m`` is the residual standard error in m on the tree heights,
``rse_log`` (log models) the one on ln H, both with n - p degrees of freedom; they drive the
height error in the Monte Carlo (:mod:`sinks.pools.montecarlo`).

Published models: Feldpausch et al. 2012 regional Weibull H = a (1 - exp(-b D^c))
(``feldpausch2012.csv``) and Chave et al. 2014 eq. 6a from the stress index E
(``allometry.csv``). D in cm, H in m throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize

from sinks.constants import HEIGHT_MODELS as FITTED_METHODS  # defined there: the CLI lists it at start-up
from sinks.errors import InputError
from sinks.pools.tables import allometry_parameter, load_table

#: BIOMASS modelHD refuses fewer heights than this ("not enough height data").
MIN_HEIGHTS = 15


@dataclass(frozen=True)
class HeightModel:
    """A height-diameter model: ``method``, its ``coefficients``, and its residual errors.

    ``rse_m``: residual standard error (m); ``rse_log``: on ln H (log models, eq. 6a), else None.
    ``error_scale`` says where the Monte Carlo adds the residual error: ``"log"`` (multiplicative,
    on ln H of the drawn diameter), ``"height"`` (additive, on H of the drawn diameter), or
    ``"fixed_height"`` (Feldpausch: a truncated normal around the height of the measured
    diameter, as BIOMASS does with ``H`` and ``errH``).
    """

    method: str
    coefficients: tuple[float, ...]
    rse_m: float
    rse_log: float | None = None
    n: int = 0
    weighted: bool = False
    source: str = ""

    @property
    def error_scale(self) -> str:
        if self.method in ("log1", "log2", "chave2014_eq6a"):
            return "log"
        return "fixed_height" if self.method.startswith("feldpausch") else "height"

    def mean_log_height(self, dbh_cm) -> np.ndarray:
        """ln H without the back-transformation correction (log models only)."""
        log_d = np.log(np.asarray(dbh_cm, dtype=float))
        coef = self.coefficients
        if self.method == "log1":
            return coef[0] + coef[1] * log_d
        if self.method == "log2":
            return coef[0] + coef[1] * log_d + coef[2] * log_d**2
        if self.method == "chave2014_eq6a":
            a, b, c, e = coef
            return a - e + b * log_d + c * log_d**2
        raise ValueError(f"{self.method} is not a log model")

    def predict(self, dbh_cm) -> np.ndarray:
        """Height (m) at diameter ``dbh_cm`` (cm), bias-corrected for log models."""
        dbh = np.asarray(dbh_cm, dtype=float)
        coef = self.coefficients
        if self.error_scale == "log":
            return np.exp(self.mean_log_height(dbh) + 0.5 * self.rse_log**2)
        if self.method == "michaelis":
            return coef[0] * dbh / (coef[1] + dbh)
        if self.method == "weibull":
            return coef[0] * (1.0 - np.exp(-((dbh / coef[1]) ** coef[2])))
        a, b, c = coef  # Feldpausch 2012 eq. 5
        return a * (1.0 - np.exp(-b * dbh**c))

    def describe(self) -> str:
        coefs = ", ".join(f"{v:.6g}" for v in self.coefficients)
        return (f"{self.method} H-D model ({coefs}); RSE {self.rse_m:.3f} m"
                + (f", RSE(ln H) {self.rse_log:.4f}" if self.rse_log is not None else "")
                + (f"; fitted on {self.n} heights" + (", weighted D^2 H" if self.weighted else "") if self.n else "")
                + (f"; {self.source}" if self.source else ""))


def _heights(dbh_cm, height_m) -> tuple[np.ndarray, np.ndarray]:
    dbh = np.asarray(dbh_cm, dtype=float)
    height = np.asarray(height_m, dtype=float)
    if dbh.shape != height.shape:
        raise InputError("height sample: dbh_cm and height_m differ in length")
    keep = np.isfinite(dbh) & np.isfinite(height)
    bad = keep & ((dbh <= 0) | (height <= 0))
    if bad.any():
        raise InputError(f"height sample: non-positive diameter or height in row(s) "
                         f"{', '.join(map(str, np.flatnonzero(bad)[:10] + 1))}")
    if keep.sum() < MIN_HEIGHTS:
        raise InputError(f"height sample: {int(keep.sum())} trees with both diameter and height; "
                         f"a height-diameter model needs at least {MIN_HEIGHTS}")
    return dbh[keep], height[keep]


def fit_height_model(dbh_cm, height_m, method: str = "log2", *, weighted: bool = False) -> HeightModel:
    """Fit an H-D model on a height sample (rows without a height are ignored).

    ``method``: ``log1``, ``log2``, ``michaelis`` or ``weibull``; ``weighted``: weights D^2 H,
    as BIOMASS ``modelHD(useWeight=TRUE)``. Raises :class:`InputError` on fewer than 15
    heights or a fit that does not converge.
    """
    method = method.lower()
    if method not in FITTED_METHODS:
        raise InputError(f"unknown height-diameter model {method!r}; use one of {', '.join(FITTED_METHODS)}")
    dbh, height = _heights(dbh_cm, height_m)
    weight = dbh**2 * height if weighted else np.ones_like(dbh)
    weight = weight / weight.sum()
    sqrt_w = np.sqrt(weight)
    if method in ("log1", "log2"):
        log_d = np.log(dbh)
        design = np.column_stack([np.ones_like(log_d), log_d] + ([log_d**2] if method == "log2" else []))
        coef, *_ = np.linalg.lstsq(design * sqrt_w[:, None], np.log(height) * sqrt_w, rcond=None)
        dof = len(height) - design.shape[1]
        # BIOMASS: RSE on ln H from the unweighted residuals of the (weighted) fit
        rse_log = float(np.sqrt(np.sum((np.log(height) - design @ coef) ** 2) / dof))
        model = HeightModel(method, tuple(float(c) for c in coef), np.nan, rse_log, len(height), weighted,
                            "fitted (BIOMASS modelHD method)")
    else:
        model = _fit_nonlinear(method, dbh, height, sqrt_w)
        dof = len(height) - len(model.coefficients)
    rse_m = float(np.sqrt(np.sum((height - model.predict(dbh)) ** 2) / dof))
    return HeightModel(model.method, model.coefficients, rse_m, model.rse_log, len(height), weighted, model.source)


def _fit_nonlinear(method: str, dbh: np.ndarray, height: np.ndarray, sqrt_w: np.ndarray) -> HeightModel:
    if method == "michaelis":
        def curve(p):
            return p[0] * dbh / (p[1] + dbh)
        start = [float(np.max(height)), float(np.median(dbh))]
    else:
        def curve(p):
            return p[0] * (1.0 - np.exp(-((dbh / p[1]) ** p[2])))
        start = [float(np.max(height)), float(np.median(dbh)), 0.8]
    with np.errstate(invalid="ignore", over="ignore"):  # trial steps may leave the valid domain
        fit = optimize.least_squares(lambda p: (curve(p) - height) * sqrt_w, start, method="lm",
                                     x_scale="jac", max_nfev=20000)
    if not fit.success or not np.all(np.isfinite(fit.x)):
        raise InputError(f"height sample: the {method} model did not converge ({fit.message})")
    return HeightModel(method, tuple(float(v) for v in fit.x), np.nan, None, len(height), False,
                       "fitted (BIOMASS modelHD method)")


def compare_height_models(dbh_cm, height_m, *, weighted: bool = False) -> pd.DataFrame:
    """Fit the four models and tabulate their RSE (m), RSE on ln H and average bias, as BIOMASS
    ``modelHD`` does without ``method``; the lowest ``rse_m`` is the usual choice."""
    dbh, height = _heights(dbh_cm, height_m)
    rows = []
    for method in FITTED_METHODS:
        model = fit_height_model(dbh, height, method, weighted=weighted)
        predicted = model.predict(dbh)
        rows.append({"method": method, "rse_m": model.rse_m, "rse_log": model.rse_log,
                     "average_bias": (predicted.mean() - height.mean()) / height.mean()})
    return pd.DataFrame(rows)


def feldpausch_model(region: str, table=None) -> HeightModel:
    """Feldpausch et al. (2012) regional Weibull model (``feldpausch2012.csv`` or your table)."""
    frame = load_table(table if table is not None else "", default="feldpausch2012.csv",
                       required=("region", "a", "b", "c", "rse_m"))
    row = frame[frame["region"].str.lower() == region.lower()]
    if row.empty:
        raise InputError(f"no Feldpausch 2012 region {region!r}; use one of {', '.join(frame['region'])}")
    r = row.iloc[0]
    return HeightModel(f"feldpausch:{r['region']}", (float(r["a"]), float(r["b"]), float(r["c"])),
                       float(r["rse_m"]), None, 0, False, str(r["source"]))


def chave_e_model(e: float) -> HeightModel:
    """Chave et al. (2014) eq. 6a: ln H = 0.893 - E + 0.760 ln D - 0.0340 (ln D)^2, RSE 0.243."""
    coef = tuple(allometry_parameter("chave2014_eq6a", p) for p in ("a", "b", "c")) + (float(e),)
    rse_log = allometry_parameter("chave2014_eq6a", "rse")
    return HeightModel("chave2014_eq6a", coef, np.nan, rse_log, 0, False, f"Chave et al. 2014 eq. 6a, E = {e}")
