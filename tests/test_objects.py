"""Boundary-aware objects: decoding body, border and contact channels into one object per footprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from geoseg.errors import GeosegError
from geoseg.inference.objects import DecodeSettings, decode_objects
from geoseg.training.targets import object_targets

ROOT = Path(__file__).resolve().parents[1]


def _touching_rectangles(seed=0):
    """A 160x200 scene of rectangles in rows, each row's rectangles sharing their long edges."""
    rng = np.random.default_rng(seed)
    inst = np.zeros((160, 200), np.int32)
    n = 0
    for r0 in (6, 58, 110):
        c = 5
        while c < 170:
            w = int(rng.integers(12, 26))
            n += 1
            inst[r0 : r0 + int(rng.integers(24, 40)), c : c + w] = n
            c += w  # the next one shares this one's edge
    return inst, n


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_touching_rectangles_decode_to_one_object_each():
    inst, n = _touching_rectangles()
    chans = object_targets(inst, border=2, contact=3).astype(np.float32)
    # as a model would give them: soft, and a little noisy
    rng = np.random.default_rng(1)
    probs = np.clip(np.stack([ndimage.gaussian_filter(c, 0.7) for c in chans])
                    + rng.normal(0, 0.03, chans.shape), 0, 1)
    labels = decode_objects(*probs)
    assert labels.max() == n
    # the class mask alone cannot tell them apart: one component per row of rectangles
    assert ndimage.label(inst > 0)[1] == 3
    for k in range(1, n + 1):
        ref = inst == k
        best = np.bincount(labels[ref], minlength=n + 1)[1:].argmax() + 1
        assert _iou(labels == best, ref) >= 0.9, k
    assert len(np.unique(labels)) == n + 1


def test_small_objects_and_seedless_parts():
    body = np.zeros((40, 40), np.float32)
    body[2:12, 2:12] = 0.9  # a clear object
    body[20:23, 20:23] = 0.9  # 9 px: under min_area
    zero = np.zeros_like(body)
    labels = decode_objects(body, zero, zero, DecodeSettings(min_area=10))
    assert labels.max() == 1 and (labels == 1).sum() == 100 and not labels[20:23, 20:23].any()
    # a part whose pixels are all border (no seed) still comes back as its own object
    border = np.zeros_like(body)
    border[2:12, 2:12] = 0.9
    labels = decode_objects(body, border, zero, DecodeSettings(min_area=10))
    assert labels.max() == 1 and (labels == 1).sum() == 100
    assert not decode_objects(zero, zero, zero).any()


@pytest.mark.parametrize("bad", [dict(seed=1.5), dict(mask=-0.1), dict(min_area=-1)])
def test_bad_settings(bad):
    with pytest.raises(GeosegError, match="object decoding"):
        DecodeSettings(**bad)


def _object_bundle(path, tile=128, overlap=32):
    """A conv1x1 bundle reading body, border and contact from bands 1-3 (0 or 250): class logits
    (background, building) and object channels whose sigmoids are those bands, sharpened."""
    import torch

    from geoseg.classes import ClassList
    from geoseg.models import create_model
    from geoseg.models.bundle import BundleMeta, ObjectChannels, save_bundle

    classes = ClassList.from_names(["background", "building"])
    meta = BundleMeta("conv1x1", "none", (1, 2, 3), (0.0,) * 3, (1.0,) * 3, classes, tile_size=tile,
                      overlap=overlap, gsd=0.5,
                      objects=ObjectChannels((1,), 2, 3, DecodeSettings(0.5, 0.5, 4, 16).to_dict()))
    model = create_model("conv1x1", "none", 3, meta.out_channels)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.weight[1, 0, 0, 0] = 0.1  # building where body is set
        model.head.bias[1] = -12.5
        for c in range(3):
            model.head.weight[2 + c, c, 0, 0] = 0.1  # logit +-12.5: probability 0 or 1 to 6 digits
            model.head.bias[2 + c] = -12.5
    return save_bundle(model, meta, path)


def _footprint_scene(h=300, w=420, seed=3):
    """Rows of rectangles sharing their long edges, of all sizes up to more than the overlap, placed
    so that chunk and tile seams cut many of them."""
    rng = np.random.default_rng(seed)
    inst = np.zeros((h, w), np.int32)
    n, r0 = 0, 4
    while r0 < h - 50:
        c, rh = 3, int(rng.integers(20, 45))
        while c < w - 60:
            cw = int(rng.integers(10, 56))
            n += 1
            inst[r0 : r0 + rh, c : c + cw] = n
            c += cw + (0 if rng.random() < 0.7 else int(rng.integers(3, 9)))  # mostly touching
        r0 += rh + int(rng.integers(4, 12))
    return inst, n


def test_object_bundle_writes_one_instance_per_footprint_for_any_chunk_size(tmp_path):
    import geopandas as gpd
    import rasterio

    from geoseg.prediction import PredictOptions, predict
    from tests.conftest import write_scene

    inst, n = _footprint_scene()
    chans = object_targets(inst, border=2, contact=3) * np.uint8(250)
    scene = write_scene(tmp_path / "scene.tif", chans, nodata=None)
    bundle = _object_bundle(tmp_path / "objects")
    runs = {}
    for chunk, workers in ((128, 2), (1024, 1)):  # chunk seams every 128 px cut many footprints
        (out,) = predict(bundle, [str(scene)], tmp_path / f"out{chunk}",
                         PredictOptions(chunk_size=chunk, workers=workers, progress=False, engine="torch"))
        assert out.classes.exists() and out.instances.exists() and out.instances_gpkg.exists()
        with rasterio.open(out.classes) as ds:
            assert (ds.read(1) == (inst > 0)).all()
        with rasterio.open(out.instances) as ds, rasterio.open(scene) as sc:
            assert ds.crs == sc.crs and ds.transform == sc.transform
            runs[chunk] = (ds.read(1), gpd.read_file(out.instances_gpkg, layer="instances", engine="pyogrio"))
    pred, gdf = runs[128]
    assert len(gdf) == n and set(gdf.class_name) == {"building"} and gdf.crs is not None
    # every footprint is one instance, and every instance one footprint, matched at IoU >= 0.9
    for k in range(1, n + 1):
        ids, counts = np.unique(pred[inst == k], return_counts=True)
        best = ids[np.argmax(counts)]
        assert best > 0 and _iou(pred == best, inst == k) >= 0.9, k
    assert np.isclose(gdf.area_m2.sum(), (pred > 0).sum() * 0.25)
    # the same instances, pixel for pixel and polygon for polygon, whatever the chunking and workers
    pred2, gdf2 = runs[1024]
    assert (pred == pred2).all()
    assert all(a.equals(b) for a, b in zip(gdf.geometry, gdf2.geometry)) and len(gdf) == len(gdf2)

    # `evaluate` on the output folder scores pixels from NAME.classes.tif and objects from NAME.instances.gpkg
    import shapely
    from rasterio.features import shapes

    from geoseg.evaluation.evaluate import EvaluateOptions, evaluate

    with rasterio.open(scene) as sc:
        feats = [(shapely.geometry.shape(g), int(v)) for g, v in shapes(inst, mask=inst > 0, transform=sc.transform)]
        crs = sc.crs
    (tmp_path / "ref").mkdir()
    gpd.GeoDataFrame({"class_name": ["building"] * len(feats)}, geometry=[g for g, _ in feats],
                     crs=crs).to_file(tmp_path / "ref" / "scene.gpkg", engine="pyogrio")
    classes = str(ROOT / "configs/classes/buildings.yaml")
    rep = evaluate(tmp_path / "out128", tmp_path / "ref", tmp_path / "audit",
                   EvaluateOptions(classes=classes, class_field="class_name", progress=False, audit=False))
    (sc_rep,) = rep["scenes"]
    assert sc_rep["prediction"].endswith("scene.classes.tif")
    ob = rep["objects"]["building"]
    big = sum(int((inst == k).sum() > 20) for k in range(1, n + 1))  # the SpaceNet rule: 20 px or less left out
    assert sc_rep["objects"]["building"]["from"] == "scene.instances.gpkg"
    assert (ob["tp"], ob["fn"]) == (big, 0) and ob["fp"] == n - big
    # without the instances the objects are the class raster's components: touching footprints merge
    (tmp_path / "out128" / "scene.instances.gpkg").unlink()
    rep = evaluate(tmp_path / "out128", tmp_path / "ref", tmp_path / "audit2",
                   EvaluateOptions(classes=classes, class_field="class_name", progress=False, audit=False))
    assert rep["scenes"][0]["objects"]["building"]["from"] == "class raster components"
    assert rep["objects"]["building"]["tp"] < big / 2


def test_training_with_object_channels_tunes_and_records_the_decoding(tmp_path):
    """A short run on the Atlanta chip's footprints: the chips carry body, border and contact targets of
    their own polygons, the bundle gains three outputs, and the thresholds tuned on the validation
    blocks (from the grid) are stored with the validation counts they gave."""
    import csv
    from dataclasses import replace

    import torch
    import yaml

    from geoseg.models.bundle import read_meta
    from geoseg.training.config import load_config
    from geoseg.training.data import SceneChips, band_statistics, open_scene
    from geoseg.training.decoding import MASKS, MIN_AREAS, SEEDS
    from geoseg.training.loop import train
    from geoseg.vector.labels import read_instances

    root = Path(__file__).resolve().parents[1]
    cfg_path = tmp_path / "objects.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "classes": str(root / "configs/classes/buildings.yaml"), "bands": [1],
        "scenes": [{"image": str(root / "geoseg/data/atlanta/sample_geotiff.tif"),
                    "labels": {"path": str(root / "geoseg/data/atlanta/geotiff_labels.geojson"),
                               "class_value": "building"}}],
        "validation": {"block_size": 300, "holdout": [[0, 2], [1, 2], [2, 2]]},
        "objects": {"classes": ["building"]},
        "model": {"architecture": "unet", "encoder": "resnet18", "chip_size": 128, "tile_size": 128,
                  "overlap": 32, "arch_params": {"decoder_channels": [32, 16, 16, 8, 8]}},
        "sampling": {"chips_per_epoch": 8}, "augment": {"flips": True, "rot90": True},
        "train": {"epochs": 1, "batch_size": 4, "seed": 0}}))
    cfg = load_config(cfg_path)
    src = open_scene(cfg.scenes[0], cfg)
    # without flips and turns the targets are those of the chip's own polygons, burnt one number each
    plain = SceneChips([src], replace(cfg, augment=replace(cfg.augment, flips=False, rot90=False)),
                       *band_statistics([src], cfg.bands))
    for i in range(4):
        x, lab, obj = plain[i]
        _, s, win, _, valid, _, _ = plain.draw(i)
        ids, _ = read_instances(s.labels, s.grid, win)
        ids[~valid] = 0
        assert obj.shape == (3, 128, 128) and obj.dtype == torch.uint8
        assert (obj.numpy() == object_targets(ids, 2, 3)).all()
        assert (obj[0].numpy() == (lab.numpy() == 1)).all()
    out = train(cfg, tmp_path / "bundle", progress=False)
    meta = read_meta(out)
    assert meta.objects.classes == (1,) and meta.out_channels == 5
    d = meta.objects.decode
    assert d["seed"] in SEEDS and d["mask"] in MASKS and d["min_area"] in MIN_AREAS
    v = meta.extra["validation"]["objects"]
    assert {"tp", "fp", "fn", "f1"} <= set(v) and v["tp"] + v["fn"] > 0
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert float(rows[-1]["val_object_f1"]) == pytest.approx(v["f1"])
    # `geoseg model info` shows the object channels, their decoding and the validation counts
    from geoseg.models.bundle import summarize

    info = "\n".join(summarize(meta))
    assert (f"objects       building: body, 2 px inner border, 3 px contact -> NAME.instances.gpkg; decoding seed "
            f"{d['seed']}, mask {d['mask']}, min area {d['min_area']} px") in info
    assert f"object F1 {v['f1']:.3f} (TP {v['tp']}, FP {v['fp']}, FN {v['fn']})" in info


def test_predict_regularize_squares_the_instance_footprints(tmp_path):
    """`predict --regularize` with an object bundle: NAME.instances.gpkg keeps one valid polygon per object,
    now with corners within 2° of right angles and areas within 10% of the pixel outlines; the instance raster
    keeps the pixels. A semantic bundle without object channels needs --vectorize for it."""
    import geopandas as gpd
    import rasterio
    from click.testing import CliRunner

    from geoseg.cli.main import cli
    from geoseg.vector.regularize import right_angle_error
    from tests.conftest import assert_one_line_error, make_linear_bundle, noisy_rectangles, write_scene

    mask, n = noisy_rectangles(0)
    inst, _ = ndimage.label(mask)
    scene = write_scene(tmp_path / "scene.tif", object_targets(inst, border=2, contact=3) * np.uint8(250),
                        nodata=None)
    bundle = _object_bundle(tmp_path / "objects")
    layers, ids = {}, {}
    for name, extra in (("plain", []), ("reg", ["--regularize"])):
        r = CliRunner().invoke(cli, ["predict", str(bundle), str(scene), "-o", str(tmp_path / name),
                                     "--no-progress", "--engine", "torch", *extra])
        assert r.exit_code == 0, r.output
        layers[name] = gpd.read_file(tmp_path / name / "scene.instances.gpkg", engine="pyogrio")
        with rasterio.open(tmp_path / name / "scene.instances.tif") as ds:
            ids[name] = ds.read(1)
    assert (ids["plain"] == ids["reg"]).all() and len(np.unique(ids["plain"])) == n + 1
    plain, reg = (layers[k].sort_values("instance_id").reset_index(drop=True) for k in ("plain", "reg"))
    assert len(plain) == len(reg) == n and reg.geometry.is_valid.all()
    for a, b, area in zip(plain.geometry, reg.geometry, reg.area_m2):
        (part,) = list(getattr(b, "geoms", [b]))
        assert right_angle_error(part) <= 2.0 and len(part.exterior.coords) - 1 <= 8
        assert abs(b.area - a.area) / a.area < 0.10 and np.isclose(area, b.area)
    def vertices(layer):  # the layer is MultiPolygon, like vectorize's; each footprint here is one part
        return sum(len(p.exterior.coords) for g in layer.geometry for p in g.geoms)
    assert vertices(plain) > 2 * vertices(reg)

    semantic = make_linear_bundle(tmp_path / "linear")
    r = CliRunner().invoke(cli, ["predict", str(semantic), str(scene), "-o", str(tmp_path / "sem"), "--regularize",
                                 "--no-progress"])
    assert_one_line_error(r, "--regularize", "--vectorize")
    assert not (tmp_path / "sem").exists() or not any((tmp_path / "sem").iterdir())
