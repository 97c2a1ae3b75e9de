"""sinks: machine-learning carbon-sink estimation.

Field data become plot carbon stocks with uncertainty (:mod:`sinks.pools`), covariates come from
feature specs (:mod:`sinks.covariates`), models are trained with spatial validation
(:mod:`sinks.learn`) and saved as bundles (:mod:`sinks.bundle`), carbon maps are written as
Cloud-Optimized GeoTIFFs (:mod:`sinks.mapping`), and parcels are checked against carbon-sink
methodologies (:mod:`sinks.eligibility`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sinks")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

from sinks.errors import InputError, MissingDependencyError, ModelMismatchError, SinksError, SpecError

__all__ = [
    "__version__",
    "SinksError",
    "InputError",
    "SpecError",
    "ModelMismatchError",
    "MissingDependencyError",
]
