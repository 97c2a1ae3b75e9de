"""Every tutorial in notebooks/ executes without error (on small data)."""

from __future__ import annotations

import pytest


def _notebooks(repo):
    return sorted((repo / "notebooks").glob("*.ipynb"))


def test_there_are_tutorials(repo):
    assert _notebooks(repo)


@pytest.mark.parametrize("name", ["01_demo_county.ipynb"])
def test_notebook_runs(repo, name):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(repo / "notebooks" / name, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
