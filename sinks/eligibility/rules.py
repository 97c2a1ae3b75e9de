"""Rule sets: methodology conditions as data, loaded from TOML and overridable per parameter."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sinks.errors import SpecError
from sinks.io import read_toml, sha256_file

RULE_KEYS = {"id", "check", "description", "description_zh", "source", "confidence", "layer", "optional_layer"}


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

    @property
    def layers(self) -> dict[str, bool]:
        """Layer names the rules read, with whether each is required."""
        out: dict[str, bool] = {}
        for rule in self.rules:
            if rule.layer:
                out[rule.layer] = out.get(rule.layer, False) or not rule.optional_layer
        return out


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


def parse_overrides(items) -> dict[str, dict]:
    """``["RULE.PARAM=VALUE", ...]`` -> ``{rule: {param: value}}`` (numbers parsed)."""
    out: dict[str, dict] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        rule, dot, param = key.partition(".")
        if not sep or not dot or not rule or not param:
            raise SpecError(f"--param expects RULE.PARAM=VALUE, got {item!r}")
        out.setdefault(rule.strip(), {})[param.strip()] = _parse_value(value.strip())
    return out


def load_ruleset(name_or_path: str | os.PathLike, overrides: dict[str, dict] | None = None) -> RuleSet:
    """A shipped rule set by id (e.g. ``"ccer-14-001"``) or a TOML file, with parameter overrides."""
    path = Path(name_or_path)
    if not path.exists():
        shipped = Path(str(resources.files("sinks.eligibility.rulesets").joinpath(f"{name_or_path}.toml")))
        if not shipped.is_file():
            raise SpecError(f"rule set {str(name_or_path)!r} not found: give a file or one of {', '.join(shipped_rulesets())}")
        path = shipped
    data, where = read_toml(path, "rule set"), str(path)
    from sinks.eligibility.checks import CHECKS, parameter_problem

    overrides = overrides or {}
    rules = []
    for raw in data.get("rules", []):
        missing = [k for k in ("id", "check", "source", "confidence") if k not in raw]
        if missing:
            raise SpecError(f"{where}: rule {raw.get('id', '?')!r} lacks {', '.join(missing)} (every rule cites its source)")
        if raw["check"] not in CHECKS:
            raise SpecError(f"{where}: rule {raw['id']!r} uses unknown check {raw['check']!r}; known: {', '.join(CHECKS)}")
        params = {k: v for k, v in raw.items() if k not in RULE_KEYS}
        for key, value in overrides.get(raw["id"], {}).items():
            if key not in params:
                raise SpecError(f"--param {raw['id']}.{key}: rule {raw['id']!r} has no parameter {key!r} "
                                f"(it has {', '.join(params) or 'none'})")
            params[key] = value
        problem = parameter_problem(raw["check"], params)
        if problem:
            raise SpecError(f"{where}: rule {raw['id']!r}: {problem}")
        rules.append(Rule(raw["id"], raw["check"], params, raw.get("description", ""), raw["source"],
                          raw["confidence"], raw.get("description_zh", ""), raw.get("layer"),
                          bool(raw.get("optional_layer", False))))
    unknown = set(overrides) - {r.id for r in rules}
    if unknown:
        raise SpecError(f"--param names unknown rule(s) {', '.join(sorted(unknown))}")
    if not rules:
        raise SpecError(f"{where}: no [[rules]]")
    return RuleSet(
        id=data.get("id", path.stem), title=data.get("title", ""), methodology=data.get("methodology", ""),
        version=str(data.get("version", "")), rules=tuple(rules),
        sha256=sha256_file(path), not_checked=tuple(data.get("not_checked", ())),
        note=data.get("note", ""), overrides=overrides, path=where,
    )
