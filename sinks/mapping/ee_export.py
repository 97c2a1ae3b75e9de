"""A model bundle's map as an Earth Engine export task, built offline from its feature spec.

The spec's Earth Engine graph (:func:`sinks.covariates.earthengine.feature_image`) gives the
features on the spec's grid; the bundle's XGBoost or random-forest model becomes
``ee.Classifier.decisionTreeEnsemble`` tree strings (:mod:`sinks.mapping.ee_trees`, checked there
against the model's own predictions); the classified image is exported on the same grid as
:func:`sinks.covariates.earthengine.export_stack_ee` exports a stack. Nothing is sent until the
task is started. Only the prediction band is exported: the interval, DI and AOA need the
bundle's calibration and its k-d tree of training plots, which run locally (``sinks map``).
"""

from __future__ import annotations


def export_map_ee(bundle, spec, *, bucket: str | None = None, folder: str | None = None,
                  trees=None, description: str | None = None, file_prefix: str | None = None,
                  max_pixels: float = 1e10, tile_pixels: int | None = None, start: bool = False):
    """An Earth Engine task exporting ``bundle``'s prediction over ``spec``'s grid (a COG export).

    ``bundle``: a loaded bundle or its folder; ``spec``: the feature spec it was trained with (an
    Earth Engine section for every source; refused if it defines its features differently).
    ``trees``: a ``gs://`` URL of a tree file (:func:`~sinks.mapping.ee_trees.write_tree_file`) for
    models above the inline request limit; default the bundle's trees inline. One of ``bucket`` /
    ``folder``. The task is returned unstarted unless ``start``.
    """
    from sinks.bundle import Bundle, load_bundle
    from sinks.covariates import earthengine as eng
    from sinks.covariates.spec import FeatureSpec, load_spec
    from sinks.mapping.ee_trees import classify_image, ee_tree_strings
    from sinks.mapping.predict import check_compatible

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    spec = spec if isinstance(spec, FeatureSpec) else load_spec(spec)
    check_compatible(bundle, spec)
    names = bundle.model_features
    if trees is None:  # the ensemble's REGRESSION output is the mean of its trees (sinks.mapping.ee_trees)
        trees = ee_tree_strings(bundle.model, names)
    return eng.export_image(
        spec, lambda region: classify_image(eng.feature_image(spec, region=region), trees, names, band=bundle.band),
        bucket=bucket, folder=folder, description=description or f"sinks_map_{bundle.bundle_id}",
        file_prefix=file_prefix or f"sinks_map_{bundle.bundle_id}", max_pixels=max_pixels,
        tile_pixels=tile_pixels, start=start, what="export_map_ee")
