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
