"""The Cityscapes adapters against cityscapesScripts itself, on the real frankfurt sample.

cityscapesScripts 2.3.0 fails on numpy >= 2.4 (``np.in1d``) and, for instances, on 2.3, so it runs
in its own pinned environment (``build/cityscapes-ref``: numpy 2.2, cityscapesscripts 2.3.0, made by
``make test``) through tests/reference/cityscapes_official.py. Its scratch files (gtInstances.json,
matches.json) go to a temporary folder, not into the installed package or the working folder.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage

from geoseg import benchmarks
from geoseg.benchmarks.cityscapes import EVAL, LABELS
from geoseg.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
REF_PYTHON = ROOT / "build" / "cityscapes-ref" / "bin" / "python"
SCRIPT = ROOT / "tests" / "reference" / "cityscapes_official.py"
FRAME = "frankfurt_000000_000294"


@pytest.fixture(scope="module")
def official():
    assert REF_PYTHON.exists(), f"{REF_PYTHON} is missing: `make test` (or `make reference-env`) creates it"

    def run(kind: str, scratch: Path, pairs: list[tuple[Path, Path]], *extra: str) -> dict:
        scratch.mkdir(exist_ok=True)
        args = [str(REF_PYTHON), str(SCRIPT), kind, str(scratch)]
        for gt, pred in pairs:
            args += [str(gt), str(pred)]
        out = subprocess.run([*args, *extra], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture(scope="module")
def cs_root(shared_data) -> Path:
    return shared_data / "mmsegmentation" / "pseudo_cityscapes_dataset"


def gt_file(root: Path, kind: str) -> Path:
    return root / "gtFine" / "val" / "frankfurt" / f"{FRAME}_gtFine_{kind}.png"


def test_label_table_is_cityscapesscripts(official, tmp_path):
    code = ("import json; from cityscapesscripts.helpers.labels import labels; print(json.dumps([[l.name, l.id, "
            "l.trainId, l.category, l.hasInstances, l.ignoreInEval, list(l.color)] for l in labels]))")
    out = subprocess.run([str(REF_PYTHON), "-c", code], capture_output=True, text=True, check=True)
    theirs = json.loads(out.stdout)
    ours = [[lb.name, lb.id, lb.train_id, lb.category, lb.has_instances, lb.ignore, list(lb.color)] for lb in LABELS]
    assert ours == theirs
    assert len(EVAL) == 19


def _close(a, b) -> None:
    if b != b:  # NaN in the official output
        assert a is None
    else:
        assert a == pytest.approx(b, abs=1e-9)


def perturbed_labelids(gt: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.roll(gt, (2, 3), (0, 1))
    noise = rng.random(p.shape) < 0.05
    p[noise] = rng.choice([7, 8, 11, 21, 23, 24, 26, 0, 4], noise.sum())
    p[10:30, 10:60] = 26
    p[60:70, 100:140] = 24
    return p.astype(np.uint8)


def test_pixel_level_equals_official(cs_root, official, tmp_path):
    gt = np.asarray(Image.open(gt_file(cs_root, "labelIds")))
    preds = tmp_path / "preds" / "frankfurt"
    preds.mkdir(parents=True)
    pred = preds / f"{FRAME}_leftImg8bit.png"
    Image.fromarray(perturbed_labelids(gt, 0)).save(pred)
    report = benchmarks.evaluate("cityscapes", tmp_path / "preds", tmp_path / "report", root=cs_root)
    ref = official("pixel", tmp_path / "scratch", [(gt_file(cs_root, "labelIds"), pred)])
    assert [c["name"] for c in report["classes"]] == [lb.name for lb in EVAL]
    for c in report["classes"]:
        _close(c["iou"], ref["classScores"][c["name"]])
        _close(c["iiou"], ref["classInstScores"][c["name"]])
    _close(report["overall"]["mean_iou"], ref["averageScoreClasses"])
    _close(report["overall"]["mean_iiou"], ref["averageScoreInstClasses"])
    assert [c["name"] for c in report["categories"]] == ["flat", "construction", "object", "nature", "sky", "human",
                                                         "vehicle"]
    for c in report["categories"]:
        _close(c["iou"], ref["categoryScores"][c["name"]])
        _close(c["iiou"], ref["categoryInstScores"][c["name"]])
    _close(report["overall"]["category_iou"], ref["averageScoreCategories"])
    _close(report["overall"]["category_iiou"], ref["averageScoreInstCategories"])
    assert report["overall"]["mean_iiou"] is not None and 0 < report["overall"]["mean_iou"] < 1
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"| vehicle | {report['categories'][-1]['iou']:.4f} | {report['categories'][-1]['iiou']:.4f} |" in md
    assert "<table id=categories>" in (tmp_path / "report" / "report.html").read_text()


def test_train_ids_flag(cs_root, tmp_path):
    """trainIds predictions with --train-ids score as their labelIds conversion."""
    from geoseg.benchmarks.cityscapes import TRAIN_TO_ID

    gt = np.asarray(Image.open(gt_file(cs_root, "labelIds")))
    labelids = perturbed_labelids(gt, 1)
    to_train = np.full(256, 255, np.uint8)
    for lb in EVAL:
        to_train[lb.id] = lb.train_id
    train = to_train[labelids]
    for name, arr in (("a", TRAIN_TO_ID[train]), ("b", train)):
        (tmp_path / name).mkdir()
        Image.fromarray(arr).save(tmp_path / name / f"{FRAME}_pred.png")
    a = benchmarks.evaluate("cityscapes", tmp_path / "a", tmp_path / "ra", root=cs_root)
    b = benchmarks.evaluate("cityscapes", tmp_path / "b", tmp_path / "rb", root=cs_root, train_ids=True)
    assert a["classes"] == b["classes"] and a["categories"] == b["categories"]


def instance_prediction(cs_root: Path, folder: Path, seed: int) -> Path:
    """Masks built from gtFine_instanceIds: kept, dilated, shifted, missing; a false positive; one on void."""
    inst = np.asarray(Image.open(gt_file(cs_root, "instanceIds"))).astype(np.int64)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = []
    for k, v in enumerate(v for v in np.unique(inst) if v >= 1000):
        m = inst == v
        if k % 4 == 1:
            m = ndimage.binary_dilation(m, iterations=1)
        elif k % 4 == 2:
            m = np.roll(m, (2, 2), (0, 1))
        elif k % 4 == 3:
            continue
        Image.fromarray((m * 255).astype(np.uint8)).save(folder / f"m{k}.png")
        lines.append(f"m{k}.png {v // 1000} {rng.uniform(0.2, 1):.4f}")
    m = np.zeros_like(inst, bool)
    m[5:20, 200:230] = True
    Image.fromarray((m * 255).astype(np.uint8)).save(folder / "fp.png")
    lines.append("fp.png 26 0.9")
    m = np.isin(inst, [1, 2, 3, 4])
    m[:, :128] = False
    Image.fromarray((m * 255).astype(np.uint8)).save(folder / "void.png")
    lines.append("void.png 24 0.95")
    txt = folder / f"{FRAME}_pred.txt"
    txt.write_text("\n".join(lines) + "\n")
    return txt


@pytest.mark.parametrize("min_size", [100, 10])
def test_instance_level_equals_official(cs_root, official, tmp_path, min_size):
    """The default 100 px minimum leaves the 8x-downscaled persons unscored (NaN); 10 px scores them."""
    txt = instance_prediction(cs_root, tmp_path / "preds", seed=2)
    report = benchmarks.evaluate("cityscapes-instances", tmp_path / "preds", tmp_path / "report", root=cs_root,
                                 min_region_size=min_size)
    ref = official("instance", tmp_path / "scratch", [(gt_file(cs_root, "instanceIds"), txt)],
                   "--min-region-size", str(min_size))
    inst = report["instances"]
    _close(inst["AP"], ref["AP"])
    _close(inst["AP50"], ref["AP50"])
    for c in inst["per_class"]:
        _close(c["AP"], ref["classes"][c["name"]]["AP"])
        _close(c["AP50"], ref["classes"][c["name"]]["AP50"])
    person = next(c for c in inst["per_class"] if c["name"] == "person")
    assert (person["AP"] is None) == (min_size == 100)
    assert inst["AP"] is not None
    assert not (ROOT / "matches.json").exists()


def test_benchmark_predict_cityscapes_is_valid_for_the_official_script(cs_root, official, tmp_path):
    bundle = tmp_path / "cs-model"
    names = tmp_path / "cityscapes19.yaml"  # the 19 trainIds, no background
    names.write_text("classes: [" + ", ".join(lb.name for lb in EVAL) + "]\n")
    res = CliRunner().invoke(cli, ["model", "init", "unet", "--encoder", "resnet18", "--classes", str(names),
                                   "--tile-size", "128", "--overlap", "16", "--mean", "90,90,90", "--std",
                                   "50,50,50", "-o", str(bundle)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["benchmark", "predict", "cityscapes", str(bundle), "--root", str(cs_root),
                                   "--split", "val", "-o", str(tmp_path / "preds"), "--no-progress"])
    assert res.exit_code == 0, res.output
    pred = tmp_path / "preds" / f"{FRAME}_labelIds.png"
    arr = np.asarray(Image.open(pred))
    assert arr.shape == (128, 256) and set(np.unique(arr)) <= {lb.id for lb in EVAL}
    report = benchmarks.evaluate("cityscapes", tmp_path / "preds", tmp_path / "report", root=cs_root)
    ref = official("pixel", tmp_path / "scratch", [(gt_file(cs_root, "labelIds"), pred)])
    _close(report["overall"]["mean_iou"], ref["averageScoreClasses"])
    _close(report["overall"]["category_iou"], ref["averageScoreCategories"])


def test_training_set_recodes_labelids_to_the_official_trainids(cs_root):
    """The adapter's training look-up table turns gtFine labelIds into exactly gtFine_labelTrainIds."""
    from geoseg.benchmarks.training import training_set

    ts = training_set("cityscapes", cs_root, "val")
    assert ts.classes.names == [lb.name for lb in EVAL] and ts.classes.is_contiguous()
    image, mask = ts.files[FRAME]
    assert image.name == f"{FRAME}_leftImg8bit.png"
    label_ids = np.asarray(Image.open(mask))
    official = np.asarray(Image.open(gt_file(cs_root, "labelTrainIds")))
    # the sample's two PNGs were downscaled separately, so 77 edge pixels of 32768 disagree; for every
    # labelId, the trainId the official file gives most of its pixels is ours
    for v in np.unique(label_ids):
        values, counts = np.unique(official[label_ids == v], return_counts=True)
        assert ts.lut[v] == values[np.argmax(counts)], v
    assert (ts.lut[label_ids] == official).mean() > 0.997
