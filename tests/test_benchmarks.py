"""Benchmark adapters against the official tools on real files in ../shared/data.

COCO against pycocotools' COCOeval (to 1e-12); VOC against torchmetrics and a direct NumPy
implementation; the folder adapter's --reduce-zero-label against mmsegmentation's formula; the
COCO export round trip against the footprints themselves; ``benchmark predict`` end to end; and
every bad input the issue lists gets one line, exit status 1 and no report.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage

from geoseg import benchmarks
from geoseg.benchmarks.voc import colormap
from geoseg.cli.main import cli
from geoseg.errors import GeosegError

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


# -- COCO ---------------------------------------------------------------------------------------------


def perturbed_results(gt_path: Path, seed: int = 0, with_bbox: bool = True) -> list[dict]:
    """Detections from the ground truth: kept, dilated, shifted, wrong category, missing, false positives,
    and one detection on each crowd region."""
    from pycocotools import mask as mu

    gt = json.loads(gt_path.read_text())
    rng = np.random.default_rng(seed)
    images = {i["id"]: i for i in gt["images"]}
    cats = [c["id"] for c in gt["categories"]]
    out = []
    for n, a in enumerate(gt["annotations"]):
        im = images[a["image_id"]]
        h, w = im["height"], im["width"]
        rles = mu.frPyObjects(a["segmentation"], h, w)
        m = mu.decode(mu.merge(rles) if isinstance(rles, list) else rles)
        k = n % 6
        cat = a["category_id"]
        if a.get("iscrowd"):
            score = 0.55
        elif k == 4:
            continue  # missed
        else:
            score = float(rng.uniform(0.3, 1.0))
            if k == 1:
                m = ndimage.binary_dilation(m, iterations=3).astype(np.uint8)
            elif k == 2:
                m = np.roll(m, (4, 6), (0, 1))
            elif k == 3:
                cat = cats[(cats.index(cat) + 1) % len(cats)]
        rle = mu.encode(np.asfortranarray(m.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        d = {"image_id": a["image_id"], "category_id": cat, "segmentation": rle, "score": score}
        if with_bbox:
            d["bbox"] = [float(v) for v in mu.toBbox(rle)]
        out.append(d)
        if k == 0:  # a false positive, given as a polygon
            poly = [[10.0, 10.0, 60.0, 10.0, 60.0, 50.0, 10.0, 50.0]]
            d = {"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": poly,
                 "score": float(rng.uniform(0.0, 0.5))}
            if with_bbox:
                d["bbox"] = [10.0, 10.0, 50.0, 40.0]
            out.append(d)
    return out


def pycocotools_stats(gt: dict, results: list[dict], iou_type: str) -> tuple[list[float], object]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = json.loads(json.dumps(gt))
        g.createIndex()
        d = g.loadRes(json.loads(json.dumps(results)))
        ev = COCOeval(g, d, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats], ev


def assert_stats_equal(ours: dict, ref: list[float]) -> None:
    for key, r in zip(STATS, ref):
        o = ours[key]
        if r == -1:
            assert o is None, key
        else:
            assert o == pytest.approx(r, abs=1e-12), key


@pytest.mark.parametrize("engine", ["pycocotools", "faster-coco-eval"])
def test_coco_equals_pycocotools_on_real_val2017(shared_data, tmp_path, engine):
    gt_path = shared_data / "airo-mono" / "instances_val2017_small.json"
    gt = json.loads(gt_path.read_text())
    assert sum(a.get("iscrowd", 0) for a in gt["annotations"]) == 1
    results = perturbed_results(gt_path)
    (tmp_path / "results.json").write_text(json.dumps(results))
    report = benchmarks.evaluate("coco", tmp_path / "results.json", tmp_path / "report",
                                 annotations=gt_path, engine=engine)
    assert report["benchmark"]["engine"] == engine
    polys_as_rle = benchmarks.coco.load_results(results, gt)  # pycocotools needs RLE for segm-only areas
    for kind in ("segm", "bbox"):
        ref, ev = pycocotools_stats(gt, polys_as_rle, kind)
        assert_stats_equal(report["instances"][kind], ref)
        assert 0.2 < ref[0] < 0.9  # the perturbation leaves a discriminating score
        precision = ev.eval["precision"]
        per = {c["id"]: c[f"{kind}_AP"] for c in report["instances"]["per_class"]}
        for k, cat in enumerate(ev.params.catIds):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            assert per.get(cat) == (pytest.approx(p.mean(), abs=1e-12) if p.size else None)
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["instances"]["segm"]["AP"] == report["instances"]["segm"]["AP"]
    assert "segm AP" in (tmp_path / "report" / "report.md").read_text()


def test_coco_crowd_detection_is_neither_tp_nor_fp(shared_data, tmp_path):
    gt_path = shared_data / "airo-mono" / "instances_val2017_small.json"
    gt = json.loads(gt_path.read_text())
    exact = [r for r in perturbed_results(gt_path) if r["score"] != 0.55]
    crowd = [r for r in perturbed_results(gt_path) if r["score"] == 0.55]
    assert len(crowd) == 1
    a = benchmarks.get("coco").score(exact, gt_path)
    b = benchmarks.get("coco").score(exact + crowd, gt_path)
    assert a["instances"]["segm"] == b["instances"]["segm"]  # ignored: no TP, no FP
    # and pycocotools says the same
    ref_a, _ = pycocotools_stats(gt, benchmarks.coco.load_results(exact, gt), "segm")
    ref_b, _ = pycocotools_stats(gt, benchmarks.coco.load_results(exact + crowd, gt), "segm")
    assert ref_a == ref_b


def test_coco_segm_area_from_masks(shared_data, tmp_path):
    """--segm-area mask drops the boxes for the segm pass (detectron2's convention); box is pycocotools'."""
    gt_path = shared_data / "airo-mono" / "instances_val2017_small.json"
    gt = json.loads(gt_path.read_text())
    results = perturbed_results(gt_path)
    mask = benchmarks.get("coco").score(results, gt_path, segm_area="mask")
    no_box = [{k: v for k, v in r.items() if k != "bbox"} for r in benchmarks.coco.load_results(results, gt)]
    ref, _ = pycocotools_stats(gt, no_box, "segm")
    assert_stats_equal(mask["instances"]["segm"], ref)


def test_coco_labelme_export_ids_from_zero(shared_data, tmp_path, caplog):
    """labelme's annotation ids start at 0, which pycocotools reads as 'unmatched': renumbered, then equal."""
    gt_path = shared_data / "labelme" / "instance_segmentation" / "data_dataset_coco" / "annotations.json"
    gt = json.loads(gt_path.read_text())
    assert min(a["id"] for a in gt["annotations"]) == 0
    results = perturbed_results(gt_path, seed=3)
    report = benchmarks.get("coco").score(results, gt_path)
    assert "renumbered" in caplog.text
    fixed = {**gt, "annotations": [{**a, "id": n} for n, a in enumerate(gt["annotations"], 1)]}
    for kind in ("segm", "bbox"):
        ref, _ = pycocotools_stats(fixed, benchmarks.coco.load_results(results, fixed), kind)
        assert_stats_equal(report["instances"][kind], ref)
    # the ground truth fed back scores AP 1.0 only with the renumbering
    exact = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
              "bbox": a["bbox"], "score": 1.0} for a in gt["annotations"]]
    assert benchmarks.get("coco").score(exact, gt_path)["instances"]["segm"]["AP"] == pytest.approx(1.0)
    raw, _ = pycocotools_stats(gt, benchmarks.coco.load_results(exact, gt), "segm")
    assert raw[0] < 1.0  # what pycocotools makes of the unrenumbered file


# -- VOC ----------------------------------------------------------------------------------------------


def voc_predictions(root: Path, out: Path, seed: int = 0, palette: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    preds = {}
    for n, f in enumerate(sorted((root / "SegmentationClass").glob("*.png"))):
        ref = np.asarray(Image.open(f))
        p = np.where(ref == 255, 0, ref).astype(np.uint8)
        p = np.roll(p, (3 + n, -2), (0, 1))
        p[rng.random(p.shape) < 0.03] = rng.integers(0, 21)
        p[20:60, 30:90] = 15 + n
        if n == 1:
            p[100:110, 100:140] = 255  # a predicted void is a miss
        img = Image.fromarray(p)
        if palette:
            img = img.convert("P")
            img.putpalette(colormap().ravel().tolist())
        img.save(out / f.name)
        preds[f.stem] = p
    return preds


def test_voc_equals_torchmetrics_and_numpy(shared_data, tmp_path):
    import torch
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    root = shared_data / "labelme" / "semantic_segmentation" / "data_dataset_voc"
    preds = voc_predictions(root, tmp_path / "preds")
    report = benchmarks.evaluate("voc", tmp_path / "preds", tmp_path / "report", root=root)
    refs = {n: np.asarray(Image.open(root / "SegmentationClass" / f"{n}.png")) for n in preds}
    assert set(np.unique(np.concatenate([r.ravel() for r in refs.values()]))) >= {0, 255}
    # NumPy, summed over the dataset: rows = reference, columns = prediction (255 its own column), void dropped
    cm = np.zeros((21, 22), dtype=np.int64)
    for n, ref in refs.items():
        keep = ref != 255
        p = np.where(preds[n] == 255, 21, preds[n])
        np.add.at(cm, (ref[keep].astype(int), p[keep].astype(int)), 1)
    tp = np.diag(cm[:, :21])
    iou_np = np.array([tp[i] / (cm[i].sum() + cm[:, i].sum() - tp[i]) if cm[i].sum() + cm[:, i].sum() else np.nan
                       for i in range(21)])
    ours = np.array([np.nan if c["iou"] is None else c["iou"] for c in report["classes"]])
    np.testing.assert_allclose(ours, iou_np, rtol=0, atol=1e-12)
    assert report["overall"]["mean_iou"] == pytest.approx(np.nanmean(iou_np), abs=1e-12)
    assert report["overall"]["pixel_accuracy"] == pytest.approx(tp.sum() / cm.sum(), abs=1e-12)
    present = cm.sum(axis=1) > 0
    assert report["overall"]["mean_accuracy"] == pytest.approx(np.mean(tp[present] / cm.sum(axis=1)[present]),
                                                               abs=1e-12)
    # torchmetrics over all images at once; a predicted 255 becomes a class that never occurs (22 classes)
    t = torch.from_numpy(np.concatenate([r.ravel() for r in refs.values()]).astype(np.int64))
    p = torch.from_numpy(np.concatenate([np.where(preds[n] == 255, 21, preds[n]).ravel() for n in refs])
                         .astype(np.int64))
    jac = MulticlassJaccardIndex(22, average="none", ignore_index=255)(p, t).numpy()[:21]
    seen = np.isfinite(iou_np)
    np.testing.assert_allclose(ours[seen], jac[seen], atol=1e-6)  # torchmetrics: float32, 0 for unseen classes
    acc = MulticlassAccuracy(22, average="micro", ignore_index=255)(p, t).item()
    assert report["overall"]["pixel_accuracy"] == pytest.approx(acc, abs=1e-6)
    macc = MulticlassAccuracy(22, average="none", ignore_index=255)(p, t).numpy()[:21]
    assert report["overall"]["mean_accuracy"] == pytest.approx(macc[present].mean(), abs=1e-6)
    assert {c["name"] for c in report["classes"]} >= {"aeroplane", "tvmonitor"}
    html = (tmp_path / "report" / "report.html").read_text()
    assert "person" in html


def test_voc_split_file_and_plain_l_predictions(shared_data, tmp_path):
    src = shared_data / "labelme" / "semantic_segmentation" / "data_dataset_voc"
    root = tmp_path / "VOC"
    shutil.copytree(src, root)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2011_000003\n2011_000025\n")
    voc_predictions(root, tmp_path / "preds", palette=False)
    r = benchmarks.evaluate("voc", tmp_path / "preds", tmp_path / "report", root=root, split="val")
    assert [i["scene"] for i in r["inputs"]] == ["2011_000003", "2011_000025"]
    voc_predictions(root, tmp_path / "preds_p", palette=True)
    r2 = benchmarks.evaluate("voc", tmp_path / "preds_p", tmp_path / "report2", root=root, split="val")
    assert r["classes"] == r2["classes"]  # palette and grey PNGs hold the same indices


# -- folder / reduce-zero-label -------------------------------------------------------------------------


def test_folder_reduce_zero_label_is_mmsegmentations(shared_data, tmp_path):
    """A real mask (VOC 2011_000025: values 0, 6, 7) in the mmsegmentation layout, reduce_zero_label on."""
    ref = np.asarray(Image.open(shared_data / "labelme" / "semantic_segmentation" / "data_dataset_voc"
                                / "SegmentationClass" / "2011_000025.png")).astype(np.uint8)
    root = tmp_path / "set"
    (root / "ann_dir" / "val").mkdir(parents=True)
    (root / "img_dir" / "val").mkdir(parents=True)
    Image.fromarray(ref).save(root / "ann_dir" / "val" / "a.png")
    # the model's coding: reference 6 -> class 5 (bus), 7 -> class 6 (car); it predicts 5 on the whole left half
    pred = np.where(ref == 0, 2, ref.astype(int) - 1).astype(np.uint8)
    pred[:, : ref.shape[1] // 2] = 5
    car_rows = np.flatnonzero((ref == 7).any(axis=1))
    pred[: car_rows[len(car_rows) // 2]][ref[: car_rows[len(car_rows) // 2]] == 7] = 2  # some cars called birds
    (tmp_path / "preds").mkdir()
    Image.fromarray(pred).save(tmp_path / "preds" / "a.png")
    classes = tmp_path / "classes.yaml"
    classes.write_text("classes: [aeroplane, bicycle, bird, boat, bottle, bus, car]\n")
    r = benchmarks.evaluate("folder", tmp_path / "preds", tmp_path / "report", root=root, split="val",
                            classes=classes, reduce_zero_label=True)
    # mmsegmentation's intersect_and_union, written out: label 0 -> 255, label - 1, then ignore 255
    label = ref.astype(int)
    label[label == 0] = 256
    label = label - 1
    label[label == 255] = 255
    keep = label != 255
    p, lab = pred[keep].astype(int), label[keep]
    inter = np.bincount(p[p == lab], minlength=7)[:7]
    area_p, area_l = np.bincount(p, minlength=7)[:7], np.bincount(lab, minlength=7)[:7]
    union = area_p + area_l - inter
    expected = {n: inter[i] / union[i] for i, n in enumerate(["aeroplane", "bicycle", "bird", "boat", "bottle",
                                                               "bus", "car"]) if union[i]}
    got = {c["name"]: c["iou"] for c in r["classes"] if c["iou"] is not None}
    assert got.keys() == expected.keys() == {"bus", "car", "bird"}
    for k in expected:
        assert got[k] == pytest.approx(expected[k], abs=1e-12)
    assert got["bird"] == 0.0  # predicted on cars (and on ignored pixels, which do not count)
    # and without reduce_zero_label, reference 7 is outside this 7-class table: one clear line
    with pytest.raises(GeosegError, match="outside the class table: 7"):
        benchmarks.evaluate("folder", tmp_path / "preds", tmp_path / "report3", root=root, split="val",
                            classes=classes)


# -- export and import ----------------------------------------------------------------------------------


def test_export_coco_round_trip(shared_data, tmp_path):
    import geopandas as gpd
    import rasterio
    import shapely

    scene = shared_data / "solaris" / "sample_geotiff.tif"
    labels = shared_data / "solaris" / "geotiff_labels.geojson"
    res = CliRunner().invoke(cli, ["benchmark", "export", "coco", str(scene), str(labels), "-o",
                                   str(tmp_path / "chips"), "--chip-size", "512", "--overlap", "64"])
    assert res.exit_code == 0, res.output
    ann = json.loads((tmp_path / "chips" / "annotations.json").read_text())
    assert len(ann["images"]) == 4 and ann["categories"][0]["name"] == "building"
    with rasterio.open(scene) as src:
        box = shapely.box(*src.bounds)
        crs = src.crs
    fp = gpd.read_file(labels).to_crs(crs)
    # one annotation per footprint piece per chip
    pieces = 0
    for im in ann["images"]:
        from rasterio import Affine

        t = Affine.from_gdal(*im["transform"])
        chip = shapely.box(t.c, t.f + t.e * im["height"], t.c + t.a * im["width"], t.f)
        for g in fp.geometry.make_valid():
            part = shapely.intersection(g, chip)
            pieces += sum(1 for q in getattr(part, "geoms", [part]) if q.geom_type == "Polygon" and q.area > 0)
        assert Path(tmp_path / "chips" / im["file_name"]).exists()
    assert len(ann["annotations"]) == pieces
    assert all(a["iscrowd"] == 0 and a["area"] > 0 for a in ann["annotations"])
    gt_as_results = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                      "bbox": a["bbox"], "score": 1.0} for a in ann["annotations"]]
    (tmp_path / "results.json").write_text(json.dumps(gt_as_results))
    res = CliRunner().invoke(cli, ["benchmark", "import", "coco", str(tmp_path / "results.json"), "--annotations",
                                   str(tmp_path / "chips" / "annotations.json"), "-o", str(tmp_path / "back.gpkg")])
    assert res.exit_code == 0, res.output
    back = gpd.read_file(tmp_path / "back.gpkg", layer="building")
    assert back.crs == crs and len(back) == len(ann["annotations"]) and (back["score"] == 1.0).all()
    u_back = shapely.union_all(back.geometry.values)
    u_ref = shapely.intersection(shapely.union_all(fp.geometry.make_valid().values), box)
    assert shapely.symmetric_difference(u_back, u_ref).area < 1e-6 * u_ref.area
    coco = benchmarks.get("coco").score(tmp_path / "results.json", tmp_path / "chips" / "annotations.json",
                                        engine="pycocotools")
    assert coco["instances"]["segm"]["AP"] == 1.0 and coco["instances"]["bbox"]["AP"] == 1.0
    import sqlite3

    with sqlite3.connect(tmp_path / "back.gpkg") as con:  # styled for QGIS like every geoseg GeoPackage
        assert con.execute("SELECT f_table_name FROM layer_styles").fetchall() == [("building",)]


def test_export_voc_chips(shared_data, tmp_path):
    import rasterio
    from rasterio import features

    scene = shared_data / "solaris" / "sample_geotiff.tif"
    labels = shared_data / "solaris" / "geotiff_labels.geojson"
    benchmarks.export.export("voc", scene, labels, tmp_path / "voc", chip_size=450, split="train")
    names = (tmp_path / "voc" / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    assert names == ["sample_geotiff_0_0", "sample_geotiff_0_450", "sample_geotiff_450_0", "sample_geotiff_450_450"]
    import geopandas as gpd

    with rasterio.open(scene) as src:
        fp = gpd.read_file(labels).to_crs(src.crs)
        whole = features.rasterize(fp.geometry.make_valid(), out_shape=src.shape, transform=src.transform)
    mask = Image.open(tmp_path / "voc" / "SegmentationClass" / "sample_geotiff_450_0.png")
    assert mask.mode == "P" and mask.getpalette()[3:6] == [128, 0, 0]
    np.testing.assert_array_equal(np.asarray(mask), whole[450:900, 0:450])
    # the chips score perfectly against themselves
    preds = tmp_path / "voc" / "SegmentationClass"
    assert sorted(f.name for f in (tmp_path / "voc" / "JPEGImages").iterdir())[0] == "sample_geotiff_0_0.png"
    rep = benchmarks.evaluate("voc", preds, tmp_path / "rep", root=tmp_path / "voc", split="train")
    assert rep["overall"]["pixel_accuracy"] == 1.0


# -- benchmark predict ----------------------------------------------------------------------------------


def _init(tmp_path: Path, name: str, classes: str) -> Path:
    out = tmp_path / name
    res = CliRunner().invoke(cli, ["model", "init", "unet", "--encoder", "resnet18", "--classes", classes,
                                   "--tile-size", "256", "--overlap", "32", "--mean", "120,120,120",
                                   "--std", "60,60,60", "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_benchmark_predict_voc(shared_data, tmp_path):
    from geoseg.benchmarks.voc import CLASSES

    root = shared_data / "labelme" / "semantic_segmentation" / "data_dataset_voc"
    bundle = _init(tmp_path, "voc-model", ",".join(CLASSES))
    res = CliRunner().invoke(cli, ["benchmark", "predict", "voc", str(bundle), "--root", str(root), "-o",
                                   str(tmp_path / "preds"), "--no-progress"])
    assert res.exit_code == 0, res.output
    files = sorted((tmp_path / "preds").iterdir())
    assert [f.name for f in files] == ["2011_000003.png", "2011_000006.png", "2011_000025.png"]
    for f in files:
        img = Image.open(f)
        ref = Image.open(root / "SegmentationClass" / f.name)
        assert img.mode == "P" and img.size == ref.size and img.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    r = benchmarks.evaluate("voc", tmp_path / "preds", tmp_path / "report", root=root)
    assert 0 <= r["overall"]["pixel_accuracy"] <= 1


# -- bad input ------------------------------------------------------------------------------------------


def _fails(args: list[str], message: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("geoseg: error:"), res.output
    assert message in lines[0], lines[0]
    assert "Traceback" not in res.output
    assert not (tmp_path / "out" / "report.json").exists()


def test_bad_input_one_line_each(shared_data, tmp_path):
    voc = shared_data / "labelme" / "semantic_segmentation" / "data_dataset_voc"
    out = str(tmp_path / "out")
    _fails(["benchmark", "evaluate", "pascal", str(tmp_path), "-o", out], "valid: cityscapes, cityscapes-instances, "
           "cityscapes-panoptic, coco, coco-panoptic, folder, voc", tmp_path)
    preds = tmp_path / "preds"
    voc_predictions(voc, preds)
    (preds / "2011_000006.png").unlink()
    _fails(["benchmark", "evaluate", "voc", str(preds), "--root", str(voc), "-o", out],
           "no prediction for 1 of 3 images: 2011_000006", tmp_path)
    res = CliRunner().invoke(cli, ["benchmark", "evaluate", "voc", str(preds), "--root", str(voc), "-o", out,
                                   "--allow-missing"])
    assert res.exit_code == 0 and len(json.loads((tmp_path / "out" / "report.json").read_text())["inputs"]) == 2
    shutil.rmtree(tmp_path / "out")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(preds / "2011_000006.png")
    _fails(["benchmark", "evaluate", "voc", str(preds), "--root", str(voc), "-o", out],
           "is 10x10 px but its ground truth", tmp_path)
    Image.fromarray(np.full((375, 500), 40, np.uint8)).save(preds / "2011_000006.png")
    _fails(["benchmark", "evaluate", "voc", str(preds), "--root", str(voc), "-o", out],
           "label values outside the class table: 40", tmp_path)
    _fails(["benchmark", "evaluate", "voc", str(preds), "--root", str(tmp_path), "-o", out],
           "SegmentationClass/ is missing", tmp_path)
    cs_root = shared_data / "mmsegmentation" / "pseudo_cityscapes_dataset"
    train = np.asarray(Image.open(cs_root / "gtFine" / "val" / "frankfurt"
                                  / "frankfurt_000000_000294_gtFine_labelTrainIds.png"))
    (tmp_path / "cs").mkdir()
    Image.fromarray(train).save(tmp_path / "cs" / "frankfurt_000000_000294_pred.png")
    _fails(["benchmark", "evaluate", "cityscapes", str(tmp_path / "cs"), "--root", str(cs_root), "-o", out],
           "looks like trainIds", tmp_path)
    gt = shared_data / "airo-mono" / "instances_val2017_small.json"
    bad = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    _fails(["benchmark", "evaluate", "coco", str(tmp_path / "bad.json"), "--annotations", str(gt), "-o", out],
           "image ids not in the annotations: 1", tmp_path)
    bad = [{"image_id": 397133, "category_id": 999, "bbox": [0, 0, 5, 5], "score": 0.5}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    _fails(["benchmark", "evaluate", "coco", str(tmp_path / "bad.json"), "--annotations", str(gt), "-o", out],
           "category ids not in the annotations: 999", tmp_path)
    _fails(["benchmark", "evaluate", "cityscapes", str(tmp_path / "cs"), "--root", str(tmp_path), "-o", out],
           "gtFine/ is missing", tmp_path)


def test_train_on_a_benchmark_then_predict_and_score_it(shared_data, tmp_path):
    """``data: {adapter: voc, root: ...}`` trains with VOC's class table; the bundle then runs through
    ``benchmark predict voc`` and ``benchmark evaluate voc`` end to end."""
    import yaml

    from geoseg.training import load_config

    root = shared_data / "labelme" / "semantic_segmentation" / "data_dataset_voc"
    cfg = tmp_path / "voc.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"adapter": "voc", "root": str(root)},
        "model": {"architecture": "unet", "encoder": "resnet18", "chip_size": 64},
        "sampling": {"chips_per_epoch": 4}, "train": {"epochs": 1, "batch_size": 2, "device": "cpu"},
        "validation": {"fraction": 0.34}}))
    c = load_config(cfg)
    assert c.classes.names[:2] == ["background", "aeroplane"] and len(c.classes) == 21 and c.bands == (1, 2, 3)
    res = CliRunner().invoke(cli, ["train", str(cfg), "-o", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "model" / "geoseg.json").read_text())
    assert [c["name"] for c in meta["classes"]][15] == "person"
    res = CliRunner().invoke(cli, ["benchmark", "predict", "voc", str(tmp_path / "model"), "--root", str(root),
                                   "-o", str(tmp_path / "preds"), "--no-progress"])
    assert res.exit_code == 0, res.output
    r = benchmarks.evaluate("voc", tmp_path / "preds", tmp_path / "report", root=root)
    assert len(r["inputs"]) == 3 and r["overall"]["pixel_accuracy"] is not None
    # a mismatched class list is refused with the adapter's names
    cfg.write_text(yaml.safe_dump({"data": {"adapter": "voc", "root": str(root)}, "classes": ["a", "b"]}))
    with pytest.raises(GeosegError, match="classes differ from the voc adapter's"):
        load_config(cfg)
