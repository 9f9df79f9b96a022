"""Panoptic quality against the official scorers: panopticapi's ``pq_compute`` (panopticapi-lite from PyPI) and
cityscapesScripts' panoptic conversion and evaluation, run in the pinned reference environment
(``build/cityscapes-ref``, made by ``make test``) through tests/reference/panoptic_official.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from geoseg import benchmarks
from geoseg.benchmarks.coco_panoptic import PanopticSet, id_to_rgb, rgb_to_id, score, write_panoptic
from geoseg.cli.main import cli
from geoseg.evaluation.panoptic import PairCounts, PanopticStats, Segment, match_segments

ROOT = Path(__file__).resolve().parents[1]
REF_PYTHON = ROOT / "build" / "cityscapes-ref" / "bin" / "python"
SCRIPT = ROOT / "tests" / "reference" / "panoptic_official.py"

# categories: two stuff, two things (COCO-like ids, not contiguous)
CATEGORIES = [{"id": 7, "name": "road", "isthing": 0}, {"id": 21, "name": "vegetation", "isthing": 0},
              {"id": 24, "name": "person", "isthing": 1}, {"id": 26, "name": "car", "isthing": 1},
              {"id": 33, "name": "bicycle", "isthing": 1}]


def official(*args: str) -> dict:
    assert REF_PYTHON.exists(), f"{REF_PYTHON} is missing: `make test` (or `make reference-env`) creates it"
    out = subprocess.run([str(REF_PYTHON), str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


class Painter:
    """Builds one image's segment ids and segments_info, segment by segment (later paint wins)."""

    def __init__(self, h: int, w: int, seed: int) -> None:
        self.ids = np.zeros((h, w), np.uint32)
        self.info: dict[int, dict] = {}
        self.rng = np.random.default_rng(seed)

    def new_id(self) -> int:
        while True:
            i = int(self.rng.integers(1, 1 << 24))
            if i not in self.info:
                return i

    def paint(self, mask: np.ndarray, category: int, crowd: int = 0, sid: int | None = None) -> int:
        sid = sid or self.new_id()
        self.ids[mask] = sid
        self.info[sid] = {"id": sid, "category_id": category, "iscrowd": crowd}
        return sid

    def segments(self) -> list[dict]:
        present = set(np.unique(self.ids).tolist())
        out = []
        for sid, s in self.info.items():
            if sid in present:
                out.append({**s, "area": int((self.ids == sid).sum())})
        return out


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[max(0, y0):y1, max(0, x0):x1] = True
    return m


def make_case(seed: int, h: int = 96, w: int = 128):
    """A reference and a prediction with touching instances, a merged and a split instance, a missed one,
    false positives, VOID, a crowd region, a prediction mostly on VOID and noise."""
    rng = np.random.default_rng(seed)
    gt, pr = Painter(h, w, seed), Painter(h, w, seed + 1000)
    split_row = int(rng.integers(30, 60))
    gt.paint(box(h, w, 0, split_row, 0, w), 7)
    gt.paint(box(h, w, split_row, h, 0, w), 21)
    road = pr.paint(box(h, w, 0, split_row + int(rng.integers(-6, 7)), 0, w), 7)
    pr.paint(box(h, w, split_row + 3, h, 0, w), 21)
    pr.ids[pr.ids == 0] = road
    # touching people: the prediction merges the first two
    y, x = int(rng.integers(5, 20)), int(rng.integers(5, 30))
    gt.paint(box(h, w, y, y + 20, x, x + 8), 24)
    gt.paint(box(h, w, y, y + 20, x + 8, x + 16), 24)
    pr.paint(box(h, w, y, y + 20, x, x + 16), 24)
    # a car the prediction splits in two, one half large enough to match
    y, x = int(rng.integers(40, 60)), int(rng.integers(40, 60))
    cut = int(rng.integers(3, 12))
    gt.paint(box(h, w, y, y + 14, x, x + 24), 26)
    pr.paint(box(h, w, y, y + 14, x, x + 24 - cut), 26)
    pr.paint(box(h, w, y, y + 14, x + 24 - cut, x + 24), 26)
    # a person found a little off
    y, x = int(rng.integers(30, 40)), int(rng.integers(100, 110))
    gt.paint(box(h, w, y, y + 16, x, x + 7), 24)
    pr.paint(box(h, w, y + 1, y + 17, x, x + 7), 24)
    # a missed bicycle, a false-positive person, a shifted car
    y, x = int(rng.integers(60, 80)), int(rng.integers(5, 30))
    gt.paint(box(h, w, y, y + 8, x, x + 10), 33)
    pr.paint(box(h, w, 2, 10, w - 12, w - 2), 24)
    y, x, dy = int(rng.integers(5, 30)), int(rng.integers(80, 100)), int(rng.integers(0, 6))
    gt.paint(box(h, w, y, y + 12, x, x + 12), 26)
    pr.paint(box(h, w, y + dy, y + dy + 12, x + dy, x + dy + 12), 26)
    # a crowd region of people; a predicted person on it (no FP), another half on it (FP or not)
    y, x = int(rng.integers(60, 75)), int(rng.integers(60, 90))
    gt.paint(box(h, w, y, y + 15, x, x + 20), 24, crowd=1)
    pr.paint(box(h, w, y + 2, y + 12, x + 2, x + 12), 24)
    pr.paint(box(h, w, y + 5, y + 15, x + 14, x + 14 + int(rng.integers(4, 12))), 24)
    # VOID in the reference; a predicted car mostly on it, and a stuff prediction across it
    gt.ids[h - 10:h, w - 30:w] = 0
    pr.paint(box(h, w, h - 9, h, w - 28, w - 18 + int(rng.integers(0, 12))), 26)
    # noise: a few pixels swapped between the prediction's segments
    noise = rng.random((h, w)) < 0.02
    pr.ids[noise] = rng.choice(np.unique(pr.ids), noise.sum())
    return (gt.ids, gt.segments()), (pr.ids, pr.segments())


def write_set(folder: Path, name: str, images: list, with_categories: bool) -> Path:
    data_dir = folder / name
    data_dir.mkdir(parents=True)
    anns, imgs = [], []
    for k, (ids, info) in enumerate(images):
        Image.fromarray(id_to_rgb(ids), "RGB").save(data_dir / f"img{k}.png")
        anns.append({"image_id": k + 1, "file_name": f"img{k}.png", "segments_info": info})
        imgs.append({"id": k + 1, "file_name": f"img{k}.jpg", "height": ids.shape[0], "width": ids.shape[1]})
    js = folder / f"{name}.json"
    data = {"images": imgs, "annotations": anns}
    if with_categories:
        data["categories"] = CATEGORIES
    js.write_text(json.dumps(data))
    return js


def assert_equal_to_official(ours: dict, theirs: dict) -> None:
    for k in ("All", "Things", "Stuff"):
        assert ours[k]["n"] == theirs[k]["n"]
        for m in ("pq", "sq", "rq"):
            assert ours[k][m] == pytest.approx(theirs[k][m], abs=1e-12, rel=0), (k, m)
    per = {str(c["id"]): c for c in ours["per_class"]}
    assert set(per) == set(theirs["per_class"])
    for c, v in theirs["per_class"].items():
        for m in ("pq", "sq", "rq"):
            assert per[c][m] == pytest.approx(v[m], abs=1e-12, rel=0), (c, m)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("panoptic")
    cases = [make_case(s) for s in range(6)]
    gt = write_set(folder, "gt", [c[0] for c in cases], True)
    pred = write_set(folder, "pred", [c[1] for c in cases], False)
    return folder, gt, pred, cases


def test_pq_equals_pq_compute_on_generated_cases(generated, tmp_path):
    folder, gt, pred, _ = generated
    theirs = official("coco", str(gt), str(folder / "gt"), str(pred), str(folder / "pred"))
    ours = benchmarks.get("coco-panoptic").score(str(pred), str(gt))["panoptic"]
    assert_equal_to_official(ours, theirs)
    # the cases exercise every rule: matches, misses, false positives, crowd and VOID absorbing predictions
    counts = {c["name"]: (c["tp"], c["fp"], c["fn"]) for c in ours["per_class"]}
    assert counts["person"][0] >= 4 and counts["person"][1] > 6 and counts["person"][2] >= 12
    assert counts["car"][0] >= 6 and counts["car"][1] > 0 and counts["bicycle"] == (0, 0, 6)
    assert counts["road"][0] == counts["vegetation"][0] == 6
    assert 0 < ours["All"]["pq"] < 1
    # the CLI writes the same numbers
    out = tmp_path / "rep"
    res = CliRunner().invoke(cli, ["benchmark", "evaluate", "coco-panoptic", str(pred), "--annotations", str(gt),
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert f"All: PQ {theirs['All']['pq']:.4f}" in res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["panoptic"]["All"]["pq"] == ours["All"]["pq"]
    assert "Panoptic quality" in (out / "report.html").read_text() and "| car | thing |" in \
        (out / "report.md").read_text()


def test_crowd_and_void_rules_one_by_one():
    """Hand-made: the union leaves out VOID; a prediction more than half on VOID + crowd is no false positive,
    one half on it is; crowd segments are never false negatives; only the last crowd segment of a category
    counts (the scorer keeps one per category)."""
    ref = np.zeros((10, 10), np.uint32)
    ref[:, :5] = 1  # stuff 7
    ref[:, 5:] = 2  # stuff 21
    ref[0:4, 0:4] = 10  # person
    ref[6:10, 6:10] = 11  # crowd of people (first crowd segment)
    ref[6:10, 0:2] = 12  # crowd of people (last crowd segment: the one the scorer keeps)
    ref[0:2, 6:10] = 0  # VOID
    pred = np.ones((10, 10), np.uint32)
    pred[:, 5:] = 2
    pred[0:4, 0:4] = 20  # matches the person
    pred[0:3, 6:10] = 21  # car: 8 px on VOID of 12: no FP
    pred[6:10, 6:9] = 22  # person on the first crowd region: an FP (only the last crowd region absorbs)
    pred[6:10, 0:2] = 23  # person on the kept crowd region: no FP
    ref_seg = {1: Segment(7), 2: Segment(21), 10: Segment(24), 11: Segment(24, True), 12: Segment(24, True)}
    pred_seg = {1: Segment(7), 2: Segment(21), 20: Segment(24), 21: Segment(26), 22: Segment(24), 23: Segment(24)}
    s = match_segments(PairCounts.of(ref, pred), ref_seg, pred_seg)
    assert (s[24].tp, s[24].fp, s[24].fn) == (1, 1, 0) and s[24].iou == 1.0
    assert (s[26].tp, s[26].fp, s[26].fn) == (0, 0, 0)
    # stuff 21: ref 50 - 8 (VOID) - 16 (crowd 11) = 26 px, pred 40 - 12 (car) - 12 (person 22) = 16 px;
    # intersection 16 - 0 on VOID... the union leaves out the prediction's VOID pixels (none here)
    inter = int(((ref == 2) & (pred == 2)).sum())
    union = int((ref == 2).sum() + (pred == 2).sum() - inter - ((ref == 0) & (pred == 2)).sum())
    assert s[21].tp == (1 if inter / union > 0.5 else 0)
    # pairs add up: four chunks give the whole image's counts
    parts = [PairCounts.of(ref[a:b, c:d], pred[a:b, c:d]) for a, b in ((0, 3), (3, 10)) for c, d in ((0, 7), (7, 10))]
    whole, summed = PairCounts.of(ref, pred), PairCounts.concat(parts)
    for f in ("ref", "pred", "count"):
        np.testing.assert_array_equal(getattr(whole, f), getattr(summed, f))


def test_bad_segments_get_one_line(generated, tmp_path):
    folder, gt, pred, cases = generated
    data = json.loads(pred.read_text())
    gone = data["annotations"][2]["segments_info"].pop(0)
    bad = tmp_path / "pred.json"
    bad.write_text(json.dumps(data))
    (tmp_path / "pred").symlink_to(folder / "pred")
    res = CliRunner().invoke(cli, ["benchmark", "evaluate", "coco-panoptic", str(bad), "--annotations", str(gt),
                                   "-o", str(tmp_path / "r")])
    assert res.exit_code != 0
    assert f"segment {gone['id']} is in the image but not in the segment list" in res.output
    assert "img2.png" in res.output and "Traceback" not in res.output and not (tmp_path / "r").exists()
    data["annotations"][2]["segments_info"] += [gone, dict(gone)]
    bad.write_text(json.dumps(data))
    res = CliRunner().invoke(cli, ["benchmark", "evaluate", "coco-panoptic", str(bad), "--annotations", str(gt),
                                   "-o", str(tmp_path / "r")])
    assert f"segment {gone['id']} is listed twice" in res.output and res.exit_code != 0
    data["annotations"][2]["segments_info"].pop()
    data["annotations"][2]["segments_info"][-1] = {**gone, "category_id": 99}
    bad.write_text(json.dumps(data))
    res = CliRunner().invoke(cli, ["benchmark", "evaluate", "coco-panoptic", str(bad), "--annotations", str(gt),
                                   "-o", str(tmp_path / "r")])
    assert f"segment {gone['id']} has unknown category_id 99" in res.output


def test_rgb_ids_round_trip():
    ids = np.random.default_rng(0).integers(0, 1 << 24, (33, 17)).astype(np.uint32)
    np.testing.assert_array_equal(rgb_to_id(id_to_rgb(ids)), ids)
    rgb = id_to_rgb(ids)
    assert (ids == rgb[..., 0] + 256 * rgb[..., 1].astype(np.uint32) + 65536 * rgb[..., 2].astype(np.uint32)).all()


def test_written_set_reads_back(generated, tmp_path):
    """write_panoptic (the export) and PanopticSet (the reader) round-trip ids and segments exactly."""
    _, _, _, cases = generated
    images = [({"id": k + 1, "file_name": f"img{k}.jpg"}, ids, info) for k, ((ids, info), _) in enumerate(cases)]
    write_panoptic(tmp_path / "set", tmp_path / "set.json", images, CATEGORIES)
    back = PanopticSet(tmp_path / "set.json")
    for (_image, ids, info), ann in zip(images, back.annotations):
        got, segs, _ = back.read(ann)
        np.testing.assert_array_equal(got, ids)
        assert {s["id"]: (s["category_id"], bool(s["iscrowd"]), s["area"]) for s in info} == \
            {k: (v.category, v.iscrowd, v.area) for k, v in segs.items()}
    stats, _, _ = score(tmp_path / "set.json", PanopticSet(tmp_path / "set.json"))
    assert all(s.fp == 0 and s.fn == 0 and s.iou == s.tp for s in stats.categories.values())


def test_cityscapes_panoptic_equals_cityscapesscripts(shared_data, tmp_path):
    """createPanopticImgs' conversion of the real frankfurt frame equals ours; a perturbed prediction scores
    as evalPanopticSemanticLabeling scores it."""
    from geoseg.benchmarks.cityscapes_panoptic import convert_frame, ground_truth

    src = shared_data / "mmsegmentation" / "pseudo_cityscapes_dataset"
    root = tmp_path / "cs"
    (root / "gtFine" / "val").mkdir(parents=True)
    (root / "gtFine" / "val" / "frankfurt").symlink_to(src / "gtFine" / "val" / "frankfurt")
    conv = tmp_path / "conv"
    conv.mkdir()
    official("cityscapes-convert", str(root), str(conv), "val")
    theirs_json = json.loads((conv / "cityscapes_panoptic_val.json").read_text())
    frame = "frankfurt_000000_000294"
    inst = np.asarray(Image.open(src / "gtFine" / "val" / "frankfurt" / f"{frame}_gtFine_instanceIds.png"))
    ids, info = convert_frame(inst)
    theirs_png = rgb_to_id(np.asarray(Image.open(conv / "cityscapes_panoptic_val" / f"{frame}_gtFine_panoptic.png")))
    np.testing.assert_array_equal(ids, theirs_png)
    assert info == theirs_json["annotations"][0]["segments_info"]
    assert [{k: v for k, v in c.items()} for c in theirs_json["categories"]] == \
        [{**c, "color": list(c["color"])} for c in __import__("geoseg.benchmarks.cityscapes_panoptic",
                                                              fromlist=["categories"]).categories()]
    # a prediction: the ground truth with people merged, a car missed, noise
    pred = ids.copy()
    people = [s["id"] for s in info if s["category_id"] == 24 and not s["iscrowd"]]
    pred[np.isin(pred, people[:2])] = people[0]
    cars = [s["id"] for s in info if s["category_id"] == 26 and not s["iscrowd"]]
    pred[pred == cars[0]] = [s["id"] for s in info if s["category_id"] == 7][0]
    rng = np.random.default_rng(3)
    noise = rng.random(pred.shape) < 0.03
    present = np.unique(pred[pred > 0])
    pred[noise] = rng.choice(present, noise.sum())
    seg = [{"id": int(i), "category_id": next(s["category_id"] for s in info if s["id"] == i)}
           for i in np.unique(pred) if i]
    (tmp_path / "pred").mkdir()
    Image.fromarray(id_to_rgb(pred), "RGB").save(tmp_path / "pred" / f"{frame}.png")
    (tmp_path / "pred.json").write_text(json.dumps({"annotations": [
        {"image_id": frame, "file_name": f"{frame}.png", "segments_info": seg}]}))
    theirs = official("cityscapes", str(conv / "cityscapes_panoptic_val.json"), str(conv / "cityscapes_panoptic_val"),
                      str(tmp_path / "pred.json"), str(tmp_path / "pred"), str(tmp_path / "res.json"))
    ours = benchmarks.get("cityscapes-panoptic").score(tmp_path / "pred.json", root, "val")["panoptic"]
    assert_equal_to_official(ours, theirs)
    # with the conversion's own files in place they are used, with the same result
    (root / "gtFine" / "cityscapes_panoptic_val.json").symlink_to(conv / "cityscapes_panoptic_val.json")
    (root / "gtFine" / "cityscapes_panoptic_val").symlink_to(conv / "cityscapes_panoptic_val")
    assert isinstance(ground_truth(root, "val"), PanopticSet)
    again = benchmarks.get("cityscapes-panoptic").score(tmp_path, root, "val")["panoptic"]
    assert_equal_to_official(again, theirs)


def test_stats_add_over_images():
    a, b = PanopticStats(), PanopticStats()
    a[1].tp, a[1].iou, b[1].fp, b[2].fn = 2, 1.5, 1, 3
    a += b
    assert (a[1].tp, a[1].fp, a[1].iou, a[2].fn) == (2, 1, 1.5, 3)
    summary = a.summary({1: True, 2: False, 3: False})
    assert summary["All"]["n"] == 2 and summary["Stuff"]["n"] == 1 and summary["per_class"][3]["pq"] == 0.0
