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
