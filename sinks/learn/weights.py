"""Plot measurement uncertainty into the model: inverse-variance weights with a model-error term.

A plot's observed stock is its true stock plus a measurement error of known sd ``s_i`` (the Monte
Carlo sd of an inventory plot, the standard error of a GEDI footprint, or a crew's sampling error).
Weighting each plot by ``1 / s_i²`` alone would let the most precise plots dominate even though
every plot also carries the model's own error, which no measurement removes. So the weight is

    w_i = 1 / (τ² + s_i²),   normalised to a mean of 1,

the random-effects weight of meta-analysis (DerSimonian & Laird 1986, *Control. Clin. Trials*
7:177-188), with the between-plot ("model") variance τ² estimated by the method of moments from
the chosen CV scheme's *unweighted* out-of-fold residuals ``r_i``: τ² = mean(r²) − mean(s²),
floored at 1 % of mean(r²) so that the weights stay finite when the measurement error seems to
explain all of the residual (the floor is a numerical guard, not a published value).

What this does and does not do: the weights change how the model is fitted (noisy plots pull it
less); the prediction intervals stay calibrated on the observed out-of-fold residuals, so they
still cover a *measured* plot, noise included, and the noiseless stock at least as often.
"""

from __future__ import annotations

import numpy as np

#: τ² floor as a fraction of the mean squared OOF residual (a numerical guard).
TAU2_FLOOR = 0.01


def inverse_variance_weights(measurement_sd: np.ndarray, oof_residual: np.ndarray) -> tuple[np.ndarray, float]:
    """(weights with mean 1, τ²) from each plot's measurement sd and its unweighted OOF residual."""
    sd2 = np.asarray(measurement_sd, dtype=float) ** 2
    r2 = np.asarray(oof_residual, dtype=float) ** 2
    tau2 = max(float(r2.mean() - sd2.mean()), TAU2_FLOOR * float(r2.mean()), 1e-12)
    weights = 1.0 / (tau2 + sd2)
    return weights / weights.mean(), tau2
