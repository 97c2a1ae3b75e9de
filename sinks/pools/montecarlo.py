"""Monte Carlo propagation of tree-level errors to plot biomass and carbon, as BIOMASS does it.

Follows ``AGBmonteCarlo`` of the BIOMASS R package (Rejou-Mechain et al. 2017, after Chave et
al. 2004 and 2014). In each of ``n_draws`` draws:

- diameter: truncated normal in [0.1; 500] cm around D with sd ``diameter_error`` (cm; a
  number or one per tree), or ``"chave2004"``: sd = 0.0062 D + 0.0904 for most trees and 4.64 cm
  for 5 % of them (Chave et al. 2004 p. 412; here each tree has a 5 % chance per draw, where
  BIOMASS picks exactly 5 % of the trees), or none;
- wood density: truncated normal in [0.08; 1.39] g/cm3 around each tree's WD with its sd;
- height: from a fitted H-D model at the drawn diameter plus the model's residual error (on ln H
  for log models, in m otherwise, no back-transformation correction: the error draws make it);
  around measured or Feldpausch heights a truncated normal in [1.3; max(H) + 15] m with their sd;
- allometry: Chave 2014 eq. 4 (or BIOMASS's eq. 7) parameters drawn per draw from their
  posterior (a multivariate normal with the moments of BIOMASS's posterior draws,
  ``allometry_posterior.csv``), plus a residual error on ln AGB per tree and draw. A user's
  equation gets no parameter or residual error (none is known).

Trees are processed in chunks of :data:`CHUNK_VALUES` / ``n_draws`` trees (memory bounded by
``chunk_trees x n_draws``; small chunks also stay in the CPU cache), on threads, with one
random stream per chunk spawned from ``seed`` so results do not depend on ``n_jobs``. Draws are
summed per plot as they are made; the per-tree draw matrix is never held whole, so a million
trees by 1,000 draws fits in a few hundred MB (see ``benchmarks/bench_montecarlo.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from sinks.errors import InputError
from sinks.pools.allometry import ExpressionAllometry, posterior
from sinks.pools.height import HeightModel
from sinks.pools.tables import allometry_parameter

#: Tree x draw values per chunk (2,000 trees at 1,000 draws: 16 MB per float64 array). Measured on
#: 5 x 10^4 trees x 1,000 draws, 2 threads: 10,000-tree chunks took 3.8 s and 1.24 GB, 2,000-tree
#: chunks 2.1 s and 0.44 GB (``benchmarks/bench_montecarlo.py`` inputs).
CHUNK_VALUES = 2_000_000


@dataclass
class TreeDraws:
    """What the Monte Carlo needs per tree (arrays of one length, units in the names).

    ``height_mode``: 0 = no height (eq. 7), 1 = drawn from ``height_models[height_model_index]``,
    2 = truncated normal around ``height_m`` with ``height_sd_m``. ``allometry``: ``"eq4"``,
    ``"eq7"`` (with ``e``), or an :class:`ExpressionAllometry` for all trees.
    ``biomass_factor``: (1 + root:shoot) x carbon fraction, to turn AGB into carbon.
    """

    plot_code: np.ndarray
    dbh_cm: np.ndarray
    wd_g_cm3: np.ndarray
    wd_sd_g_cm3: np.ndarray
    height_m: np.ndarray
    height_sd_m: np.ndarray
    height_mode: np.ndarray
    height_model_index: np.ndarray
    carbon_factor: np.ndarray
    e: np.ndarray | None = None


@dataclass
class MonteCarloResult:
    """Per-plot sums of every draw: ``agb_mg`` and ``carbon_mg``, shape (n_plots, n_draws)."""

    agb_mg: np.ndarray
    carbon_mg: np.ndarray


def summarise(draws: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row mean, median, sd (ddof 1) and 2.5 / 97.5 % quantiles of a (n, n_draws) matrix."""
    return {
        "mean": draws.mean(axis=1),
        "median": np.median(draws, axis=1),
        "sd": draws.std(axis=1, ddof=1),
        "q025": np.quantile(draws, 0.025, axis=1),
        "q975": np.quantile(draws, 0.975, axis=1),
    }


def truncated_normal(rng: np.random.Generator, mean: np.ndarray, sd: np.ndarray, low: float, high: float,
                     shape: tuple[int, int]) -> np.ndarray:
    """Draws of N(mean, sd) truncated to [low; high], shape ``shape`` (rows = trees).

    Rejection (redraw the few out-of-range values), then the inverse-CDF method BIOMASS uses for
    any value still out after 20 rounds (a mean far outside the bounds). ``sd == 0`` gives the mean.
    """
    mean, sd = _per_draw(mean, shape), _per_draw(sd, shape)
    out = mean + sd * rng.standard_normal(shape)
    bad = np.flatnonzero((out < low) | (out > high))
    for _ in range(20):
        if bad.size == 0:
            return out
        flat = out.reshape(-1)
        m, s = mean.reshape(-1)[bad], sd.reshape(-1)[bad]
        flat[bad] = m + s * rng.standard_normal(bad.size)
        bad = bad[(flat[bad] < low) | (flat[bad] > high)]
    if bad.size:
        flat = out.reshape(-1)
        m, s = mean.reshape(-1)[bad], sd.reshape(-1)[bad]
        lo, hi = special.ndtr((low - m) / s), special.ndtr((high - m) / s)
        flat[bad] = np.clip(m + s * special.ndtri(lo + (hi - lo) * rng.random(bad.size)), low, high)
    return out


def _per_draw(values, shape: tuple[int, int]) -> np.ndarray:
    """A scalar, one value per tree (rows), or a full matrix, as a read-only ``shape`` matrix."""
    values = np.asarray(values, dtype=float)
    return np.broadcast_to(values.reshape(-1, 1) if values.ndim == 1 else values, shape)


def _diameter_sd(spec, dbh: np.ndarray, rng, shape) -> np.ndarray | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec.lower() != "chave2004":
            raise InputError(f"diameter error {spec!r}: give an sd in cm, one per tree, or 'chave2004'")
        slope = allometry_parameter("chave2004_diameter_error", "slope")
        intercept = allometry_parameter("chave2004_diameter_error", "intercept")
        large_sd = allometry_parameter("chave2004_diameter_error", "large_sd")
        share = allometry_parameter("chave2004_diameter_error", "large_share")
        small = np.broadcast_to((slope * dbh + intercept)[:, None], shape)
        return np.where(rng.random(shape) < share, large_sd, small)
    return _per_draw(spec, shape)


def propagate(trees: TreeDraws, n_plots: int, *, allometry="eq4", height_models: list[HeightModel] = (),
              n_draws: int = 1000, diameter_error=None, seed: int | None = 1, chunk_trees: int | None = None,
              n_jobs: int = 1, eq7_name: str = "biomass_eq7", progress: bool = False) -> MonteCarloResult:
    """Draw ``n_draws`` plot totals of AGB and carbon (Mg) for ``n_plots`` plots.

    ``trees.plot_code`` holds each tree's plot (0 .. n_plots-1). ``diameter_error``: None, an sd
    (cm, scalar or per tree) or ``"chave2004"``. ``n_jobs`` threads work on chunks of
    ``chunk_trees`` trees (default :data:`CHUNK_VALUES` // ``n_draws``). Reproducible for a given
    ``seed`` and ``chunk_trees`` whatever ``n_jobs``.
    """
    from joblib import Parallel, delayed

    if n_draws < 2:
        raise InputError("Monte Carlo needs at least 2 draws")
    n = len(trees.dbh_cm)
    chunk_trees = chunk_trees or max(1, CHUNK_VALUES // n_draws)
    root = np.random.SeedSequence(seed)
    n_chunks = max(1, -(-n // chunk_trees))
    param_seq, *chunk_seqs = root.spawn(n_chunks + 1)
    param_rng = np.random.default_rng(param_seq)
    if isinstance(allometry, ExpressionAllometry):
        params = None
    else:
        names, mean, cov = posterior("chave2014_eq4" if allometry == "eq4" else eq7_name)
        draws = param_rng.multivariate_normal(mean, cov, size=n_draws, method="cholesky")
        params = {name: draws[:, i] for i, name in enumerate(names)}
    height_measured = trees.height_m[trees.height_mode == 2]
    height_high = (float(np.nanmax(height_measured)) if height_measured.size else 0.0) + allometry_parameter(
        "truncation", "height_above_max_m")
    order = np.argsort(trees.plot_code, kind="stable")

    def chunk(k: int):
        idx = order[k * chunk_trees:(k + 1) * chunk_trees]
        rng = np.random.default_rng(chunk_seqs[k])
        agb = _chunk_agb(trees, idx, rng, n_draws, allometry, params, height_models, diameter_error, height_high)
        codes = trees.plot_code[idx]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        factor = trees.carbon_factor[idx][:, None]
        return codes[starts], np.add.reduceat(agb, starts, axis=0), np.add.reduceat(agb * factor, starts, axis=0)

    agb_sum = np.zeros((n_plots, n_draws))
    carbon_sum = np.zeros((n_plots, n_draws))
    jobs = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator")(delayed(chunk)(k) for k in range(n_chunks))
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, total=n_chunks, desc="Monte Carlo", unit="chunk")
    for codes, agb, carbon in jobs:
        np.add.at(agb_sum, codes, agb)
        np.add.at(carbon_sum, codes, carbon)
    return MonteCarloResult(agb_sum, carbon_sum)


def _chunk_agb(trees: TreeDraws, idx, rng, n_draws, allometry, params, height_models, diameter_error,
               height_high) -> np.ndarray:
    shape = (idx.size, n_draws)
    dbh = trees.dbh_cm[idx]
    d_sd = _diameter_sd(diameter_error if np.ndim(diameter_error) == 0 else np.asarray(diameter_error)[idx],
                        dbh, rng, shape)
    if d_sd is None:
        d = np.broadcast_to(dbh[:, None], shape)
    else:
        d = truncated_normal(rng, dbh, d_sd, allometry_parameter("truncation", "dbh_low_cm"),
                             allometry_parameter("truncation", "dbh_high_cm"), shape)
    wd = truncated_normal(rng, trees.wd_g_cm3[idx], trees.wd_sd_g_cm3[idx],
                          allometry_parameter("truncation", "wd_low_g_cm3"),
                          allometry_parameter("truncation", "wd_high_g_cm3"), shape)
    height = _chunk_heights(trees, idx, rng, d, height_models, height_high)
    if isinstance(allometry, ExpressionAllometry):
        e = None if trees.e is None else trees.e[idx][:, None]
        return allometry.agb_mg(d, height, wd, e)
    residual = rng.standard_normal(shape) * params["rse"]
    if allometry == "eq4":
        log_agb = params["intercept"] + params["slope"] * np.log(wd * height * d**2) + residual
    else:
        log_d = np.log(d)
        log_agb = (params["intercept"] + params["e"] * trees.e[idx][:, None] + params["log_wd"] * np.log(wd)
                   + params["log_d"] * log_d + params["log_d2"] * log_d**2 + residual)
    return np.exp(log_agb) / 1000.0


def _chunk_heights(trees: TreeDraws, idx, rng, d, height_models, height_high) -> np.ndarray | None:
    mode = trees.height_mode[idx]
    if not mode.any():
        return None
    height = np.full(d.shape, np.nan)
    fixed = np.flatnonzero(mode == 2)
    if fixed.size:
        height[fixed] = truncated_normal(rng, trees.height_m[idx][fixed], trees.height_sd_m[idx][fixed],
                                         1.3, height_high, (fixed.size, d.shape[1]))
    for k, model in enumerate(height_models):
        rows = np.flatnonzero((mode == 1) & (trees.height_model_index[idx] == k))
        if not rows.size:
            continue
        d_rows = d[rows]
        if model.error_scale == "log":
            h = np.exp(model.mean_log_height(d_rows) + rng.standard_normal(d_rows.shape) * model.rse_log)
        else:
            h = model.predict(d_rows) + rng.standard_normal(d_rows.shape) * model.rse_m
        height[rows] = np.where(h <= 0, 0.1, h)  # BIOMASS predictHeight: non-positive draws -> 0.1 m
    return height
