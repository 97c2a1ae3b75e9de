"""Rule sets: methodology conditions as data, loaded from TOML and overridable per parameter.

A rule file is validated completely on loading (keys of every section with a did-you-mean, types
and ranges of every parameter, sources), and declares the encoding of every layer its rules read
(``[layers.NAME] values = { CLASS = [VALUES] }``), which ``--layer-values`` / ``layer_values`` can
replace.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from sinks import validate
from sinks.errors import SpecError
from sinks.validate import check_keys, did_you_mean

#: Keys of a rule that are not parameters of its check.
RULE_KEYS = ("id", "check", "description", "description_zh", "source", "confidence", "layer", "optional_layer")
#: Top-level keys of a rule file, and the keys of one ``[layers.NAME]`` section.
TOP_KEYS = ("id", "title", "methodology", "version", "source", "scheme", "region", "note", "not_checked", "layers",
            "rules", "crediting")
#: Kinds of scheme a rule set belongs to (``scheme`` key): national offset programmes, international
#: standards, regional inclusive schemes (碳普惠, see docs/crediting.md), a user's own.
SCHEMES = ("CCER", "VCS", "regional", "other")
LAYER_KEYS = ("description", "values", "nodata")
#: The class names each check needs its layer to declare (raster_fraction_max: its ``class`` parameter).
CHECK_CLASSES = {"non_forest_history": ("forest", "non_forest"), "forest_history_min": ("forest", "non_forest")}


@dataclass(frozen=True)
class LayerEncoding:
    """What the values of a categorical layer mean: ``classes`` maps a class name to its pixel values;
    ``nodata`` lists values meaning "no data" besides the raster's own nodata value. Any other value
    found in the layer is an error."""

    name: str
    classes: dict[str, tuple[float, ...]]
    nodata: tuple[float, ...] = ()
    description: str = ""

    def declared(self) -> str:
        parts = [f"{c}={','.join(_fmt(v) for v in vals)}" for c, vals in self.classes.items()]
        if self.nodata:
            parts.append(f"nodata={','.join(_fmt(v) for v in self.nodata)}")
        return ";".join(parts)

    def describe(self) -> dict:
        return {"classes": {c: list(v) for c, v in self.classes.items()}, "nodata": list(self.nodata)}


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{float(value):.6g}"


def _number_list(value, where: str) -> tuple[float, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise SpecError(f"{where}: give at least one value")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise SpecError(f"{where}: values must be finite numbers, got {item!r}")
        out.append(int(item) if float(item).is_integer() else float(item))
    return tuple(out)


def make_encoding(name: str, values: dict, where: str, *, nodata=(), description: str = "") -> LayerEncoding:
    """A checked :class:`LayerEncoding` from ``{class: value or [values]}`` (``nodata`` may be a class key)."""
    if not isinstance(values, dict) or not values:
        raise SpecError(f"{where}: 'values' must be a table of class = [values], e.g. {{ forest = [1], non_forest = [0] }}")
    values = dict(values)
    if "nodata" in values:
        nodata = values.pop("nodata")
    classes = {}
    for cls, vals in values.items():
        if not str(cls).strip():
            raise SpecError(f"{where}: empty class name")
        classes[str(cls).strip()] = _number_list(vals, f"{where}: class '{cls}'")
    if not classes:
        raise SpecError(f"{where}: declares no class")
    nodata = _number_list(list(nodata), f"{where}: nodata") if nodata not in ((), [], None) else ()
    seen: dict[float, str] = {}
    for cls, vals in [*classes.items(), ("nodata", nodata)]:
        for v in vals:
            if v in seen:
                raise SpecError(f"{where}: value {_fmt(v)} is declared both as '{seen[v]}' and as '{cls}'")
            seen[v] = cls
    return LayerEncoding(name, classes, nodata, description)


def parse_layer_values(items) -> dict[str, dict]:
    """``["NAME:CLASS=V1,V2;CLASS=V3", ...]`` (the ``--layer-values`` option) -> ``{name: {class: [values]}}``.

    ``nodata`` as a class name lists values that mean "no data". Each item gives a layer's whole encoding.
    """
    out: dict[str, dict] = {}
    for item in items or ():
        syntax = f"--layer-values expects NAME:CLASS=V1,V2;CLASS=V3 (e.g. forest_history:forest=1;non_forest=0;nodata=255), got {item!r}"
        name, colon, body = str(item).partition(":")
        name = name.strip()
        if not colon or not name or not body.strip():
            raise SpecError(syntax)
        if name in out:
            raise SpecError(f"--layer-values: layer '{name}' given twice; give all its classes in one option")
        classes: dict[str, list] = {}
        for part in filter(None, (p.strip() for p in body.split(";"))):
            cls, eq, vals = part.partition("=")
            cls = cls.strip()
            if not eq or not cls or not vals.strip():
                raise SpecError(syntax)
            if cls in classes:
                raise SpecError(f"--layer-values {name}: class '{cls}' given twice")
            numbers = []
            for text in vals.split(","):
                try:
                    number = float(text.strip())
                except ValueError:
                    raise SpecError(f"--layer-values {name}: class '{cls}': {text.strip()!r} is not a number") from None
                if not math.isfinite(number):
                    raise SpecError(f"--layer-values {name}: class '{cls}': {text.strip()!r} is not a finite number")
                numbers.append(int(number) if number.is_integer() else number)
            classes[cls] = numbers
        out[name] = classes
    return out


@dataclass(frozen=True)
class Rule:
    id: str
    check: str
    params: dict
    description: str
    source: str
    confidence: str
    description_zh: str = ""
    layer: str | None = None
    optional_layer: bool = False


@dataclass(frozen=True)
class RuleSet:
    id: str
    title: str
    methodology: str
    version: str
    rules: tuple[Rule, ...]
    sha256: str
    not_checked: tuple[str, ...] = ()
    note: str = ""
    overrides: dict = field(default_factory=dict)
    path: str = ""
    encodings: dict = field(default_factory=dict)  # layer name -> LayerEncoding
    layer_values: dict = field(default_factory=dict)  # the --layer-values overrides applied
    crediting: object = None  # sinks.eligibility.crediting.CreditingTerms, or None (eligibility only)
    source: str = ""
    scheme: str = "other"
    region: str = ""

    @property
    def layers(self) -> dict[str, bool]:
        """Layer names the rules read, with whether each is required."""
        out: dict[str, bool] = {}
        for rule in self.rules:
            if rule.layer:
                out[rule.layer] = out.get(rule.layer, False) or not rule.optional_layer
        return out

    def with_layer_values(self, layer_values: dict[str, dict] | None) -> "RuleSet":
        """This rule set with the encodings of some layers replaced (``{layer: {class: [values]}}``,
        ``nodata`` as a class name), checked as a rule file's ``[layers]`` are."""
        if not layer_values:
            return self
        encodings = dict(self.encodings)
        for name, values in layer_values.items():
            if name not in self.layers:
                raise SpecError(f"--layer-values names layer '{name}'{did_you_mean(name, self.layers)}, which rule set "
                                f"{self.id} does not read (it reads {', '.join(self.layers)})")
            old = encodings.get(name)
            encodings[name] = make_encoding(name, values, f"--layer-values {name}",
                                            description=old.description if old else "")
        _check_encodings(self.rules, encodings, "--layer-values")
        return replace(self, encodings=encodings, layer_values={**self.layer_values, **layer_values})


def shipped_ruleset_path(ruleset_id: str) -> Path | None:
    """The file of the shipped rule set ``ruleset_id`` (e.g. ``"ccer-14-001"``), or None."""
    if not ruleset_id or "/" in ruleset_id or os.sep in ruleset_id or ruleset_id.endswith(".toml"):
        return None
    path = Path(str(resources.files("sinks.eligibility.rulesets").joinpath(f"{ruleset_id}.toml")))
    return path if path.is_file() else None


def shipped_rulesets() -> list[str]:
    return sorted(p.name[: -len(".toml")] for p in resources.files("sinks.eligibility.rulesets").iterdir()
                  if p.name.endswith(".toml"))


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_dotted(items, option: str, form: str) -> dict[str, dict]:
    """``["NAME.KEY=VALUE", ...]`` of a command-line ``option`` -> ``{name: {key: value}}``
    (numbers parsed); ``form`` shows the expected form in the error message."""
    out: dict[str, dict] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        name, dot, sub = key.partition(".")
        if not sep or not dot or not name.strip() or not sub.strip() or not value.strip():
            raise SpecError(f"{option} expects {form}, got {item!r}")
        given = out.setdefault(name.strip(), {})
        if sub.strip() in given:  # which one was meant cannot be told (the last used to win silently)
            raise SpecError(f"{option} {name.strip()}.{sub.strip()} is given twice ({given[sub.strip()]!r} and "
                            f"{value.strip()!r}); give it once")
        given[sub.strip()] = _parse_value(value.strip())
    return out


def parse_overrides(items) -> dict[str, dict]:
    """``["RULE.PARAM=VALUE", ...]`` (the ``--param`` option) -> ``{rule: {param: value}}``."""
    return parse_dotted(items, "--param", "RULE.PARAM=VALUE (e.g. not_wetland.max_fraction=0.1)")


def _text(section, key, where, default=""):
    value = section.get(key, default)
    if not isinstance(value, str):
        raise SpecError(f"{where}: '{key}' must be a string, got {value!r}")
    return value


def _check_encodings(rules, encodings: dict, where: str) -> None:
    """Every layer a rule reads has an encoding with the classes its checks need."""
    for rule in rules:
        if not rule.layer:
            continue
        encoding = encodings.get(rule.layer)
        if encoding is None:
            raise SpecError(f"{where}: layer '{rule.layer}' (read by rule '{rule.id}') has no declared encoding: add "
                            f"[layers.{rule.layer}] values = {{ CLASS = [VALUES], ... }} or pass --layer-values")
        needed = CHECK_CLASSES.get(rule.check, (rule.params.get("class"),))
        missing = [c for c in needed if c and c not in encoding.classes]
        if missing:
            raise SpecError(f"{where}: layer '{rule.layer}' declares classes {', '.join(encoding.classes)} but rule "
                            f"'{rule.id}' ({rule.check}) needs {', '.join(repr(c) for c in missing)}"
                            f"{'' if rule.check in CHECK_CLASSES else did_you_mean(missing[0], encoding.classes)}")


def load_ruleset(name_or_path: str | os.PathLike, overrides: dict[str, dict] | None = None,
                 layer_values: dict[str, dict] | None = None, *, terms: dict[str, dict] | None = None) -> RuleSet:
    """A shipped rule set by id (e.g. ``"ccer-14-001"``) or a TOML file, with parameter overrides
    (``{rule: {param: value}}``) and layer encodings (``{layer: {class: [values]}}``, see
    :func:`parse_layer_values`). The file is checked completely: every key of every section (with a
    did-you-mean), types and ranges of every parameter, sources, and the layers' declared encodings.
    """
    text = str(name_or_path)
    # a bare name is a shipped id first, whatever the working folder holds (write ./NAME for a file)
    path = shipped_ruleset_path(text) if isinstance(name_or_path, str) else None
    if path is None:
        path = Path(name_or_path)
    if not path.exists():
        if text.endswith(".toml") or os.sep in text or "/" in text:
            raise SpecError(f"rule set file {text} not found")
        raise SpecError(f"rule set {text!r} not found{did_you_mean(text, shipped_rulesets())}: give a rule file "
                        f"(.toml) or one of {', '.join(shipped_rulesets())}")
    if path.is_dir():
        raise SpecError(f"{path}: is a folder; give a rule set file (.toml) or a shipped rule set id")
    from sinks.io import read_toml, sha256_file  # not at the top: 'sinks --help' lists the rule sets (pandas)

    data, where = read_toml(path, "rule set"), str(path)
    from sinks.eligibility.checks import CHECKS, LAYER_BANDS, PARAM_TYPES, check_params

    check_keys(data, TOP_KEYS, where)
    meta = {key: _text(data, key, where) for key in ("title", "methodology", "note", "source", "region")}
    if not meta["source"].strip():  # every rule set says where its text was read, as each rule and term does
        raise SpecError(f"{where}: lacks source (where the methodology's text was read: its document, "
                        "section and version)")
    scheme = validate.string(data, "scheme", where, default="other", choices=SCHEMES)
    ruleset_id = (_text(data, "id", where, path.stem) or path.stem).strip()
    version = data.get("version", "")
    if isinstance(version, bool) or not isinstance(version, (str, int, float)):
        raise SpecError(f"{where}: 'version' must be a string, got {version!r}")
    not_checked = data.get("not_checked", [])
    if not isinstance(not_checked, list) or not all(isinstance(x, str) for x in not_checked):
        raise SpecError(f"{where}: 'not_checked' must be a list of strings")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        raise SpecError(f"{where}: 'rules' must be an array of tables ([[rules]] sections)")
    if not raw_rules:
        raise SpecError(f"{where}: no [[rules]]")

    overrides = {rule: dict(params) for rule, params in (overrides or {}).items()}
    ids = [r.get("id") for r in raw_rules]
    unknown = [rid for rid in overrides if rid not in ids]
    if unknown:
        raise SpecError(f"--param names unknown rule '{unknown[0]}'"
                        f"{did_you_mean(unknown[0], [i for i in ids if isinstance(i, str)])}; rule set {ruleset_id} "
                        f"has rules {', '.join(str(i) for i in ids)}")
    rules, seen = [], set()
    for n, raw in enumerate(raw_rules, start=1):
        rid = raw.get("id")
        at = f"{where}: [[rules]] {rid!r}" if isinstance(rid, str) else f"{where}: [[rules]] number {n}"
        check = validate.string(raw, "check", at, choices=list(CHECKS))
        check_keys(raw, [*RULE_KEYS, *PARAM_TYPES[check]], at)
        rid = validate.string(raw, "id", at)
        if rid in seen:
            raise SpecError(f"{where}: two rules have the id {rid!r}; give each rule its own id")
        seen.add(rid)
        missing = [k for k in ("source", "confidence") if k not in raw]
        if missing:
            raise SpecError(f"{at} lacks {', '.join(missing)} (every rule cites its source)")
        source, confidence = validate.string(raw, "source", at), validate.string(raw, "confidence", at)
        description, description_zh = _text(raw, "description", at), _text(raw, "description_zh", at)
        optional = raw.get("optional_layer", False)
        if not isinstance(optional, bool):
            raise SpecError(f"{at}: 'optional_layer' must be true or false, got {optional!r}")
        layer = None
        if LAYER_BANDS[check]:
            layer = validate.string(raw, "layer", at)
        elif "layer" in raw or "optional_layer" in raw:
            raise SpecError(f"{at}: check '{check}' reads no layer; remove 'layer'/'optional_layer'")
        params = {k: v for k, v in raw.items() if k not in RULE_KEYS}
        params = check_params(check, params, at)
        if rid in overrides:
            given = overrides[rid]
            for key in given:
                if key not in PARAM_TYPES[check]:
                    raise SpecError(f"--param {rid}.{key}: rule {rid!r} has no parameter {key!r}"
                                    f"{did_you_mean(key, PARAM_TYPES[check])} (it has {', '.join(params) or 'none'})")
            params = check_params(check, {**params, **given}, f"--param {rid}.{'/'.join(given)}")
        rules.append(Rule(rid, check, params, description, source, confidence, description_zh, layer, optional))

    layers_section = validate.table(data, "layers", where)
    read = {r.layer for r in rules if r.layer}
    encodings = {}
    for name, section in layers_section.items():
        at = f"{where}: [layers.{name}]"
        if name not in read:
            raise SpecError(f"{at}: no rule reads a layer '{name}'{did_you_mean(name, read)}")
        if not isinstance(section, dict):
            raise SpecError(f"{at}: must be a table with 'values'")
        check_keys(section, LAYER_KEYS, at)
        if "values" not in section:
            raise SpecError(f"{at}: missing 'values' (e.g. values = {{ forest = [1], non_forest = [0] }})")
        encodings[name] = make_encoding(name, section["values"], at, nodata=section.get("nodata", ()),
                                        description=_text(section, "description", at))
    rules = tuple(rules)
    for name, values in (layer_values or {}).items():
        if name not in read:
            raise SpecError(f"--layer-values names layer '{name}'{did_you_mean(name, read)}, which rule set "
                            f"{ruleset_id} does not read (it reads {', '.join(sorted(read))})")
        old = encodings.get(name)
        encodings[name] = make_encoding(name, values, f"--layer-values {name}", description=old.description if old else "")
    _check_encodings(rules, encodings, "--layer-values" if layer_values else where)
    from sinks.eligibility.crediting import parse_crediting

    crediting = parse_crediting(data["crediting"], where, terms) if "crediting" in data else None
    if crediting is None and terms:
        raise SpecError(f"--term: rule set {ruleset_id} has no [crediting] section to override")
    return RuleSet(
        id=ruleset_id, title=meta["title"], methodology=meta["methodology"], version=str(version), rules=rules,
        sha256=sha256_file(path), not_checked=tuple(not_checked), note=meta["note"], overrides=overrides, path=where,
        encodings=encodings, layer_values=dict(layer_values or {}), crediting=crediting, source=meta["source"],
        scheme=scheme, region=meta["region"],
    )
