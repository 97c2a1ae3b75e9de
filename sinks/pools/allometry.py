"""Tree above-ground biomass (AGB) allometries: Chave et al. 2014 and users' own equations.

- :func:`chave2014_eq4`: with height, AGB = 0.0673 (rho D^2 H)^0.976 (kg).
- :func:`chave2014_eq7`: without height, from the environmental stress index E:
  ln AGB = intercept + e E + log_wd ln rho + log_d ln D + log_d2 (ln D)^2, with BIOMASS's
  re-fitted coefficients (``biomass_eq7``, the default, reproduces BIOMASS) or the published ones
  (``chave2014_eq7``).
- :class:`ExpressionAllometry`: a user's equation string over ``D`` (cm), ``H`` (m), ``WD``
  (g/cm3) and ``E``, giving AGB in kg, e.g. ``"0.0673 * (WD * D**2 * H)**0.976"``; or a table
  with one equation per species group and its coefficients as columns (:func:`read_allometry_table`).

Coefficients are rows of ``allometry.csv``; the posterior moments used for parameter uncertainty
in the Monte Carlo are in ``allometry_posterior.csv``. Every function returns Mg per tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sinks.covariates import expressions
from sinks.errors import InputError, SinksError
from sinks.pools.tables import allometry_parameter, load_table

EQ7_PARAMETERS = ("intercept", "e", "log_wd", "log_d", "log_d2")
VARIABLES = ("D", "H", "WD", "E")


def chave2014_eq4(dbh_cm, height_m, wood_density_g_cm3):
    """AGB (Mg) by Chave et al. (2014) eq. 4: 0.0673 (rho D^2 H)^0.976 / 1000.

    ``dbh_cm`` in cm, ``height_m`` in m, ``wood_density_g_cm3`` in g/cm3; arrays broadcast.
    """
    a = allometry_parameter("chave2014_eq4", "a")
    b = allometry_parameter("chave2014_eq4", "b")
    rho_d2h = np.asarray(wood_density_g_cm3) * np.asarray(dbh_cm) ** 2 * np.asarray(height_m)
    return a * rho_d2h**b / 1000.0


def chave2014_eq7(dbh_cm, wood_density_g_cm3, e, *, name: str = "biomass_eq7"):
    """AGB (Mg) without height by Chave et al. (2014) eq. 7 with stress index ``e`` (E).

    ``name``: ``"biomass_eq7"`` (BIOMASS ``computeAGB`` coefficients, default) or
    ``"chave2014_eq7"`` (as published).
    """
    c = {p: allometry_parameter(name, p) for p in EQ7_PARAMETERS}
    log_d = np.log(np.asarray(dbh_cm, dtype=float))
    log_agb = (c["intercept"] + c["e"] * np.asarray(e, dtype=float)
               + c["log_wd"] * np.log(np.asarray(wood_density_g_cm3, dtype=float))
               + c["log_d"] * log_d + c["log_d2"] * log_d**2)
    return np.exp(log_agb) / 1000.0


def posterior(name: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Parameter names, means and covariance of an allometry's posterior (``allometry_posterior.csv``)."""
    table = load_table("", default="allometry_posterior.csv", required=("name", "kind", "parameter", "value"))
    rows = table[table["name"] == name]
    if rows.empty:
        raise InputError(f"allometry_posterior.csv has no parameters for {name!r}")
    means = rows[rows["kind"] == "mean"].set_index("parameter")["value"].astype(float)
    sds = rows[rows["kind"] == "sd"].set_index("parameter")["value"].astype(float).reindex(means.index)
    params = tuple(means.index)
    corr = np.eye(len(params))
    for row in rows[rows["kind"] == "corr"].itertuples(index=False):
        i, j = params.index(row.parameter), params.index(row.other)
        corr[i, j] = corr[j, i] = float(row.value)
    cov = corr * np.outer(sds.to_numpy(), sds.to_numpy())
    return params, means.to_numpy(), cov


@dataclass(frozen=True)
class ExpressionAllometry:
    """A user's AGB equation (kg) over D (cm), H (m), WD (g/cm3), E and named coefficients."""

    expression: str
    coefficients: dict[str, float] = field(default_factory=dict)
    source: str = "user equation"

    def __post_init__(self):
        try:
            used = expressions.names(self.expression)
        except SinksError as exc:
            raise InputError(f"allometry {self.expression!r}: {exc}") from exc
        unknown = [n for n in used if n not in VARIABLES and n not in self.coefficients]
        if unknown:
            raise InputError(f"allometry {self.expression!r}: unknown name(s) {', '.join(unknown)}; "
                             f"use D (cm), H (m), WD (g/cm3), E and the table's coefficient columns")

    @property
    def needs_height(self) -> bool:
        return "H" in expressions.names(self.expression)

    def agb_mg(self, dbh_cm, height_m=None, wood_density_g_cm3=None, e=None) -> np.ndarray:
        """AGB (Mg) of each tree; inputs broadcast."""
        values = {"D": np.asarray(dbh_cm, dtype=float)}
        for key, value in (("H", height_m), ("WD", wood_density_g_cm3), ("E", e)):
            if value is not None:
                values[key] = np.asarray(value, dtype=float)
        values.update({k: float(v) for k, v in self.coefficients.items()})
        return np.asarray(expressions.evaluate(self.expression, values), dtype=float) / 1000.0


def read_allometry_table(table: str | os.PathLike | pd.DataFrame) -> dict[str, ExpressionAllometry]:
    """Per-species-group equations: columns ``species_group``, ``equation``, ``source`` and one
    numeric column per coefficient the equations name (e.g. ``a``, ``b``)."""
    frame = load_table(table, default="", required=("species_group", "equation"))
    coef_cols = [c for c in frame.columns if c not in ("species_group", "equation", "source", "confidence")]
    out = {}
    for row in frame.to_dict("records"):
        coefs = {c: float(row[c]) for c in coef_cols if pd.notna(row[c])}
        out[str(row["species_group"])] = ExpressionAllometry(str(row["equation"]), coefs, str(row["source"]))
    return out
