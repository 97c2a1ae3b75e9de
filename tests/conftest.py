"""Shared fixtures: the real-data folder (``SINKS_SHARED_DATA``) and small synthetic rasters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("SINKS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; tests using it skip, saying why, where it is absent."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}: set SINKS_SHARED_DATA to the shared data folder")
    return root


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
