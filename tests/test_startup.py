"""Start-up cost of the ``sinks`` command: help and argument parsing import no heavy library.

Each check runs in a fresh interpreter (this test process has imported everything already) and
reads that interpreter's ``sys.modules`` after the parser has done its part.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Modules that cost a large part of a second each to import; none may load before the real work.
HEAVY = ("numpy", "pandas", "scipy", "rasterio", "xgboost", "sklearn", "geopandas")

_CHILD = """
import contextlib, io, json, sys
HEAVY = {heavy!r}

def heavy_loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)

{body}
"""


def _child(body: str) -> dict:
    """Run ``body`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run([sys.executable, "-c", _CHILD.format(heavy=HEAVY, body=body)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_build_parser_imports_nothing_heavy():
    result = _child("import sinks.cli\nsinks.cli.build_parser()\nprint(json.dumps({'heavy': heavy_loaded()}))")
    assert result["heavy"] == []


def test_sinks_help_imports_nothing_heavy():
    result = _child("""
from sinks.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(["--help"])
        code = None
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "usage": out.getvalue().startswith("usage: sinks"), "heavy": heavy_loaded()}))
""")
    assert result == {"code": 0, "usage": True, "heavy": []}


def test_every_help_exits_0_without_heavy_imports():
    """Every command and pool, found by walking the parser (so a new one is covered), in one child."""
    result = _child("""
import argparse
from sinks.cli import build_parser

def leaves(parser, prefix):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if prefix:
        yield prefix
    for action in subs:
        for name, child in action.choices.items():
            yield from leaves(child, [*prefix, name])

parser = build_parser()
codes = {}
for argv in leaves(parser, []):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            build_parser().parse_args([*argv, "--help"])
            code = None
        except SystemExit as exc:
            code = exc.code
    codes[" ".join(argv)] = [code, out.getvalue().startswith("usage: sinks " + " ".join(argv))]
print(json.dumps({"codes": codes, "heavy": heavy_loaded()}))
""")
    assert {"stocks forest", "stocks gedi", "map", "credit", "methodologies"} <= set(result["codes"])
    bad = {argv: got for argv, got in result["codes"].items() if got != [0, True]}
    assert not bad, bad
    assert result["heavy"] == []


@pytest.mark.parametrize("argv", [
    ["stocks", "forest", "trees.csv", "--area-ha", "0.1", "--out", "plots.csv", "--hd-model", "weibull"],
    ["stocks", "soil", "horizons.csv", "--out", "plots.csv", "--method", "overlap", "--lambda", "0.5"],
    ["map", "bundle", "spec.toml", "--out", "map.tif", "--jobs", "2", "--executor", "threads", "--block", "256"],
    ["eligibility", "parcels.gpkg", "--out", "report.json", "--start-date", "2020-01-01"],
    ["train", "recipe.toml", "table.csv", "--out", "bundle"],
])
def test_parsing_a_command_line_imports_nothing_heavy(argv):
    """The parse before the real work (type callables included) stays light."""
    result = _child(f"""
from sinks.cli import build_parser
args = build_parser().parse_args({argv!r})
print(json.dumps({{"func": callable(args.func), "heavy": heavy_loaded()}}))
""")
    assert result == {"func": True, "heavy": []}
