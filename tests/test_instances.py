"""Instance prediction: seam-exact tiling against the untiled oracle, Mask R-CNN on any band count,
torchvision import, COCO round trip, memory per crop, and bad input."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch
from click.testing import CliRunner
from rasterio import features
from scipy import ndimage

from geoseg.cli.main import cli
from geoseg.errors import GeosegError
from geoseg.models.bundle import init_bundle
from geoseg.prediction import PredictOptions, predict
from tests.conftest import write_scene

BRIGHT, DARK = 200, 40


def oracle_scene(h: int, w: int, seed: int = 0, blobs: int = 120) -> np.ndarray:
    """Dark ground with bright objects: discs and squares all over (on tile and chunk seams, in the
    corners), and bars longer than a tile's core (cut by several tiles)."""
    rng = np.random.default_rng(seed)
    a = np.full((h, w), DARK, np.uint8)
    yy, xx = np.ogrid[:h, :w]
    for _ in range(blobs):
        y, x, r = rng.integers(0, h), rng.integers(0, w), rng.integers(2, 12)
        if rng.random() < 0.5:
            a[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = BRIGHT
        else:
            a[max(0, y - r) : y + r, max(0, x - r) : x + r] = BRIGHT
    for c in ((0, 0), (0, w - 6), (h - 7, 0), (h - 5, w - 5)):  # the four corners
        a[c[0] : c[0] + 6, c[1] : c[1] + 6] = BRIGHT
    a[50:58, 20 : w - 40] = BRIGHT  # a bar across the whole scene
    a[100 : h - 60, 600:612] = BRIGHT  # and one down it
    a[300:340, 240:520] = BRIGHT  # a block larger than a tile's core
    return a


@pytest.fixture(scope="module")
def oracle_bundle(tmp_path_factory) -> Path:
    return init_bundle("components", tmp_path_factory.mktemp("b") / "oracle", encoder="none", bands=(1,),
                       classes="object", tile_size=128, overlap=32)


def untiled(a: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(a > 127.5)


def polygons_of(labels: np.ndarray, transform) -> list:
    out = []
    for i in range(1, labels.max() + 1):
        m = labels == i
        parts = [shapely.geometry.shape(g) for g, v in features.shapes(m.astype(np.uint8), mask=m,
                                                                       transform=transform)]
        out.append(shapely.union_all(parts))
    return out


@pytest.mark.parametrize("tile,chunk,workers", [(128, 256, 1), (128, 1024, 2), (256, 256, 2), (256, 1024, 1)])
def test_tiled_instances_equal_the_untiled_oracle(tmp_path, oracle_bundle, tile, chunk, workers):
    import geopandas as gpd

    h, w = 900, 1100
    a = oracle_scene(h, w)
    scene = write_scene(tmp_path / "scene.tif", a[None], nodata=None)
    lab, n = untiled(a)
    assert n > 100
    opts = PredictOptions(tile_size=tile, overlap=tile // 4, chunk_size=chunk, workers=workers, progress=False)
    out = predict(oracle_bundle, [str(scene)], tmp_path / "out", opts)[0]
    with rasterio.open(out.instances) as src:
        ids = src.read(1)
        transform = src.transform
        assert src.dtypes[0] == "uint32" and src.crs == rasterio.crs.CRS.from_string("EPSG:32616")
    # the same number of instances, each equal to one untiled component: no duplicate, no split
    assert ids.max() == n
    pairs = np.unique(np.stack([lab.ravel(), ids.ravel()]), axis=1)
    pairs = pairs[:, pairs[0] > 0]
    assert pairs.shape[1] == n and len(np.unique(pairs[1])) == n and (pairs[1] > 0).all()
    assert ((lab > 0) == (ids > 0)).all()
    gdf = gpd.read_file(out.instances_gpkg, layer="instances")
    assert len(gdf) == n and list(gdf.instance_id) == list(range(1, n + 1))
    assert set(gdf.columns) >= {"instance_id", "class_id", "class_name", "score", "area_m2", "perimeter_m", "source"}
    ref = polygons_of(lab, transform)
    by_id = dict(zip(gdf.instance_id, gdf.geometry))
    for li, ii in pairs.T:
        assert shapely.symmetric_difference(by_id[ii], ref[li - 1]).area == 0
    np.testing.assert_allclose(gdf.area_m2, gdf.geometry.area)
    assert (gdf.source != "tile").sum() >= 3  # the bars and the block were cut and merged


def test_instance_outputs_identical_for_any_chunking(tmp_path, oracle_bundle):
    a = oracle_scene(700, 800, seed=3)
    scene = write_scene(tmp_path / "s.tif", a[None], nodata=None)
    outs = []
    for n, (chunk, workers, sched) in enumerate([(256, 1, "threads"), (1024, 2, "threads"), (512, 2, "sync")]):
        o = predict(oracle_bundle, [str(scene)], tmp_path / f"o{n}", PredictOptions(
            chunk_size=chunk, workers=workers, scheduler=sched, progress=False, coco_results=str(tmp_path / f"{n}.json")))
        with rasterio.open(o[0].instances) as src:
            outs.append((src.read(1), (tmp_path / f"{n}.json").read_text()))
    for ids, js in outs[1:]:
        np.testing.assert_array_equal(ids, outs[0][0])
        assert js == outs[0][1]


def test_coco_round_trip_ap_is_one(tmp_path, oracle_bundle):
    from pycocotools import mask as mu

    from geoseg import benchmarks

    a = oracle_scene(640, 700, seed=5, blobs=60)  # under COCOeval's 100 detections per image
    scene = write_scene(tmp_path / "s.tif", a[None], nodata=None)
    res = CliRunner().invoke(cli, ["predict", str(oracle_bundle), str(scene), "-o", str(tmp_path / "out"),
                                   "--coco-results", str(tmp_path / "results.json"), "--no-progress"])
    assert res.exit_code == 0, res.output
    lab, n = untiled(a)
    anns = []
    for i in range(1, n + 1):
        rle = mu.encode(np.asfortranarray((lab == i).astype(np.uint8)))
        anns.append({"id": i, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": float(mu.area(rle)),
                     "bbox": [float(v) for v in mu.toBbox(rle)],
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    gt = {"images": [{"id": 1, "file_name": "s.tif", "height": 640, "width": 700}], "annotations": anns,
          "categories": [{"id": 1, "name": "object"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == n < 100
    for r in results:  # the RLE built from crops decodes to exactly one component's mask
        m = mu.decode(r["segmentation"]).astype(bool)
        values = np.unique(lab[m])
        assert len(values) == 1 and values[0] > 0 and (m == (lab == values[0])).all()
    report = benchmarks.get("coco").score(tmp_path / "results.json", tmp_path / "gt.json", engine="pycocotools")
    assert report["instances"]["segm"]["AP"] == 1.0 and report["instances"]["bbox"]["AP"] == 1.0


def test_merge_never_holds_a_scene_sized_mask(tmp_path, oracle_bundle):
    """Masks stay cropped: merging and painting a 3000² scene's instances allocate far less than the scene."""
    from geoseg.inference.pieces import merge_pieces
    from geoseg.inference.tiling import TileGrid
    from geoseg.instances.io import write_raster
    from geoseg.instances.tiled import InstanceJob, infer_block
    from geoseg.io.raster import inspect_scene

    size = 3000
    a = oracle_scene(size, size, seed=9, blobs=900)
    scene = write_scene(tmp_path / "big.tif", a[None], nodata=None)
    info = inspect_scene(scene, (1,))
    grid = TileGrid(size, size, 256, 64)
    job = InstanceJob(info, str(oracle_bundle), (1,), (0.0,), grid, "cpu", 1, 0.5, 0.5)
    pieces = [p for row in grid.blocks(1024) for b in row for p in infer_block(job, b)]
    largest_piece = max(p.mask.size for p in pieces)
    assert largest_piece < 300 * 3000  # the longest bar's crop, nothing scene-sized
    tracemalloc.start()
    instances = merge_pieces(pieces, grid)
    _, peak_merge = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    write_raster(tmp_path / "ids.tif", instances, info, 512)
    _, peak_paint = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    scene_bytes = size * size  # one byte per pixel: a boolean scene mask
    assert peak_merge < scene_bytes / 4, peak_merge
    chunk_bytes = 512 * 512 * 4  # one uint32 chunk
    assert peak_paint < 4 * chunk_bytes < 4 * scene_bytes / 8, peak_paint  # a few chunks, never the scene
    assert len(instances) == untiled(a)[1]


# -- Mask R-CNN -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bands", [1, 3, 4])
def test_maskrcnn_forward_backward_any_band_count(bands):
    from geoseg.models.maskrcnn import build_maskrcnn

    torch.manual_seed(0)
    model = build_maskrcnn("mobilenet_v3_large", in_channels=bands, classes=3, mean=[100.0] * bands,
                           std=[50.0] * bands, tile_size=256)
    x = [torch.rand(bands, 256, 256) * 255 for _ in range(2)]
    masks = torch.zeros(2, 256, 256, dtype=torch.uint8)
    masks[0, 40:90, 50:120] = 1
    masks[1, 150:200, 10:60] = 1
    targets = [{"boxes": torch.tensor([[50.0, 40.0, 120.0, 90.0]]), "labels": torch.tensor([1]),
                "masks": masks[:1]}, {"boxes": torch.tensor([[10.0, 150.0, 60.0, 200.0]]),
                                      "labels": torch.tensor([2]), "masks": masks[1:]}]
    model.train()
    losses = model(x, targets)
    loss = sum(losses.values())
    loss.backward()
    first = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == bands and first.weight.grad is not None
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert all(o["masks"].shape[-2:] == (256, 256) for o in out)  # native size: nothing resized


def test_maskrcnn_resnet50_bundle_predicts_a_scene(tmp_path):
    """A random-weight resnet50 Mask R-CNN bundle on 4 bands runs through geoseg predict."""
    bundle = init_bundle("maskrcnn", tmp_path / "m", encoder="resnet50", bands=(1, 2, 3, 4), classes="building",
                         tile_size=256, overlap=64, mean=(100,) * 4, std=(50,) * 4)
    a = np.stack([oracle_scene(300, 300, seed=s) for s in range(4)])
    scene = write_scene(tmp_path / "s.tif", a, nodata=None)
    out = predict(bundle, [str(scene)], tmp_path / "out", PredictOptions(progress=False, score_threshold=0.0))[0]
    with rasterio.open(out.instances) as src:
        assert src.shape == (300, 300) and src.dtypes[0] == "uint32"


def test_import_torchvision_checkpoint_gives_identical_outputs(tmp_path):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from geoseg.models.bundle import load_bundle

    torch.manual_seed(1)
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2, min_size=256, max_size=256,
                               image_mean=[0.45] * 3, image_std=[0.25] * 3, box_score_thresh=0.0).eval()
    torch.save(tv.state_dict(), tmp_path / "w.pth")
    res = CliRunner().invoke(cli, ["model", "import", "torchvision-maskrcnn", str(tmp_path / "w.pth"), "--classes",
                                   "building", "--mean", "0.45,0.45,0.45", "--std", "0.25,0.25,0.25", "--tile-size",
                                   "256", "--overlap", "64", "-o", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    ours = load_bundle(tmp_path / "b").model.eval()
    ours.roi_heads.score_thresh = 0.0
    x = [torch.rand(3, 256, 256)]
    with torch.no_grad():
        a, b = tv(x)[0], ours(x)[0]
    assert len(a["boxes"]) > 0
    for k in ("boxes", "labels", "scores", "masks"):
        assert torch.equal(a[k], b[k]), k


def test_import_refuses_bad_checkpoints(tmp_path):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    state = tv.state_dict()

    def run(path: Path, *extra: str):
        return CliRunner().invoke(cli, ["model", "import", "torchvision-maskrcnn", str(path), "--classes",
                                        "building", *extra, "-o", str(tmp_path / "out")])

    torch.save(state, tmp_path / "three.pth")  # 3 classes, the bundle says 2: shapes differ, named
    res = run(tmp_path / "three.pth")
    assert res.exit_code == 1 and "roi_heads.box_predictor.cls_score.weight has shape (3, 1024)" in res.output
    extra = dict(state)
    extra["head.extra.weight"] = torch.zeros(2)
    torch.save(extra, tmp_path / "extra.pth")
    res = run(tmp_path / "extra.pth", "--classes", "a,b")
    assert res.exit_code == 1 and "unexpected tensors for a resnet50 Mask R-CNN: head.extra.weight" in res.output

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    res = run(tmp_path / "evil.pth")
    assert res.exit_code == 1 and "refused" in res.output and "code ran" not in res.output
    torch.save({"state": state, "epoch": 3}, tmp_path / "nested.pth")
    res = run(tmp_path / "nested.pth")
    assert res.exit_code == 1 and "refused" in res.output
    assert not (tmp_path / "out").exists()


# -- bad input -------------------------------------------------------------------------------------


def test_instance_bad_input(tmp_path, oracle_bundle):
    a = oracle_scene(300, 300)
    scene = write_scene(tmp_path / "s.tif", a[None], nodata=None)
    out = str(tmp_path / "out")

    def fails(args, message):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 1, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], res.output
        assert not Path(out).exists() or not any(Path(out).iterdir())

    fails(["predict", str(oracle_bundle), str(scene), "-o", out, "--max-object-size", "40"],
          "--overlap 32 px is smaller than the largest expected object (40 px")
    fails(["predict", str(oracle_bundle), str(scene), "-o", out, "--max-object-size", "30m"],
          "(60 px, --max-object-size)")  # 30 m at 0.5 m per pixel
    semantic = init_bundle("conv1x1", tmp_path / "sem", encoder="none", bands=(1,), classes="object",
                           tile_size=128, overlap=32)
    fails(["predict", str(semantic), str(scene), "-o", out, "--score-threshold", "0.3"],
          "--score-threshold apply to instance bundles; this is a semantic model (conv1x1)")
    fails(["predict", str(oracle_bundle), str(scene), "-o", out, "--probabilities"],
          "--probabilities applies to semantic bundles")
    four = init_bundle("components", tmp_path / "four", encoder="none", bands=(1, 2, 3, 4), classes="object",
                       tile_size=128, overlap=32)
    fails(["predict", str(four), str(scene), "-o", out], "band")
    with pytest.raises(GeosegError, match="--max-object-size must be a positive size"):
        predict(oracle_bundle, [str(scene)], out, PredictOptions(max_object_size="big", progress=False))


# -- training ---------------------------------------------------------------------------------------


def _instance_config(tmp_path: Path, shared: Path, epochs: int = 3, **extra) -> Path:
    import yaml

    cfg = {"classes": ["background", "building"],
           "scenes": [{"image": str(shared / "solaris" / "sample_geotiff.tif"),
                       "labels": {"path": str(shared / "solaris" / "geotiff_labels.geojson"),
                                  "class_value": "building"}}],
           "model": {"architecture": "maskrcnn", "encoder": "mobilenet_v3_large", "chip_size": 128,
                     "tile_size": 256, "overlap": 64},
           "sampling": {"chips_per_epoch": 8, "class_balance": 1.0},
           "train": {"epochs": epochs, "batch_size": 2, "lr": 0.0005, "optimizer": "adamw", "device": "cpu"},
           "validation": {"block_size": 300, "holdout": [[2, 2]]}, **extra}
    path = tmp_path / "instances.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_maskrcnn_on_footprints_lowers_the_loss_and_predicts(shared_data, tmp_path):
    import csv

    cfg = _instance_config(tmp_path, shared_data)
    res = CliRunner().invoke(cli, ["train", str(cfg), "-o", str(tmp_path / "m"), "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "m" / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert all(0 <= float(r["val_mask_ap"]) <= 1 and 0 <= float(r["val_f1"]) <= 1 for r in rows)
    meta = json.loads((tmp_path / "m" / "geoseg.json").read_text())
    assert meta["architecture"] == "maskrcnn" and "mask_ap" in meta["extra"]["validation"]
    assert (tmp_path / "m" / "checkpoint" / "model.safetensors").exists()
    res = CliRunner().invoke(cli, ["predict", str(tmp_path / "m"), str(shared_data / "solaris" / "sample_geotiff.tif"),
                                   "-o", str(tmp_path / "out"), "--no-progress", "--score-threshold", "0.05"])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "out" / "sample_geotiff.instances.tif") as src:
        assert src.shape == (900, 900)


def test_train_maskrcnn_resume_is_bit_identical(shared_data, tmp_path):
    from geoseg.training import train

    cfg = _instance_config(tmp_path, shared_data, epochs=2)
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, stop_after=1)
    train(cfg, tmp_path / "b", progress=False, resume=True)
    assert (tmp_path / "a" / "checkpoint" / "model.safetensors").read_bytes() == \
        (tmp_path / "b" / "checkpoint" / "model.safetensors").read_bytes()


def test_train_maskrcnn_on_coco_chips(shared_data, tmp_path):
    import yaml

    from geoseg.benchmarks.export import export

    export("coco", shared_data / "solaris" / "sample_geotiff.tif", shared_data / "solaris" / "geotiff_labels.geojson",
           tmp_path / "chips", chip_size=256, overlap=32)
    cfg = tmp_path / "coco.yaml"
    cfg.write_text(yaml.safe_dump({
        "classes": ["background", "building"], "chips": {"coco": str(tmp_path / "chips" / "annotations.json")},
        "model": {"architecture": "maskrcnn", "encoder": "mobilenet_v3_large", "chip_size": 128, "tile_size": 256,
                  "overlap": 64},
        "sampling": {"chips_per_epoch": 4}, "train": {"epochs": 1, "batch_size": 2, "device": "cpu"},
        "validation": {"fraction": 0.2}}))
    res = CliRunner().invoke(cli, ["train", str(cfg), "-o", str(tmp_path / "m"), "--no-progress"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "m" / "geoseg.json").read_text())
    assert meta["bands"] == [1] and meta["extra"]["validation"]["epoch"] == 1
    # categories that are not instance classes of the config are named
    cfg.write_text(cfg.read_text().replace("background, building", "background, tree"))
    bad = yaml.safe_load(cfg.read_text())
    bad["classes"] = ["background", "tree", "car"]
    ann = json.loads((tmp_path / "chips" / "annotations.json").read_text())
    for a in ann["annotations"]:
        a["category_id"] = 7
    (tmp_path / "chips" / "bad.json").write_text(json.dumps(ann))
    bad["chips"]["coco"] = str(tmp_path / "chips" / "bad.json")
    cfg.write_text(yaml.safe_dump(bad))
    res = CliRunner().invoke(cli, ["train", str(cfg), "-o", str(tmp_path / "m2"), "--no-progress"])
    assert res.exit_code == 1 and "category ids [7] are not instance classes" in res.output


def test_shipped_instance_config_parses():
    from geoseg.training import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "train" / "instances.yaml")
    assert cfg.model.architecture == "maskrcnn" and cfg.bands == (1,) and cfg.classes.names == ["background",
                                                                                                  "building"]
