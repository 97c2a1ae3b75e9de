"""Windowed prediction into COGs: threads agree, mismatches and failures leave nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from sinks.covariates.spec import load_spec
from sinks.demo.run import run_demo
from sinks.errors import ModelMismatchError
from sinks.mapping import predict as predict_mod
from sinks.mapping.predict import predict_map


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    return run_demo(out, size=200, seed=5, progress=False)


def test_threads_give_the_same_map(small_demo, tmp_path):
    spec = small_demo.out / "features" / "demo_county.toml"
    a = predict_map(small_demo.outputs["model"], spec, tmp_path / "a.tif", block=64, progress=False)
    b = predict_map(small_demo.outputs["model"], spec, tmp_path / "b.tif", block=64, n_jobs=2, progress=False)
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        np.testing.assert_array_equal(ra.read(), rb.read())


def test_spec_that_differs_from_training_is_refused(small_demo, tmp_path):
    spec_path = small_demo.out / "features" / "demo_county.toml"
    changed = tmp_path / "changed.toml"
    changed.write_text(spec_path.read_text().replace("(nir - red) / (nir + red)", "(nir - red) / (nir + red + 0.5)")
                       .replace('"../data/', f'"{small_demo.out}/data/'))
    with pytest.raises(ModelMismatchError, match="defines its features differently"):
        predict_map(small_demo.outputs["model"], load_spec(changed), tmp_path / "m.tif", progress=False)
    assert not (tmp_path / "m.tif").exists()


def test_failure_midway_leaves_no_file(small_demo, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = predict_mod.predict_window

    def failing(engine, bundle, window):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return original(engine, bundle, window)

    monkeypatch.setattr(predict_mod, "predict_window", failing)
    with pytest.raises(RuntimeError):
        predict_map(small_demo.outputs["model"], small_demo.out / "features" / "demo_county.toml",
                    tmp_path / "m.tif", block=64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_guards_before_anything_is_written(small_demo, tmp_path):
    from sinks.errors import InputError, ResourceError

    spec = small_demo.out / "features" / "demo_county.toml"
    bundle = small_demo.outputs["model"]
    for bad in (7, 0, 100, 8.0):
        with pytest.raises(InputError, match="multiple of 16"):
            predict_map(bundle, spec, tmp_path / "m.tif", block=bad, progress=False)
    with pytest.raises(InputError, match="n_jobs"):
        predict_map(bundle, spec, tmp_path / "m.tif", n_jobs=0, progress=False)
    with pytest.raises(ResourceError, match="200 x 200 = 40,000 pixels"):
        predict_map(bundle, spec, tmp_path / "m.tif", max_pixels=1000, progress=False)
    assert list(tmp_path.iterdir()) == []


def _copy_with(small_demo, tmp_path, **fills):
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    for name in ("dem", "surface_reflectance"):
        src = small_demo.out / "data" / f"{name}.tif"
        if name not in fills:
            shutil.copy(src, data / src.name)
            continue
        with rasterio.open(src) as ds:
            profile, shape = ds.profile, (ds.count, ds.height, ds.width)
        with rasterio.open(data / src.name, "w", **profile) as out:
            out.write(np.full(shape, fills[name], dtype=profile["dtype"]))
    text = (small_demo.out / "features" / "demo_county.toml").read_text().replace('"../data/', f'"{data}/')
    (tmp_path / "spec.toml").write_text(text)
    return tmp_path / "spec.toml"


def test_no_valid_pixel_is_an_error_and_leaves_no_file(small_demo, tmp_path):
    from sinks.errors import InputError

    spec = _copy_with(small_demo, tmp_path, surface_reflectance=0)  # 0 = the reflectance's nodata
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="no valid pixel"):
        predict_map(small_demo.outputs["model"], spec, tmp_path / "out" / "m.tif", block=64, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_map_wholly_outside_the_aoa_warns(small_demo, tmp_path):
    spec = _copy_with(small_demo, tmp_path, surface_reflectance=9000, dem=4000)
    with pytest.warns(predict_mod.AOAWarning, match="area of applicability"):
        out = predict_map(small_demo.outputs["model"], spec, tmp_path / "m.tif", block=64, progress=False)
    with rasterio.open(out) as ds:
        assert ds.read(5, masked=True).max() == 0
