"""The README's quick start is what CI runs, and its commands exist."""

from __future__ import annotations

import re


def _quick_start(repo):
    text = (repo / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)\n(.*?)\n```", section, flags=re.S)


def test_quick_start_is_two_commands_and_ci_runs_the_second(repo):
    blocks = _quick_start(repo)
    assert len(blocks) == 2
    assert all("\n" not in block.strip() for block in blocks)
    demo, tests = (block.strip() for block in blocks)
    assert "sinks demo" in demo
    assert tests in (repo / ".ci" / "run").read_text(encoding="utf-8")


def test_python_api_example_names_exist(repo):
    """Every name the README's Python API example imports is importable."""
    import importlib

    text = (repo / "README.md").read_text(encoding="utf-8")
    block = text.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    imports = re.findall(r"from (\S+) import (\w+)", block)
    assert len(imports) >= 8
    for module, name in imports:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"
