"""Training: loss goes down, masks equal rasterize, honest spatial splits, exact resume, streamed stats."""

from __future__ import annotations

import json
import math
import re

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
import yaml
from click.testing import CliRunner
from rasterio.features import rasterize
from rasterio.transform import Affine
from rasterio.windows import Window
from safetensors.torch import load_file

from geoseg.cli.main import cli
from geoseg.errors import GeosegError
from geoseg.training import load_config, train
from geoseg.training.data import SceneChips, band_statistics, open_scene, read_labels, source_side, warp
from tests.conftest import assert_one_line_error, write_scene

TRANSFORM = rasterio.transform.from_origin(733600.0, 3725200.0, 0.5, 0.5)


def scene_with_buildings(tmp_path, size=128, seed=0):
    """A 1-band scene whose bright rectangles are the buildings of a GeoJSON label file."""
    rng = np.random.default_rng(seed)
    img = rng.normal(80, 10, (1, size, size)).clip(1, 255).astype(np.uint8)
    polys = []
    for _ in range(12):
        y, x = rng.integers(0, size - 20, 2)
        h, w = rng.integers(6, 18, 2)
        img[0, y : y + h, x : x + w] = rng.integers(180, 230)
        x0, y0 = TRANSFORM * (x, y)
        x1, y1 = TRANSFORM * (x + w, y + h)
        polys.append(shapely.box(x0, y1, x1, y0))
    write_scene(tmp_path / "scene.tif", img, crs="EPSG:32616", transform=TRANSFORM, nodata=0)
    gpd.GeoDataFrame({"kind": ["building"] * len(polys)}, geometry=polys, crs="EPSG:32616").to_file(
        tmp_path / "labels.geojson")
    return tmp_path / "scene.tif", tmp_path / "labels.geojson", polys


def write_config(tmp_path, **over) -> str:
    cfg = {
        "classes": [{"id": 0, "name": "background", "vectorize": False}, {"id": 1, "name": "building"}],
        "bands": [1],
        "scenes": [{"image": "scene.tif", "labels": {"path": "labels.geojson", "class_field": "kind"}}],
        "validation": {"block_size": 64, "holdout": [[1, 1]]},
        "model": {"architecture": "unet", "encoder": "resnet18", "chip_size": 64, "tile_size": 64, "overlap": 16,
                  "arch_params": {"decoder_channels": [32, 16, 16, 8, 8]}},
        "sampling": {"chips_per_epoch": 16, "class_balance": 0.5},
        "augment": {"flips": True, "rot90": True, "brightness": 0.1, "contrast": 0.1},
        "train": {"epochs": 4, "batch_size": 4, "lr": 0.01, "seed": 3, "loss": "ce+dice"},
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_tiny_training_lowers_the_loss_and_predict_runs_the_bundle(tmp_path):
    scene, _, _ = scene_with_buildings(tmp_path)
    cfg = write_config(tmp_path, train={"epochs": 6})
    out = train(cfg, tmp_path / "model", progress=False)
    rows = list(np.genfromtxt(out / "metrics.csv", delimiter=",", names=True))
    assert len(rows) == 6
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    meta = json.loads((out / "geoseg.json").read_text())
    assert meta["architecture"] == "unet" and meta["bands"] == [1] and meta["gsd"] == 0.5
    assert meta["extra"]["validation"]["epoch"] >= 1 and "train_config" in meta["extra"]
    r = CliRunner().invoke(cli, ["predict", str(out), str(scene), "-o", str(tmp_path / "pred"), "--no-progress"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "pred" / "scene.classes.tif") as src:
        assert src.transform == TRANSFORM and set(np.unique(src.read(1))) <= {0, 1}


def test_masks_equal_rasterize_on_the_same_window(tmp_path):
    _, labels, polys = scene_with_buildings(tmp_path)
    cfg = load_config(write_config(tmp_path))
    src = open_scene(cfg.scenes[0], cfg)
    win = Window(17, 9, 64, 64)
    got = src.labels.read(src.grid, win)
    expected = rasterize([(p, 1) for p in polys], out_shape=(64, 64),
                         transform=rasterio.windows.transform(win, TRANSFORM), fill=0, all_touched=False)
    np.testing.assert_array_equal(got, expected)


def test_line_labels_are_buffered_in_metres_in_epsg4326(shared_data, tmp_path):
    sol = shared_data / "solaris"
    cfg = load_config(write_config(tmp_path, classes=[{"id": 0, "name": "background", "vectorize": False},
                                                      {"id": 1, "name": "road"}],
                                   scenes=[{"image": str(sol / "road_mask_input.tif"),
                                            "labels": {"path": str(sol / "sample_roads_for_masking.geojson"),
                                                       "class_value": "road", "buffer_m": {"road": 2}}}],
                                   validation={"block_size": 650, "holdout": [[1, 1]]}))
    src = open_scene(cfg.scenes[0], cfg)
    assert src.grid.crs.to_epsg() == 4326
    ours = src.labels.read(src.grid, Window(0, 0, 1300, 1300))
    with rasterio.open(sol / "sample_road_raster_mask.tif") as m:
        solaris = m.read(1) > 0
    road = ours == 1
    iou = (road & solaris).sum() / (road | solaris).sum()
    # solaris made its mask with width=4 m: a 2 m buffer on each side of the centre line
    assert iou > 0.999, iou
    # a 1 m buffer covers about half as much ground: the distance really is in metres
    cfg2 = load_config(write_config(tmp_path, classes=[{"id": 0, "name": "background", "vectorize": False},
                                                       {"id": 1, "name": "road"}],
                                    scenes=[{"image": str(sol / "road_mask_input.tif"),
                                             "labels": {"path": str(sol / "sample_roads_for_masking.geojson"),
                                                        "class_value": "road", "buffer_m": {"road": 1}}}],
                                    validation={"block_size": 650, "holdout": [[1, 1]]}))
    src2 = open_scene(cfg2.scenes[0], cfg2)
    narrow = (src2.labels.read(src2.grid, Window(0, 0, 1300, 1300)) == 1).sum()
    assert 0.4 < narrow / road.sum() < 0.6


@pytest.mark.parametrize("augment", [{}, {"scale": 0.3, "rotate": 180}], ids=["chips", "zoomed-turned"])
def test_spatial_split_keeps_validation_pixels_out_of_training_chips(tmp_path, augment):
    scene_with_buildings(tmp_path)
    cfg = load_config(write_config(tmp_path, validation={"block_size": 32, "holdout": [], "fraction": 0.25},
                                   model={"chip_size": 32}, augment=augment))
    src = open_scene(cfg.scenes[0], cfg)
    held = np.zeros((128, 128), bool)
    for w in src.validation_windows():
        held[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = True
    assert held.mean() == pytest.approx(0.25)
    ds = SceneChips([src], cfg, (0.0,), (1.0,))
    sides = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            _, _, win, data, _, lab, _ = ds.draw(i)
            assert data.shape == (1, 32, 32) and lab.shape == (32, 32)
            assert not held[win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width].any()
            sides.add(win.width)
    assert (len(sides) > 1) == bool(augment)  # zoomed and turned chips read larger windows


def test_a_scene_can_carry_its_own_blocks_and_sampling_weight(tmp_path):
    """A scene's own holdout/test lists replace the config's ([] holds nothing out, not a random fraction),
    and chips are drawn in proportion to weight x training positions."""
    scene_with_buildings(tmp_path)
    (tmp_path / "b").mkdir()
    scene_with_buildings(tmp_path / "b", seed=1)
    two = [{"image": "scene.tif", "labels": {"path": "labels.geojson", "class_field": "kind"}},
           {"image": "b/scene.tif", "labels": {"path": "b/labels.geojson", "class_field": "kind"},
            "holdout": [], "test": [], "weight": 3}]
    cfg = load_config(write_config(tmp_path, scenes=two, validation={"block_size": 64, "holdout": [[1, 1]],
                                                                     "test": [[0, 0]]}))
    a, b = (open_scene(s, cfg) for s in cfg.scenes)
    assert (a.held_out, a.test) == ({(1, 1)}, {(0, 0)})
    assert (b.held_out, b.test, b.weight) == (frozenset(), frozenset(), 3.0)
    assert b.validation_windows() == [] and len(b.training_windows()) == 4
    ds = SceneChips([a, b], cfg, (0.0,), (1.0,))
    na, nb = len(a.chip_origins(64, ds.stride)), len(b.chip_origins(64, ds.stride))
    assert nb > na > 0
    assert ds.weights == pytest.approx([na / (na + 3 * nb), 3 * nb / (na + 3 * nb)])
    # an empty holdout of the config itself still means a seeded fraction of the blocks
    cfg2 = load_config(write_config(tmp_path, validation={"block_size": 64, "holdout": [], "fraction": 0.25}))
    assert len(open_scene(cfg2.scenes[0], cfg2).held_out) == 1
    for bad, says in (({"weight": 0}, "scenes[1].weight must be a number above 0"),
                      ({"weight": "x"}, "scenes[1].weight must be a number, got 'x'"),
                      ({"holdout": [[1]]}, "scenes[1].holdout must be a list of [row, col] blocks"),
                      ({"test": "all"}, "scenes[1].test must be a list of [row, col] blocks")):
        path = write_config(tmp_path, scenes=[two[0], {**two[1], **bad}])
        with pytest.raises(GeosegError, match=re.escape(says)):
            load_config(path)


def test_warp_is_an_exact_crop_turn_and_zoom_on_the_pixel_lattice():
    a = np.random.default_rng(1).integers(0, 200, (2, 40, 40)).astype(np.float32)
    assert np.array_equal(warp(a, 1.0, 0.0, 32, order=1), a[:, 4:36, 4:36])  # centred crop
    # +90 degrees turns the chip a quarter clockwise: np.rot90 by -1, for imagery and labels alike
    for order in (0, 1):
        assert np.array_equal(warp(a, 1.0, math.pi / 2, 32, order=order), np.rot90(a[:, 4:36, 4:36], -1, (1, 2)))
    # zoomed out by 2 the chip reads every other pixel, centre on centre
    a = a[:, :39, :39]
    assert np.array_equal(warp(a, 2.0, 0.0, 19, order=1), a[:, 1:39:2, 1:39:2][:, :19, :19])
    assert source_side(32, 1.0, 0.0) == 32 and source_side(32, 1.0, math.pi / 4) == math.ceil(32 * 2**0.5) + 2


@pytest.mark.parametrize("f,degrees", [(1.0, 30.0), (1.3, -50.0), (0.8, 135.0)])
def test_zoomed_turned_labels_equal_rasterize_on_the_turned_grid(tmp_path, f, degrees):
    """Warped chip labels land where rasterize puts the footprints on the chip's own (turned, zoomed) grid."""
    from geoseg.data import ATLANTA_IMAGE, ATLANTA_LABELS

    cfg = load_config(write_config(tmp_path, scenes=[
        {"image": str(ATLANTA_IMAGE), "labels": {"path": str(ATLANTA_LABELS), "class_value": "building"}}],
        validation={"block_size": 300, "holdout": []}))
    src = open_scene(cfg.scenes[0], cfg)
    c, a = 256, math.radians(degrees)
    side = source_side(c, f, a)
    win = Window(450 - side // 2, 420 - side // 2, side, side)
    lab = read_labels(src, win, np.ones((side, side), bool))
    got = warp(lab[None], f, a, c, order=0, cval=255)[0]
    # chip pixel (x, y) -> source pixel: centre on centre, then zoom and turn (x right, y down)
    def labels_on_grid(angle):  # chip pixel (x, y) -> source: centre on centre, then zoom and turn
        cos, sin = f * math.cos(angle), f * math.sin(angle)
        grid = (rasterio.windows.transform(win, src.info.transform) * Affine.translation(side / 2, side / 2)
                * Affine(cos, sin, 0, -sin, cos, 0) * Affine.translation(-c / 2, -c / 2))
        return rasterize(gpd.read_file(ATLANTA_LABELS).geometry, out_shape=(c, c), transform=grid)

    def iou(p, q):
        return ((p == 1) & (q == 1)).sum() / ((p == 1) | (q == 1)).sum()

    want = labels_on_grid(a)
    assert want.sum() > 2000  # the chip holds buildings
    assert (got == want).mean() > 0.995 and iou(got, want) > 0.95
    assert abs(int(got.sum()) - int(want.sum())) < 0.03 * want.sum()
    assert iou(got, labels_on_grid(-a)) < 0.3  # turned the other way, the footprints would not match


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    scene_with_buildings(tmp_path)
    cfg = write_config(tmp_path, train={"epochs": 3})
    a = train(cfg, tmp_path / "a", progress=False)
    b = train(cfg, tmp_path / "b", progress=False, stop_after=1)
    assert json.loads((b / "checkpoint" / "state.json").read_text())["epoch"] == 0
    train(cfg, tmp_path / "b", progress=False, resume=True)
    wa = load_file(str(a / "checkpoint" / "model.safetensors"))
    wb = load_file(str(b / "checkpoint" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()


def test_streamed_statistics_equal_whole_array(tmp_path):
    scene, _, _ = scene_with_buildings(tmp_path)
    cfg = load_config(write_config(tmp_path, validation={"block_size": 48, "holdout": [[0, 0]]}))
    src = open_scene(cfg.scenes[0], cfg)
    mean, std = band_statistics([src], (1,))
    with rasterio.open(scene) as s:
        a = s.read(1).astype(np.float64)
    keep = np.ones_like(a, bool)
    keep[:48, :48] = False  # the held-out block
    keep &= a != 0
    assert mean[0] == pytest.approx(a[keep].mean(), rel=1e-12)
    assert std[0] == pytest.approx(a[keep].std(), rel=1e-9)


def test_lovasz_term_is_one_minus_the_mean_iou_of_hard_predictions():
    """On saturated logits the Lovász-softmax term equals 1 - the mean IoU of the classes present in the
    reference (nodata pixels ignored), computed here from the confusion matrix; the terms add."""
    import torch.nn.functional as F

    from geoseg.classes import NODATA
    from geoseg.evaluation.metrics import class_scores, confusion
    from geoseg.training.loop import _loss

    rng = np.random.default_rng(5)
    target = rng.integers(0, 3, (2, 24, 24))
    target[:, :, :4] = 1
    pred = np.where(rng.random(target.shape) < 0.3, rng.integers(0, 3, target.shape), target)
    target[0, :3] = NODATA  # ignored, whatever is predicted there
    pred[0, :3] = 2
    logits = torch.from_numpy(np.moveaxis(np.eye(3)[pred], -1, 1) * 200.0).float()
    t = torch.from_numpy(target)
    cm = confusion(target.ravel(), pred.ravel(), 3, valid=target.ravel() != NODATA)
    iou = class_scores(cm)["iou"]
    assert _loss(logits, t, "lovasz", 3).item() == pytest.approx(1 - iou.mean(), abs=1e-6)
    assert 0.2 < 1 - iou.mean() < 0.5
    both = _loss(logits, t, "ce+lovasz", 3).item()
    assert both == pytest.approx(F.cross_entropy(logits, t, ignore_index=NODATA).item() + 1 - iou.mean(), abs=1e-5)


def test_bad_configs(tmp_path):
    scene_with_buildings(tmp_path)

    def run(**over):
        return CliRunner().invoke(cli, ["train", write_config(tmp_path, **over), "-o", str(tmp_path / "new" / "m"),
                                        "--no-progress"])

    assert_one_line_error(run(train={"epocs": 3}), "unknown key train.epocs")
    assert_one_line_error(run(augment={"rotate": 200}), "augment.rotate in [0, 180], got 0.0 and 200.0")
    assert_one_line_error(run(train={"loss": "ce+focal"}), "train.loss must be one or more of ce, dice and lovasz",
                          "got 'ce+focal'")
    assert_one_line_error(run(train={"loss": "ce+ce"}), "got 'ce+ce'")
    (tmp_path / "afile").write_text("")
    r = CliRunner().invoke(cli, ["train", write_config(tmp_path), "-o", str(tmp_path / "afile" / "m"), "--no-progress"])
    assert_one_line_error(r, "afile/m: output directory is not writable")
    assert_one_line_error(run(bands=[1, 4]), "has 1 band but the model needs bands 1,4")
    assert_one_line_error(run(model={"chip_size": 160}), "chip size 160 is larger than the scene (128x128)")
    far = gpd.GeoDataFrame({"kind": ["building"]}, geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:32616")
    far.to_file(tmp_path / "far.geojson")
    assert_one_line_error(run(scenes=[{"image": "scene.tif", "labels": {"path": "far.geojson", "class_field": "kind"}}]),
             "far.geojson", "labels have no features over the scene")
    odd = gpd.read_file(tmp_path / "labels.geojson")
    odd.loc[0, "kind"] = "shed"
    odd.to_file(tmp_path / "odd.geojson")
    assert_one_line_error(run(scenes=[{"image": "scene.tif", "labels": {"path": "odd.geojson", "class_field": "kind"}}]),
             "class values not in the class list: shed")
    assert not (tmp_path / "new").exists()  # the folders a refused run created are gone again


def test_output_holding_a_different_model_is_refused(tmp_path):
    scene_with_buildings(tmp_path)
    r = CliRunner().invoke(cli, ["model", "init", "unet", "--encoder", "resnet18", "-o", str(tmp_path / "m")])
    assert r.exit_code == 0
    r = CliRunner().invoke(cli, ["train", write_config(tmp_path, train={"epochs": 1}), "-o", str(tmp_path / "m"),
                                 "--no-progress"])
    assert_one_line_error(r, "holds a different model; pass --overwrite")
    with pytest.raises(GeosegError, match="has no checkpoint to resume from"):
        train(write_config(tmp_path), tmp_path / "m", resume=True)


def test_loader_workers_give_the_same_weights_as_the_main_process(tmp_path):
    """Chips are seeded by (seed, epoch, index): a DataLoader worker process changes nothing."""
    scene_with_buildings(tmp_path)
    a = train(write_config(tmp_path, train={"epochs": 1, "workers": 0}), tmp_path / "w0", progress=False)
    b = train(write_config(tmp_path, train={"epochs": 1, "workers": 1}), tmp_path / "w1", progress=False,
              overwrite=True)
    wa = load_file(str(a / "checkpoint" / "model.safetensors"))
    wb = load_file(str(b / "checkpoint" / "model.safetensors"))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_voc_chip_folders_train_with_zoomed_turned_chips(shared_data, tmp_path):
    """A VOC-style image/mask folder plugs in; zoomed, turned chips keep the mask's values and its void."""
    from PIL import Image

    from geoseg.training.data import ChipFolder

    voc = shared_data / "labelme" / "semantic_segmentation" / "data_dataset_voc"
    names = (voc / "class_names.txt").read_text().splitlines()
    classes = [{"id": i, "name": n.strip("_")} for i, n in enumerate(names)]
    cfg_path = write_config(tmp_path, classes=classes, bands=[1, 2, 3], scenes=[],
                            chips={"images": str(voc / "JPEGImages"), "masks": str(voc / "SegmentationClass")},
                            validation={"fraction": 0.34}, model={"chip_size": 96},
                            sampling={"chips_per_epoch": 8}, augment={"scale": 0.3, "rotate": 180},
                            train={"epochs": 2})
    cfg = load_config(cfg_path)
    ds = ChipFolder(cfg.chips.images, cfg.chips.masks, cfg, (100.0,) * 3, (50.0,) * 3)
    allowed = set()
    for n in ds.names:
        allowed |= set(np.unique(np.asarray(Image.open(ds.masks[n]))).tolist())
    for i in range(8):
        x, m = ds[i]
        assert x.shape == (3, 96, 96) and m.shape == (96, 96)
        assert set(m.unique().tolist()) <= allowed  # nearest resampling invents no class; 255 stays void
    out = train(cfg_path, tmp_path / "voc", progress=False)
    meta = json.loads((out / "geoseg.json").read_text())
    assert [c["name"] for c in meta["classes"]][:2] == ["background", "aeroplane"] and len(meta["classes"]) == 21
    assert meta["bands"] == [1, 2, 3] and meta["gsd"] is None
    rows = list(np.genfromtxt(out / "metrics.csv", delimiter=",", names=True))
    assert len(rows) == 2 and all(0 <= r["val_pixel_accuracy"] <= 1 for r in rows)


def test_init_from_a_bundle_copies_its_weights_and_sums_the_stem(tmp_path):
    from geoseg.models import create_model
    from geoseg.models.bundle import init_bundle, load_bundle
    from geoseg.models.pretrained import adapt_stem
    from geoseg.training.loop import _init_from_bundle

    params = {"decoder_channels": [32, 16, 16, 8, 8]}
    src = init_bundle("unet", tmp_path / "rgb", encoder="resnet18", bands=(1, 2, 3), classes="building", seed=4)
    meta_path = src / "geoseg.json"
    meta = json.loads(meta_path.read_text())
    meta["arch_params"] = params
    meta_path.write_text(json.dumps(meta))
    torch.manual_seed(4)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in create_model("unet", "resnet18", 3, 2, params).state_dict().items()},
              str(src / "model.safetensors"))
    scene_with_buildings(tmp_path)
    cfg = load_config(write_config(tmp_path, model={"init_from": str(src)}))
    model = create_model("unet", "resnet18", 1, 2, params)
    info = _init_from_bundle(model, cfg)
    assert info["bundle"] == "rgb" and info["stem_adapted"] == ["encoder.conv1.weight"]
    source = load_bundle(src).model.state_dict()
    own = model.state_dict()
    torch.testing.assert_close(own["encoder.conv1.weight"], adapt_stem(source["encoder.conv1.weight"], 1))
    assert all(torch.equal(own[k], source[k]) for k in own if k != "encoder.conv1.weight")
    bad = load_config(write_config(tmp_path, model={"init_from": str(src), "encoder": "resnet34"}))
    with pytest.raises(GeosegError, match="init_from is a unet/resnet18 bundle"):
        _init_from_bundle(create_model("unet", "resnet34", 1, 2, params), bad)


def test_init_from_an_object_bundle_keeps_its_class_logits(tmp_path):
    """A class model (one band, as atlanta-buildings) started from the packaged buildings-rgb, which has
    object channels: the head keeps the class-logit rows and drops the body, border and contact ones."""
    from geoseg.models import create_model
    from geoseg.models.bundle import load_bundle
    from geoseg.training.loop import _init_from_bundle

    src = load_bundle("buildings-rgb")
    assert src.meta.objects is not None
    params = dict(src.meta.arch_params)
    scene_with_buildings(tmp_path)
    cfg = load_config(write_config(tmp_path, model={"init_from": "buildings-rgb", "encoder": src.meta.encoder,
                                                    "arch_params": params}))
    model = create_model("unet", src.meta.encoder, 1, 2, params)
    info = _init_from_bundle(model, cfg)
    assert info["bundle"] == "buildings-rgb"
    source, own = src.model.state_dict(), model.state_dict()
    for k in ("segmentation_head.0.weight", "segmentation_head.0.bias"):
        assert source[k].shape[0] == 5 and own[k].shape[0] == 2
        torch.testing.assert_close(own[k], source[k][:2].to(own[k].dtype))
    assert torch.equal(own["decoder.blocks.0.conv1.0.weight"], source["decoder.blocks.0.conv1.0.weight"].to(
        own["decoder.blocks.0.conv1.0.weight"].dtype))


def test_freeze_encoder_trains_only_the_decoder_and_keeps_batchnorm_statistics(tmp_path):
    """A frozen encoder leaves training exactly as loaded (weights and BatchNorm running statistics),
    while the decoder and head learn; without pretrained weights to keep, the option is refused."""
    from geoseg.models.bundle import load_bundle

    scene_with_buildings(tmp_path)
    first = train(write_config(tmp_path, train={"epochs": 1}), tmp_path / "first", progress=False)
    cfg = write_config(tmp_path, model={"init_from": str(first), "freeze_encoder": True},
                       validation={"block_size": 64, "holdout": [[1, 1]]}, train={"epochs": 2, "lr": 0.01})
    tuned = train(cfg, tmp_path / "tuned", progress=False)
    before = load_bundle(first).model.state_dict()
    after = load_file(str(tuned / "checkpoint" / "model.safetensors"))  # the last epoch, in float32
    enc = [k for k in before if k.startswith("encoder.")]
    assert any("running_mean" in k for k in enc) and len(enc) > 50
    assert all(torch.equal(after[k], before[k]) for k in enc)
    changed = [k for k in before if not k.startswith("encoder.") and before[k].is_floating_point()
               and not torch.equal(after[k], before[k])]
    assert any(k.startswith("decoder.") for k in changed) and any(k.startswith("segmentation_head.") for k in changed)
    with pytest.raises(GeosegError, match="model.freeze_encoder needs model.encoder_weights or model.init_from"):
        load_config(write_config(tmp_path, model={"freeze_encoder": True}))


def _rect_expectations(rects, shape, border, contact):
    """Body, border and contact of axis-aligned rectangles ``(r0, r1, c0, c1)`` computed from their sides:
    border pixels lie fewer than ``border`` px inside a side that is not the chip's edge; contact pixels lie
    within ``contact`` px (centre to centre) of two different rectangles."""
    h, w = shape
    body, ring = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    near = np.zeros((len(rects),) + shape, bool)
    yy, xx = np.mgrid[0:h, 0:w]
    for k, (r0, r1, c0, c1) in enumerate(rects):
        inside = (yy >= r0) & (yy < r1) & (xx >= c0) & (xx < c1)
        body[inside] = 1
        side = np.zeros(shape, bool)
        if r0 > 0:
            side |= yy - r0 < border
        if r1 < h:
            side |= r1 - 1 - yy < border
        if c0 > 0:
            side |= xx - c0 < border
        if c1 < w:
            side |= c1 - 1 - xx < border
        ring[inside & side] = 1
        dy = np.maximum(np.maximum(r0 - yy, yy - (r1 - 1)), 0)  # distance to the nearest pixel of the rectangle
        dx = np.maximum(np.maximum(c0 - xx, xx - (c1 - 1)), 0)
        near[k] = dy * dy + dx * dx <= contact * contact
    return body, ring, (near.sum(axis=0) >= 2).astype(np.uint8)


def test_object_targets_of_touching_and_isolated_footprints():
    """Two footprints sharing an edge, one on its own, one cut by the chip's top edge: polygons burnt one by
    one (the training path), then body, border and contact equal the arrays computed from the rectangles."""
    from geoseg.training.targets import object_targets
    from geoseg.vector.labels import Grid, VectorLabels, read_instances

    t = Affine(1.0, 0, 500000.0, 0, -1.0, 4000000.0)
    rects = [(4, 10, 2, 9), (4, 10, 9, 15), (14, 19, 20, 28), (0, 4, 24, 30)]  # (r0, r1, c0, c1), pixels

    def poly(r0, r1, c0, c1):
        return shapely.box(500000.0 + c0, 4000000.0 - r1, 500000.0 + c1, 4000000.0 - r0)

    labels = VectorLabels(tuple(poly(*r) for r in rects), (1, 1, 1, 1), 0)
    inst, cls = read_instances(labels, Grid("EPSG:32616", t, 32, 22), Window(0, 0, 32, 22))
    assert sorted(np.unique(inst)) == [0, 1, 2, 3, 4] and set(cls.values()) == {1}
    for border, contact in ((2, 3), (1, 2)):
        got = object_targets(inst, border=border, contact=contact)
        body, ring, touch = _rect_expectations(rects, inst.shape, border, contact)
        np.testing.assert_array_equal(got[0], body)
        np.testing.assert_array_equal(got[1], ring)
        np.testing.assert_array_equal(got[2], touch)
    got = object_targets(inst, border=2, contact=3)
    assert got[2][4:10, 7:11].all() and not got[2][4:10, :5].any()  # the strip across the shared edge
    assert not got[2][12:, 18:].any()  # the isolated and the cut footprints touch nobody
    assert not got[1][0:2, 26:28].any() and got[1][2:4, 24:30].all()  # the chip's edge is no border
    assert not object_targets(np.zeros((5, 5), np.int32)).any()
