"""``geoseg predict --panoptic`` / ``--instances``: NAME.panoptic.tif and .gpkg from the real demo crop, the merge
rule checked pixel by pixel against the class raster, the instance raster and the instance table, identical for
chunk sizes that cut objects, and scored by ``evaluate --panoptic``."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.features import rasterize

from geoseg.classes import ClassList
from geoseg.cli.main import cli
from geoseg.data import RIO_IMAGE, RIO_LABELS
from tests.conftest import make_linear_bundle

DEMO = Path(RIO_IMAGE)


def run(*args: str) -> str:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def table(gpkg: Path) -> dict:
    df = pyogrio.read_dataframe(gpkg, layer="instances", read_geometry=False)
    return {c: df[c].to_numpy() for c in df.columns}


def expected_merge(semantic: np.ndarray, instances: np.ndarray, tab: dict, stuff: set[int], thing_class: dict,
                   score: float = 0.5, overlap: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The documented rule, written out plainly."""
    visible = {int(i): int((instances == i).sum()) for i in tab["instance_id"]}
    kept = {int(i) for i, s, px, c in zip(tab["instance_id"], tab["score"], tab["pixels"], tab["class_id"])
            if s >= score and visible[int(i)] >= overlap * px and int(c) in thing_class}
    cls = np.full(semantic.shape, 255, np.int64)
    for c in stuff:
        cls[semantic == c] = c
    inst = np.zeros(semantic.shape, np.int64)
    by_id = dict(zip(tab["instance_id"].astype(int).tolist(), tab["class_id"].astype(int).tolist()))
    for i in kept:
        m = instances == i
        cls[m], inst[m] = thing_class[by_id[i]], i
    return cls, inst


@pytest.fixture(scope="module")
def panoptic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pan")
    run("predict", "buildings-rgb", str(DEMO), "-o", str(out / "a"), "--panoptic", "--no-progress")
    run("predict", "buildings-rgb", str(DEMO), "-o", str(out / "b"), "--panoptic", "--no-progress", "--chunk-size",
        "300")
    return out


def test_panoptic_output_follows_the_rule_on_the_demo_crop(panoptic_run):
    a = panoptic_run / "a"
    stem = DEMO.stem
    pan = read(a / f"{stem}.panoptic.tif")
    sem, inst = read(a / f"{stem}.classes.tif")[0], read(a / f"{stem}.instances.tif")[0]
    tab = table(a / f"{stem}.instances.gpkg")
    cls, ids = expected_merge(sem, inst, tab, {0}, {1: 1})
    np.testing.assert_array_equal(pan[0], cls)
    np.testing.assert_array_equal(pan[1], ids)
    assert len(np.unique(ids)) > 200  # hundreds of buildings, each its own segment
    with rasterio.open(a / f"{stem}.panoptic.tif") as src:
        classes = ClassList.from_dict({"classes": json.loads(src.tags()["GEOSEG_CLASSES"])})
        assert src.dtypes == ("uint32", "uint32") and src.overviews(1) and src.crs is not None
        assert src.descriptions == ("class id (255: no prediction)", "instance id (0: stuff)")
    assert [(c.name, c.isthing) for c in classes] == [("background", False), ("building", True)]
    assert 'paletteEntry value="1"' in (a / f"{stem}.panoptic.qml").read_text()
    # the GeoPackage: the stuff regions, and one polygon per thing covering exactly its pixels
    layers = dict(pyogrio.list_layers(a / f"{stem}.panoptic.gpkg"))
    assert {"background", "things", "layer_styles"} <= set(layers)
    things = gpd.read_file(a / f"{stem}.panoptic.gpkg", layer="things")
    assert sorted(things.instance_id) == sorted(set(np.unique(ids).tolist()) - {0})
    with rasterio.open(a / f"{stem}.panoptic.tif") as src:
        t, shape = src.transform, (src.height, src.width)
    burnt = rasterize(zip(things.geometry, things.instance_id), out_shape=shape, transform=t, fill=0, dtype="int64")
    np.testing.assert_array_equal(burnt, ids)
    bg = gpd.read_file(a / f"{stem}.panoptic.gpkg", layer="background")
    burnt_bg = rasterize(((g, 1) for g in bg.geometry), out_shape=shape, transform=t, fill=0, dtype="uint8")
    np.testing.assert_array_equal(burnt_bg == 1, pan[0] == 0)


def test_panoptic_output_identical_for_chunk_sizes(panoptic_run):
    stem = DEMO.stem
    np.testing.assert_array_equal(read(panoptic_run / "a" / f"{stem}.panoptic.tif"),
                                  read(panoptic_run / "b" / f"{stem}.panoptic.tif"))
    t1 = gpd.read_file(panoptic_run / "a" / f"{stem}.panoptic.gpkg", layer="things").sort_values("instance_id")
    t2 = gpd.read_file(panoptic_run / "b" / f"{stem}.panoptic.gpkg", layer="things").sort_values("instance_id")
    assert list(t1.instance_id) == list(t2.instance_id)
    assert all(shapely.equals(g1, g2) for g1, g2 in zip(t1.geometry, t2.geometry))


def test_panoptic_prediction_scores_against_the_footprints(panoptic_run, tmp_path):
    stem = DEMO.stem
    ref = Path(RIO_LABELS)
    out = run("evaluate", str(panoptic_run / "a" / f"{stem}.panoptic.tif"), str(ref), "-o", str(tmp_path / "r"),
              "--panoptic", "--reference-class", "building", "--no-audit", "--no-progress")
    rep = json.loads((tmp_path / "r" / "report.json").read_text())["panoptic"]
    building = next(c for c in rep["per_class"] if c["name"] == "building")
    assert building["isthing"] and building["tp"] > 50 and building["fn"] > building["tp"]
    assert rep["Stuff"]["pq"] > 0.85 and 0.1 < rep["Things"]["pq"] < 0.4
    assert "panoptic Things: PQ" in out


def test_instances_from_a_second_bundle(tmp_path):
    """--instances: a semantic model's stuff (background, water), buildings-rgb's buildings as things."""
    sem_bundle = make_linear_bundle(tmp_path / "linear")
    out = tmp_path / "o"
    run("predict", str(sem_bundle), str(DEMO), "-o", str(out), "--instances", "buildings-rgb", "--no-progress",
        "--thing-score", "0.6")
    stem = DEMO.stem
    files = sorted(p.name for p in out.iterdir() if not p.name.endswith((".qml", ".aux.xml")))
    assert files == sorted(f"{stem}.{k}" for k in ("classes.tif", "instances.tif", "instances.gpkg", "panoptic.tif",
                                                   "panoptic.gpkg"))
    pan = read(out / f"{stem}.panoptic.tif")
    sem, inst = read(out / f"{stem}.classes.tif")[0], read(out / f"{stem}.instances.tif")[0]
    cls, ids = expected_merge(sem, inst, table(out / f"{stem}.instances.gpkg"), {0, 2}, {1: 1}, score=0.6)
    np.testing.assert_array_equal(pan[0], cls)
    np.testing.assert_array_equal(pan[1], ids)
    assert (pan[0] == 2).any() and (pan[1] > 0).any() and (pan[0] == 255).any()
    with rasterio.open(out / f"{stem}.panoptic.tif") as src:
        names = [(c["name"], c.get("isthing", False)) for c in json.loads(src.tags()["GEOSEG_CLASSES"])]
    assert names == [("background", False), ("building", True), ("water", False)]


def test_overlap_rule_and_bad_options(tmp_path):
    """A lower-scoring mask left with less than half of itself is dropped; thresholds are checked."""
    from geoseg.instances.panoptic import PanopticRule, compose, panoptic_classes
    from geoseg.io.raster import inspect_scene

    t = rasterio.transform.from_origin(0, 100, 1, 1)
    prof = dict(driver="GTiff", width=40, height=30, count=1, crs="EPSG:32633", transform=t)
    sem = np.zeros((30, 40), np.uint8)
    sem[:, 20:] = 2
    inst = np.zeros((30, 40), np.uint32)
    inst[5:15, 5:15] = 1  # 100 px, all visible
    inst[5:15, 15:18] = 2  # 30 of its 100 px visible: dropped
    inst[20:25, 25:35] = 3  # score 0.3: dropped
    with rasterio.open(tmp_path / "c.tif", "w", dtype="uint8", **prof) as d:
        d.write(sem[None])
    with rasterio.open(tmp_path / "i.tif", "w", dtype="uint32", **prof) as d:
        d.write(inst[None])
    frame = gpd.GeoDataFrame({"instance_id": [1, 2, 3], "class_id": [1, 1, 1], "score": [0.9, 0.8, 0.3],
                              "pixels": [100, 100, 50]},
                             geometry=[shapely.box(0, 0, 1, 1)] * 3, crs="EPSG:32633")
    pyogrio.write_dataframe(frame, tmp_path / "i.gpkg", layer="instances")
    semantic = ClassList.from_names(["background", "building", "road"], background=False)
    pan, mapping = panoptic_classes(semantic, semantic, (1,))
    info = inspect_scene(tmp_path / "c.tif", (), True)
    compose(tmp_path / "c.tif", tmp_path / "i.tif", tmp_path / "i.gpkg", info, semantic, pan, mapping,
            PanopticRule(), tmp_path / "p.tif", tmp_path / "p.gpkg", 16)
    got = read(tmp_path / "p.tif")
    assert set(np.unique(got[1]).tolist()) == {0, 1}
    assert (got[0][inst == 2] == 0).all() and (got[0][inst == 3] == 2).all() and (got[0][inst == 1] == 1).all()
    for flag in ("--thing-score", "--thing-overlap"):
        res = CliRunner().invoke(cli, ["predict", "buildings-rgb", str(DEMO), "-o", str(tmp_path / "x"), "--panoptic",
                                       flag, "1.5"])
        assert res.exit_code != 0 and f"{flag} must be in [0, 1], got 1.5" in res.output
    res = CliRunner().invoke(cli, ["predict", str(make_linear_bundle(tmp_path / "lin")), str(DEMO), "-o",
                                   str(tmp_path / "y"), "--panoptic"])
    assert res.exit_code != 0 and "--panoptic needs a bundle with object channels" in res.output
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())


def test_coco_panoptic_export_and_import_round_trip(panoptic_run, tmp_path):
    """NAME.panoptic.tif -> COCO panoptic chips -> georeferenced rasters: every chip equals its window."""
    stem = DEMO.stem
    src_tif = panoptic_run / "a" / f"{stem}.panoptic.tif"
    run("benchmark", "export", "coco-panoptic", str(src_tif), "-o", str(tmp_path / "chips"), "--chip-size", "256")
    data = json.loads((tmp_path / "chips" / "panoptic.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["background", "building"]
    assert data["categories"][1]["isthing"] == 1 and len(data["annotations"]) == len(data["images"]) > 10
    # the exported chips score as themselves: PQ 1
    rep = run("benchmark", "evaluate", "coco-panoptic", str(tmp_path / "chips" / "panoptic.json"), "--annotations",
              str(tmp_path / "chips" / "panoptic.json"), "-o", str(tmp_path / "rep"))
    assert "All: PQ 1.0000" in rep
    out = run("benchmark", "import", "coco-panoptic", str(tmp_path / "chips" / "panoptic.json"), "-o",
              str(tmp_path / "back"))
    assert len(out.split()) == len(data["images"])
    with rasterio.open(src_tif) as src:
        for im in data["images"]:
            want = src.read([1, 2], window=rasterio.windows.Window(im["col"], im["row"], im["width"], im["height"]))
            with rasterio.open(tmp_path / "back" / f"{Path(im['file_name']).stem}.panoptic.tif") as got:
                np.testing.assert_array_equal(got.read(), want)
                assert got.crs == src.crs
                assert got.transform == src.window_transform(
                    rasterio.windows.Window(im["col"], im["row"], im["width"], im["height"]))
    res = CliRunner().invoke(cli, ["benchmark", "export", "coco-panoptic", str(src_tif), str(RIO_LABELS), "-o",
                                   str(tmp_path / "x")])
    assert res.exit_code != 0 and "give no LABELS" in res.output


def test_benchmark_predict_coco_panoptic_scores_as_pq_compute(tmp_path):
    """benchmark predict coco-panoptic: the demo crop's chips through buildings-rgb --panoptic, written as COCO
    panoptic results; scored by geoseg and by pq_compute alike."""
    from PIL import Image
    from rasterio.features import rasterize

    from geoseg.benchmarks.coco_panoptic import raster_to_segments, write_panoptic
    from tests.test_panoptic import assert_equal_to_official, official

    with rasterio.open(DEMO) as src:
        img, t, crs, shape = src.read([1, 2, 3]), src.transform, src.crs, (src.height, src.width)
    feats = gpd.read_file(RIO_LABELS).to_crs(crs)
    inst = rasterize(((g, i + 1) for i, g in enumerate(feats.geometry)), out_shape=shape, transform=t, dtype="int64")
    things = np.zeros(256, bool)
    things[1] = True
    (tmp_path / "images").mkdir()
    entries = []
    for r in range(0, shape[0] - 384 + 1, 384):
        for c in range(0, shape[1] - 384 + 1, 384):
            name = f"chip_{r}_{c}"
            Image.fromarray(np.moveaxis(img[:, r:r + 384, c:c + 384], 0, -1)).save(tmp_path / "images" / f"{name}.png")
            i = inst[r:r + 384, c:c + 384]
            ids, info = raster_to_segments((i > 0).astype(np.int64), i, things, reference=True)
            entries.append(({"id": len(entries) + 1, "file_name": f"{name}.png", "height": 384, "width": 384}, ids,
                            info))
    cats = [{"id": 0, "name": "background", "isthing": 0}, {"id": 1, "name": "building", "isthing": 1}]
    write_panoptic(tmp_path / "gt", tmp_path / "gt.json", entries, cats)
    out = run("benchmark", "predict", "coco-panoptic", "buildings-rgb", "--root", str(tmp_path / "images"),
              "--annotations", str(tmp_path / "gt.json"), "-o", str(tmp_path / "preds"), "--no-progress")
    assert "panoptic results:" in out
    pred = tmp_path / "preds" / "panoptic.json"
    data = json.loads(pred.read_text())
    assert [a["image_id"] for a in data["annotations"]] == list(range(1, len(entries) + 1))
    theirs = official("coco", str(tmp_path / "gt.json"), str(tmp_path / "gt"), str(pred), str(pred.with_suffix("")))
    rep = run("benchmark", "evaluate", "coco-panoptic", str(pred), "--annotations", str(tmp_path / "gt.json"),
              "-o", str(tmp_path / "rep"))
    ours = json.loads((tmp_path / "rep" / "report.json").read_text())["panoptic"]
    assert_equal_to_official(ours, theirs)
    assert ours["Things"]["pq"] > 0.1 and "Things: PQ" in rep
    res = CliRunner().invoke(cli, ["benchmark", "predict", "coco-panoptic", "buildings-rgb", "--root",
                                   str(tmp_path / "images"), "-o", str(tmp_path / "x")])
    assert res.exit_code != 0 and "needs --annotations" in res.output
