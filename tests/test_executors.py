"""Executors: serial, threads, local processes and Dask give the same map, byte for byte."""

from __future__ import annotations

import pytest

from sinks.mapping import executors as ex
from sinks.mapping.predict import predict_map
from tests.test_mapping import mapping_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return mapping_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(demo, tmp_path_factory):
    return predict_map(demo["bundle"], demo["spec"], tmp_path_factory.mktemp("ref") / "m.tif", block=32,
                       progress=False).read_bytes()


@pytest.mark.parametrize("executor,workers", [("serial", 1), ("threads", 3), ("processes", 2)])
def test_local_executors_give_identical_bytes(demo, reference, tmp_path, executor, workers):
    out = predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, n_jobs=workers,
                      executor=executor, progress=False)
    assert out.read_bytes() == reference


def test_processes_from_a_stack_identical_to_serial(demo, tmp_path):
    a = predict_map(demo["bundle"], None, tmp_path / "a.tif", stack=demo["stack"], block=48, progress=False)
    b = predict_map(demo["bundle"], None, tmp_path / "b.tif", stack=demo["stack"], block=48, n_jobs=2,
                    executor="processes", bands="carbon,aoa", progress=False)
    c = predict_map(demo["bundle"], None, tmp_path / "c.tif", stack=demo["stack"], block=48, n_jobs=1,
                    executor="processes", bands="carbon,aoa", progress=False)
    assert b.read_bytes() == c.read_bytes()
    import rasterio

    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        assert (ra.read([1, 5]) == rb.read()).all()


def test_dask_local_cluster_gives_identical_bytes(demo, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        out = predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, executor="dask",
                          scheduler=cluster.scheduler_address, progress=False)
        assert out.read_bytes() == reference
        with distributed.Client(cluster) as client:  # a Client is accepted too
            out2 = predict_map(demo["bundle"], demo["spec"], tmp_path / "m2.tif", block=32, executor="dask",
                               scheduler=client, progress=False)
            assert out2.read_bytes() == reference


def test_dask_workers_drop_the_job_when_the_map_ends(demo, tmp_path):
    """A cluster outlives a map: its workers must not keep each job's bundle and open datasets."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=32, executor="dask",
                        scheduler=client, bands="carbon,di", progress=False)

            def cached():
                from sinks.mapping import tiles

                return len(tiles._BUNDLES), sum(len(r) for r in tiles._READERS.values())

            assert set(client.run(cached).values()) == {(0, 0)}


def test_workers_times_threads_within_the_cores():
    for cores in (1, 2, 3, 16):
        assert ex.SerialExecutor().threads_per_worker(cores) == cores
        for workers in (1, 2, 3, 5, 16):
            for cls in (ex.ThreadExecutor, ex.ProcessExecutor):
                threads = cls(workers).threads_per_worker(cores)
                assert threads >= 1 and (workers * threads <= cores or threads == 1)


def test_unknown_executor_and_dask_without_scheduler():
    from sinks.errors import InputError

    with pytest.raises(InputError, match="unknown executor"):
        ex.make_executor("spark")
    with pytest.raises(InputError, match="--scheduler"):
        ex.make_executor("dask")


def test_a_map_at_another_level_is_the_same_on_processes_and_narrower_at_80(demo, reference, tmp_path):
    import rasterio

    serial = predict_map(demo["bundle"], demo["spec"], tmp_path / "s.tif", block=32, progress=False, level=0.8)
    procs = predict_map(demo["bundle"], demo["spec"], tmp_path / "p.tif", block=32, n_jobs=2,
                        executor="processes", progress=False, level=0.8)
    assert serial.read_bytes() == procs.read_bytes()  # workers recalibrate the bundle they load
    ref = tmp_path / "ref.tif"
    ref.write_bytes(reference)
    with rasterio.open(serial) as a, rasterio.open(ref) as b:
        assert a.tags()["sinks_interval_level"] == "0.8" and b.tags()["sinks_interval_level"] == "0.9"
        names = list(a.descriptions)
        carbon, lower, upper = (names.index(n) + 1 for n in ("carbon", "lower", "upper"))
        assert (a.read(carbon) == b.read(carbon)).all()
        valid = a.read_masks(carbon) > 0
        width_80 = (a.read(upper) - a.read(lower))[valid]
        width_90 = (b.read(upper) - b.read(lower))[valid]
        assert (width_80 <= width_90 + 1e-4).all() and width_80.mean() < width_90.mean()


def test_gdal_cache_is_capped_and_split_among_worker_processes_unless_the_user_set_it(monkeypatch):
    import os

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    monkeypatch.delenv("SINKS_GDAL_CACHEMAX", raising=False)
    ex.limit_gdal_cache()  # the main process
    assert os.environ["GDAL_CACHEMAX"] == str(ex.MAP_GDAL_CACHE_MB)
    ex.limit_gdal_cache(2)  # a worker inheriting the main's environment: its share
    assert os.environ["GDAL_CACHEMAX"] == str(ex.MAP_GDAL_CACHE_MB // 2)
    ex.limit_gdal_cache(1000)
    assert os.environ["GDAL_CACHEMAX"] == str(ex.MIN_GDAL_CACHE_MB)
    monkeypatch.setenv("GDAL_CACHEMAX", "2048")
    for workers in (1, 2):
        ex.limit_gdal_cache(workers)
        assert os.environ["GDAL_CACHEMAX"] == "2048"  # the user's choice wins, in every process


def test_executors_say_how_many_processes_share_the_cache():
    assert ex.make_executor("serial").processes == 1
    assert ex.make_executor("threads", workers=3).processes == 1
    assert ex.make_executor("processes", workers=3).processes == 3


def test_checkpoint_tiles_are_band_interleaved(tmp_path):
    """The COG step reads tiles through a VRT keeping many open: one band per block bounds that."""
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    from sinks.mapping.resume import TileStore
    from sinks.mapping.tiles import Tile

    store = TileStore(tmp_path / "store", nodata=-9999.0, transform=Affine(30, 0, 0, 0, -30, 0), n_bands=3)
    store.folder.mkdir(parents=True, exist_ok=True)
    store.write(Tile(0, Window(0, 0, 32, 32), np.ones((3, 32, 32), dtype=np.float32), 1024, 1024))
    with rasterio.open(store.path(0)) as ds:
        assert ds.interleaving.value.lower() == "band" and ds.count == 3


def test_cog_conversion_holds_few_sources_and_a_small_cache_unless_the_user_chose(monkeypatch):
    from sinks import cog

    for name in ("GDAL_CACHEMAX", "SINKS_GDAL_CACHEMAX", "GDAL_MAX_DATASET_POOL_SIZE", "COG_TMP_COMPRESSION"):
        monkeypatch.delenv(name, raising=False)
    assert cog._conversion_options() == {"GDAL_MAX_DATASET_POOL_SIZE": cog.VRT_SOURCE_POOL,
                                         "GDAL_CACHEMAX": cog.COG_GDAL_CACHE_MB * 2**20,
                                         "COG_TMP_COMPRESSION": "NONE"}
    ex.limit_gdal_cache()  # sinks' own cap is not the user's choice
    assert "GDAL_CACHEMAX" in cog._conversion_options()
    monkeypatch.setenv("GDAL_CACHEMAX", "512")
    monkeypatch.setenv("GDAL_MAX_DATASET_POOL_SIZE", "50")
    monkeypatch.setenv("COG_TMP_COMPRESSION", "LZW")
    assert cog._conversion_options() == {}


def test_uncompressed_temporary_overviews_give_the_same_cog(monkeypatch, tmp_path):
    """COG_TMP_COMPRESSION only changes the COG driver's temporary overview file, not the output."""
    import numpy as np
    import rasterio
    from affine import Affine

    from sinks import cog

    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, 30.0, (2, 1024, 1024)).astype(np.float32)
    data[:, :100, :300] = -9999.0
    source = tmp_path / "source.tif"
    with rasterio.open(source, "w", driver="GTiff", width=1024, height=1024, count=2, dtype="float32",
                       nodata=-9999.0, crs="EPSG:32648", transform=Affine(30, 0, 0, 0, -30, 0)) as dst:
        dst.write(data)
    made = {}
    for value in ("NONE", "DEFLATE"):
        monkeypatch.setenv("COG_TMP_COMPRESSION", value)
        made[value] = cog.to_cog(source, tmp_path / f"{value}.tif", blocksize=256).read_bytes()
    assert made["NONE"] == made["DEFLATE"]
    with rasterio.open(tmp_path / "NONE.tif") as ds:
        assert ds.overviews(1) == [2, 4]  # down to the block size


def test_a_level_is_described_as_given(demo, tmp_path):
    """97.5 % is written as 97.5 %, not rounded to 98 % (band descriptions; sinks change reads them)."""
    import rasterio

    out = predict_map(demo["bundle"], demo["spec"], tmp_path / "m.tif", block=64, progress=False, level=0.975,
                      bands="carbon,lower,upper")
    with rasterio.open(out) as ds:
        assert ds.tags(2)["description"] == "lower bound of the 97.5% prediction interval"
        assert ds.tags()["sinks_interval_level"] == "0.975"
