"""Harness of the bad-input catalogue (``tests/test_badinput_*.py``).

Each case runs the ``sinks`` command in-process on bad input and asserts what a user must see:
a non-zero exit, exactly one line on stderr with the case's key words, no traceback, and the
output location byte-for-byte as it was before (every file and folder under ``watch`` hashed,
hidden staging files included).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import signal
from pathlib import Path

from sinks.cli import main


def tree_hash(folder: str | os.PathLike) -> dict[str, str]:
    """``{relative path: sha256 or 'dir'}`` of everything under ``folder`` (hidden files too)."""
    folder = Path(folder)
    out: dict[str, str] = {}
    if not folder.exists():
        return out
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), folder)] = "dir"
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def assert_refused(argv: list[str], capsys, *, keywords: list[str], watch: str | os.PathLike) -> str:
    """Run ``sinks ARGV``; assert a clean one-line refusal naming ``keywords``, nothing changed.

    Returns the error line. ``keywords`` are matched case-insensitively.
    """
    capsys.readouterr()
    before = tree_hash(watch)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, f"exit 0 for {argv}"
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    line = lines[0]
    for word in keywords:
        assert word.lower() in line.lower(), f"{word!r} not in: {line}"
    assert tree_hash(watch) == before, f"{watch} changed after a refused run: {line}"
    return line


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """Files this process writes stop growing at ``nbytes`` (the soft RLIMIT_FSIZE; writes past it
    fail with EFBIG instead of SIGXFSZ): GDAL's and SQLite's writes fail for real, as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
