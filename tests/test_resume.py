"""Resumable maps: a job that dies after some tiles is rerun, skips them, and ends with the same bytes
as an uninterrupted run; checkpoints of other arguments are never reused; progress is shown."""

from __future__ import annotations

import contextlib
import os

import pytest

from sinks.errors import OutputError
from sinks.mapping import executors
from sinks.mapping.predict import predict_map
from tests.badinput import file_size_limit
from tests.test_mapping import mapping_demo

N_TILES = 25  # 150 x 150 pixels in blocks of 32


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return mapping_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def clean(demo, tmp_path_factory):
    return predict_map(demo["bundle"], demo["spec"], tmp_path_factory.mktemp("clean") / "m.tif", block=32,
                       progress=False).read_bytes()


def _counting(monkeypatch, fail_after=None):
    from sinks.mapping.tiles import compute_tile as original

    calls = []

    def tile(job, index, window):
        if fail_after is not None and len(calls) >= fail_after:
            raise RuntimeError("killed")
        calls.append(index)
        return original(job, index, window)

    monkeypatch.setattr(executors, "compute_tile", tile)
    return calls


def _checkpoints(folder):
    return [p for p in folder.iterdir() if ".resume-" in p.name]


@pytest.mark.parametrize("executor,workers", [("serial", 1), ("threads", 2)])
def test_crash_then_rerun_skips_finished_tiles_and_gives_the_same_bytes(demo, clean, tmp_path, monkeypatch,
                                                                         executor, workers):
    _counting(monkeypatch, fail_after=9)
    with pytest.raises(RuntimeError, match="killed"):
        predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, n_jobs=workers,
                    executor=executor, progress=False)
    assert not (tmp_path / "m.tif").exists()
    [store] = _checkpoints(tmp_path)
    finished = sorted(int(p.stem) for p in store.glob("[0-9]*.tif"))
    assert len(finished) == 9 and not (store / "lock").exists()
    calls = _counting(monkeypatch)
    out = predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, n_jobs=workers,
                      executor=executor, progress=False)
    assert sorted(calls) == sorted(set(range(N_TILES)) - set(finished))
    assert out.read_bytes() == clean
    assert _checkpoints(tmp_path) == []  # removed once the map is in place


def test_other_arguments_do_not_reuse_checkpoints(demo, clean, tmp_path, monkeypatch):
    _counting(monkeypatch, fail_after=5)
    with pytest.raises(RuntimeError):
        predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, progress=False)
    [old] = _checkpoints(tmp_path)
    calls = _counting(monkeypatch)
    predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, bands="carbon,aoa", progress=False)
    assert len(calls) == N_TILES and not old.exists() and _checkpoints(tmp_path) == []


def test_resume_across_executors(demo, clean, tmp_path, monkeypatch):
    """The checkpoint key leaves out the executor and the workers: they do not change the bytes."""
    _counting(monkeypatch, fail_after=12)
    with pytest.raises(RuntimeError):
        predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, progress=False)
    monkeypatch.undo()
    out = predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, n_jobs=2,
                      executor="processes", progress=False)
    assert out.read_bytes() == clean and _checkpoints(tmp_path) == []


def test_no_resume_keeps_nothing(demo, tmp_path, monkeypatch):
    _counting(monkeypatch, fail_after=5)
    with pytest.raises(RuntimeError):
        predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, progress=False, resume=False)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_checkpoint_tile_is_recomputed(demo, clean, tmp_path, monkeypatch):
    _counting(monkeypatch, fail_after=6)
    with pytest.raises(RuntimeError):
        predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, progress=False)
    [store] = _checkpoints(tmp_path)
    (store / "0000002.tif").write_bytes(b"truncated")
    whole = (store / "0000003.tif").read_bytes()  # a header that opens, pixels that do not decode
    (store / "0000003.tif").write_bytes(whole[:len(whole) - 40] + bytes(40))
    calls = _counting(monkeypatch)
    out = predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, progress=False)
    assert 2 in calls and len(calls) >= N_TILES - 5 and out.read_bytes() == clean


def test_a_live_run_holding_the_checkpoints_is_respected(demo, tmp_path, monkeypatch):
    _counting(monkeypatch, fail_after=3)
    with pytest.raises(RuntimeError):
        predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, progress=False)
    [store] = _checkpoints(tmp_path)
    (store / "lock").write_text(str(os.getppid()))  # another live process
    monkeypatch.undo()
    for resume in (True, False):  # refused, and the other run's lock and tiles are left alone
        with pytest.raises(OutputError, match="another 'sinks map'"):
            predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, progress=False, resume=resume)
        assert (store / "lock").read_text() == str(os.getppid()) and list(store.glob("0*.tif"))
    assert not (tmp_path / "m.tif").exists()


def test_progress_shows_tiles_pixels_per_second_and_time_left(demo, tmp_path, capsys):
    predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, progress=True)
    err = capsys.readouterr().err
    assert f"{N_TILES}/{N_TILES} tiles" in err and "px/s" in err and "<" in err  # elapsed<remaining


def test_the_cli_draws_progress_only_on_a_terminal(demo, tmp_path, capsys, monkeypatch):
    """A log file (stderr not a terminal) would get every redraw of the bar: the CLI draws none there."""
    import sys

    from sinks.cli import main

    argv = ["map", str(demo["bundle"]), str(demo["spec"]), "--block", "32", "--no-stac"]
    assert main([*argv, "--out", str(tmp_path / "log.tif")]) == 0
    assert "px/s" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*argv, "--out", str(tmp_path / "tty.tif")]) == 0
    assert f"{N_TILES}/{N_TILES} tiles" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "quiet.tif"), "--quiet"]) == 0
    assert "px/s" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setenv("SINKS_PROGRESS", "1")  # a wrapper that reads the bars from a pipe
    assert main([*argv, "--out", str(tmp_path / "forced.tif")]) == 0
    assert "px/s" in capsys.readouterr().err


def test_a_stale_lock_whose_pid_was_reused_does_not_block_the_rerun(demo, clean, tmp_path, monkeypatch):
    """A killed run's lock names a pid; once a later process has that pid, the lock's start time
    tells them apart, and the rerun resumes. A lock from another host (a shared disk) still holds."""
    import json
    import socket

    from sinks.io import process_start

    _counting(monkeypatch, fail_after=3)
    with pytest.raises(RuntimeError):
        predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, progress=False)
    monkeypatch.undo()
    [store] = _checkpoints(tmp_path)
    assert not (store / "lock").exists()  # released by the failed run itself; now fake a killed run's lock
    live = os.getppid()  # a live process, but not the one that wrote the lock (it started later)
    (store / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": live,
                                            "started": process_start(live) - 1}))
    out = predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, progress=False)
    assert out.read_bytes() == clean and not store.exists()
    _counting(monkeypatch, fail_after=3)
    with pytest.raises(RuntimeError):
        predict_map(demo["bundle"], demo["spec"], tmp_path / "n.tif", block=32, progress=False)
    monkeypatch.undo()
    [store] = _checkpoints(tmp_path)
    (store / "lock").write_text(json.dumps({"host": "another-node", "pid": 12345, "started": 1}))
    with pytest.raises(OutputError, match="process 12345 on host another-node; if it has ended, remove the folder"):
        predict_map(demo["bundle"], demo["spec"], tmp_path / "n.tif", block=32, progress=False)


def test_a_file_name_too_long_for_the_staging_names_is_refused_before_the_work(demo, tmp_path, capsys):
    """The longest name allowed is written through all the staging and checkpoint names; one byte
    more is refused at once (before, the map was computed and failed when staged)."""
    from sinks.cli import main
    from sinks.io import STAGING_NAME_EXTRA

    longest = os.pathconf(tmp_path, "PC_NAME_MAX") - STAGING_NAME_EXTRA
    argv = ["map", str(demo["bundle"]), str(demo["spec"]), "--block", "32", "--quiet"]
    fine = tmp_path / ("m" * (longest - 10) + ".tif")  # its STAC Item's name, NAME.stac.json, is the longest
    assert main([*argv, "--out", str(fine)]) == 0 and fine.exists()
    assert (tmp_path / (fine.stem + ".stac.json")).exists()
    long = tmp_path / ("m" * (longest - 3) + ".tif")
    assert main([*argv, "--out", str(long)]) != 0
    err = capsys.readouterr().err
    assert f"{longest + 1} bytes long" in err and f"at most {longest} bytes" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fine.name, fine.stem + ".stac.json"])


@pytest.mark.parametrize("phase", ["tiles", "cog"])
def test_a_full_disk_mid_write_leaves_no_output_and_the_rerun_resumes(demo, clean, tmp_path, monkeypatch, capfd,
                                                                      phase):
    """GDAL's writes fail mid-file (a checkpoint tile after 9, or the COG after every tile): one line
    on stderr (libtiff's own printing, at the file descriptor, included), naming the failed write
    and the kept tiles; no map, no staging or partial tile; the rerun resumes to the same bytes. A
    disk with almost no space left is named as the likely cause."""
    import sinks.cog
    import sinks.io
    from sinks.cli import main
    from sinks.mapping.resume import TileStore

    stack = contextlib.ExitStack()
    if phase == "tiles":
        written = []
        original_write = TileStore.write

        def write(self, tile):
            if len(written) == 9:
                stack.enter_context(file_size_limit(2000))  # a tile is ~10 kB
            written.append(tile.index)
            original_write(self, tile)

        monkeypatch.setattr(TileStore, "write", write)
    else:
        original_cog = sinks.cog.to_cog

        def to_cog(*args, **kwargs):
            stack.enter_context(file_size_limit(20_000))  # the map is ~200 kB
            return original_cog(*args, **kwargs)

        monkeypatch.setattr(sinks.cog, "to_cog", to_cog)
    monkeypatch.setattr(sinks.io, "free_bytes", lambda folder: 5 * 2**20)
    out = tmp_path / "m.tif"
    argv = ["map", str(demo["bundle"]), str(demo["spec"]), "--block", "32", "--quiet", "--out", str(out)]
    with stack:
        assert main(argv) == 2
    err = capfd.readouterr().err.strip()
    kept = 9 if phase == "tiles" else N_TILES
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"sinks map: error: {tmp_path}/") and "writing failed" in err and ".partial" not in err
    assert f"the disk holding {tmp_path}" in err and "is full (5 MiB free)" in err
    assert f"{kept} of {N_TILES} tiles are finished and kept" in err and "rerun the same command" in err
    [store] = _checkpoints(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.name]  # no map, STAC Item or staging file
    assert {p.name for p in store.iterdir() if not p.name.endswith(".tif")} <= {"job.json", "map.vrt"}
    assert len(list(store.glob("[0-9]*.tif"))) == kept  # no partial tile
    monkeypatch.undo()
    assert main(argv) == 0 and out.read_bytes() == clean
    assert _checkpoints(tmp_path) == []


def test_a_run_failing_before_any_tile_keeps_no_checkpoints(demo, tmp_path, monkeypatch):
    _counting(monkeypatch, fail_after=0)
    with pytest.raises(RuntimeError) as raised:
        predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, progress=False)
    assert not getattr(raised.value, "__notes__", None) and list(tmp_path.iterdir()) == []
