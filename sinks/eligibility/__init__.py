"""Per-parcel eligibility for forestry carbon-sink projects.

Rule sets are data (``rulesets/*.toml``, each rule with its source and confidence), checks are
plain functions (:mod:`sinks.eligibility.checks`), :func:`sinks.eligibility.engine.assess` applies a
rule set to parcels, and :mod:`sinks.eligibility.report` writes the JSON report (validated against
``report.schema.json``) and a GeoPackage.
"""
