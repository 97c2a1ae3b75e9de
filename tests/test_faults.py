"""Fault tests: ``sinks map``, ``sinks stack`` and ``sinks train`` killed mid-run (SIGTERM, kill -9).

After each kill the previous output is intact; after SIGTERM no staging file is left; after kill -9
the staging a killed run left is removed by the next run; and the rerun's output equals a clean
run's (the same bytes for rasters, the same model and metrics for bundles). ``sinks map`` keeps its
finished tiles by design (``.NAME.resume-KEY/``, see sinks/mapping/resume.py): that folder is left
out of the "as before" comparison, the rerun resumes from it and removes it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sinks.demo.run import run_demo
from sinks.io import atomic_path, clean_stale_staging
from tests.badinput import tree_hash

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("faults") / "ws", size=150, seed=5, progress=False)


def _staging(folder: Path, name: str) -> list[str]:
    return sorted(e for e in os.listdir(folder) if e.startswith(f".{name}.") and ".partial" in e)


def _checkpoints(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.resume-*"))


def _started(folder: Path, name: str) -> bool:
    """A staging file exists, or (sinks map) a finished tile in the map's checkpoint folder."""
    return bool(_staging(folder, name)) or any(next(p.glob("[0-9]*.tif"), None) for p in _checkpoints(folder, name))


def _without_checkpoints(tree: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tree.items() if ".resume-" not in Path(k).parts[0]}


def _cli(argv) -> list[str]:
    return [sys.executable, "-m", "sinks.cli", *map(str, argv)]


def _kill_mid_run(argv, folder: Path, name: str, signum: int, *, marker: str | None = None) -> int:
    """Start ``sinks ARGV``; send ``signum`` as soon as its staging appears in ``folder``, or (for a
    command whose staging exists only for a moment at its end) as soon as its progress output on
    stderr shows ``marker``. Returns the exit code."""
    import threading

    proc = subprocess.Popen(_cli(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SINKS_PROGRESS": "1"})  # bars on a pipe too: the marker
    seen, err_parts = threading.Event(), []

    def read_stderr():
        while chunk := proc.stderr.read(1):
            err_parts.append(chunk)
            if marker and marker in "".join(err_parts[-len(marker):]):
                seen.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    start = time.monotonic()
    while proc.poll() is None:
        if (seen.is_set() if marker else _started(folder, name)):
            proc.send_signal(signum)
            break
        assert time.monotonic() - start < 120, "the run never reached the point to kill it"
        time.sleep(0.002)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(err_parts)
    assert proc.returncode != 0, f"the run finished before it could be killed: {err}"
    return proc.returncode


def _clean_run(argv) -> None:
    done = subprocess.run(_cli(argv), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _map_argv(demo, out):
    return ["map", demo.outputs["model"], demo.out / "features" / "demo_county.toml", "--out", out,
            "--block", "32", "--quiet"]


def _stack_argv(demo, out):
    return ["stack", demo.out / "features" / "demo_county.toml", "--out", out, "--block", "32", "--quiet"]


def _train_argv(demo, out):
    return ["train", demo.out / "training" / "demo_county.toml", demo.outputs["features"], "--out", out, "--quiet"]


COMMANDS = {"map": (_map_argv, "carbon.tif"), "stack": (_stack_argv, "stack.tif"), "train": (_train_argv, "bundle")}


def _content(path: Path):
    """What must be equal between a rerun and a clean run: a raster's bytes; a bundle's model, AOA,
    out-of-fold predictions and metrics (its creation time differs)."""
    if path.is_file():
        return path.read_bytes()
    files = tree_hash(path)
    meta = json.loads((path / "metadata.json").read_text())
    return {"model": files["model.json"], "aoa": files["aoa.npz"], "oof": files["oof.csv"],
            "validation": meta["validation"], "interval": meta["interval"]}


@pytest.fixture(scope="module", params=sorted(COMMANDS))
def clean_run(request, demo, tmp_path_factory):
    """One uninterrupted run of each command: the output a rerun after a kill must equal."""
    command = request.param
    argv, name = COMMANDS[command]
    reference = tmp_path_factory.mktemp(f"clean-{command}") / name
    _clean_run(argv(demo, reference))
    return command, reference


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_kill_mid_run_then_rerun(demo, clean_run, tmp_path, signum):
    command, reference = clean_run
    argv, name = COMMANDS[command]
    out = tmp_path / name
    if reference.is_dir():  # the previous output the killed run was to replace
        shutil.copytree(reference, out)
    else:
        shutil.copyfile(reference, out)
    previous = tree_hash(tmp_path)
    # rasters: killed once their staging exists; train stages only at its very end, so it is
    # train stages its bundle only at its very end: it is killed when its cross-validation starts
    if command == "train":
        killed = [a for a in argv(demo, out) if a != "--quiet"]
        code = _kill_mid_run([*killed, "--overwrite"], tmp_path, out.name, signum, marker=" CV")
    else:
        code = _kill_mid_run([*argv(demo, out), "--overwrite"], tmp_path, out.name, signum)
    if signum == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM
        assert _without_checkpoints(tree_hash(tmp_path)) == previous  # the previous output intact, no staging left
    else:
        assert {k: v for k, v in tree_hash(tmp_path).items() if not k.startswith(".")} == previous
    _clean_run([*argv(demo, out), "--overwrite"])
    assert _staging(tmp_path, out.name) == [] and _checkpoints(tmp_path, out.name) == []
    assert _content(out) == _content(reference)


_HOLD_STAGING = """
import sys, time
from sinks.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    print(tmp, flush=True)
    time.sleep(60)
"""


def test_staging_of_a_killed_process_is_removed_by_the_next_write(tmp_path):
    out = tmp_path / "result.csv"
    out.write_text("previous")
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_STAGING, str(out)], stdout=subprocess.PIPE, text=True)
    staged = Path(proc.stdout.readline().strip())
    assert staged.exists() and clean_stale_staging(out) == []  # its process is alive: kept
    proc.kill()
    proc.wait()
    assert staged.exists() and out.read_text() == "previous"
    with atomic_path(out) as tmp:
        tmp.write_text("new")
    assert not staged.exists() and out.read_text() == "new"
    assert _staging(tmp_path, out.name) == []


_HOLD_UNDER_CLI_SIGNALS = """
import sys, time
from sinks.cli import _catch_signals
from sinks.io import atomic_path
_catch_signals()
with atomic_path(sys.argv[1], suffix="", folder_kind="bundle") as tmp:
    tmp.mkdir()
    (tmp / "metadata.json").write_text("half")
    print(tmp, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_undo_what_was_being_written(tmp_path, signum):
    """The handler the CLI installs undoes the staging and exits 128 + N, without unwinding
    (an exception from a signal handler can surface inside a library's C++ callback)."""
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "metadata.json").write_text('{"bundle_id": "previous", "files": {}}')  # a bundle sinks made
    previous = tree_hash(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_UNDER_CLI_SIGNALS, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert Path(proc.stdout.readline().strip()).is_dir()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum and "nothing half-written was kept" in err
    assert tree_hash(tmp_path) == previous


_KEEP_UNDER_CLI_SIGNALS = """
import time
from sinks.cli import _catch_signals
from sinks.io import kept_on_stop
_catch_signals()
with kept_on_stop(lambda: "3 of 9 tiles are finished and kept in .m.tif.resume: rerun the same command"):
    print("ready", flush=True)
    time.sleep(60)
"""


def test_sigterm_says_what_it_keeps_to_resume_from(tmp_path):
    """A map stopped by SIGTERM kept its finished tiles but said 'nothing half-written was kept' only."""
    proc = subprocess.Popen([sys.executable, "-c", _KEEP_UNDER_CLI_SIGNALS], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "nothing half-written was kept; 3 of 9 tiles are finished and kept in .m.tif.resume" in err
