"""Feature specs -> covariates, on local rasters (default) or on Google Earth Engine.

A feature spec (``features/*.toml``, parsed by :func:`sinks.covariates.spec.load_spec`) names the
target grid, the sources and their bands, the features (bands, index expressions, terrain
derivatives) and the plot footprint rule. :mod:`sinks.covariates.local` computes it with
rasterio, window by window.
"""

from sinks.covariates.spec import FeatureSpec, load_spec

__all__ = ["FeatureSpec", "load_spec"]
