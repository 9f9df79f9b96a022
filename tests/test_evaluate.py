"""Evaluation against references geoseg did not write: torchmetrics, NumPy formulas, pyproj, SpaceNet."""

from __future__ import annotations

import json
import logging

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from click.testing import CliRunner
from rasterio.transform import from_origin

from geoseg.cli.main import cli
from geoseg.errors import GeosegError
from geoseg.evaluation.evaluate import EvaluateOptions, evaluate
from geoseg.evaluation.metrics import class_scores, confusion, match_objects, overall_scores
from tests.conftest import assert_one_line_error
from tests.test_vectorize import write_classes


def paper_metrics(ref, pred, k):
    """Long et al.'s definitions, written out directly."""
    n = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            n[i, j] = np.sum((ref == i) & (pred == j))
    t = n.sum(1)
    iou = np.diag(n) / (t + n.sum(0) - np.diag(n))
    return {"pixel_accuracy": np.trace(n) / n.sum(), "mean_accuracy": np.mean(np.diag(n) / t),
            "mean_iou": np.mean(iou), "fw_iou": np.sum(t * iou) / t.sum(), "iou": iou}


@pytest.mark.parametrize("k", [2, 3, 7, 16, 30])
def test_confusion_metrics_equal_torchmetrics_and_the_paper(k):
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    rng = np.random.default_rng(k)
    ref = rng.integers(0, k, (300, 400))
    pred = np.where(rng.random(ref.shape) < 0.6, ref, rng.integers(0, k, ref.shape))
    ref[rng.random(ref.shape) < 0.05] = 255           # ignore / nodata in the reference
    pred[rng.random(ref.shape) < 0.03] = 255          # nodata in the prediction
    valid = (ref != 255) & (pred != 255)
    cm = confusion(ref, pred, k, valid)
    ours, per_class = overall_scores(cm), class_scores(cm)
    paper = paper_metrics(ref[valid], pred[valid], k)
    t, p = torch.from_numpy(ref[valid]), torch.from_numpy(pred[valid])
    tm_iou = MulticlassJaccardIndex(k, average="none")(p, t).double().numpy()
    tm_acc = MulticlassAccuracy(k, average="micro")(p, t).item()
    tm_macc = MulticlassAccuracy(k, average="macro")(p, t).item()
    np.testing.assert_allclose(per_class["iou"], paper["iou"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(per_class["iou"], tm_iou, rtol=0, atol=1e-6)  # torchmetrics computes in float32
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        assert ours[key] == pytest.approx(paper[key], abs=1e-9)
    assert ours["mean_iou"] == pytest.approx(MulticlassJaccardIndex(k)(p, t).item(), abs=1e-6)
    assert ours["pixel_accuracy"] == pytest.approx(tm_acc, abs=1e-6)
    assert ours["mean_accuracy"] == pytest.approx(tm_macc, abs=1e-6)


def test_pipeline_confusion_equals_numpy_with_ignore_and_nodata(tmp_path):
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 4, (700, 900)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.7, ref, rng.integers(0, 4, ref.shape)).astype(np.uint8)
    ref[:20] = 255
    pred[:, :30] = 255
    write_classes(tmp_path / "p.tif", pred)
    write_classes(tmp_path / "r.tif", ref)
    rep = evaluate(tmp_path / "p.tif", tmp_path / "r.tif", tmp_path / "out",
                   EvaluateOptions(ignore=(3,), chunk_size=256, progress=False, audit=False))
    valid = (ref != 255) & (pred != 255) & (ref != 3) & (pred != 3)
    expected = confusion(ref, pred, 4, valid)
    np.testing.assert_array_equal(np.asarray(rep["confusion_px"]), expected)
    np.testing.assert_allclose(np.asarray(rep["confusion_m2"]), expected * 0.25)
    assert rep["schema_version"] == 1 and rep["classes"][3]["iou"] is None


def test_area_weighting_across_resolutions(tmp_path):
    pdir, rdir = tmp_path / "pred", tmp_path / "ref"
    pdir.mkdir(), rdir.mkdir()
    # scene a at 0.3 m: building IoU 1/2 ; scene b at 0.5 m: building IoU 9/10
    a_ref, a_pred = np.zeros((100, 100), np.uint8), np.zeros((100, 100), np.uint8)
    a_ref[0:40, 0:50] = 1
    a_pred[0:40, 0:25] = 1
    a_pred[40:80, 0:25] = 1          # 1000 TP px, 1000 FP px, 1000 FN px
    b_ref, b_pred = np.zeros((100, 100), np.uint8), np.zeros((100, 100), np.uint8)
    b_ref[0:20, 0:50] = 1
    b_pred[0:18, 0:50] = 1           # 900 TP px, 100 FN px
    for name, ref, pred, res in (("a", a_ref, a_pred, 0.3), ("b", b_ref, b_pred, 0.5)):
        t = from_origin(500000, 4000000, res, res)
        write_classes(pdir / f"{name}.classes.tif", pred, transform=t)
        write_classes(rdir / f"{name}.tif", ref, transform=t)
    rep = evaluate(pdir, rdir, tmp_path / "out", EvaluateOptions(progress=False, audit=False))
    b = rep["classes"][1]
    tp_m2 = 1000 * 0.09 + 900 * 0.25
    fp_m2 = 1000 * 0.09
    fn_m2 = 1000 * 0.09 + 100 * 0.25
    assert b["tp_m2"] == pytest.approx(tp_m2) and b["fp_m2"] == pytest.approx(fp_m2)
    assert b["iou_area"] == pytest.approx(tp_m2 / (tp_m2 + fp_m2 + fn_m2), abs=1e-12)
    assert b["iou"] == pytest.approx(1900 / (1900 + 1000 + 1100), abs=1e-12)
    # the coarse, accurate scene covers more ground, so area weighting raises building IoU
    assert b["iou_area"] > b["iou"]
    assert [s["scene"] for s in rep["scenes"]] == ["a", "b"]


def test_geographic_pixel_areas_match_geod(tmp_path):
    from pyproj import Geod

    t = from_origin(-115.2338, 60.1423, 2.7e-5, 2.7e-5)  # far north, where degrees shrink
    ref = np.zeros((400, 300), np.uint8)
    ref[100:300, 50:250] = 1
    write_classes(tmp_path / "p.tif", ref, crs="EPSG:4326", transform=t)
    write_classes(tmp_path / "r.tif", ref, crs="EPSG:4326", transform=t)
    rep = evaluate(tmp_path / "p.tif", tmp_path / "r.tif", tmp_path / "out",
                   EvaluateOptions(progress=False, audit=False))
    total = np.asarray(rep["confusion_m2"]).sum()
    x0, y0 = t * (0, 0)
    x1, y1 = t * (300, 400)
    box = shapely.segmentize(shapely.box(x0, y1, x1, y0), 1e-4)
    geod_area = abs(Geod(ellps="WGS84").geometry_area_perimeter(box)[0])
    assert total == pytest.approx(geod_area, rel=1e-3)
    sq = shapely.segmentize(shapely.box(*(t * (50, 300)), *(t * (250, 100))), 1e-5)
    assert rep["classes"][1]["tp_m2"] == pytest.approx(abs(Geod(ellps="WGS84").geometry_area_perimeter(sq)[0]),
                                                       rel=1e-3)


def test_spacenet_object_f1(shared_data):
    gt = gpd.read_file(shared_data / "solaris" / "gt.geojson")
    pred = gpd.read_file(shared_data / "solaris" / "pred.geojson")
    s = match_objects(gt.geometry.values, pred.geometry.values, 0.5)
    assert (s.tp, s.fp, s.fn) == (8, 20, 20)
    assert s.f1 == pytest.approx(0.2857142857142857, abs=1e-12)


@pytest.fixture()
def spacenet_mask(shared_data, tmp_path):
    sol = shared_data / "solaris"
    with rasterio.open(sol / "sample_geotiff.tif") as src:
        crs, t = src.crs, src.transform
    with rasterio.open(sol / "sample_fp_mask_from_geojson.tif") as src:
        mask = src.read(1)
    return write_classes(tmp_path / "fp.classes.tif", (mask == 255).astype(np.uint8), crs=crs, transform=t)


def test_vector_reference_gives_building_iou_one(spacenet_mask, shared_data, tmp_path):
    r = CliRunner().invoke(cli, ["evaluate", str(spacenet_mask), str(shared_data / "solaris" / "geotiff_labels.geojson"),
                                 "-o", str(tmp_path / "audit"), "--reference-class", "building", "--no-progress"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "audit" / "report.json").read_text())
    b = rep["classes"][1]
    assert b["name"] == "building" and b["iou"] == 1.0 and b["iou_area"] == 1.0
    assert b["tp_px"] == 33818 and b["fp_px"] == 0 and b["fn_px"] == 0
    assert rep["objects"]["building"]["tp"] == 43 and rep["objects"]["building"]["f1"] == 1.0
    for f in ("report.md", "report.html", "audit.gpkg"):
        assert (tmp_path / "audit" / f).stat().st_size > 0
    assert "data:image/png;base64," in (tmp_path / "audit" / "report.html").read_text()
    import pyogrio

    layers = dict(pyogrio.list_layers(tmp_path / "audit" / "audit.gpkg"))
    assert {"building_tp", "building_fp", "building_fn", "iou_grid"} <= set(layers)
    tp = pyogrio.read_dataframe(tmp_path / "audit" / "audit.gpkg", layer="building_tp")
    assert tp.geometry.area.sum() == pytest.approx(33818 * 0.25)
    assert len(pyogrio.read_dataframe(tmp_path / "audit" / "audit.gpkg", layer="building_fp")) == 0
    grid = pyogrio.read_dataframe(tmp_path / "audit" / "audit.gpkg", layer="iou_grid")
    assert len(grid) == 16 and grid["valid_px"].sum() == 900 * 900
    assert set(grid["iou_building"].dropna()) == {1.0}


def test_folder_run_sums_the_scene_matrices(tmp_path):
    pdir, rdir = tmp_path / "pred", tmp_path / "ref"
    pdir.mkdir(), rdir.mkdir()
    rng = np.random.default_rng(3)
    total = np.zeros((4, 4), dtype=np.int64)
    for i, size in enumerate((120, 200, 333)):
        ref = rng.integers(0, 4, (size, size + 17)).astype(np.uint8)
        pred = np.where(rng.random(ref.shape) < 0.5, ref, rng.integers(0, 4, ref.shape)).astype(np.uint8)
        write_classes(pdir / f"s{i}.classes.tif", pred)
        write_classes(rdir / f"s{i}.tif", ref)
        total += confusion(ref, pred, 4)
    r = CliRunner().invoke(cli, ["evaluate", str(pdir), str(rdir), "-o", str(tmp_path / "all"), "--no-progress",
                                 "--chunk-size", "64"])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "all" / "report.json").read_text())
    np.testing.assert_array_equal(np.asarray(rep["confusion_px"]), total)
    np.testing.assert_array_equal(sum(np.asarray(s["confusion_px"]) for s in rep["scenes"]), total)
    assert rep["overall"]["mean_iou"] == pytest.approx(overall_scores(total)["mean_iou"], abs=1e-12)


def test_bad_input(tmp_path, spacenet_mask, shared_data, caplog):
    far = write_classes(tmp_path / "far.tif", np.zeros((50, 50), np.uint8), transform=from_origin(0, 0, 1, 1))
    r = CliRunner().invoke(cli, ["evaluate", str(spacenet_mask), str(far), "-o", str(tmp_path / "o1")])
    assert_one_line_error(r, "does not overlap the reference")
    assert not (tmp_path / "o1").exists()

    nocrs = write_classes(tmp_path / "nocrs.tif", np.zeros((50, 50), np.uint8), crs=None)
    r = CliRunner().invoke(cli, ["evaluate", str(spacenet_mask), str(nocrs), "-o", str(tmp_path / "o2")])
    assert_one_line_error(r, "nocrs.tif", "no CRS")

    labels = shared_data / "solaris" / "geotiff_labels.geojson"
    r = CliRunner().invoke(cli, ["evaluate", str(spacenet_mask), str(labels), "-o", str(tmp_path / "o3"),
                                 "--class-field", "kind"])
    assert_one_line_error(r, "has no field 'kind'; its fields are: access, addr_house")
    assert not (tmp_path / "o3").exists()

    mixed = gpd.read_file(labels)[["geometry"]]
    mixed["kind"] = ["tree" if i < 3 else "building" for i in range(len(mixed))]
    mixed.to_file(tmp_path / "mixed.gpkg")
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        r = CliRunner().invoke(cli, ["evaluate", str(spacenet_mask), str(tmp_path / "mixed.gpkg"), "-o",
                                     str(tmp_path / "o4"), "--class-field", "kind", "--no-progress", "--no-audit"])
    assert r.exit_code == 0, r.output
    assert "class values not in the class list, left out: tree" in caplog.text
    rep = json.loads((tmp_path / "o4" / "report.json").read_text())
    assert rep["classes"][1]["fp_px"] > 0 and rep["classes"][1]["fn_px"] == 0  # the 3 trees are not buildings

    pdir, rdir = tmp_path / "pd", tmp_path / "rd"
    pdir.mkdir(), rdir.mkdir()
    for n in ("a", "b", "c"):
        write_classes(pdir / f"{n}.classes.tif", np.ones((40, 40), np.uint8))
    write_classes(rdir / "a.tif", np.ones((40, 40), np.uint8))
    r = CliRunner().invoke(cli, ["evaluate", str(pdir), str(rdir), "-o", str(tmp_path / "o5")])
    assert_one_line_error(r, "no reference for 2 scene(s): b.classes.tif, c.classes.tif", "--allow-missing")
    r = CliRunner().invoke(cli, ["evaluate", str(pdir), str(rdir), "-o", str(tmp_path / "o5"), "--allow-missing",
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o5" / "report.json").read_text())["inputs"][0]["scene"] == "a"
    with pytest.raises(GeosegError, match="is not in the class list"):
        evaluate(spacenet_mask, labels, tmp_path / "o6", EvaluateOptions(reference_class="tree", progress=False))


def _resampled_f1s(counts):
    """Every equally likely bootstrap resample of the scenes, enumerated: their summed-count F1s."""
    import itertools

    out = []
    for pick in itertools.product(range(len(counts)), repeat=len(counts)):
        tp, fp, fn = (sum(counts[i][k] for i in pick) for k in range(3))
        out.append(2 * tp / (2 * tp + fp + fn))
    return out


def test_object_f1_interval_by_hand():
    from geoseg.evaluation.metrics import object_f1_interval

    # two scenes: the resamples are AA (1/4), AB (1/2), BB (1/4), so the 2.5% and 97.5% points are BB and AA
    a, b = (8, 2, 0), (2, 2, 6)
    assert object_f1_interval([a, b]) == pytest.approx((4 / 12, 16 / 18), abs=1e-12)  # 2TP / (2TP + FP + FN)
    # three scenes: the extreme resamples have 1/27 > 2.5% each, so the interval is exactly their range
    three = [(8, 2, 0), (2, 2, 6), (5, 1, 3)]
    f1s = _resampled_f1s(three)
    assert object_f1_interval(three) == pytest.approx((min(f1s), max(f1s)), abs=1e-12)
    assert object_f1_interval([a]) is None  # one scene: no interval
    assert object_f1_interval([a, a, a]) == pytest.approx((16 / 18, 16 / 18), abs=1e-12)
    assert object_f1_interval([a, b], seed=0) == object_f1_interval([a, b], seed=0)  # reproducible


def test_folder_run_reports_the_object_f1_interval_over_scenes(tmp_path):
    from geoseg.evaluation.metrics import object_f1_interval

    pdir, rdir = tmp_path / "pred", tmp_path / "ref"
    pdir.mkdir(), rdir.mkdir()
    counts = []
    # scene i: 4 reference squares, the first `hits` predicted exactly, plus `extra` false squares
    for i, (hits, extra) in enumerate(((4, 0), (2, 1), (1, 3))):
        ref = np.zeros((100, 120), np.uint8)
        pred = np.zeros_like(ref)
        for k in range(4):
            ref[10:30, 5 + 28 * k : 25 + 28 * k] = 1
            if k < hits:
                pred[10:30, 5 + 28 * k : 25 + 28 * k] = 1
        for k in range(extra):
            pred[60:80, 5 + 28 * k : 25 + 28 * k] = 1
        write_classes(pdir / f"s{i}.classes.tif", pred)
        write_classes(rdir / f"s{i}.tif", ref)
        counts.append((hits, extra, 4 - hits))
    r = CliRunner().invoke(cli, ["evaluate", str(pdir), str(rdir), "-o", str(tmp_path / "all"), "--no-progress"])
    assert r.exit_code == 0, r.output
    ob = json.loads((tmp_path / "all" / "report.json").read_text())["objects"]["building"]
    assert (ob["tp"], ob["fp"], ob["fn"]) == (7, 4, 5)
    f1s = _resampled_f1s(counts)
    assert ob["f1_ci95"] == pytest.approx([min(f1s), max(f1s)], abs=1e-12)
    assert ob["f1_ci95"] == pytest.approx(list(object_f1_interval(counts)), abs=1e-12)
    md = (tmp_path / "all" / "report.md").read_text()
    assert f"95% interval over scenes {min(f1s):.3f}–{max(f1s):.3f}" in md
    assert f"| {min(f1s):.4f}–{max(f1s):.4f} |" in md
    html_text = (tmp_path / "all" / "report.html").read_text()
    assert f"<td>{min(f1s):.4f}–{max(f1s):.4f}</td>" in html_text


def test_reference_objects_of_20_px_or_less_are_not_counted(tmp_path):
    """The SpaceNet scorer's rule: a 20 px reference footprint is left out of the object counts (so a prediction
    of it is a false positive), a 21 px one is kept; --min-reference-px 0 counts every one."""
    ref = np.zeros((60, 60), np.uint8)
    ref[5:9, 5:10] = 1  # 4 x 5 = 20 px
    ref[20:23, 5:12] = 1  # 3 x 7 = 21 px
    ref[35:45, 30:40] = 1  # 100 px
    write_classes(tmp_path / "p.classes.tif", ref)
    write_classes(tmp_path / "r.tif", ref)
    for extra, want in (([], (2, 1, 0)), (["--min-reference-px", "0"], (3, 0, 0)),
                        (["--min-reference-px", "21"], (1, 2, 0))):
        out = tmp_path / f"audit{len(extra)}{extra[-1] if extra else ''}"
        r = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "p.classes.tif"), str(tmp_path / "r.tif"), "-o",
                                     str(out), "--no-progress", "--no-audit", *extra])
        assert r.exit_code == 0, r.output
        rep = json.loads((out / "report.json").read_text())
        ob = rep["objects"]["building"]
        assert (ob["tp"], ob["fp"], ob["fn"]) == want, extra
        assert rep["settings"]["min_reference_px"] == (float(extra[-1]) if extra else 20)
        assert ob["f1_ci95"] is None  # one scene: no interval
    r = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "p.classes.tif"), str(tmp_path / "r.tif"), "-o",
                                 str(tmp_path / "bad"), "--min-reference-px", "-1"])
    assert r.exit_code != 0 and "--min-reference-px must not be negative" in r.output
    assert not (tmp_path / "bad").exists()
