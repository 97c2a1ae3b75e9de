"""Checkpoints of a map job: finished tiles kept on disk until the map is complete.

Where they live: a hidden folder beside the output, ``.NAME.resume-KEY/`` (``NAME`` the map's file
name, ``KEY`` the first 16 hex digits of :func:`job_key`, a hash of everything that decides the
map's bytes: the bundle id, the spec's fingerprint or the stack, the input files' sizes and
modification times, the grid, the window size, the bands and the sinks version; not the executor
or the number of workers, which do not change the bytes). Each finished tile is one small GeoTIFF
(``NNNNNNN.tif``, ZSTD level 1), written under a temporary name and renamed when complete, so a
tile file that exists is whole; its tags hold the tile's pixel counts. ``job.json`` records the
arguments, ``lock`` the host, process id and start time of the run using the folder.

When a run starts it reuses the folder of the same key (skipping the tiles there), removes the
folders other keys left for the same output (a rerun with other arguments never reuses them), and
refuses to run while a live process holds the folder (a stale lock whose process id a later
process reused does not count; a run on another host sharing the disk does, since sinks cannot
look there). The map is assembled from the tiles (a VRT
over them, converted to a COG) and the folder is removed once the map is in place. A run that
fails or is interrupted (Ctrl-C, SIGTERM, kill -9, a full disk) keeps it when it holds a finished
tile, so the rerun with the same arguments resumes (the error says so); a run that ends in an error
no rerun can mend (no valid pixel), or before any tile was finished, removes it.
The folder needs up to the uncompressed size of the map's bands on disk while the job runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import threading
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from sinks.errors import OutputError
from sinks.io import RESUME_TAG, identity_running, process_identity
#: Creation options of a checkpoint tile: fast to write and read, about 60 % of the raw size.
#: Checkpoint tiles: fast lossless compression, and one band per block (``interleave="band"``): the
#: COG step reads them through a VRT that keeps up to 100 tiles open, and a pixel-interleaved tile
#: holds every band's block decoded per open file (1.5 GiB for 6 bands over 400 tiles,
#: benchmarks/results/mapping_memory.json), a band-interleaved one only the band being read.
TILE_OPTIONS = {"compress": "zstd", "zstd_level": 1, "predictor": 3, "interleave": "band"}


def job_key(parts: dict) -> str:
    """Hex sha256 of a job's arguments (a JSON-able mapping)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_stamp(path: str | os.PathLike) -> list:
    """What identifies an input file's version cheaply: its absolute path, size and mtime."""
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


class TileStore:
    """The checkpoint folder of one map job (picklable: workers write their tiles into it)."""

    def __init__(self, folder: str | os.PathLike, *, nodata: float, transform, n_bands: int):
        self.folder = Path(folder)
        self.owned = False  # True once this run holds the folder's lock
        self.nodata = float(nodata)
        self.transform = transform
        self.n_bands = int(n_bands)

    @classmethod
    def for_output(cls, out: str | os.PathLike, key: str, **kwargs) -> TileStore:
        out = Path(out)
        return cls(out.parent / f".{out.name}{RESUME_TAG}{key[:16]}", **kwargs)

    # -- life cycle -------------------------------------------------------------------------
    def others(self) -> list[Path]:
        """Checkpoint folders of the same output left by runs with other arguments."""
        prefix = self.folder.name.split(RESUME_TAG)[0] + RESUME_TAG
        return [p for p in self.folder.parent.iterdir()
                if p.name.startswith(prefix) and p != self.folder and p.is_dir()]

    def _holder(self, folder: Path) -> str | None:
        """Who holds ``folder`` (a live run other than this one), or None. The lock names the host,
        pid and start time (:func:`~sinks.io.process_identity`; a bare pid from older runs): a
        stale lock whose pid a later process reused does not hold the folder. A run on another
        host (a shared disk) is taken to hold it, since sinks cannot look."""
        try:
            text = (folder / "lock").read_text().strip()
            identity = json.loads(text) if text.startswith("{") else {"pid": int(text)}
            if int(identity["pid"]) == os.getpid() and identity.get("host") in (None, socket.gethostname()):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        running = identity_running(identity)
        if running is False:
            return None
        where = f"process {identity['pid']}" + (f" on host {identity['host']}" if running is None else "")
        return where + ("; if it has ended, remove the folder" if running is None else "")

    def open(self, manifest: dict) -> dict[int, tuple[int, int]]:
        """Take the folder for this run (creating it); returns the finished tiles,
        ``{index: (valid pixels, pixels inside the AOA)}``."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        for folder in [self.folder, *self.others()]:
            holder = self._holder(folder) if folder.is_dir() else None
            if holder is not None:
                raise OutputError(f"{folder}: another 'sinks map' ({holder}) is writing this map; wait "
                                  "for it to end or write elsewhere")
        for folder in self.others():
            shutil.rmtree(folder, ignore_errors=True)
        self.folder.mkdir(exist_ok=True)
        (self.folder / "lock").write_text(json.dumps(process_identity()))
        self.owned = True
        job = self.folder / "job.json"
        if not job.exists():
            job.write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
        return self.done()

    def _tile_files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [entry for entry in self.folder.iterdir() if entry.name.endswith(".tif") and entry.name[:-4].isdigit()]

    def count(self) -> int:
        """Finished tiles in the folder (without decoding them; :meth:`done` checks each)."""
        return len(self._tile_files())

    def done(self) -> dict[int, tuple[int, int]]:
        import rasterio

        out = {}
        for entry in self._tile_files():
            name = entry.name
            try:
                with rasterio.open(entry) as ds:
                    tags = ds.tags()
                    ok = ds.count == self.n_bands
                    ds.read()  # every block decodes: a truncated or damaged tile (a full disk) is recomputed
                out[int(name[:-4])] = (int(tags["valid"]), int(tags["inside"]))
                if not ok:
                    raise ValueError
            except Exception:  # noqa: BLE001 - an unreadable checkpoint is recomputed
                entry.unlink(missing_ok=True)
                out.pop(int(name[:-4]), None)
        return out

    def release(self) -> None:
        """Leave the folder for a later run (an interrupted or failed job); only a run that took it
        (:meth:`open`) lets it go, never one refused because another process holds it."""
        if self.owned and self.folder.is_dir():
            (self.folder / "lock").unlink(missing_ok=True)

    def remove(self) -> None:
        """Remove the folder: only the run that took it (:meth:`open`)."""
        if self.owned:
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- tiles ----------------------------------------------------------------------------
    def path(self, index: int) -> Path:
        return self.folder / f"{index:07d}.tif"

    def write(self, tile) -> None:
        """Write a finished tile (NaN becomes nodata) under a temporary name, then rename it."""
        import rasterio
        from affine import Affine

        from sinks.cog import check_written

        data = tile.data
        w = tile.window
        final = self.path(tile.index)
        tmp = final.with_name(f".{final.stem}.{os.getpid()}.{threading.get_ident()}.tmp.tif")
        h, wd = data.shape[1:]
        transform = self.transform @ Affine.translation(w.col_off, w.row_off)
        options = dict(TILE_OPTIONS)
        if wd % 16 == 0 and h % 16 == 0:
            options.update(tiled=True, blockxsize=wd, blockysize=h)
        try:
            with rasterio.open(tmp, "w", driver="GTiff", width=wd, height=h, count=data.shape[0],
                               dtype="float32", nodata=self.nodata, transform=transform, **options) as dst:
                dst.write(np.where(np.isnan(data), np.float32(self.nodata), data))
                dst.update_tags(valid=tile.valid, inside=tile.inside)
            check_written(tmp, name=final)  # a write failing as the file closed (a full disk) raises nothing
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def write_vrt(self, path: str | os.PathLike, *, grid, windows, band_names, band_tags=None, tags=None,
                  units=None) -> Path:
        """A VRT mosaic of the tiles on ``grid`` (band descriptions, units and tags included)."""
        path = Path(path)
        t = grid.transform
        crs = escape(grid.crs.to_wkt())
        lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">',
                 f"  <SRS>{crs}</SRS>",
                 f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>"]
        lines += _metadata(tags or {}, "  ")
        for b, name in enumerate(band_names, start=1):
            lines.append(f'  <VRTRasterBand dataType="Float32" band="{b}">')
            lines.append(f"    <Description>{escape(name)}</Description>")
            lines.append(f"    <NoDataValue>{self.nodata!r}</NoDataValue>")
            unit = (units or {}).get(name)
            if unit:
                lines.append(f"    <UnitType>{escape(unit)}</UnitType>")
            lines += _metadata({"name": name, **(band_tags or {}).get(name, {})}, "    ")
            for index, w in windows:
                lines.append(
                    f'    <SimpleSource><SourceFilename relativeToVRT="1">{self.path(index).name}</SourceFilename>'
                    f"<SourceBand>{b}</SourceBand>"
                    f'<SrcRect xOff="0" yOff="0" xSize="{w.width}" ySize="{w.height}"/>'
                    f'<DstRect xOff="{w.col_off}" yOff="{w.row_off}" xSize="{w.width}" ySize="{w.height}"/>'
                    "</SimpleSource>")
            lines.append("  </VRTRasterBand>")
        lines.append("</VRTDataset>")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


def _metadata(tags: dict, indent: str) -> list[str]:
    if not tags:
        return []
    items = "".join(f'<MDI key="{escape(str(k), {chr(34): "&quot;"})}">{escape(str(v))}</MDI>'
                    for k, v in tags.items())
    return [f"{indent}<Metadata>{items}</Metadata>"]
