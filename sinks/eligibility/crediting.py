"""Crediting: from two carbon maps to creditable t CO2e per parcel and per project, conservatively.

Methodologies are data. Each rule set (``rulesets/*.toml``) carries, next to its eligibility rules, a
``[crediting]`` section of terms, each with its ``source`` and ``confidence``:

- ``period``: the crediting period, ``min_years`` / ``max_years``;
- ``pools``: the carbon pools ``counted`` (and ``optional`` / ``excluded`` ones);
- ``baseline``: ``rule = "zero"`` (baseline removals taken as zero);
- ``leakage``: ``fraction`` of the net removal deducted as leakage;
- ``uncertainty``: ``rule = "lower_bound"`` (the lower bound of the ``level`` interval) or
  ``rule = "excess_over_threshold"`` (deduct the share by which the interval's relative half-width
  at ``level`` exceeds ``threshold``);
- ``buffer``: ``fraction`` set aside for non-permanence.

A value the methodology leaves to the project (Verra's buffer from its risk tool, leakage from
VMD0054) is declared ``project_specific = true`` without a number, and crediting refuses to run until
it is given (``--term buffer.fraction=0.15``). Every term can be overridden the same way; the report
records the overrides.

Per parcel (see :func:`credit`), in t CO2e over the years Y1 -> Y2:

1. stock change ΔC and its sd from the two maps: the per-pixel sink of :func:`sinks.mapping.change.stock_change`
   (epoch correlation ρ, default 0) summed over the parcel by :func:`sinks.mapping.zonal.zonal_totals`
   (exact partial pixels, equal-area weights, spatially correlated errors), × (Y2 − Y1);
2. net = ΔC − baseline − leakage (leakage = fraction × max(ΔC − baseline, 0)); the sd scales alike;
3. the uncertainty deduction by the methodology's rule;
4. the buffer: a fraction of what remains;
5. creditable = max(what remains, 0), so creditable <= max(ΔC, 0) always.

Ex ante (``credit(..., growth=TABLE)``, instead of the maps), step 1 is the stock change expected
from a growth-curve table (:mod:`sinks.eligibility.growth`: species group x site class, linear in
age) x the parcel's equal-area hectares; steps 2-5 are the same.

Parcels not eligible, outside the area of applicability (share > ``aoa_threshold``), or without map
data get 0 with the reason. Project totals are sums over parcels, less the losses of parcels whose
net is negative (netted, as the methodologies count the project's net removals); the project's
stock-change interval is the correlated-error total over the union of the credited parcels (not
independent parcels).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from sinks import validate
from sinks.errors import InputError, SpecError
from sinks.validate import check_keys, did_you_mean

#: Carbon pools a methodology may name (IPCC 2006 GL Vol. 4 Ch. 1 Table 1.1, plus harvested wood).
POOLS = ("above_ground_biomass", "below_ground_biomass", "dead_wood", "litter", "soil_organic_carbon",
         "harvested_wood_products", "shrubs_and_herbs")
#: The methodology pools a map of each sinks pool holds (the ``sinks_pool`` tag ``sinks map`` writes
#: from the bundle's ``[target] pool``): forest stocks are tree above- and below-ground biomass
#: carbon (sinks.pools.forest), GEDI footprints above-ground only, soil and wetland stocks soil carbon.
MAP_POOL_CONTENT = {"forest": ("above_ground_biomass", "below_ground_biomass"), "gedi": ("above_ground_biomass",),
                    "soil": ("soil_organic_carbon",), "wetland": ("soil_organic_carbon",)}
UNCERTAINTY_RULES = ("lower_bound", "excess_over_threshold")
BASELINE_RULES = ("zero", "rate")
TERM_KEYS = {
    "period": ("min_years", "max_years"),
    "pools": ("counted", "optional", "excluded"),
    "baseline": ("rule", "tco2e_ha_yr"),
    "leakage": ("fraction",),
    "uncertainty": ("rule", "level", "threshold"),
    "buffer": ("fraction",),
}
COMMON_KEYS = ("source", "confidence", "note", "project_specific")
#: Parcels with more than this share of their mapped area outside the AOA need field measurement.
#: sinks' own policy, no methodology's number (none states one for maps): a parcel's credit should
#: rest on pixels like the training plots; a larger value (--aoa-threshold) is a departure.
AOA_THRESHOLD = 0.1
#: Level of the interval reported with every quantity (and of the lower-bound rule by default).
REPORT_LEVEL = 0.9


@dataclass(frozen=True)
class Term:
    name: str
    values: dict
    source: str
    confidence: str
    note: str = ""
    project_specific: bool = False

    def describe(self) -> dict:
        return {**self.values, "source": self.source, "confidence": self.confidence, "note": self.note,
                "project_specific": self.project_specific}


@dataclass(frozen=True)
class CreditingTerms:
    terms: dict[str, Term]
    overrides: dict = field(default_factory=dict)
    methodology_values: dict = field(default_factory=dict)  # each term's values as the methodology states them

    def __getitem__(self, name: str) -> Term:
        return self.terms[name]

    def value(self, name: str, key: str):
        return self.terms[name].values.get(key)

    def describe(self) -> dict:
        return {"terms": {name: term.describe() for name, term in self.terms.items()}, "overrides": self.overrides}

    def missing_project_values(self) -> list[str]:
        needed = {"leakage": "fraction", "buffer": "fraction"}
        out = [f"{name}.{key}" for name, key in needed.items()
               if name in self.terms and self.terms[name].values.get(key) is None]
        base = self.terms.get("baseline")
        if base is not None and base.values.get("rule") == "rate" and base.values.get("tco2e_ha_yr") is None:
            out.insert(0, "baseline.tco2e_ha_yr")
        return out


def _years(section, key, where):
    return validate.number(section, key, where, integer=True, minimum=1, maximum=200)


def _share(section, key, where):
    return validate.number(section, key, where, minimum=0, maximum=1, exclusive_maximum=True)


def _level(section, key, where):
    return validate.number(section, key, where, minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True)


def _rate(section, key, where):
    value = section.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise SpecError(f"{where}: {key} = {value:g} is negative: a baseline that loses carbon would add credit "
                        "beyond the measured stock change; the afforestation/reforestation methodologies take a "
                        "decreasing baseline as zero (give 0)")
    return validate.number(section, key, where, minimum=0, maximum=1000)


def _pools(section, key, where):
    value = section[key]
    if isinstance(value, str):  # --term pools.counted=above_ground_biomass,below_ground_biomass
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{where}: '{key}' must be a list of pool names ({', '.join(POOLS)}), or one text of them "
                        "separated by commas")
    for pool in value:
        if pool not in POOLS:
            raise SpecError(f"{where}: '{key}' names unknown pool {pool!r}{did_you_mean(pool, POOLS)}; pools: "
                            f"{', '.join(POOLS)}")
    return list(value)


def _choice(choices):
    def check(section, key, where):
        return validate.string(section, key, where, choices=choices)
    return check


VALUE_TYPES = {
    "period": {"min_years": _years, "max_years": _years},
    "pools": {"counted": _pools, "optional": _pools, "excluded": _pools},
    "baseline": {"rule": _choice(BASELINE_RULES), "tco2e_ha_yr": _rate},
    "leakage": {"fraction": _share},
    "uncertainty": {"rule": _choice(UNCERTAINTY_RULES), "level": _level, "threshold": _share},
    "buffer": {"fraction": _share},
}


def parse_term_overrides(items) -> dict[str, dict]:
    """``["TERM.KEY=VALUE", ...]`` (the ``--term`` option) -> ``{term: {key: value}}``."""
    from sinks.eligibility.rules import parse_dotted  # rules reads the [crediting] terms with this module

    return parse_dotted(items, "--term", "TERM.KEY=VALUE (e.g. buffer.fraction=0.15)")


def _check_term(name: str, raw: dict, where: str) -> Term:
    check_keys(raw, [*TERM_KEYS[name], *COMMON_KEYS], where)
    missing = [k for k in ("source", "confidence") if k not in raw]
    if missing:
        raise SpecError(f"{where} lacks {', '.join(missing)} (every crediting term cites its source)")
    source, confidence = validate.string(raw, "source", where), validate.string(raw, "confidence", where)
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise SpecError(f"{where}: 'note' must be a string")
    project = raw.get("project_specific", False)
    if not isinstance(project, bool):
        raise SpecError(f"{where}: 'project_specific' must be true or false, got {project!r}")
    values = {key: VALUE_TYPES[name][key](raw, key, where) for key in TERM_KEYS[name] if key in raw}
    if name == "period":
        for key in ("min_years", "max_years"):
            if key not in values:
                raise SpecError(f"{where}: missing '{key}'")
        if values["min_years"] > values["max_years"]:
            raise SpecError(f"{where}: min_years = {values['min_years']} is above max_years = {values['max_years']}")
    elif name == "pools":
        if not values.get("counted"):
            raise SpecError(f"{where}: 'counted' must name at least one pool")
        seen: dict[str, str] = {}
        for key in ("counted", "optional", "excluded"):
            for pool in values.get(key, []):
                if pool in seen:
                    raise SpecError(f"{where}: pool {pool!r} is both {seen[pool]} and {key}")
                seen[pool] = key
    elif name == "baseline":
        if "rule" not in values:
            raise SpecError(f"{where}: missing 'rule' (one of {', '.join(BASELINE_RULES)})")
        if values["rule"] == "zero" and "tco2e_ha_yr" in values:
            raise SpecError(f"{where}: rule 'zero' takes no 'tco2e_ha_yr'")
        if values["rule"] == "rate" and ("tco2e_ha_yr" in values) == project:
            raise SpecError(f"{where}: rule 'rate' needs 'tco2e_ha_yr' (baseline removals, t CO2e/ha/yr) or "
                            "project_specific = true, one of the two")
    elif name == "uncertainty":
        if "rule" not in values:
            raise SpecError(f"{where}: missing 'rule' (one of {', '.join(UNCERTAINTY_RULES)})")
        values.setdefault("level", REPORT_LEVEL)
        if values["rule"] == "excess_over_threshold" and "threshold" not in values:
            raise SpecError(f"{where}: rule 'excess_over_threshold' needs 'threshold' (e.g. 0.1)")
        if values["rule"] == "lower_bound" and "threshold" in values:
            raise SpecError(f"{where}: rule 'lower_bound' takes no 'threshold'")
    elif name in ("leakage", "buffer"):
        if "fraction" in values and project:
            raise SpecError(f"{where}: give either 'fraction' or project_specific = true, not both")
        if "fraction" not in values and not project:
            raise SpecError(f"{where}: missing 'fraction' (or project_specific = true when the project sets it)")
    return Term(name, values, source, confidence, note, project)


def parse_crediting(section, where: str, overrides: dict[str, dict] | None = None) -> CreditingTerms:
    """The checked crediting terms of a rule file's ``[crediting]`` section, with ``--term`` overrides."""
    if not isinstance(section, dict):
        raise SpecError(f"{where}: 'crediting' must be a table of terms ([crediting.period], ...)")
    check_keys(section, TERM_KEYS, f"{where}: [crediting]")
    missing = [name for name in TERM_KEYS if name not in section]
    if missing:
        raise SpecError(f"{where}: [crediting] lacks the term(s) {', '.join(missing)}; every methodology states "
                        "its crediting period, pools, baseline, leakage, uncertainty and buffer rules")
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    for name in overrides:
        if name not in TERM_KEYS:
            raise SpecError(f"--term names unknown term '{name}'{did_you_mean(name, TERM_KEYS)}; terms: "
                            f"{', '.join(TERM_KEYS)}")
    terms, original = {}, {}
    for name in TERM_KEYS:
        raw = section[name]
        at = f"{where}: [crediting.{name}]"
        if not isinstance(raw, dict):
            raise SpecError(f"{at}: must be a table")
        term = _check_term(name, raw, at)
        original[name] = dict(term.values)
        if name in overrides:
            given = overrides[name]
            allowed = (*TERM_KEYS[name], "source", "confidence")
            for key in given:
                if key not in allowed:
                    raise SpecError(f"--term {name}.{key}: term {name!r} has no key {key!r}"
                                    f"{did_you_mean(key, allowed)} (it has {', '.join(allowed)})")
            # a value the user set is not the methodology's: its source says so unless the user cites one
            # (--term NAME.source=...), and it is flagged unchecked unless the user states a confidence
            values = {k: v for k, v in given.items() if k not in ("source", "confidence")}
            merged = {**raw, **given}
            if values:  # a value of the user's, not the methodology's (a cited source or confidence alone changes none)
                shown = ", ".join(f"--term {name}.{k}={v}" for k, v in values.items())
                merged.update(source=given.get("source", f"set by the user ({shown}); the methodology's: "
                                                         f"{raw.get('source')}"),
                              confidence=given.get("confidence", "unchecked: set by the user, not read in the "
                                                                 "methodology"))
            if "fraction" in given or "tco2e_ha_yr" in given:
                merged.pop("project_specific", None)
            if given.get("rule") == "lower_bound" and "threshold" not in given:  # the file's rule's own key
                merged.pop("threshold", None)
            if given.get("rule") == "zero" and "tco2e_ha_yr" not in given:
                merged.pop("tco2e_ha_yr", None)
                merged.pop("project_specific", None)
            term = _check_term(name, merged, f"--term {name}.{'/'.join(given)}")
            if values:
                term = replace(term, note=(term.note + " " if term.note else "") + f"overridden: {values}")
        terms[name] = term
    return CreditingTerms(terms, overrides, original)


#: Term values that credit more when larger (+1) or when smaller (-1): a change that way is less
#: conservative than the methodology.
CREDITS_MORE_WHEN = {("uncertainty", "level"): -1, ("uncertainty", "threshold"): +1, ("leakage", "fraction"): -1,
                     ("buffer", "fraction"): -1, ("baseline", "tco2e_ha_yr"): -1, ("period", "max_years"): +1,
                     ("period", "min_years"): -1}


def _effect(sign: int, value, default) -> str:
    return "less conservative" if (value - default) * sign > 0 else "more conservative"


def _term_effect(name: str, key: str, value, was) -> str:
    """The effect on the credited volume of a crediting term's ``key`` set to ``value`` instead of ``was``
    (``None``: a value the methodology leaves to the project; a zero deduction there is ``unchecked``,
    the claim a verifier must see evidence for: no leakage, no buffer, no baseline removals)."""
    if was is None:
        zero = isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0
        return "unchecked" if zero and (name, key) in CREDITS_MORE_WHEN else "project-specific"
    if (name, key) in CREDITS_MORE_WHEN:
        return _effect(CREDITS_MORE_WHEN[name, key], float(value), float(was))
    if (name, key) == ("baseline", "rule"):  # a zero baseline deducts nothing
        return "less conservative" if value == "zero" else "more conservative"
    return "changed"


def _rule_differences(ruleset, reference, param_label: str, layer_label: str) -> list[dict]:
    """The rules and layer encodings in which ``ruleset`` differs from ``reference`` (two loaded rule
    sets), as departures: a rule added can only make less land eligible, one removed or made
    optional more; a parameter's change has the direction of
    :data:`~sinks.eligibility.checks.LOOSER_WHEN_LARGER` where it has one; a changed encoding, a
    rule's check or layer, goes either way; another source or confidence of a rule, or fewer
    conditions listed as not checked, is ``unchecked`` (a claim the file makes, not sinks)."""
    from sinks.eligibility.checks import LOOSER_WHEN_LARGER

    out = []
    theirs = {rule.id: rule for rule in reference.rules}
    for rule in ruleset.rules:
        ref = theirs.pop(rule.id, None)
        if ref is None:
            out.append({"setting": f"{param_label}{rule.id}", "value": f"rule added ({rule.check})", "default": None,
                        "effect": "more conservative"})
            continue
        if (rule.check, rule.layer) != (ref.check, ref.layer):
            out.append({"setting": f"{param_label}{rule.id}", "value": f"{rule.check} on {rule.layer}",
                        "default": f"{ref.check} on {ref.layer}", "effect": "changed"})
            continue
        if rule.optional_layer != ref.optional_layer:
            out.append({"setting": f"{param_label}{rule.id}.optional_layer", "value": rule.optional_layer,
                        "default": ref.optional_layer,
                        "effect": "less conservative" if rule.optional_layer else "more conservative"})
        for key in sorted(set(rule.params) | set(ref.params)):
            value, was = rule.params.get(key), ref.params.get(key)
            if value == was:
                continue
            sign = LOOSER_WHEN_LARGER.get(key)
            effect = "changed" if sign is None or value is None or was is None else _effect(sign, float(value), float(was))
            out.append({"setting": f"{param_label}{rule.id}.{key}", "value": value, "default": was, "effect": effect})
        for key in ("source", "confidence"):
            if getattr(rule, key) != getattr(ref, key):
                out.append({"setting": f"{param_label}{rule.id}.{key}", "value": getattr(rule, key),
                            "default": getattr(ref, key), "effect": "unchecked"})
    for rid, ref in theirs.items():
        out.append({"setting": f"{param_label}{rid}", "value": "rule removed", "default": ref.check,
                    "effect": "less conservative"})
    for name in sorted(set(ruleset.encodings) | set(reference.encodings)):
        mine, ref = ruleset.encodings.get(name), reference.encodings.get(name)
        if (mine and mine.describe()) != (ref and ref.describe()):
            out.append({"setting": f"{layer_label}{name}", "value": mine.declared() if mine else None,
                        "default": ref.declared() if ref else None, "effect": "changed"})
    dropped = [c for c in reference.not_checked if c not in ruleset.not_checked]
    if dropped:
        out.append({"setting": f"{param_label}not_checked", "value": f"{len(dropped)} condition(s) no longer listed",
                    "default": "; ".join(dropped), "effect": "unchecked"})
    return out


def _term_differences(cterms: CreditingTerms, reference: CreditingTerms | None, label: str) -> list[dict]:
    """The crediting terms in which ``cterms`` as its file states them differ from ``reference``: their
    values (with their effect on the volume), and their source or confidence (``unchecked``)."""
    out = []
    ref_values = reference.methodology_values if reference is not None else {}
    for name in sorted(set(cterms.methodology_values) | set(ref_values)):
        mine, ref = cterms.methodology_values.get(name, {}), ref_values.get(name, {})
        for key in sorted(set(mine) | set(ref)):
            value, was = mine.get(key), ref.get(key)
            if key in ("source", "confidence") or value == was:
                continue
            effect = "changed" if value is None else _term_effect(name, key, value, was)
            out.append({"setting": f"{label}{name}.{key}", "value": value, "default": was, "effect": effect})
        if reference is not None and name in cterms.terms and name in reference.terms:
            for key in ("source", "confidence"):
                value, was = getattr(cterms.terms[name], key), getattr(reference.terms[name], key)
                if value != was:
                    out.append({"setting": f"{label}{name}.{key}", "value": value, "default": was,
                                "effect": "unchecked"})
    return out


def shipped_counterpart(ruleset):
    """The shipped rule set a rule file stands for: one of the same id (spaces and case aside), or
    of the same methodology text or title (a copy under another id); None for a methodology of its
    own."""
    from sinks.eligibility.rules import load_ruleset, shipped_ruleset_path, shipped_rulesets

    key = ruleset.id.strip().lower()
    shipped = {sid: shipped_ruleset_path(sid) for sid in shipped_rulesets()}
    for sid, path in shipped.items():
        if sid.lower() == key:
            return load_ruleset(path)
    for path in shipped.values():
        other = load_ruleset(path)
        if (ruleset.methodology and ruleset.methodology.strip() == other.methodology.strip()) or (
                ruleset.title and ruleset.title.strip() == other.title.strip()):
            return other
    return None


def ruleset_departures(ruleset) -> list[dict]:
    """What the run's rule set changes from the methodology it names: its ``--param`` and
    ``--layer-values`` overrides (against the rule file as written) and, for a rule file that is
    not a shipped one, either every rule, encoding and crediting term in which it differs from the
    shipped rule set it stands for (:func:`shipped_counterpart`: an edited copy is not the
    methodology, whatever id it has), or, for a methodology of its own, that its rules and terms are
    its author's (``unchecked``: sinks cannot say they are the methodology's)."""
    from sinks.eligibility.rules import load_ruleset, shipped_ruleset_path, shipped_rulesets

    if not ruleset.path:  # built in Python, not loaded from a file: nothing to vouch for it
        return [{"setting": "rule set", "value": f"{ruleset.id} (built in Python, no file)", "default": None,
                 "effect": "unchecked"}]
    written = load_ruleset(ruleset.path)
    out = _rule_differences(ruleset, written, "--param ", "--layer-values ")
    here = Path(ruleset.path).resolve()
    if any(here == shipped_ruleset_path(sid).resolve() for sid in shipped_rulesets()):
        return out
    original = shipped_counterpart(written)
    if original is None:
        return out + [{"setting": f"rule file {ruleset.path}", "value": f"{ruleset.id} (sha256 {ruleset.sha256[:12]})",
                       "default": None, "effect": "unchecked"}]
    label = f"rule file {ruleset.path} (not the shipped {original.id}): "
    out += _rule_differences(written, original, label, label + "layer ")
    if written.crediting is not None:
        out += _term_differences(written.crediting, original.crediting, label + "[crediting] ")
    return out


def departures(cterms: CreditingTerms, options: dict | None = None, ruleset=None) -> list[dict]:
    """Every setting of this run that departs from the methodology or from sinks' defaults, with its
    effect on the credited volume: ``less conservative`` (it can only credit more), ``more
    conservative``, ``changed`` (either way), or ``project-specific`` (a value the methodology
    leaves to the project). ``options``: the map route's ``{name: (value, default, sign)}`` (sign
    +1 when a larger value credits more, -1 smaller, 0 either way); ``ruleset``: the run's rule set,
    for its rule overrides and edits (:func:`ruleset_departures`)."""
    out = ruleset_departures(ruleset) if ruleset is not None else []
    for name, given in cterms.overrides.items():
        for key, value in given.items():
            if key in ("source", "confidence"):
                continue
            was = cterms.methodology_values.get(name, {}).get(key)
            if was == value:
                continue
            out.append({"setting": f"--term {name}.{key}", "value": value, "default": was,
                        "effect": _term_effect(name, key, value, was)})
    for name, (value, default, sign) in (options or {}).items():
        if value is None or value == default:
            continue
        effect = "changed" if not sign or default is None else _effect(sign, float(value), float(default))
        out.append({"setting": name, "value": value, "default": default, "effect": effect})
    return out


# ---- crediting ------------------------------------------------------------------------------------

CREDIT_STATUSES = ("credited", "within_uncertainty", "no_net_removal", "ineligible", "undetermined",
                   "needs_field_measurement", "no_map_data", "no_baseline", "no_uncertainty")


def uncertainty_deduction(rule: str, level: float, threshold: float | None, net: float,
                          sd: float) -> tuple[float, str]:
    """The uncertainty deduction (t CO2e, >= 0) of a net removal ``net`` with sd ``sd`` by the rule
    ``rule`` at ``level`` (``threshold`` for ``excess_over_threshold``), and how it was made; also
    what a registry recomputes (:func:`sinks.eligibility.report.inconsistencies`)."""
    from sinks.stats import normal_quantile

    z = normal_quantile(level)
    if rule == "lower_bound":
        return max(0.0, min(z * sd, net)) if net > 0 else 0.0, \
            f"lower bound of the {level:.0%} interval (net - {z:.4f} x sd; the methodology states no uncertainty rule)"
    relative = z * sd / net if net > 0 else math.inf
    share = min(max(0.0, relative - threshold), 1.0)
    return (net * share if net > 0 else 0.0), (
        f"excess over threshold: relative half-width of the {level:.0%} interval {relative:.4f} - {threshold:g} "
        f"= deduction share {share:.4f} of the net")


def _uncertainty(terms: CreditingTerms, net: float, sd: float) -> tuple[float, str]:
    """The deduction (t CO2e, >= 0) of ``terms``' uncertainty rule, and how it was made."""
    return uncertainty_deduction(terms.value("uncertainty", "rule"), terms.value("uncertainty", "level"),
                                 terms.value("uncertainty", "threshold"), net, sd)


def credit_parcel(terms: CreditingTerms, change: float, sd: float, years: float, area_ha: float, *,
                  baseline_sd_rate: float = 0.0) -> dict:
    """Deductions of one parcel's stock change ``change`` (t CO2e over ``years``, sd ``sd``, on a
    mapped area of ``area_ha``) -> the crediting record. ``baseline_sd_rate`` (t CO2e/ha/yr): the
    sd of a baseline rate estimated from data (matched controls), added to the net's variance as
    independent of the parcel's own error (conservative when the two are positively correlated)."""
    from sinks.stats import normal_quantile

    z = normal_quantile(REPORT_LEVEL)
    baseline_sd = 0.0
    if terms.value("baseline", "rule") == "rate":
        baseline = float(terms.value("baseline", "tco2e_ha_yr")) * area_ha * years
        baseline_sd = float(baseline_sd_rate) * area_ha * years
    else:
        baseline = 0.0
    leak_share = terms.value("leakage", "fraction")
    buffer_share = terms.value("buffer", "fraction")
    before_leakage = change - baseline
    leakage = leak_share * max(before_leakage, 0.0)
    net = before_leakage - leakage
    net_sd = math.hypot(sd, baseline_sd) * (1 - leak_share)
    unc, how = _uncertainty(terms, net, net_sd)
    after = net - unc
    buffer = buffer_share * max(after, 0.0)
    creditable = max(after - buffer, 0.0)
    scale = 1 - buffer_share
    # the creditable volume's interval is at the uncertainty term's level, so that the lower-bound
    # rule's volume is its lower end at any level (the stock change's stays at REPORT_LEVEL)
    level = float(terms.value("uncertainty", "level"))
    z_credit = normal_quantile(level)
    return {
        "stock_change_tco2e": change, "stock_change_sd_tco2e": sd,
        "stock_change_lower_tco2e": change - z * sd, "stock_change_upper_tco2e": change + z * sd,
        "annual_tco2e_yr": change / years,
        "baseline_tco2e": baseline, "baseline_sd_tco2e": baseline_sd,
        "leakage_tco2e": leakage, "net_tco2e": net, "net_sd_tco2e": net_sd,
        "uncertainty_deduction_tco2e": unc, "uncertainty_rule": how,
        "buffer_tco2e": buffer, "tco2e": creditable,
        "lower_tco2e": max((net - z_credit * net_sd) * scale, 0.0),
        "upper_tco2e": max((net + z_credit * net_sd) * scale, 0.0),
        "interval_level": REPORT_LEVEL, "creditable_interval_level": level,
    }


def _zero(reason: str, status: str) -> dict:
    return {"status": status, "reason": reason, "tco2e": 0.0, "lower_tco2e": 0.0, "upper_tco2e": 0.0}


def _methodology(methodology, params, layer_values, terms, *, controls: bool):
    """The rule set and its crediting terms, refused when a project-specific value is not given."""
    from sinks.eligibility.rules import RuleSet, load_ruleset

    ruleset = methodology if isinstance(methodology, RuleSet) else load_ruleset(methodology, params, layer_values,
                                                                                  terms=terms)
    if ruleset.crediting is None:
        raise SpecError(f"rule set {ruleset.id} ({ruleset.path}) has no [crediting] section: it gives eligibility "
                        "only; add the methodology's crediting terms (see docs/crediting.md)")
    cterms = ruleset.crediting
    missing = cterms.missing_project_values()
    if controls:
        missing = [m for m in missing if not m.startswith("baseline.")]
    if missing:
        raise SpecError(f"methodology {ruleset.id}: {', '.join(missing)} is project-specific "
                        f"({'; '.join(cterms[m.split('.')[0]].source for m in missing)}); give it with "
                        + " ".join(f"--term {m}=VALUE" for m in missing))
    return ruleset, cterms


def _listed(parcels_dates: list, limit: int = 5) -> str:
    """'p1 (2020-03-01), p2 (…) and 3 more': the parcels an error names, with their start dates."""
    shown = ", ".join(f"{pid} ({d.isoformat()})" for pid, d in parcels_dates[:limit])
    return shown + (f" and {len(parcels_dates) - limit} more" if len(parcels_dates) > limit else "")


def _checked_parcels(parcels, ruleset, y1: float, y2: float, start_date, start_date_column: str, source: str, *,
                     ex_ante: bool = False):
    """Parcels checked (ids, polygons) with each one's start date, refused when a start lies after
    ``y2`` or in a year after ``y1`` (removals before the start) or ``y2`` beyond the crediting period:
    ``(parcels, ids, starts)``."""
    from sinks.eligibility.engine import _to_date, parse_start_dates
    from sinks.mapping.zonal import check_polygons

    if "parcel_id" not in getattr(parcels, "columns", ()):
        raise InputError(f"{source}: missing required column parcel_id")
    parcels, ids, _ = check_polygons(parcels, id_column="parcel_id", source=source)
    parcels = parcels.reset_index(drop=True)
    period = ruleset.crediting.terms["period"].values
    own = (parse_start_dates(parcels, start_date_column) if start_date_column in parcels.columns
           else [None] * len(parcels))
    try:
        default_start = _to_date(start_date) if start_date else None
    except ValueError:
        raise InputError(f"start date {start_date!r} is not an ISO date (YYYY-MM-DD) of a year 1900-2100") from None
    starts = [d if d is not None else default_start for d in own]
    late = [(str(ids.iloc[i]), d) for i, d in enumerate(starts) if d is not None and d.year > y2]
    if late:
        shown = _listed(late)
        if ex_ante:
            raise InputError(f"{source}: start date after the end {y2:g} of the ex-ante period for parcel(s) {shown}: "
                             f"nothing to credit; give --years covering the start (now {y1:g} {y2:g})")
        raise InputError(f"{source}: start date after the second map's epoch {y2:g} for parcel(s) {shown}: the maps "
                         f"cannot show their removals; give maps of epochs after the start (--years {y1:g} {y2:g})")
    # Removals count from the project start (the crediting period begins there: CCER-14-001, VM0047):
    # a first map before it would credit what grew before the project (a start on 2025-12-31 was
    # credited the whole 2020-2025 change)
    early = [(str(ids.iloc[i]), d) for i, d in enumerate(starts) if d is not None and d.year > y1]
    if early:
        shown = _listed(early)
        first = "the period's first year" if ex_ante else "the first map's epoch"
        fix = "start the period in the start's year or later" if ex_ante else "give a first map of the start's year or later"
        raise InputError(f"{source}: start date after {first} {y1:g} for parcel(s) {shown}: the change from {y1:g} "
                         f"would credit removals before the project started; {fix} (--years {y1:g} {y2:g})")
    if y2 - y1 > period["max_years"]:  # whatever the start dates, none given included
        raise InputError(f"{source}: the period {y1:g}-{y2:g} ({y2 - y1:g} years) is longer than the "
                         f"{period['max_years']}-year crediting period of {ruleset.id}")
    long = [(str(ids.iloc[i]), d) for i, d in enumerate(starts) if d is not None and y2 - d.year > period["max_years"]]
    if long:
        shown = _listed(long)
        raise InputError(f"{source}: the {'year' if ex_ante else 'epoch'} {y2:g} lies beyond the {period['max_years']}-year crediting period of "
                         f"{ruleset.id} for parcel(s) {shown}")
    return parcels, ids, starts


def _check_map_pools(ruleset, cterms, infos) -> None:
    """Refuse a map whose pool (its ``sinks_pool`` tag) holds carbon the methodology does not count
    (a soil carbon map credited under an afforestation methodology that counts tree biomass)."""
    counted = set(cterms.value("pools", "counted"))
    for info in infos:
        pool = info.tags.get("sinks_pool")
        if not pool:
            continue
        holds = MAP_POOL_CONTENT.get(pool)
        if holds is None:
            raise InputError(f"{info.path}: unknown sinks_pool tag {pool!r}; known: {', '.join(MAP_POOL_CONTENT)}")
        extra = [p for p in holds if p not in counted]
        if extra:
            raise InputError(f"{info.path}: a {pool} carbon map holds {', '.join(holds)}, but {ruleset.id} counts "
                             f"{', '.join(sorted(counted))}: {', '.join(extra)} would be credited, which the "
                             "methodology does not count; map the counted pools")


def _not_eligible(parcel) -> dict | None:
    """The zero record of a parcel that is not (yet) eligible, else None."""
    if parcel.verdict == "ineligible":
        failed = "; ".join(f"{rid}: {r.reason}" for rid, r in parcel.rules.items() if r.status == "fail")
        return _zero(f"ineligible ({failed})", "ineligible")
    if parcel.verdict == "undetermined":
        why = "; ".join(f"{rid}: {r.reason}" for rid, r in parcel.rules.items() if r.status == "unknown")
        return _zero(f"eligibility undetermined ({why}); not credited until it is determined", "undetermined")
    return None


def _set_status(record: dict, credited: str) -> dict:
    """The status and reason of a credited record (``credited``: the reason when something is credited)."""
    if record["net_tco2e"] <= 0:
        record.update(status="no_net_removal", reason="no net removal over the period: nothing to credit")
    elif record["tco2e"] <= 0:
        record.update(status="within_uncertainty", reason=(
            f"a net removal of {record['net_tco2e']:.3g} t CO2e, but no more than its uncertainty "
            f"deduction ({record['uncertainty_rule']}): nothing to credit"))
    else:
        record.update(status="credited", reason=credited)
    return record


#: Statuses whose stock change counts in the project's stock change.
COUNTED = ("credited", "within_uncertainty", "no_net_removal")


def _project(records: list[dict], change: float, sd: float, note: str, *, terms: CreditingTerms, years: float,
             area_ha: float, baseline_sd_rate: float = 0.0) -> dict:
    """Project totals: the smaller of the parcels' netted sum and the project-level bound.

    By parcels: a counted parcel whose net is negative (it lost carbon, or its baseline exceeds its
    change) is credited 0 and its loss is netted against the project's credit
    (``netted_losses_tco2e``, <= 0), as the methodologies count net removals over the whole
    project; so the sum of the parcels' creditable volumes plus the netted losses, floored at 0
    (``by_parcels_tco2e``). Project level: the same deductions applied once to the project's stock
    change ``change`` with its correlated-error sd ``sd`` (t CO2e, as the route computed them over
    the counted parcels, on ``area_ha`` over ``years``; :func:`credit_parcel`), as CCER and VCS make
    the uncertainty deduction on the project (``project_level_tco2e``). Neither bounds the other: a
    parcel whose lower bound is below 0 counts 0 by parcels but pulls the project's lower bound
    down (zero-gain parcels beside planted ones raised the credit by parcels while the project's
    bound fell below 0), and a sd that averages over parcels makes the project's bound the looser.
    ``tco2e`` is the smaller (``binding`` says which); when the project level binds, the
    deductions reported are its own, so that stock change - baseline - leakage - uncertainty -
    buffer = creditable either way, and ``parcel_scale`` is the share of each parcel's creditable
    volume the project may issue; each record gets its ``issuable_tco2e`` = its ``tco2e`` x
    ``parcel_scale`` (0 unless credited), which sum to the project's ``tco2e``. ``lower_tco2e``/``upper_tco2e`` are the smaller of the two routes'
    (a sum of parcel bounds exceeded the project's own upper bound).
    """
    from sinks.stats import normal_quantile

    z = normal_quantile(REPORT_LEVEL)
    counted = any(r["status"] in COUNTED for r in records)

    def total(key):
        return float(sum(r.get(key, 0.0) or 0.0 for r in records))

    losses = float(sum(min(r["net_tco2e"], 0.0) for r in records if r["status"] in COUNTED))
    keys = ("baseline_tco2e", "leakage_tco2e", "uncertainty_deduction_tco2e", "buffer_tco2e")
    by_parcels = {"stock_change_tco2e": float(sum(r["stock_change_tco2e"] for r in records if r["status"] in COUNTED)),
                  **{key: total(key) for key in keys},
                  **{key: max(total(key) + losses, 0.0) for key in ("tco2e", "lower_tco2e", "upper_tco2e")}}
    level = credit_parcel(terms, change, sd, years, area_ha, baseline_sd_rate=baseline_sd_rate) if counted else None
    # floating-point noise (1e-12 t) does not make the project level bind
    binding = ("project_level" if level is not None and level["tco2e"] < by_parcels["tco2e"] - 1e-9 * max(
        1.0, abs(by_parcels["tco2e"])) else "parcels")
    chosen = ({"stock_change_tco2e": change, **{key: level[key] for key in (*keys, "tco2e", "lower_tco2e", "upper_tco2e")}}
              if binding == "project_level" else dict(by_parcels))
    if level is not None:  # the interval of the smaller volume: each bound no wider than either route's
        chosen.update(lower_tco2e=min(by_parcels["lower_tco2e"], level["lower_tco2e"]),
                      upper_tco2e=min(by_parcels["upper_tco2e"], level["upper_tco2e"]))
    parcels_sum = total("tco2e")
    scale = (chosen["tco2e"] / parcels_sum) if parcels_sum > 0 else 0.0
    for record in records:  # what the project may issue of each parcel's creditable volume
        record["issuable_tco2e"] = record["tco2e"] * scale if record["status"] == "credited" else 0.0
    return {
        "parcels": len(records), "statuses": {s: sum(r["status"] == s for r in records) for s in CREDIT_STATUSES},
        **chosen,
        "stock_change_sd_tco2e": sd if counted else 0.0,
        "stock_change_lower_tco2e": (change - z * sd) if counted else 0.0,
        "stock_change_upper_tco2e": (change + z * sd) if counted else 0.0,
        "stock_change_union_tco2e": change if counted else 0.0,
        "netted_losses_tco2e": losses, "parcels_tco2e": parcels_sum,
        "by_parcels_tco2e": by_parcels["tco2e"], "project_level_tco2e": level["tco2e"] if level else 0.0,
        "binding": binding, "creditable_interval_level": float(terms.value("uncertainty", "level")),
        "parcel_scale": scale,
        "interval_note": note,
    }


def _departures_block(found: list[dict]) -> dict:
    """``departures`` and ``conservative_as_methodology``: False when a setting can credit more than
    the methodology and sinks' defaults would (or changes the result either way), or rests on
    unchecked rows; a trading system checks this flag before taking the volume."""
    return {"departures": found,
            "conservative_as_methodology": not any(d["effect"] in ("less conservative", "changed", "unchecked")
                                                   for d in found)}


def _methodology_block(ruleset, cterms) -> dict:
    return {"id": ruleset.id, "title": ruleset.title, "version": ruleset.version,
            "source": ruleset.source or ruleset.methodology, **cterms.describe()}


def check_route(maps, growth) -> None:
    """Refuse anything but one route: two carbon maps (``maps``), or a growth-curve table (``growth``)."""
    if (growth is None) == (maps is None or len(maps) == 0):
        raise InputError("give either --maps T1 T2 (two carbon maps) or --growth TABLE (ex ante from a growth-curve "
                         "table), " + ("not both" if growth is not None else "one of the two"))


def credit(parcels, methodology, maps=None, years=None, *, growth=None, layers: dict | None = None,
           start_date=None, start_date_column: str = "start_date", params: dict | None = None,
           terms: dict | None = None, layer_values: dict | None = None, epoch_correlation: float = 0.0,
           error_range_m: float | None = None, error_nugget: float | None = None,
           aoa_threshold: float = AOA_THRESHOLD, allow_different_models: bool = False, controls_covariates=None,
           caliper: float | None = None, progress: bool = True, source: str = "parcels"):
    """Eligibility and creditable t CO2e per parcel and for the project.

    ``parcels``: GeoDataFrame (parcel_id, polygons, CRS; any CRS, reprojected); ``methodology``: a
    rule set id or file, or a loaded :class:`~sinks.eligibility.rules.RuleSet`; ``maps``: the carbon
    maps of the two epochs (bands carbon, lower, upper, aoa; one bundle, one grid); ``years``: their
    years; ``layers``: the eligibility layers the rule set reads. ``terms`` overrides crediting
    terms (``{"buffer": {"fraction": 0.2}}``), ``params`` rule parameters. Returns the
    :class:`~sinks.eligibility.engine.EligibilityReport` with ``crediting`` filled (each parcel's
    ``creditable``), to write with :func:`sinks.eligibility.report.write_report`.

    ``growth``: instead of ``maps``, a growth-curve table (:mod:`sinks.eligibility.growth`): the
    stock change is then expected ex ante over ``years`` (the crediting period Y1 -> Y2) from each
    parcel's ``species_group``, ``site_class`` and ``planting_year`` / ``stand_age_yr``.

    ``controls_covariates``: a raster on the maps' grid whose bands are covariates; the baseline is
    then the matched controls' sink (:func:`sinks.eligibility.controls.match_controls`), replacing the
    methodology's baseline term; a failing balance is reported and nothing is credited.
    """
    check_route(maps, growth)
    if growth is not None:
        given = [name for name, value, default in (
            ("--epoch-correlation", epoch_correlation, 0.0), ("--error-range-m", error_range_m, None),
            ("--error-nugget", error_nugget, None), ("--aoa-threshold", aoa_threshold, AOA_THRESHOLD),
            ("--allow-different-models", allow_different_models, False), ("--controls", controls_covariates, None),
            ("--caliper", caliper, None)) if value != default]
        if given:
            raise InputError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to the maps (--maps); the "
                             "ex-ante route (--growth) has no map errors, AOA or matched controls")
    ruleset, cterms = _methodology(methodology, params, layer_values, terms, controls=controls_covariates is not None)
    if years is None or len(years) != 2:
        raise InputError("crediting needs the two years of the period (--years Y1 Y2)")
    if growth is not None:
        return _credit_growth(parcels, ruleset, cterms, growth, years, layers=layers, start_date=start_date,
                              start_date_column=start_date_column, progress=progress, source=source)
    if len(maps) != 2:
        raise InputError("crediting needs two carbon maps and their two years (--maps T1 T2 --years Y1 Y2)")
    return _credit_maps(parcels, ruleset, cterms, maps, years, layers=layers, start_date=start_date,
                        start_date_column=start_date_column, epoch_correlation=epoch_correlation,
                        error_range_m=error_range_m, error_nugget=error_nugget, aoa_threshold=aoa_threshold,
                        allow_different_models=allow_different_models, controls_covariates=controls_covariates,
                        caliper=caliper, progress=progress, source=source)


def _credit_growth(parcels, ruleset, cterms, growth, years, *, layers, start_date, start_date_column, progress,
                   source):
    """The ex-ante route: the stock change of each parcel over Y1 -> Y2 expected from the growth table
    (t CO2e/ha x the parcel's equal-area ha), then the same deductions as the map route."""
    from sinks.eligibility.engine import assess
    from sinks.eligibility.growth import INTERPOLATION, SD_METHOD, load_growth_table, parcel_changes
    from sinks.mapping.change import _check_years

    table = load_growth_table(growth)
    y1, y2 = _check_years(*years)
    parcels, ids, starts = _checked_parcels(parcels, ruleset, y1, y2, start_date, start_date_column, source,
                                            ex_ante=True)
    changes = parcel_changes(parcels, table, y1, y2, source=source)
    report = assess(parcels, ruleset, layers or {}, start_date=start_date, start_date_column=start_date_column,
                    progress=progress)
    dt = y2 - y1
    baseline = cterms.terms["baseline"]
    basis = (f"zero: the methodology's baseline term ({baseline.source})" if baseline.values["rule"] == "zero" else
             f"rate {baseline.values['tco2e_ha_yr']:g} t CO2e/ha/yr x the parcel's area x {dt:g} years "
             f"({baseline.source}{'; ' + baseline.note if baseline.note else ''})")
    records, used = [], {}
    for i, parcel in enumerate(report.parcels):
        growth_used = changes[i]
        record = _not_eligible(parcel)
        if record is None and growth_used["change_sd_tco2e_ha"] is None:
            rows = ", ".join(str(r) for r in growth_used["rows_without_sd"])
            record = _zero(f"growth table row(s) {rows} give no sd or interval: the uncertainty deduction cannot be "
                           "made; add the source's uncertainty (sd, or ci_lower/ci_upper/ci_level) to the table",
                           "no_uncertainty")
            record["stock_change_tco2e"] = growth_used["change_tco2e_ha"] * parcel.area_ha  # expected; not counted
        elif record is None:
            change = growth_used["change_tco2e_ha"] * parcel.area_ha
            sd = growth_used["change_sd_tco2e_ha"] * parcel.area_ha
            record = _set_status(credit_parcel(cterms, change, sd, dt, parcel.area_ha),
                                 "credited ex ante from the growth table (expected, not measured, removals)")
            record["baseline_rule"] = basis
            for row in growth_used["rows"]:
                used[row["row"]] = table.row(row["row"]).describe()
        record.update(area_ha=parcel.area_ha, growth=growth_used,
                      start_date=starts[i].isoformat() if starts[i] else None)
        parcel.creditable = record
        records.append(record)
    counted = [r for r in records if r["status"] in COUNTED]
    project = _project(records, sum(r["stock_change_tco2e"] for r in counted),
                       sum(r["stock_change_sd_tco2e"] for r in counted),
                       "stock_change_sd_tco2e is the sum of the parcels' sds (the table's errors taken as fully "
                       "correlated between parcels, conservative); creditable: the smaller of the parcels' "
                       "creditable volumes, each deducted by its own interval, less the netted losses of parcels "
                       "whose net is negative, and the same deductions made once on the project (binding)",
                       terms=cterms, years=dt, area_ha=sum(r["area_ha"] for r in counted))
    unchecked = [row for row in used.values() if not row["checked"]]
    report.crediting = {
        "route": "ex_ante_growth_table",
        "methodology": _methodology_block(ruleset, cterms),
        **_departures_block(departures(cterms, ruleset=ruleset) + ([{
            "setting": "growth table", "value": f"{len(unchecked)} of {len(used)} rows used not checked against "
                                                "their source", "default": None, "effect": "unchecked"}]
            if unchecked else [])),
        "growth_table": {"path": table.path, "sha256": table.sha256, "rows_used": [used[k] for k in sorted(used)],
                         "interpolation": INTERPOLATION, "sd_method": SD_METHOD},
        "years": [y1, y2],
        "interval_level": REPORT_LEVEL,
        "method": ("ex ante: stock change = (S(age at Y2) - S(age at Y1)) from the growth table, in t CO2e/ha "
                   "(Mg C x 44/12), x the parcel's area in an equal-area projection; net = change - baseline - "
                   "leakage; then the uncertainty deduction, then the buffer; creditable = max(0, remainder)"),
        "project": project,
    }
    return report


def _map_record(parcel, row, shares: dict, controls, cterms, dt: float, aoa_threshold: float) -> dict:
    """The map route's record of an eligible parcel: its zonal ``row`` and area ``shares``, the
    matched ``controls`` (or None), over ``dt`` years."""
    if controls is not None and controls["baseline_tco2e_ha_yr"] is None:
        return _zero(f"no baseline: the matched controls {controls['reason']}; not credited", "no_baseline")
    if row is None or not row["pixels_valid"]:
        return _zero("no map data on the parcel in both epochs", "no_map_data")
    share = shares["outside_aoa_share"]
    if share is None or share > aoa_threshold:
        return _zero(f"{'unknown' if share is None else f'{share:.1%}'} of the mapped area is outside the "
                     f"model's area of applicability (threshold {aoa_threshold:.1%}): needs field "
                     "measurement, not credited from the map", "needs_field_measurement")
    change = float(row["total_t_co2e_yr"]) * dt
    sd = float(row["sd_t_co2e_yr"]) * dt
    record = credit_parcel(cterms, change, sd, dt, float(shares["mapped_area_ha"]),
                           baseline_sd_rate=(controls or {}).get("baseline_sd_tco2e_ha_yr") or 0.0)
    unmapped = 1 - shares["mapped_area_ha"] / parcel.area_ha if parcel.area_ha > 0 else 0
    return _set_status(record, "credited from the maps" + (
        f"; {unmapped:.0%} of the parcel has no map data and is not credited" if unmapped > 0.005 else ""))


def _credit_maps(parcels, ruleset, cterms, maps, years, *, layers, start_date, start_date_column,
                 epoch_correlation, error_range_m, error_nugget, aoa_threshold, allow_different_models,
                 controls_covariates, caliper, progress, source):
    """The map route: stock change from two carbon maps (see :func:`credit`)."""
    import geopandas as gpd
    import shapely

    from sinks.eligibility.controls import CALIPER, match_controls
    from sinks.eligibility.engine import assess
    from sinks.io import sha256_file
    from sinks.mapping.change import _check_years, check_epochs, read_map_info, stock_change
    from sinks.mapping.zonal import _raster_box, error_model, to_raster_crs, zonal_totals
    from sinks.pixels import pixel_window

    y1, y2 = _check_years(*years)
    rho = float(epoch_correlation)
    if not (math.isfinite(rho) and -1 <= rho <= 1):
        raise InputError(f"--epoch-correlation must be between -1 and 1, got {epoch_correlation!r}")
    if not (0 <= float(aoa_threshold) < 1):
        raise InputError(f"--aoa-threshold must be in [0, 1), got {aoa_threshold!r}")
    info1, info2 = read_map_info(maps[0]), read_map_info(maps[1])
    check_epochs(info1, info2, (y1, y2), allow_different_models=allow_different_models)
    _check_map_pools(ruleset, cterms, (info1, info2))
    model = error_model(info1, error_range_m, error_nugget)
    # the zonal totals of the sink map take the same model: as given, else from the tags sinks change
    # copied from the maps (so that each parcel's error_model names where it came from, as the report does)
    given = error_range_m is not None or error_nugget is not None
    zonal_model = {"error_range_m": model.range_m, "error_nugget": model.nugget} if given or model.range_m is not None \
        else {"error_range_m": None, "error_nugget": None}
    # polygons: no CRS, missing / duplicate ids, invalid geometries: listed per parcel, never repaired
    parcels, ids, starts = _checked_parcels(parcels, ruleset, y1, y2, start_date, start_date_column, source)
    geoms = to_raster_crs(parcels, info1.crs, source=source)

    report = assess(parcels, ruleset, layers or {}, start_date=start_date, start_date_column=start_date_column,
                    progress=progress)
    box = _raster_box(info1)
    on_map = [pixel_window(g, info1.transform, info1.height, info1.width) is not None
              and shapely.area(shapely.intersection(g, box)) > 0 for g in geoms]
    dt = y2 - y1
    rows = {}
    union_total = union_sd = union_area = math.nan
    with tempfile.TemporaryDirectory(prefix=".sinks-credit-") as tmp:
        sink = Path(tmp) / "sink.tif"
        # at the report's level: each map's interval is read at its own level (sd = half-width / z)
        stock_change(info1.path, info2.path, y1, y2, sink, epoch_correlation=rho, level=REPORT_LEVEL,
                     allow_different_models=allow_different_models, progress=progress)
        frame = gpd.GeoDataFrame({"parcel_id": ids.astype(str)}, geometry=list(geoms), crs=info1.crs)
        idx = [i for i in range(len(frame)) if on_map[i]]
        if idx:
            table = zonal_totals(sink, frame.iloc[idx], id_column="parcel_id", **zonal_model, level=REPORT_LEVEL,
                                 progress=progress, source=source)
            rows = {str(r["parcel_id"]): r for r in table.to_dict("records")}
        controls = None
        if controls_covariates is not None:
            eligible = [geoms[i] for i, p in enumerate(report.parcels) if p.verdict == "eligible"]
            controls = match_controls(sink, info1.path, controls_covariates, eligible, list(geoms),
                                      caliper=CALIPER if caliper is None else float(caliper), error_model=model,
                                      history_path=(layers or {}).get("forest_history"), history_until=y1)
            if controls["baseline_tco2e_ha_yr"] is not None:
                base = cterms.terms["baseline"]
                cterms = replace(cterms, terms={**cterms.terms, "baseline": replace(
                    base, values={"rule": "rate", "tco2e_ha_yr": controls["baseline_tco2e_ha_yr"]},
                    project_specific=False,
                    source=("matched control pixels (sinks.eligibility.controls, a VM0047-style dynamic baseline: "
                            "nearest-neighbour matching without replacement within calipers)"),
                    confidence=(f"measured on these maps: {controls['matched']} matched control pixels, "
                                f"{controls['reason']} (crediting.controls); unchecked: the balance threshold "
                                f"|SMD| <= {controls['smd_threshold']:g} is recalled from VM0047's area-based approach, "
                                "not re-read in its text"),
                    note=("their mean sink, floored at 0, replaces the methodology's own baseline term "
                          f"({base.source}; {base.confidence})"))})
        results = {}
        for i, parcel in enumerate(report.parcels):
            pid = parcel.parcel_id
            row = rows.get(pid)
            shares = {}
            if row is not None:
                shares = {"mapped_area_ha": row["mapped_area_ha"], "outside_raster_share": row["outside_raster_share"],
                          "nodata_share": row["nodata_share"], "outside_aoa_share": _nan_none(row["outside_aoa_share"]),
                          "pixels": int(row["pixels"]), "error_model": row["error_model"],
                          "variance_method": row["variance_method"]}
            record = _not_eligible(parcel) or _map_record(parcel, row, shares, controls, cterms, dt, aoa_threshold)
            record.update(shares)
            record["start_date"] = starts[i].isoformat() if starts[i] else None
            results[pid] = record
            parcel.creditable = record
        credited = [i for i, p in enumerate(report.parcels) if results[p.parcel_id]["status"] in COUNTED]
        if credited:
            union = shapely.union_all([geoms[i] for i in credited])
            project = gpd.GeoDataFrame({"parcel_id": ["project"]}, geometry=[union], crs=info1.crs)
            ptable = zonal_totals(sink, project, id_column="parcel_id", **zonal_model, level=REPORT_LEVEL,
                                  progress=False, source=source)
            union_total = float(ptable["total_t_co2e_yr"].iloc[0]) * dt
            union_sd = float(ptable["sd_t_co2e_yr"].iloc[0]) * dt
            union_area = float(ptable["mapped_area_ha"].iloc[0])
    project = _project(list(results.values()), union_total, union_sd, (
        "stock_change_sd_tco2e is the correlated-error sd of the total over the union of the counted "
        "parcels (credited, within their uncertainty or without a net removal; same error model as each "
        "parcel's); creditable: the smaller of the parcels' creditable volumes, each deducted by its own "
        "interval, less the netted losses of parcels whose net is negative, and the same deductions made "
        "once on the project's stock change and sd (binding)"), terms=cterms, years=dt,
        area_ha=union_area if credited else 0.0,
        baseline_sd_rate=(controls or {}).get("baseline_sd_tco2e_ha_yr") or 0.0)
    report.crediting = {
        "route": "maps",
        "methodology": _methodology_block(ruleset, cterms),
        **_departures_block(departures(cterms, {
            "--aoa-threshold": (float(aoa_threshold), AOA_THRESHOLD, +1),  # more pixels outside the AOA pass
            "--epoch-correlation": (rho, 0.0, +1),  # a positive rho narrows the change's interval
            "--error-range-m": (error_range_m, None, 0), "--error-nugget": (error_nugget, None, 0),
            "--allow-different-models": (True if allow_different_models else None, None, 0),
            "--caliper": (None if caliper is None else float(caliper), CALIPER, 0)}, ruleset=ruleset)),
        "maps": [{"path": str(info.path), "sha256": sha256_file(info.path), "year": y,
                  # checked against the map's own year where it carries one; else the user's word
                  "year_from": "map tag (sinks_year), matching --years" if info.year is not None
                  else "--years only: the map states no year",
                  "bundle_id": info.bundle_id, "interval_level": info.level(),
                  "pool": info.tags.get("sinks_pool") or None} for info, y in ((info1, y1), (info2, y2))],
        "years": [y1, y2],
        "epoch_correlation": rho,
        "epoch_correlation_assumption": ("var(C2 - C1) = sd1^2 + sd2^2 - 2 rho sd1 sd2 per pixel; rho = 0 (default) "
                                         "treats the epochs' errors as independent, conservative for any rho >= 0"),
        "error_model": model.describe(),
        "aoa_threshold": float(aoa_threshold),
        "interval_level": REPORT_LEVEL,
        "method": ("stock change = sum over the parcel of (C2 - C1) x 44/12 x exact equal-area pixel-part area "
                   "(IPCC 2006 GL Vol. 4 Ch. 2 Eq. 2.5); net = change - baseline - leakage; then the uncertainty "
                   "deduction, then the buffer; creditable = max(0, remainder)"),
        "project": project,
    }
    if controls is not None:
        report.crediting["controls"] = {**controls, "covariates_path": str(controls_covariates),
                                        "covariates_sha256": sha256_file(controls_covariates)}
        report.crediting["methodology"]["terms"]["baseline"] = cterms.terms["baseline"].describe()
    return report


def _nan_none(value):
    try:
        return None if value is None or math.isnan(float(value)) else float(value)
    except (TypeError, ValueError):
        return None


def methodology_list() -> list[dict]:
    """Every shipped rule set with id, title, version, source and whether it carries crediting terms."""
    from sinks.eligibility.rules import load_ruleset, shipped_rulesets

    out = []
    for name in shipped_rulesets():
        rs = load_ruleset(name)
        out.append({"id": rs.id, "title": rs.title, "version": rs.version, "source": rs.source or rs.methodology,
                    "crediting": rs.crediting is not None, "scheme": rs.scheme})
    return out
