"""``geoseg evaluate --panoptic`` on GeoTIFF scenes: equal to panopticapi's pq_compute on the same segments,
identical for chunk sizes that cut objects, the same from a vector reference, one line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from PIL import Image
from rasterio.transform import from_origin

from geoseg.benchmarks.coco_panoptic import id_to_rgb
from geoseg.cli.main import cli
from tests.test_panoptic import assert_equal_to_official, official

CLASSES = [{"id": 0, "name": "background", "color": "#000000", "vectorize": False},
           {"id": 1, "name": "building", "color": "#e31a1c", "isthing": True},
           {"id": 2, "name": "road", "color": "#7f7f7f"},
           {"id": 3, "name": "car", "color": "#1f78b4", "isthing": True}]
THINGS = {1, 3}
CRS = "EPSG:32723"
T = from_origin(680000, 7460000, 0.5, 0.5)


def rectangles(rng, h, w, n, size):
    out = []
    for _ in range(n):
        y, x = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
        out.append((y, y + int(rng.integers(4, size)), x, x + int(rng.integers(4, size))))
    return out


def make_scene(seed: int, h: int = 700, w: int = 900):
    """(class, instance) reference and prediction: touching and separate buildings, cars, a road, VOID, crowd."""
    rng = np.random.default_rng(seed)
    rc, ri = np.zeros((h, w), np.uint32), np.zeros((h, w), np.uint32)
    rc[300:340, :] = 2
    boxes = rectangles(rng, h, w, 120, 40) + [(20, 60, 20, 50), (20, 60, 50, 80)]  # two touching
    for k, (y0, y1, x0, x1) in enumerate(boxes, 1):
        rc[y0:y1, x0:x1], ri[y0:y1, x0:x1] = 1, k
    for k, (y0, y1, x0, x1) in enumerate(rectangles(rng, h, w, 40, 12), 1000):
        rc[y0:y1, x0:x1], ri[y0:y1, x0:x1] = 3, k
    rc[600:640, 700:760], ri[600:640, 700:760] = 1, 0  # a crowd of buildings
    rc[0:15, 600:900], ri[0:15, 600:900] = 255, 0  # VOID
    pc, pi = rc.copy(), (ri * 7 + 3) * (ri > 0)  # other instance numbers than the reference's
    pc[rc == 255] = 0
    pi[20:60, 20:80] = 5  # the touching pair merged
    shift = np.roll(np.arange(h), 2)
    pc[:, :450], pi[:, :450] = pc[shift, :450], pi[shift, :450]  # the left half shifted by 2 px
    noise = rng.random((h, w)) < 0.01
    pc[noise] = rng.choice([0, 2], noise.sum())
    pi[noise] = 0
    pc[650:690, 100:160], pi[650:690, 100:160] = 1, 99991  # a false positive
    return (rc, ri), (pc, pi)


def write_pair(path: Path, cls: np.ndarray, inst: np.ndarray, tags: bool = True) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=cls.shape[1], height=cls.shape[0], count=2, dtype="uint32",
                       crs=CRS, transform=T, tiled=True, blockxsize=256, blockysize=256) as d:
        d.write(np.stack([cls, inst]).astype(np.uint32))
        if tags:
            d.update_tags(GEOSEG_CLASSES=json.dumps(CLASSES))
    return path


def coco_segments(cls, inst, reference: bool):
    """The segments as COCO panoptic ids: things per (class, instance), stuff per class, 255 VOID."""
    keys = np.where(np.isin(cls, list(THINGS)), cls.astype(np.int64) * 2**32 + inst, cls.astype(np.int64) * 2**32)
    keys[cls == 255] = -1
    u, inv = np.unique(keys, return_inverse=True)
    ids = np.where(u >= 0, np.arange(1, len(u) + 1), 0)[inv].reshape(cls.shape).astype(np.uint32)
    info = []
    for k, key in enumerate(u.tolist()):
        if key < 0:
            continue
        c, i = key >> 32, key & (2**32 - 1)
        info.append({"id": k + 1, "category_id": int(c), "iscrowd": int(reference and c in THINGS and i == 0),
                     "area": int((ids == k + 1).sum())})
    return ids, info


def test_panoptic_evaluate_equals_pq_compute_at_every_chunk_size(tmp_path):
    scenes = [make_scene(s) for s in range(2)]
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    for k, ((rc, ri), (pc, pi)) in enumerate(scenes):
        write_pair(pred_dir / f"s{k}.panoptic.tif", pc, pi)
        write_pair(ref_dir / f"s{k}.tif", rc, ri, tags=False)
    # the official scorer on the same segments, one image per scene
    for side, ref in (("gt", True), ("pr", False)):
        (tmp_path / side).mkdir()
        anns = []
        for k, pair in enumerate(scenes):
            ids, info = coco_segments(*pair[0 if ref else 1], reference=ref)
            Image.fromarray(id_to_rgb(ids), "RGB").save(tmp_path / side / f"s{k}.png")
            anns.append({"image_id": k, "file_name": f"s{k}.png", "segments_info": info})
        (tmp_path / f"{side}.json").write_text(json.dumps({
            "annotations": anns, "categories": [{"id": c["id"], "name": c["name"], "isthing": int(c["id"] in THINGS)}
                                                for c in CLASSES]}))
    theirs = official("coco", str(tmp_path / "gt.json"), str(tmp_path / "gt"), str(tmp_path / "pr.json"),
                      str(tmp_path / "pr"))
    assert theirs["Things"]["n"] == 2 and 0 < theirs["All"]["pq"] < 1
    blocks = []
    for chunk in (4096, 256, 173):  # the whole scene at once, and chunk seams through objects
        out = tmp_path / f"rep{chunk}"
        res = CliRunner().invoke(cli, ["evaluate", str(pred_dir), str(ref_dir), "-o", str(out), "--panoptic",
                                       "--chunk-size", str(chunk), "--no-audit", "--workers", "2"])
        assert res.exit_code == 0, res.output
        rep = json.loads((out / "report.json").read_text())
        assert_equal_to_official(rep["panoptic"], theirs)
        blocks.append(rep["panoptic"])
        assert len(rep["scenes"]) == 2 and all(s["panoptic"]["All"]["n"] == 4 for s in rep["scenes"])
    assert blocks[0] == blocks[1] == blocks[2]
    assert "panoptic All: PQ" in res.output and "Panoptic quality" in (out / "report.md").read_text()
    assert "<table id=pq>" in (out / "report.html").read_text()
    # the class band is scored as a class raster too
    assert rep["classes"][1]["name"] == "building" and rep["classes"][1]["iou"] > 0.8


def test_vector_reference_equals_its_raster(tmp_path):
    """Thing polygons are instances, stuff polygons their class, uncovered pixels background."""
    (rc, ri), (pc, pi) = make_scene(3, 400, 500)
    rc[rc == 255] = 0
    rc[rc == 3], ri[rc == 3] = 0, 0  # only buildings and the road, drawn as polygons on pixel edges
    rc[rc == 1] = 0
    ri[:] = 0
    geoms, classes = [], []
    rng = np.random.default_rng(5)
    boxes = rectangles(rng, 400, 500, 60, 30)
    for k, (y0, y1, x0, x1) in enumerate(boxes, 1):
        rc[y0:y1, x0:x1], ri[y0:y1, x0:x1] = 1, k
    rc[300:340, :], ri[300:340, :] = 2, 0
    pc, pi = np.roll(rc, 1, axis=1), np.roll(ri, 1, axis=1) * 5
    pc[100:110, 100:300], pi[100:110, 100:300] = 2, 0
    for (y0, y1, x0, x1) in boxes:
        geoms.append(shapely.box(*(T * (x0, y1)), *(T * (x1, y0))))
        classes.append("building")
    geoms.append(shapely.box(*(T * (0, 340)), *(T * (500, 300))))
    classes.append("road")
    import geopandas as gpd

    gpkg = tmp_path / "s.gpkg"
    pyogrio.write_dataframe(gpd.GeoDataFrame({"kind": classes}, geometry=geoms, crs=CRS), gpkg)
    # later features win where they overlap, on both sides of the comparison
    write_pair(tmp_path / "s.panoptic.tif", pc, pi)
    write_pair(tmp_path / "ref.tif", rc, ri, tags=False)
    reports = []
    for ref in (tmp_path / "ref.tif", gpkg):
        out = tmp_path / f"rep_{ref.suffix[1:]}"
        res = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "s.panoptic.tif"), str(ref), "-o", str(out),
                                       "--panoptic", "--class-field", "kind", "--no-audit", "--chunk-size", "128"])
        assert res.exit_code == 0, res.output
        reports.append(json.loads((out / "report.json").read_text())["panoptic"])
    assert reports[0] == reports[1]
    assert reports[0]["per_class"][1]["tp"] > 30


def test_panoptic_bad_inputs_get_one_line(tmp_path):
    (rc, ri), (pc, pi) = make_scene(1, 200, 300)
    write_pair(tmp_path / "ref.tif", rc, ri, tags=False)
    with rasterio.open(tmp_path / "one.tif", "w", driver="GTiff", width=300, height=200, count=1, dtype="uint8",
                       crs=CRS, transform=T) as d:
        d.write(pc[None].astype(np.uint8))
    cases = [
        (["evaluate", str(tmp_path / "one.tif"), str(tmp_path / "ref.tif")], "needs two bands"),
        (["evaluate", str(write_pair(tmp_path / "x.panoptic.tif", pc, pi, tags=False)), str(tmp_path / "ref.tif")],
         "has no geoseg class metadata"),
    ]
    bad = pc.copy()
    bad[50, 60] = 9
    cases.append((["evaluate", str(write_pair(tmp_path / "b.panoptic.tif", bad, pi)), str(tmp_path / "ref.tif")],
                  "holds class ids not in the class list: [9]"))
    for args, msg in cases:
        out = tmp_path / "out"
        res = CliRunner().invoke(cli, [*args, "-o", str(out), "--panoptic", "--no-audit"])
        assert res.exit_code != 0 and msg in res.output, res.output
        assert "Traceback" not in res.output and not (out.exists() and any(out.iterdir()))


@pytest.mark.parametrize("chunk", [64, 1000])
def test_scene_pairs_equal_whole_array_pairs(tmp_path, chunk):
    """The chunks' pair counts summed are the whole arrays' pair counts."""
    from geoseg.evaluation.panoptic import PairCounts, raster_segment_ids
    from geoseg.evaluation.panoptic_scenes import PanopticRaster, class_tables
    from geoseg.inference.tiling import chunk_grid
    from geoseg.vector.labels import Grid

    (rc, ri), (pc, pi) = make_scene(2, 300, 350)
    p = write_pair(tmp_path / "p.tif", pc, pi)
    r = write_pair(tmp_path / "r.tif", rc, ri)
    from geoseg.classes import ClassList

    known, things, _ = class_tables(ClassList.from_dict({"classes": CLASSES}))
    grid = Grid.of(p)
    parts = []
    for row in chunk_grid(300, 350, chunk):
        for c in row:
            a = PanopticRaster(str(r), False, None).read(grid, c.window)
            b = PanopticRaster(str(p), False, None).read(grid, c.window)
            parts.append(PairCounts.of(raster_segment_ids(a[0], a[1], a[0] == 255, things),
                                       raster_segment_ids(b[0], b[1], b[0] == 255, things)))
    whole = PairCounts.of(raster_segment_ids(rc, ri, rc == 255, things), raster_segment_ids(pc, pi, pc == 255, things))
    summed = PairCounts.concat(parts)
    for f in ("ref", "pred", "count"):
        np.testing.assert_array_equal(getattr(whole, f), getattr(summed, f))
