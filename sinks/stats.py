"""Small statistics every stage uses: the normal quantile of a central interval, and the standard
deviation an interval at a level implies (normal errors). Here, below all stages, so that pools,
covariates, mapping and crediting read intervals the same way."""

from __future__ import annotations

import numpy as np


def normal_quantile(level: float) -> float:
    """Two-sided standard normal quantile of a central interval at ``level`` (1.645 for 0.9)."""
    from statistics import NormalDist  # the standard library's: scipy.stats costs a second to import

    return NormalDist().inv_cdf(0.5 + level / 2)


def half_width(value: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The larger half-width of each interval, max(upper − value, value − lower): the larger side,
    because the lower bound of a carbon map is clipped at 0. Readers of maps check first that the
    interval holds its value (:func:`sinks.mapping.change.check_interval_bands`)."""
    return np.maximum(upper - value, value - lower)


def sd_from_interval(value: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float) -> np.ndarray:
    """Standard deviation from an interval at ``level``: the larger half-width over z (normal errors)."""
    return half_width(value, lower, upper) / normal_quantile(level)
