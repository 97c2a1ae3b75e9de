"""The eligibility report: JSON validated by ``report.schema.json``, and a GeoPackage."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict
from functools import lru_cache
from importlib import resources
from pathlib import Path

import geopandas as gpd

from sinks.bundle import versions
from sinks.eligibility.engine import EligibilityReport
from sinks.errors import OutputError
from sinks.io import atomic_path, write_vector

#: Version 2: exact area shares in the evidence, the methodology's source and scheme, the crediting block.
#: Version 3: the crediting block's ``route`` (maps, or ex ante from a growth-curve table: ``growth_table``,
#: per parcel ``growth``), status ``no_uncertainty``.
#: Version 4: each credited parcel's ``issuable_tco2e`` (its share of what the project may issue).
#: Version 5: the top-level ``inputs`` (files with sha256, options; eligibility reports too), every
#: deduction of a credited parcel and the methodology's six terms required, no unknown top-level key.
SCHEMA_VERSION = "5"


@lru_cache(maxsize=1)
def schema() -> dict:
    """The published JSON Schema of the report (draft 2020-12)."""
    return json.loads(resources.files("sinks.eligibility").joinpath("report.schema.json").read_text(encoding="utf-8"))


def validate(document: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when ``document`` does not follow the schema, or when its
    numbers do not agree with each other (:func:`inconsistencies`): what a registry checks before
    taking a report."""
    import jsonschema

    jsonschema.validate(document, schema(), cls=jsonschema.Draft202012Validator)
    found = inconsistencies(document)
    if found:
        raise jsonschema.ValidationError("the report is inconsistent: " + "; ".join(found))


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def _deduction_problems(c: dict, terms: dict) -> list[str]:
    """A credited parcel's chain against the report's own terms (sinks.eligibility.crediting.credit_parcel):
    leakage = fraction x max(change - baseline, 0); net = change - baseline - leakage; the uncertainty
    deduction by its rule at its level; buffer = fraction x max(net - uncertainty, 0); creditable =
    max(0, net - uncertainty - buffer)."""
    from sinks.eligibility.crediting import uncertainty_deduction

    out = []
    change, baseline, net = c["stock_change_tco2e"], c["baseline_tco2e"], c["net_tco2e"]
    leak = (terms.get("leakage") or {}).get("fraction")
    if leak is not None and not _close(c["leakage_tco2e"], leak * max(change - baseline, 0.0)):
        out.append(f"leakage_tco2e {c['leakage_tco2e']:g} is not {leak:g} x (change - baseline)")
    if not _close(net, change - baseline - c["leakage_tco2e"]):
        out.append(f"net_tco2e {net:g} is not stock change - baseline - leakage ({change - baseline - c['leakage_tco2e']:g})")
    uncertainty = terms.get("uncertainty") or {}
    if uncertainty.get("level") is not None and c.get("net_sd_tco2e") is not None:
        expected, _ = uncertainty_deduction(uncertainty.get("rule"), uncertainty["level"],
                                            uncertainty.get("threshold", 0.0), net, c["net_sd_tco2e"])
        if not _close(c["uncertainty_deduction_tco2e"], expected):
            out.append(f"uncertainty_deduction_tco2e {c['uncertainty_deduction_tco2e']:g} is not the "
                       f"{uncertainty.get('rule')} deduction at {uncertainty['level']:g} ({expected:g})")
    after = net - c["uncertainty_deduction_tco2e"]
    buffer = (terms.get("buffer") or {}).get("fraction")
    if buffer is not None and not _close(c["buffer_tco2e"], buffer * max(after, 0.0)):
        out.append(f"buffer_tco2e {c['buffer_tco2e']:g} is not {buffer:g} x (net - uncertainty)")
    if not _close(c["tco2e"], max(after - c["buffer_tco2e"], 0.0)):
        out.append(f"tco2e {c['tco2e']:g} is not net - uncertainty - buffer ({max(after - c['buffer_tco2e'], 0.0):g})")
    return out


def inconsistencies(document: dict) -> list[str]:
    """What a schema cannot say: the summary's counts against the parcels' verdicts; a parcel
    credited only when eligible; each credited parcel's chain of deductions against the report's own
    terms (:func:`_deduction_problems`), never above its stock change, and its ``issuable_tco2e``
    its ``tco2e`` x the project's ``parcel_scale``; the project's statuses, one per parcel with a
    crediting record; the project's ``tco2e`` the smaller of its two bounds, the sum of the parcels'
    ``issuable_tco2e`` and never above its stock change; the counted parcels' stock changes summing to
    the change over their union."""
    out = []
    parcels = document.get("parcels", [])
    summary = document.get("summary", {})
    if summary.get("parcels") != len(parcels):
        out.append(f"summary.parcels {summary.get('parcels')} but {len(parcels)} parcels")
    for verdict in ("eligible", "ineligible", "undetermined"):
        n = sum(p.get("verdict") == verdict for p in parcels)
        if summary.get(verdict) != n:
            out.append(f"summary.{verdict} {summary.get(verdict)} but {n} parcels are {verdict}")
    records = [(p["parcel_id"], p.get("verdict"), p["creditable"]) for p in parcels if p.get("creditable")]
    terms = ((document.get("crediting") or {}).get("methodology") or {}).get("terms") or {}
    project = (document.get("crediting") or {}).get("project")
    for pid, verdict, c in records:
        if c.get("status") != "credited":
            continue
        if verdict != "eligible":
            out.append(f"parcel {pid}: credited but its verdict is {verdict}")
        out += [f"parcel {pid}: {problem}" for problem in _deduction_problems(c, terms)]
        if c["tco2e"] > max(c["stock_change_tco2e"], 0.0) * (1 + 1e-9) + 1e-9:
            out.append(f"parcel {pid}: tco2e {c['tco2e']:g} above its stock change {c['stock_change_tco2e']:g}")
        scale = (project or {}).get("parcel_scale")
        if scale is not None and not _close(c.get("issuable_tco2e") or 0.0, c["tco2e"] * scale):
            out.append(f"parcel {pid}: issuable_tco2e {c.get('issuable_tco2e')} is not tco2e x the project's "
                       f"parcel_scale {scale:g}")
    if project:
        bounds = [project.get(k) for k in ("by_parcels_tco2e", "project_level_tco2e") if project.get(k) is not None]
        if bounds and not _close(project["tco2e"], min(bounds)):
            out.append(f"project tco2e {project['tco2e']:g} is not the smaller of by_parcels_tco2e and "
                       f"project_level_tco2e ({min(bounds):g})")
        statuses = project.get("statuses") or {}
        if statuses and sum(statuses.values()) != len(records):
            out.append(f"project statuses count {sum(statuses.values())} parcels but {len(records)} have a record")
        issuable = sum(c.get("issuable_tco2e") or 0.0 for _, _, c in records)
        if not _close(issuable, project["tco2e"]):
            out.append(f"the parcels' issuable_tco2e sum to {issuable:g}, not the project's tco2e {project['tco2e']:g}")
        if project["tco2e"] > max(project["stock_change_tco2e"], 0.0) * (1 + 1e-9) + 1e-9:
            out.append(f"project tco2e {project['tco2e']:g} above its stock change {project['stock_change_tco2e']:g}")
        # parcels never overlap, so the change over their union is the sum over the counted parcels: a
        # parcel's change raised (and every number after it made to agree) shows here
        from sinks.eligibility.crediting import COUNTED

        counted = sum(c["stock_change_tco2e"] for _, _, c in records if c.get("status") in COUNTED)
        union = project.get("stock_change_union_tco2e")
        if union is not None and any(c.get("status") in COUNTED for _, _, c in records) and not _close(union, counted):
            out.append(f"the counted parcels' stock changes sum to {counted:g}, not the project's change over "
                       f"their union {union:g}")
    return out


def to_dict(report: EligibilityReport) -> dict:
    ruleset = report.ruleset
    counts = report.counts()
    return {
        "schema_version": SCHEMA_VERSION,
        "generated": report.generated,
        "software": {"name": "sinks", "version": versions()["sinks"], "versions": versions()},
        "ruleset": {
            "id": ruleset.id, "title": ruleset.title, "methodology": ruleset.methodology, "version": ruleset.version,
            "source": ruleset.source, "scheme": ruleset.scheme,
            "sha256": ruleset.sha256, "overrides": ruleset.overrides, "not_checked": list(ruleset.not_checked),
            "encodings": {name: enc.describe() for name, enc in ruleset.encodings.items()},
            "layer_values": ruleset.layer_values,
            "rules": [{"id": r.id, "check": r.check, "params": r.params, "description": r.description,
                       "description_zh": r.description_zh, "layer": r.layer, "source": r.source,
                       "confidence": r.confidence} for r in ruleset.rules],
        },
        "layers": report.layers,
        "crs": report.crs,
        "summary": {"parcels": len(report.parcels), **counts,
                    "eligible_area_ha": round(sum(p.area_ha for p in report.parcels if p.verdict == "eligible"), 6)},
        "parcels": [
            {"parcel_id": p.parcel_id, "verdict": p.verdict, "area_ha": round(p.area_ha, 6), "start_date": p.start_date,
             "rules": [{"id": rid, **asdict(result)} for rid, result in p.rules.items()],
             **({"creditable": _clean(p.creditable)} if p.creditable is not None else {})}
            for p in report.parcels
        ],
        **({"crediting": _clean(report.crediting)} if report.crediting is not None else {}),
        "inputs": report.inputs if report.inputs is not None else input_files(report),
    }


def input_files(report: EligibilityReport, *, parcels=None, options: dict | None = None) -> dict:
    """The report's ``inputs``: the parcel file (when the parcels came from one) with its sha256, the
    layers and the rule file with the sha256 the report already holds for them, and the options of
    the command (``sinks credit`` and ``sinks eligibility`` pass their arguments)."""
    from sinks.io import sha256_file

    files = {"parcels": {"path": str(parcels), "sha256": sha256_file(parcels)}} if parcels is not None else {}
    files.update({f"layer {name}": {"path": layer["path"], "sha256": layer["sha256"]}
                  for name, layer in report.layers.items() if isinstance(layer, dict) and layer.get("sha256")})
    if report.ruleset.path:
        files["rule set"] = {"path": report.ruleset.path, "sha256": report.ruleset.sha256}
    out = {"files": files, "options": dict(options or {})}
    if parcels is None:
        out["note"] = ("made through the Python API: the parcels came as a table, so no parcel file is hashed; "
                       "their ids, areas and start dates are in the report")
    return out


def _clean(value):
    """JSON-safe: NaN and infinities become null, numpy numbers plain numbers."""
    import math

    import numpy as np

    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


#: Crediting columns of the GeoPackage (t CO2e over the period; shares of area). ``issuable_tco2e``
#: is what the project may issue for the parcel (``tco2e`` x the project's ``parcel_scale``).
GPKG_CREDIT_COLUMNS = ("stock_change_tco2e", "stock_change_sd_tco2e", "baseline_tco2e", "leakage_tco2e",
                       "net_tco2e", "net_sd_tco2e", "uncertainty_deduction_tco2e", "buffer_tco2e", "tco2e",
                       "issuable_tco2e", "lower_tco2e", "upper_tco2e", "mapped_area_ha", "outside_raster_share",
                       "nodata_share", "outside_aoa_share")


def to_geodataframe(report: EligibilityReport) -> gpd.GeoDataFrame:
    """One row per parcel: verdict, area, one status column per rule, the reasons."""
    rows = []
    for p in report.parcels:
        row = {"parcel_id": p.parcel_id, "verdict": p.verdict, "area_ha": p.area_ha, "start_date": p.start_date}
        row.update({f"rule_{rid}": r.status for rid, r in p.rules.items()})
        row["reasons"] = "; ".join(f"{rid}: {r.reason}" for rid, r in p.rules.items() if r.status != "pass")
        if report.crediting is not None:
            c = p.creditable or {}
            # the report it belongs to, on every row: a GeoPackage read alone still says what it is
            row.update(report_schema_version=SCHEMA_VERSION, credit_route=report.crediting.get("route"),
                       methodology=report.crediting["methodology"]["id"],
                       parcel_scale=report.crediting["project"].get("parcel_scale"))
            row["credit_status"] = c.get("status")
            for key in GPKG_CREDIT_COLUMNS:
                row[key] = c.get(key)
            row["credit_reason"] = c.get("reason")
        rows.append(row)
    return gpd.GeoDataFrame(rows, geometry=[p.geometry for p in report.parcels], crs=report.crs)


def write_report(report: EligibilityReport, json_path: str | os.PathLike,
                 gpkg_path: str | os.PathLike | None = None) -> dict:
    """Write the JSON report (validated first) and, if asked, the GeoPackage; returns the document.

    Both are written to staging names and renamed only when both are complete: they appear together
    or not at all, and an existing report is left as it was when writing fails.
    """
    if gpkg_path is not None and Path(gpkg_path).resolve() == Path(json_path).resolve():
        raise OutputError(f"{gpkg_path}: named as both the JSON report and the GeoPackage; give each its own path")
    if gpkg_path is not None and Path(gpkg_path).suffix.lower() != ".gpkg":
        raise OutputError(f"{gpkg_path}: the GeoPackage must end in .gpkg")
    document = to_dict(report)
    validate(document)
    text = json.dumps(document, indent=2, ensure_ascii=False)
    table = to_geodataframe(report) if gpkg_path else None
    with contextlib.ExitStack() as stack:
        json_tmp = stack.enter_context(atomic_path(json_path))
        gpkg_tmp = stack.enter_context(atomic_path(gpkg_path)) if gpkg_path else None
        Path(json_tmp).write_text(text, encoding="utf-8")
        if gpkg_tmp is not None:
            write_vector(table, Path(gpkg_tmp), Path(gpkg_path))
    return document
