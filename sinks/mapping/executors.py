"""Executors of a map job: where the tile function runs.

Every executor takes a :class:`~sinks.mapping.tiles.TileJob` and the windows still to do, runs
:func:`run_tile` on each and yields the finished :class:`~sinks.mapping.tiles.Tile` objects as they
complete (in any order), with a bounded number in flight so memory stays bounded by the tile size:

- :class:`SerialExecutor`: one tile after another in this process (the model uses every core);
- :class:`ThreadExecutor`: ``n`` tiles at once in threads of this process (GDAL reads and the
  model's predict release the GIL; no start-up cost);
- :class:`ProcessExecutor`: ``n`` worker processes (``forkserver``, so no OpenMP or GDAL state is
  inherited by fork); each opens its own datasets and loads the bundle once;
- :class:`DaskExecutor`: the workers of a Dask distributed cluster at any scheduler address
  (``sinks[dask]``); tiles come back to this process, which writes them.

The model gets ``cores // workers`` threads per worker (at least 1; on Dask 1, since a Dask
worker's threads are its own setting), so workers x threads never exceeds the cores. The output is
the same bytes whatever the executor and the number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from sinks.constants import EXECUTORS  # defined there: the CLI lists it at start-up
from sinks.errors import InputError, MissingDependencyError
from sinks.mapping.tiles import Tile, TileJob, compute_tile, forget


#: GDAL's block cache of a map job, in MiB, unless ``GDAL_CACHEMAX`` is set: the main process's,
#: shared by its threads, and split evenly among worker processes (at least
#: :data:`MIN_GDAL_CACHE_MB` each), so the job's caches together stay near it. GDAL's own default is
#: 5 % of the machine's memory (1.2 GiB here, 6.4 GiB on a 128 GiB server) in every process, and
#: every process filled it with stack blocks it reads once: the 10^8-pixel map peaked at 2.0 GiB
#: serial, workers at 1.5 GiB each; at 128 MiB, 0.93 GiB and 0.39 GiB
#: (benchmarks/results/mapping_memory.json). Windows follow the stack's blocks, so a larger cache
#: gains nothing.
MAP_GDAL_CACHE_MB = 128
MIN_GDAL_CACHE_MB = 16


def limit_gdal_cache(workers: int = 1) -> None:
    """Cap GDAL's block cache in this process at ``MAP_GDAL_CACHE_MB // workers`` MiB (``workers``:
    the job's worker processes this one is one of; 1 for the main process) unless the user set
    ``GDAL_CACHEMAX``, whose value then holds in every process.

    GDAL reads the setting when its cache is first used, so this is called before a process reads
    any raster: at the start of a map, and before each tile (a worker's first tile)."""
    from sinks.cog import GDAL_CACHE_SET_BY_SINKS, gdal_cache_chosen_by_user

    if gdal_cache_chosen_by_user():
        return
    mb = str(max(MIN_GDAL_CACHE_MB, MAP_GDAL_CACHE_MB // max(1, int(workers))))
    os.environ["GDAL_CACHEMAX"] = os.environ[GDAL_CACHE_SET_BY_SINKS] = mb


def release_memory() -> None:
    """Return the heap memory this process has freed to the system (glibc's ``malloc_trim``;
    nothing elsewhere). Called between the tiles and the COG step: freed tile buffers otherwise
    stay in the allocator's arenas, under the COG step's own memory."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # pragma: no cover - not glibc
        pass


def run_tile(job: TileJob, index: int, window, store=None) -> Tile:
    """Compute one tile; with a ``store`` (:class:`~sinks.mapping.resume.TileStore`) write it there
    and return it without its data (so only counts travel back from a worker)."""
    limit_gdal_cache(job.cache_workers)
    tile = compute_tile(job, index, window)
    if store is None:
        return tile
    store.write(tile)
    return tile._replace(data=None)


class SerialExecutor:
    """Tiles one after another in this process."""

    name = "serial"
    workers = 1
    processes = 1  # processes sharing the job's GDAL cache budget (limit_gdal_cache)
    writes_on_workers = True

    def threads_per_worker(self, cores: int) -> int:
        return cores

    def tiles(self, job: TileJob, todo: Iterable, store=None) -> Iterator[Tile]:
        for index, window in todo:
            yield run_tile(job, index, window, store)

    def close(self) -> None:
        pass


class _FuturesExecutor:
    writes_on_workers = True
    processes = 1

    def __init__(self, workers: int):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InputError(f"the number of workers must be a positive integer, got {workers!r}")
        self.workers = workers
        self._pool = None

    def threads_per_worker(self, cores: int) -> int:
        return max(1, cores // self.workers)

    def _make_pool(self, job: TileJob):  # pragma: no cover - abstract
        raise NotImplementedError

    def tiles(self, job: TileJob, todo: Iterable, store=None) -> Iterator[Tile]:
        from concurrent.futures import FIRST_COMPLETED, wait

        if self._pool is None:
            self._pool = self._make_pool(job)
        limit = 2 * self.workers
        pending = set()
        todo = iter(todo)
        try:
            while True:
                for index, window in todo:
                    pending.add(self._pool.submit(run_tile, job, index, window, store))
                    if len(pending) >= limit:
                        break
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class ThreadExecutor(_FuturesExecutor):
    """``workers`` tiles at once in threads of this process."""

    name = "threads"

    def _make_pool(self, job: TileJob):
        from concurrent.futures import ThreadPoolExecutor

        return ThreadPoolExecutor(self.workers, thread_name_prefix="sinks-map")


def _init_worker(threads: int) -> None:
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and shuts the pool down


class ProcessExecutor(_FuturesExecutor):
    """``workers`` local worker processes, started by a fork server."""

    name = "processes"

    @property
    def processes(self) -> int:
        return self.workers

    def _make_pool(self, job: TileJob):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("forkserver")  # no preload: the fork server stays ~20 MiB
        return ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker,
                                   initargs=(job.threads,))


class DaskExecutor:
    """The workers of a Dask distributed cluster (``scheduler``: an address such as
    ``tcp://10.0.0.5:8786``, or a ``distributed.Client``)."""

    name = "dask"
    writes_on_workers = False  # workers may be other machines: tiles come back and are written here

    def __init__(self, scheduler):
        try:
            import distributed
        except ImportError as exc:
            raise MissingDependencyError(
                "--executor dask needs Dask distributed: pip install 'sinks[dask]'") from exc
        if scheduler is None:
            raise InputError("--executor dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
        self._own = not isinstance(scheduler, distributed.Client)
        self._job = None
        try:
            self.client = distributed.Client(scheduler, timeout="20s") if self._own else scheduler
        except (OSError, TimeoutError) as exc:
            raise InputError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from exc
        nthreads = self.client.nthreads()
        self.workers = max(1, sum(nthreads.values()))
        self.processes = max(1, len(nthreads))

    def threads_per_worker(self, cores: int) -> int:
        return 1

    def tiles(self, job: TileJob, todo: Iterable, store=None) -> Iterator[Tile]:
        from distributed import as_completed

        self._job = job
        [job_future] = self.client.scatter([job], broadcast=True)
        todo = iter(todo)
        limit = 2 * self.workers
        first = [self.client.submit(run_tile, job_future, i, w, pure=False) for _, (i, w) in zip(range(limit), todo)]
        queue = as_completed(first)
        try:
            for future in queue:
                tile = future.result()
                future.release()
                nxt = next(todo, None)
                if nxt is not None:
                    queue.add(self.client.submit(run_tile, job_future, *nxt, pure=False))
                yield tile
        finally:
            for future in list(queue.futures):  # a copy: cancelling changes the queue's set as it goes
                future.cancel()

    def close(self) -> None:
        """Drop the job's bundle and datasets on every worker (a cluster outlives the map), then
        disconnect from a cluster this executor connected to."""
        if self._job is not None:
            try:
                self.client.run(release_job, self._job)
            except Exception:  # noqa: BLE001 - workers that are gone hold nothing
                pass
            self._job = None
        if self._own:
            self.client.close()
            self._own = False


def release_job(job: TileJob) -> None:
    """Drop this process's bundle and datasets of ``job`` and return the freed heap (a worker once
    the map ends; the main process before the COG step)."""
    forget(job)
    release_memory()


def make_executor(name: str = "serial", *, workers: int = 1, scheduler=None):
    """An executor by name (one of :data:`EXECUTORS`)."""
    if name == "serial":
        return SerialExecutor()
    if name == "threads":
        return ThreadExecutor(workers)
    if name == "processes":
        return ProcessExecutor(workers)
    if name == "dask":
        return DaskExecutor(scheduler)
    raise InputError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
