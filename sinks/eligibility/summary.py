"""A one-page HTML summary of a crediting report, for a verifier.

:func:`project_summary` turns the report document (:func:`sinks.eligibility.report.to_dict`, the
JSON that ``sinks credit --out`` writes) into one self-contained HTML page: the methodology and the
run's provenance (sinks version, bundle, map files and their sha256), the project totals with their
90 % interval and every deduction, the crediting terms with source and confidence ("unchecked"
ones flagged), the matched-controls balance table when controls were used, one row per parcel, and
a map figure of the parcels coloured by status over the second-epoch carbon map. The page has no
external asset (the figure is a base64 PNG data URI, the CSS inline) and prints on A4.

Every number in a table cell carries the report's exact value in ``data-value`` (the displayed
text is rounded), totals rows their report key in ``data-key`` and parcel rows their id in
``data-parcel``, so a script can check the page against the JSON. Every string from the user or
the rule set is escaped.

The figure needs matplotlib (the optional ``sinks[plot]`` extra); without it, without parcel
geometries, or when the map is missing or is not the map the report credited (its sha256 differs),
the page says so and is written anyway: drawing never raises. :func:`write_summary` writes the page
atomically (``sinks credit ... --summary PROJECT.html``).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

from sinks.errors import OutputError

SUFFIXES = (".html", ".htm")
#: The carbon map is read decimated to at most this many pixels on its long side.
MAX_MAP_PIXELS = 800
#: Parcels are labelled on the figure when there are at most this many.
MAX_LABELS = 30
NO_MATPLOTLIB = ("The map figure was not drawn: matplotlib is not installed "
                 "(install the plot extra: pip install 'sinks[plot]').")
#: Colours of the credit statuses (and of the verdicts of a report without crediting).
STATUS_COLOURS = {
    "credited": "#1a9850", "within_uncertainty": "#d9ef8b", "no_net_removal": "#9e9e9e", "ineligible": "#d73027", "undetermined": "#fdae61",
    "needs_field_measurement": "#7b3294", "no_map_data": "#d9d9d9", "no_baseline": "#8c510a",
    "eligible": "#1a9850",
}

CSS = """
@page { size: A4; margin: 11mm }
body { font: 9.5pt/1.35 system-ui, "Segoe UI", "Noto Sans", "Noto Sans CJK SC", "Microsoft YaHei", sans-serif;
  color: #222; max-width: 190mm; margin: 0 auto; padding: 6px }
h1 { font-size: 14pt; margin: 0 0 2px } h2 { font-size: 10.5pt; margin: 10px 0 3px; border-bottom: 1px solid #888 }
p { margin: 2px 0 4px } .sub { color: #444 }
table { border-collapse: collapse; width: 100%; margin: 2px 0 5px }
th, td { border: 1px solid #ccc; padding: 1px 4px; vertical-align: top; text-align: left }
th { background: #eee; font-weight: 600 } td.num { text-align: right; white-space: nowrap;
  font-variant-numeric: tabular-nums }
tr.total td { font-weight: bold; background: #f3f8f3 }
.mono { font-family: ui-monospace, Consolas, monospace; font-size: 7.5pt; word-break: break-all }
.small { font-size: 8pt; color: #444 }
.flag { background: #b00; color: #fff; font-weight: bold; padding: 0 3px; border-radius: 2px; font-size: 7.5pt }
tr.unchecked td { background: #fff3e0 }
.pass { color: #060; font-weight: bold } .fail { color: #b00; font-weight: bold }
.note { background: #eef2fb; border-left: 3px solid #5570c0; padding: 2px 6px; margin: 4px 0 }
.swatch { display: inline-block; width: 8pt; height: 8pt; margin-right: 3px; vertical-align: -1pt;
  border: 1px solid #555 }
.cols { display: flex; gap: 10px; flex-wrap: wrap } .cols > div { flex: 1 1 240px }
figure { margin: 4px 0; text-align: center } figure img { max-width: 100%; height: auto }
figcaption { font-size: 8pt; color: #444 }
@media print { body { max-width: none; padding: 0 } tr, figure { break-inside: avoid } h2 { break-after: avoid } }
"""


# ---- formatting ----------------------------------------------------------------------------------

def e(value) -> str:
    """HTML-escaped text of ``value`` (quotes too); empty for None."""
    return html.escape("" if value is None else str(value), quote=True)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value, digits: int = 2) -> str:
    return f"{value:,.{digits}f}" if _finite(value) else "–"


def num(value, digits: int = 2, cls: str = "num") -> str:
    """A table cell with ``value`` rounded for reading and exact in ``data-value``."""
    exact = repr(float(value)) if _finite(value) else ""
    return f'<td class="{cls}" data-value="{exact}">{_fmt(value, digits)}</td>'


def percent(share) -> str:
    """0.9 -> '90 %' (the level of an interval)."""
    return f"{share * 100:g} %" if _finite(share) else "–"


def uncertainty_label(term: dict) -> str:
    """The uncertainty deduction rule in words, e.g. 'lower bound of the 90 % interval'."""
    rule, level = term.get("rule"), term.get("level", 0.9)
    if rule == "lower_bound":
        return f"lower bound of the {percent(level)} interval"
    if rule == "excess_over_threshold":
        return (f"excess of the {percent(level)} interval's relative half-width over "
                f"{percent(term.get('threshold'))} (deducted as a share of the net)")
    return str(rule)


def term_value(name: str, term: dict) -> str:
    """One crediting term's values in words (plain text, to be escaped)."""
    if term.get("project_specific"):
        return "project-specific: not given"
    if name == "period":
        return f"{term.get('min_years')}–{term.get('max_years')} years"
    if name == "pools":
        return "; ".join(f"{key}: {', '.join(term[key]).replace('_', ' ')}" for key in ("counted", "optional", "excluded")
                         if term.get(key))
    if name == "baseline":
        return "zero" if term.get("rule") == "zero" else f"rate {term.get('tco2e_ha_yr'):g} t CO2e/ha/yr"
    if name in ("leakage", "buffer"):
        fraction = term.get("fraction")
        return f"{fraction:g} of the net removal" if name == "leakage" and _finite(fraction) else (
            f"{fraction:g} of what remains" if _finite(fraction) else str(fraction))
    if name == "uncertainty":
        return uncertainty_label(term)
    meta = {"source", "confidence", "note", "project_specific"}
    return "; ".join(f"{k} = {v}" for k, v in term.items() if k not in meta)


def unchecked(confidence) -> bool:
    return "unchecked" in str(confidence or "").lower()


def _confidence_cell(confidence) -> str:
    flag = '<span class="flag">UNCHECKED</span> ' if unchecked(confidence) else ""
    return f"<td>{flag}{e(confidence)}</td>"


def _swatch(status) -> str:
    colour = STATUS_COLOURS.get(status, "#ffffff")
    return f'<span class="swatch" style="background:{colour}"></span>'


def _status(parcel: dict) -> str:
    return (parcel.get("creditable") or {}).get("status") or parcel.get("verdict") or ""


# ---- the figure ----------------------------------------------------------------------------------

def _mpl_path(geometry):
    import numpy as np
    from matplotlib.path import Path as MPath

    verts, codes = [], []
    for polygon in getattr(geometry, "geoms", [geometry]):
        if polygon.is_empty or polygon.geom_type != "Polygon":
            continue
        for ring in (polygon.exterior, *polygon.interiors):
            xy = np.asarray(ring.coords)[:, :2]
            verts.extend(xy)
            codes += [MPath.MOVETO] + [MPath.LINETO] * (len(xy) - 2) + [MPath.CLOSEPOLY]
    return MPath(np.asarray(verts, dtype=float), codes) if verts else None


def _read_map(path, geoms):
    """The carbon band around the parcels, decimated: (data, extent, units, crs)."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window, bounds

    with rasterio.open(path) as src:
        names = list(src.descriptions)
        band = names.index("carbon") + 1 if "carbon" in names else 1
        units = src.tags(band).get("units", "")
        if geoms.crs is not None and src.crs is not None:
            geoms = geoms.to_crs(src.crs)
        minx, miny, maxx, maxy = geoms.total_bounds
        pad = 0.1 * max(maxx - minx, maxy - miny, 3 * abs(src.res[0]))
        inv = ~src.transform
        corners = [inv @ (x, y) for x in (minx - pad, maxx + pad) for y in (miny - pad, maxy + pad)]
        c0 = max(0, math.floor(min(c for c, _ in corners)))
        c1 = min(src.width, math.ceil(max(c for c, _ in corners)))
        r0 = max(0, math.floor(min(r for _, r in corners)))
        r1 = min(src.height, math.ceil(max(r for _, r in corners)))
        if c1 <= c0 or r1 <= r0:
            return None
        window = Window(c0, r0, c1 - c0, r1 - r0)
        step = max(1, math.ceil(max(window.width, window.height) / MAX_MAP_PIXELS))
        shape = (max(1, round(window.height / step)), max(1, round(window.width / step)))
        data = src.read(band, window=window, out_shape=shape, masked=True,
                        resampling=Resampling.average if step > 1 else Resampling.nearest)
        left, bottom, right, top = bounds(window, src.transform)
        data = np.ma.masked_invalid(data.astype("float64"))
        return data, (left, right, bottom, top), units, src.crs


def _choose_map(document: dict, map_path) -> tuple[str | None, list[str]]:
    """The map to draw (None: none) and notes: the report's second epoch unless told otherwise,
    drawn only when its sha256 is the one the report credited."""
    from sinks.io import sha256_file

    maps = (document.get("crediting") or {}).get("maps") or []
    if map_path is False:
        return None, ["The parcels are drawn without a carbon map (none asked for)."]
    if map_path is None:
        if not maps:
            return None, ["The parcels are drawn without a carbon map (the report names none)."]
        map_path = maps[-1]["path"]
    path = Path(map_path)
    if not path.is_file():
        return None, [f"The second-epoch carbon map {path} was not found: the parcels are drawn without it."]
    if maps and sha256_file(path) != maps[-1].get("sha256"):
        return None, [f"The map {path} is not the second-epoch map the report credited (its sha256 differs from "
                      f"{maps[-1].get('sha256')}): the parcels are drawn without it."]
    return str(path), []


def _draw(document: dict, parcels, map_path) -> tuple[str | None, list[str]]:
    """(base64 PNG of the figure, or None; notes for the page). Never raises."""
    from sinks.learn.card_figures import DPI, matplotlib_available, new_figure

    if not matplotlib_available():
        return None, [NO_MATPLOTLIB]
    if parcels is None or len(parcels) == 0:
        return None, ["The map figure was not drawn: no parcel geometries were given."]
    try:
        from matplotlib import patheffects
        from matplotlib.collections import PatchCollection
        from matplotlib.patches import Patch, PathPatch

        statuses = {str(p["parcel_id"]): _status(p) for p in document.get("parcels", [])}
        geoms = parcels[parcels["parcel_id"].astype(str).isin(statuses)]
        if len(geoms) == 0:
            return None, ["The map figure was not drawn: none of the parcel geometries given is in the report."]
        chosen, notes = _choose_map(document, map_path)
        raster = _read_map(chosen, geoms) if chosen else None
        if chosen and raster is None:
            notes.append(f"The carbon map {chosen} does not cover the parcels: they are drawn without it.")
        if raster is not None and geoms.crs is not None and raster[3] is not None:
            geoms = geoms.to_crs(raster[3])
        fig = new_figure(7.2, 4.6)
        ax = fig.add_subplot()
        if raster is not None:
            data, extent, units, _ = raster
            image = ax.imshow(data, cmap="Greys", extent=extent, interpolation="nearest")
            year = (document.get("crediting") or {}).get("maps", [{}])[-1].get("year")
            label = f"carbon{f' {year:g}' if _finite(year) else ''}" + (f" ({units})" if units else "")
            bar = fig.colorbar(image, ax=ax, shrink=0.85)
            bar.set_label(label, fontsize=7)
            bar.ax.tick_params(labelsize=6)
        ids = geoms["parcel_id"].astype(str).tolist()
        patches, colours, small = [], [], []
        minx, miny, maxx, maxy = geoms.total_bounds
        span = max(maxx - minx, maxy - miny) or 1.0
        for pid, geom in zip(ids, geoms.geometry):
            path = _mpl_path(geom) if geom is not None else None
            if path is None:
                continue
            colour = STATUS_COLOURS.get(statuses[pid], "#ffffff")
            patches.append(PathPatch(path))
            colours.append(colour)
            x0, y0, x1, y1 = geom.bounds
            if max(x1 - x0, y1 - y0) < 0.01 * span:  # too small to see: a marker shows where it is
                point = geom.representative_point()
                small.append((point.x, point.y, colour))
        ax.add_collection(PatchCollection(patches, facecolors=colours, edgecolors="#222222", linewidths=0.8,
                                          alpha=0.7, match_original=False))
        if small:
            ax.scatter([s[0] for s in small], [s[1] for s in small], c=[s[2] for s in small], s=22, marker="o",
                       edgecolors="#222222", linewidths=0.6, zorder=3)
        if len(ids) <= MAX_LABELS:
            for pid, geom in zip(ids, geoms.geometry):
                if geom is not None and not geom.is_empty:
                    point = geom.representative_point()
                    ax.annotate(pid, (point.x, point.y), fontsize=6, ha="center", va="center", parse_math=False,
                                annotation_clip=True,
                                path_effects=[patheffects.withStroke(linewidth=1.5, foreground="white")])
        if raster is None:
            pad = 0.05 * span
            ax.set_xlim(minx - pad, maxx + pad)
            ax.set_ylim(miny - pad, maxy + pad)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
        ax.ticklabel_format(useOffset=False, style="plain")
        crs = geoms.crs.to_string() if geoms.crs is not None else "no CRS"
        ax.set_title(f"Parcels by status ({crs})", fontsize=8, loc="left")
        counts = {}
        for pid in ids:
            counts[statuses[pid]] = counts.get(statuses[pid], 0) + 1
        fig.legend(handles=[Patch(facecolor=STATUS_COLOURS.get(s, "#ffffff"), edgecolor="#222222", alpha=0.6,
                                  label=f"{s.replace('_', ' ')} ({n})") for s, n in counts.items()],
                   loc="outside lower center", ncols=min(4, len(counts)), fontsize=6, frameon=False)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
        return base64.b64encode(buffer.getvalue()).decode("ascii"), notes
    except Exception as exc:  # a figure that cannot be drawn never stops the page
        return None, [f"The map figure could not be drawn ({type(exc).__name__}: {exc})."]


# ---- the page ------------------------------------------------------------------------------------

def _provenance(document: dict) -> str:
    software, ruleset = document.get("software") or {}, document.get("ruleset") or {}
    crediting = document.get("crediting") or {}
    rows = [("Report generated", e(document.get("generated"))),
            ("Software", f"sinks {e(software.get('version'))} (report schema {e(document.get('schema_version'))})"),
            ("Rule set", f"{e(ruleset.get('id'))} <span class=\"mono\">sha256 {e(ruleset.get('sha256'))}</span>"),
            ("Parcels' CRS", e(document.get("crs")))]
    bundles = sorted({str(m.get("bundle_id")) for m in crediting.get("maps", []) if m.get("bundle_id")})
    if bundles:
        rows.append(("Model bundle", e(", ".join(bundles))))
    for m in crediting.get("maps", []):
        rows.append((f"Carbon map {_fmt(m.get('year'), 0).replace(',', '')}",
                     f"{e(m.get('path'))} <span class=\"mono\">sha256 {e(m.get('sha256'))}</span>"
                     f" <span class=\"small\">(bundle {e(m.get('bundle_id'))}, interval {percent(m.get('interval_level'))})"
                     "</span>"))
    for name, layer in (document.get("layers") or {}).items():
        if isinstance(layer, dict):
            rows.append((f"Layer {e(name)}", f"{e(layer.get('path'))} <span class=\"mono\">sha256 "
                                             f"{e(layer.get('sha256'))}</span>"))
    controls = crediting.get("controls")
    if controls:
        rows.append(("Control covariates", f"{e(controls.get('covariates_path'))} <span class=\"mono\">sha256 "
                                           f"{e(controls.get('covariates_sha256'))}</span>"))
    if crediting:
        rows.append(("Assumptions", e(f"epoch correlation ρ = {crediting.get('epoch_correlation')}; pixel errors "
                                      f"{crediting.get('error_model')}; AOA threshold "
                                      f"{percent(crediting.get('aoa_threshold'))} of a parcel's mapped area")))
    overrides = {**{f"rule {k}": v for k, v in (ruleset.get("overrides") or {}).items()},
                 **{f"term {k}": v for k, v in ((crediting.get("methodology") or {}).get("overrides") or {}).items()}}
    if overrides:
        rows.append(("Overrides", e("; ".join(f"{k}: {v}" for k, v in overrides.items()))))
    if "departures" in crediting:
        found = crediting["departures"]
        listed = "; ".join(f"{d['setting']} = {d['value']} (methodology or default: {d.get('default')}): {d['effect']}"
                           for d in found) or "none"
        flag = "yes" if crediting.get("conservative_as_methodology") else "<strong>no</strong>"
        rows.append(("Departures", f"{e(listed)}<br>conservative as the methodology: {flag}"))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<h2>Run provenance</h2>\n<table class="provenance">{body}</table>'


def _totals(document: dict) -> str:
    summary = document.get("summary") or {}
    crediting = document.get("crediting") or {}
    project = crediting.get("project")
    parcels = [f'<tr data-key="parcels"><th>parcels</th>{num(summary.get("parcels"), 0)}</tr>']
    for verdict in ("eligible", "ineligible", "undetermined"):
        parcels.append(f'<tr data-key="verdict.{verdict}"><td>{_swatch(verdict) if verdict != "eligible" else ""}'
                       f'verdict {verdict}</td>{num(summary.get(verdict, 0), 0)}</tr>')
    parcels.append(f'<tr data-key="eligible_area_ha"><td>eligible area, ha</td>'
                   f'{num(summary.get("eligible_area_ha"), 4)}</tr>')
    if project:
        for status, n in project.get("statuses", {}).items():
            if n:
                parcels.append(f'<tr data-key="status.{e(status)}"><td>{_swatch(status)}{e(status.replace("_", " "))}'
                               f'</td>{num(n, 0)}</tr>')
    left = f'<div><table class="counts"><tr><th>Parcels</th><th>n</th></tr>{"".join(parcels)}</table></div>'
    if not project:
        return (f'<h2>Totals</h2>\n<div class="cols">{left}</div>\n<p class="note">This report has no crediting '
                "block (an eligibility report): no t CO2e is credited.</p>")
    level = percent(crediting.get("interval_level"))
    terms = (crediting.get("methodology") or {}).get("terms") or {}
    buffer = terms.get("buffer", {}).get("fraction")
    leakage = terms.get("leakage", {}).get("fraction")
    baseline = terms.get("baseline", {})
    rows = [
        ("stock_change_tco2e", "stock change ΔC", project.get("stock_change_lower_tco2e"),
         project.get("stock_change_upper_tco2e"),
         "interval: correlated errors over the union of the counted parcels" if crediting.get("route") == "maps"
         else "interval: the counted parcels' sds summed (errors fully correlated between parcels)"),
        ("baseline_tco2e", "− baseline", None, None, term_value("baseline", baseline) if baseline else ""),
        ("leakage_tco2e", "− leakage", None, None, f"fraction {leakage:g}" if _finite(leakage) else ""),
        ("uncertainty_deduction_tco2e", "− uncertainty deduction", None, None,
         uncertainty_label(terms["uncertainty"]) if "uncertainty" in terms else ""),
        ("buffer_tco2e", "− buffer", None, None, f"fraction {buffer:g} (non-permanence)" if _finite(buffer) else ""),
        ("tco2e", "= creditable", project.get("lower_tco2e"), project.get("upper_tco2e"), _binding_note(project) + (
            f"; its interval is at the uncertainty rule's {percent(project['creditable_interval_level'])}"
            if project.get("creditable_interval_level", crediting.get("interval_level")) != crediting.get("interval_level")
            else "")),
    ]
    cells = []
    for key, label, lower, upper, note in rows:
        bounds = f"{num(lower)}{num(upper)}" if key in ("stock_change_tco2e", "tco2e") else "<td></td><td></td>"
        cls = ' class="total"' if key == "tco2e" else ""
        cells.append(f'<tr data-key="{key}"{cls}><td>{e(label)}</td>{num(project.get(key))}{bounds}'
                     f'<td class="small">{e(note)}</td></tr>')
    right = (f'<div style="flex: 2 1 380px"><table class="totals"><tr><th>Project, t CO2e</th><th>value</th>'
             f'<th>{level} lower</th><th>{level} upper</th><th>rule</th></tr>{"".join(cells)}</table></div>')
    headline = (f'<p><b>Creditable: {_fmt(project.get("tco2e"))} t CO2e</b> ({level} interval '
                f'{_fmt(project.get("lower_tco2e"))} – {_fmt(project.get("upper_tco2e"))}) from '
                f'{project.get("statuses", {}).get("credited", 0)} credited of {project.get("parcels")} parcels, '
                f"over {' – '.join(_fmt(y, 0).replace(',', '') for y in crediting.get('years', []))}.</p>")
    return f'<h2>Totals</h2>\n{headline}\n<div class="cols">{left}{right}</div>'


def _terms(document: dict) -> str:
    methodology = (document.get("crediting") or {}).get("methodology") or {}
    rows = []
    for name, term in (methodology.get("terms") or {}).items():
        cls = ' class="unchecked"' if unchecked(term.get("confidence")) else ""
        rows.append(f'<tr data-term="{e(name)}"{cls}><td>{e(name)}</td><td>{e(term_value(name, term))}</td>'
                    f'<td>{e(term.get("source"))}</td>{_confidence_cell(term.get("confidence"))}'
                    f'<td class="small">{e(term.get("note"))}</td></tr>')
    out = ""
    if rows:
        out = ('<h2>Crediting terms</h2>\n<table class="terms"><tr><th>term</th><th>value</th><th>source</th>'
               f'<th>confidence</th><th>note</th></tr>{"".join(rows)}</table>')
    ruleset = document.get("ruleset") or {}
    rules = []
    for rule in ruleset.get("rules", []):
        cls = ' class="unchecked"' if unchecked(rule.get("confidence")) else ""
        params = ", ".join(f"{k} = {v}" for k, v in (rule.get("params") or {}).items())
        params = f'<br><span class="small">{e(params)}</span>' if params else ""
        rules.append(f'<tr data-rule="{e(rule.get("id"))}"{cls}><td>{e(rule.get("id"))}</td>'
                     f'<td>{e(rule.get("description") or rule.get("check"))}'
                     f'{params}</td>'
                     f'<td>{e(rule.get("source"))}</td>{_confidence_cell(rule.get("confidence"))}</tr>')
    if rules:
        out += ('\n<h2>Eligibility rules</h2>\n<table class="rules"><tr><th>rule</th><th>condition</th><th>source</th>'
                f'<th>confidence</th></tr>{"".join(rules)}</table>')
    if ruleset.get("not_checked"):
        out += ('\n<p class="small"><b>Not checked by sinks</b> (verify in the field or the documents): '
                + e("; ".join(map(str, ruleset["not_checked"]))) + "</p>")
    flagged = sum(unchecked(t.get("confidence")) for t in (methodology.get("terms") or {}).values()) + \
        sum(unchecked(r.get("confidence")) for r in ruleset.get("rules", []))
    if flagged:
        out += (f'\n<p class="note"><span class="flag">UNCHECKED</span> {flagged} value(s) could not be verified '
                "against the methodology's text: verify them before issuing credits.</p>")
    return out


def _balance(document: dict) -> str:
    controls = (document.get("crediting") or {}).get("controls")
    if not controls:
        return ""
    threshold = controls.get("smd_threshold")
    rows = []
    for b in controls.get("balance", []):
        ok = bool(b.get("passed"))
        rows.append(f'<tr data-covariate="{e(b.get("covariate"))}"><td>{e(b.get("covariate"))}</td>'
                    f'{num(b.get("mean_project"), 3)}{num(b.get("mean_controls"), 3)}{num(b.get("smd_before"), 3)}'
                    f'{num(b.get("smd_after"), 3)}{num(threshold, 2)}'
                    f'<td class="{"pass" if ok else "fail"}">{"pass" if ok else "FAIL"}</td></tr>')
    passed = bool(controls.get("passed"))
    rate = controls.get("baseline_tco2e_ha_yr")
    line = (f"Matched {controls.get('matched')} of {controls.get('project_pixels')} project pixels from a pool of "
            f"{controls.get('pool_pixels')} (caliper {controls.get('caliper_sd')} pooled sd; {controls.get('method')}). "
            f"Baseline: " + (f"{rate:.4g} t CO2e/ha/yr from the matched controls" if _finite(rate)
                             else "none (balance failed: no parcel credited)") + ".")
    return ('<h2>Matched controls: balance</h2>\n'
            f'<p><span class="{"pass" if passed else "fail"}">{"balance passed" if passed else "BALANCE FAILED"}'
            f'</span>{"" if passed else " — " + e(controls.get("reason"))}. {e(line)}</p>\n'
            '<table class="balance"><tr><th>covariate</th><th>mean project</th><th>mean controls</th>'
            '<th>SMD before</th><th>SMD after</th><th>|SMD| threshold</th><th>balance</th></tr>'
            f'{"".join(rows)}</table>')


def _parcels(document: dict) -> str:
    rows = []
    for p in document.get("parcels", []):
        c = p.get("creditable") or {}
        status = _status(p)
        reason = c.get("reason")
        if reason is None:
            reason = "; ".join(f"{r.get('id')}: {r.get('reason')}" for r in p.get("rules", [])
                               if r.get("status") != "pass")
        pid = e(p.get("parcel_id"))
        rows.append(f'<tr data-parcel="{pid}"><td>{pid}</td>{num(p.get("area_ha"), 4)}<td>{e(p.get("verdict"))}</td>'
                    f'<td>{_swatch(status)}{e(status.replace("_", " "))}</td><td class="small">{e(reason)}</td>'
                    f'{num(c.get("stock_change_tco2e"))}{num(c.get("tco2e"))}{num(c.get("lower_tco2e"))}'
                    f'{num(c.get("upper_tco2e"))}</tr>')
    level = percent((document.get("crediting") or {}).get("interval_level", 0.9))
    return ('<h2>Parcels</h2>\n<table class="parcels"><tr><th>parcel</th><th>area, ha</th><th>verdict</th>'
            '<th>status</th><th>reason</th><th>stock change, t CO2e</th><th>creditable, t CO2e</th>'
            f'<th>{level} lower</th><th>{level} upper</th></tr>{"".join(rows)}</table>')


def _binding_note(project: dict) -> str:
    """Which bound the project's creditable volume is (sinks.eligibility.crediting._project)."""
    by_parcels = ("the parcels' creditable volumes, each deducted by its own interval"
                  + (f" ({_fmt(project.get('parcels_tco2e'))}), less the {_fmt(-project['netted_losses_tco2e'])} lost "
                     "by parcels with a negative net" if project.get("netted_losses_tco2e") else ""))
    if project.get("binding") == "project_level":
        return (f"the deductions made once on the project's stock change and correlated sd, smaller than {by_parcels} "
                f"({_fmt(project.get('by_parcels_tco2e'))}): each parcel may issue "
                f"{project.get('parcel_scale', 0):.1%} of its creditable volume")
    return (f"{by_parcels}; the deductions made once on the project would give "
            f"{_fmt(project.get('project_level_tco2e'))}")


def project_summary(report_dict, parcels_gdf=None, map_path=None, *, title: str | None = None) -> str:
    """One self-contained HTML page summarising a crediting report, for a verifier.

    ``report_dict``: the report document (:func:`sinks.eligibility.report.to_dict`, or the JSON
    ``sinks credit`` wrote, loaded), or the :class:`~sinks.eligibility.engine.EligibilityReport`
    itself (its parcels then give the geometries). ``parcels_gdf``: the parcels (``parcel_id``,
    polygons with a CRS) for the map figure. ``map_path``: the carbon map to draw under them; by
    default the report's second-epoch map, drawn only when its sha256 is the report's; ``False`` for
    none. ``title``: the project's name (default: the methodology and the parcel count).
    """
    from sinks.eligibility.engine import EligibilityReport

    if isinstance(report_dict, EligibilityReport):
        from sinks.eligibility.report import to_dict, to_geodataframe

        if parcels_gdf is None:
            parcels_gdf = to_geodataframe(report_dict)[["parcel_id", "geometry"]]
        report_dict = to_dict(report_dict)
    document = report_dict
    crediting = document.get("crediting") or {}
    ruleset = document.get("ruleset") or {}
    methodology = crediting.get("methodology") or ruleset
    name = title or f"{len(document.get('parcels', []))} parcels"
    heading = f"Crediting summary: {name}" if crediting else f"Eligibility summary: {name}"
    sub = (f"Methodology <b>{e(methodology.get('id'))}</b> — {e(methodology.get('title'))}, version "
           f"{e(methodology.get('version'))} · source: {e(methodology.get('source') or ruleset.get('methodology'))}"
           + (f" · scheme {e(ruleset.get('scheme'))}" if ruleset.get("scheme") else ""))
    image, notes = _draw(document, parcels_gdf, map_path)
    if image:
        figure = (f'<figure><img alt="map of the parcels by status" src="data:image/png;base64,{image}">'
                  "<figcaption>Parcels coloured by status (as in the table)"
                  + (", over the second-epoch carbon map" if not notes else "") + ".</figcaption></figure>")
    else:
        figure = ""
    figure += "".join(f'<p class="note">{e(n)}</p>' for n in notes)
    method = crediting.get("method")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head><meta charset="utf-8"><title>{e(heading)} ({e(methodology.get("id"))})</title>'
        f"<style>{CSS}</style></head>",
        "<body>",
        f"<header><h1>{e(heading)}</h1><p class=\"sub\">{sub}</p></header>",
        _totals(document),
        "<h2>Map</h2>",
        figure,
        _parcels(document),
        _terms(document),
        _balance(document),
        _provenance(document),
        f'<p class="small">Method: {e(method)}.</p>' if method else "",
        f'<p class="small">{e(crediting.get("project", {}).get("interval_note"))}</p>' if crediting else "",
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def write_summary(report, path: str | os.PathLike, parcels_gdf=None, map_path=None, *,
                  title: str | None = None) -> Path:
    """Write :func:`project_summary` of ``report`` (an EligibilityReport or its document) to ``path``
    (``.html``) atomically: a failure leaves no half-written file and any existing one as it was."""
    from sinks.io import atomic_path

    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise OutputError(f"{path}: the summary must end in {' or '.join(SUFFIXES)}")
    text = project_summary(report, parcels_gdf, map_path, title=title)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path
