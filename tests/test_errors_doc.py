"""docs/errors.md describes every error class, and every option a message suggests exists."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

import sinks.errors
from sinks.cli import UsageError, build_parser

ROOT = Path(__file__).resolve().parents[1]


def _error_classes() -> set[str]:
    names = {name for name, obj in inspect.getmembers(sinks.errors, inspect.isclass)
             if issubclass(obj, sinks.errors.SinksError)}
    return names | {UsageError.__name__}


def test_every_error_class_has_a_section_and_no_more():
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^## ([A-Za-z]+Error)\s*$", text, flags=re.M))
    assert documented == _error_classes()


def _all_options(parser: argparse.ArgumentParser) -> set[str]:
    options = set()
    for action in parser._actions:
        options.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= _all_options(sub)
    return options


def test_messages_only_suggest_options_that_exist():
    """Every ``--option`` written in the package's source (messages, help) is a real option."""
    known = _all_options(build_parser())
    mentioned = {}
    for path in (ROOT / "sinks").rglob("*.py"):
        for match in re.finditer(r"(?<![\w-])(--[a-z][a-z0-9-]+)", path.read_text(encoding="utf-8")):
            mentioned.setdefault(match.group(1), path.relative_to(ROOT))
    unknown = {opt: str(where) for opt, where in mentioned.items() if opt not in known}
    assert not unknown, f"messages suggest options no command has: {unknown}"
