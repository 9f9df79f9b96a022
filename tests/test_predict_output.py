"""The class raster's georeferencing, nodata, colour map and COG layout."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.prediction import PredictOptions, predict
from tests.conftest import known_class, structured_scene, write_scene


@pytest.fixture(scope="module")
def predicted(linear_bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("out")
    data = structured_scene(1100, 1300, seed=3)
    data[:, :50, :] = 0
    transform = from_origin(500000.0, 4100000.0, 0.3, 0.3)
    scene = write_scene(tmp / "scene.tif", data, crs="EPSG:32633", transform=transform)
    (res,) = predict(linear_bundle, [str(scene)], tmp / "out", PredictOptions(progress=False))
    return scene, data, res


def test_georeferencing_size_and_nodata_match_the_input(predicted):
    scene, data, res = predicted
    assert res.classes.name == "scene.classes.tif"
    with rasterio.open(scene) as src, rasterio.open(res.classes) as out:
        assert out.crs == src.crs and out.crs.to_epsg() == 32633
        assert out.transform == src.transform
        assert (out.width, out.height, out.count) == (1300, 1100, 1)
        assert out.dtypes == ("uint8",) and out.nodata == 255
        arr = out.read(1)
    assert (arr[:50] == 255).all()
    np.testing.assert_array_equal(arr[50:], known_class(data)[50:])


def test_colour_map_description_and_class_metadata(predicted):
    _, _, res = predicted
    with rasterio.open(res.classes) as out:
        cmap = out.colormap(1)
        assert cmap[0] == (0, 0, 0, 255)
        assert cmap[1] == (0xE3, 0x1A, 0x1C, 255)  # building
        assert cmap[2] == (0x1F, 0x78, 0xB4, 255)  # water
        assert cmap[255][3] == 0  # nodata is transparent
        assert out.descriptions == ("class",)
        classes = json.loads(out.tags()["GEOSEG_CLASSES"])
        assert [c["name"] for c in classes] == ["background", "building", "water"]


def test_cog_layout_per_gdal_and_mode_overviews(predicted):
    _, _, res = predicted
    with rasterio.open(res.classes) as out:
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert out.block_shapes == [(512, 512)]
        # overviews halve until the scene fits in one 512 block: 1300 -> 650 -> 325
        assert out.overviews(1) == [2, 4]
        ov = out.read(1, out_shape=(550, 650))  # served from the overview
    # MODE (never averaging) keeps overview values inside the class ids and nodata
    assert set(np.unique(ov)) <= {0, 1, 2, 255}
    if shutil.which("gdalinfo"):  # gdal-bin, installed by .ci/run; rasterio's GDAL said the same above
        info = subprocess.run(["gdalinfo", str(res.classes)], capture_output=True, text=True, check=True)
        assert "LAYOUT=COG" in info.stdout


def test_small_raster_and_all_nodata_scene(linear_bundle, tmp_path):
    tiny = structured_scene(20, 33, seed=5)
    empty = np.zeros((3, 700, 800), dtype=np.uint8)
    write_scene(tmp_path / "tiny.tif", tiny)
    write_scene(tmp_path / "empty.tif", empty)
    outs = predict(linear_bundle, [str(tmp_path)], tmp_path / "out", PredictOptions(progress=False))
    got = {o.classes.name: rasterio.open(o.classes).read(1) for o in outs}
    np.testing.assert_array_equal(got["tiny.classes.tif"], known_class(tiny))
    assert (got["empty.classes.tif"] == 255).all()


def test_existing_outputs_are_skipped_unless_overwrite(linear_bundle, tmp_path):
    write_scene(tmp_path / "a.tif", structured_scene(64, 64))
    out = tmp_path / "out"
    (res,) = predict(linear_bundle, [str(tmp_path / "a.tif")], out, PredictOptions(progress=False))
    res.classes.write_bytes(b"sentinel")
    predict(linear_bundle, [str(tmp_path / "a.tif")], out, PredictOptions(progress=False))
    assert res.classes.read_bytes() == b"sentinel"
    predict(linear_bundle, [str(tmp_path / "a.tif")], out, PredictOptions(progress=False, overwrite=True))
    with rasterio.open(res.classes) as src:
        assert src.read(1).shape == (64, 64)
    # no temporary files left: the COG, its QGIS style and its GDAL category names
    assert sorted(p.name for p in out.iterdir()) == ["a.classes.qml", "a.classes.tif", "a.classes.tif.aux.xml"]


@pytest.mark.parametrize("overviews", ["nearest", "mode"])
def test_overviews_pick_classes_never_blend(linear_bundle, tmp_path, overviews):
    """In every 2x2 cell three pixels are class 0 and one is class 1, at a different corner per quadrant."""
    arr = np.full((1024, 1024), 50, dtype=np.uint8)  # class 0
    for qy, qx, (dy, dx) in ((0, 0, (0, 0)), (0, 512, (0, 1)), (512, 0, (1, 0)), (512, 512, (1, 1))):
        arr[qy + dy : qy + 512 : 2, qx + dx : qx + 512 : 2] = 120  # class 1
    write_scene(tmp_path / "cells.tif", np.stack([arr] * 3))
    (res,) = predict(linear_bundle, [str(tmp_path / "cells.tif")], tmp_path / "out",
                     PredictOptions(progress=False, overviews=overviews))
    with rasterio.open(res.classes) as out:
        full = out.read(1)
        assert out.overviews(1) == [2]
        ov = out.read(1, out_shape=(512, 512))
    np.testing.assert_array_equal(full, known_class(np.stack([arr] * 3)))
    if overviews == "mode":
        assert (ov == 0).all()  # the most frequent class of every cell
    else:  # one source pixel per cell, at the same corner everywhere: class 1 in exactly one quadrant
        assert any(np.array_equal(ov, full[a::2, b::2]) for a in (0, 1) for b in (0, 1))
        assert sorted(int(ov[q].max()) for q in (np.s_[:256, :256], np.s_[:256, 256:], np.s_[256:, :256],
                                                 np.s_[256:, 256:])) == [0, 0, 0, 1]


def test_nearest_overviews_cut_from_chunks_take_each_footprints_centre(linear_bundle, tmp_path):
    """Every level's pixel i is source pixel min(i*f + f/2, size-1), whatever the chunking; no temporaries left."""
    data = structured_scene(1100, 1750, seed=4)  # odd-sized levels, clamped at the far edges
    write_scene(tmp_path / "s.tif", data)
    outs = []
    for chunk in (200, 2048):
        (res,) = predict(linear_bundle, [str(tmp_path / "s.tif")], tmp_path / f"o{chunk}",
                         PredictOptions(progress=False, chunk_size=chunk))
        assert sorted(p.name for p in (tmp_path / f"o{chunk}").iterdir()) == [
            "s.classes.qml", "s.classes.tif", "s.classes.tif.aux.xml"]
        with rasterio.open(res.classes) as out:
            full = out.read(1)
            assert out.overviews(1) == [2, 4]  # 1750 -> 875 -> 438
            levels = [out.read(1, out_shape=(-(-1100 // f), -(-1750 // f))) for f in (2, 4)]
        np.testing.assert_array_equal(full, known_class(data))
        for f, ov in zip((2, 4), levels):
            rows = np.minimum(np.arange(ov.shape[0]) * f + f // 2, 1099)
            cols = np.minimum(np.arange(ov.shape[1]) * f + f // 2, 1749)
            np.testing.assert_array_equal(ov, full[np.ix_(rows, cols)], err_msg=f"level {f}, chunk {chunk}")
        outs.append(res.classes.read_bytes())
    assert outs[0] == outs[1]  # the same file, byte for byte


def test_a_rewritten_scene_is_read_anew(tmp_path, linear_bundle):
    """Read handles are kept per thread between chunks; a scene rewritten in place is not read stale."""
    from rasterio.windows import Window

    from geoseg.io.raster import inspect_scene, read_window

    path = tmp_path / "s.tif"
    first, second = structured_scene(300, 300, seed=1), structured_scene(300, 300, seed=2)
    for data in (first, second, first):
        write_scene(path, data)
        got, valid = read_window(inspect_scene(path), Window(10, 20, 200, 100), (1, 2, 3))
        np.testing.assert_array_equal(got, data[:, 20:120, 10:210])
    # and a prediction after a rewrite follows the new pixels
    write_scene(path, second)
    (out,) = predict(linear_bundle, [str(path)], tmp_path / "o", PredictOptions(progress=False))
    with rasterio.open(out.classes) as src:
        np.testing.assert_array_equal(src.read(1), known_class(second))
