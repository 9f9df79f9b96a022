"""Scoring semantic benchmarks through geoseg's one metrics engine (``geoseg.evaluation.metrics``).

An adapter describes its label coding as two look-up tables onto the rows and
columns of one confusion matrix: reference values map to a scored class's row
or to "ignore"; predicted values map to a column, where the columns of labels
that are not scored (a benchmark's void labels, a prediction of 255) still
count as misses of the reference class. Everything else is shared: reading,
checking, summing the matrices over the dataset (never averaging per image)
and the report files of ``geoseg evaluate``.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geoseg.benchmarks.images import LUT_SIZE, check_same_size, check_values, few, read_labels
from geoseg.classes import ClassList
from geoseg.errors import GeosegError
from geoseg.evaluation.metrics import Confusion, coded_confusion

log = logging.getLogger("geoseg")


@dataclass(frozen=True)
class Pair:
    """One benchmark image: its prediction (None when missing) and ground truth."""

    name: str
    prediction: str | None
    reference: str


@dataclass(frozen=True)
class LabelCoding:
    """How one benchmark's label values map onto the confusion matrix (see ``metrics.coded_confusion``).

    ``rows``: reference value -> row, ``size`` for ignored, ``size + 1`` for illegal values;
    ``cols``: predicted value -> column, ``size`` for illegal values. ``classes`` are the scored rows.
    """

    classes: ClassList
    size: int
    rows: np.ndarray
    cols: np.ndarray
    describe: str  # what the legal values are, for error lines
    check: object = None  # optional check(path, prediction, legal values present, any illegal) -> refuse

    @classmethod
    def from_maps(cls, classes: ClassList, size: int, rows: dict, ignored, cols: dict, describe: str,
                  check=None) -> LabelCoding:
        r = np.full(LUT_SIZE, size + 1, dtype=np.uint16)
        r[list(ignored)] = size
        r[list(rows)] = list(rows.values())
        c = np.full(LUT_SIZE, size, dtype=np.uint16)
        c[list(cols)] = list(cols.values())
        return cls(classes, size, r, c, describe, check)


def identity_coding(classes: ClassList, reduce_zero_label: bool = False, void: int = 255) -> LabelCoding:
    """Class ids as values on both sides, ``void`` ignored in the reference and a miss in the prediction.

    ``reduce_zero_label`` (mmsegmentation's option) recodes the *reference* only: 0 becomes
    ignore and every other value moves down by one.
    """
    ids = [c.id for c in classes]
    size = max(ids) + 2  # the last column collects predictions of ``void``
    rows = {i + 1: i for i in ids} if reduce_zero_label else {i: i for i in ids}
    ignored = [void, 0] if reduce_zero_label else [void]
    cols = {**{i: i for i in ids}, void: size - 1}
    ref_desc = f"reference values {_ranges(list(rows))} and {void} void" + (
        ", 0 ignored (--reduce-zero-label)" if reduce_zero_label else "")
    return LabelCoding.from_maps(classes, size, rows, ignored, cols,
                                 f"the classes are {_ranges(ids)}, and {void} (void); {ref_desc}")


def _ranges(ids) -> str:
    ids = sorted(int(i) for i in ids)
    if ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(map(str, ids))


@dataclass
class ImageResult:
    """One image's confusion matrix, in the shape ``geoseg.evaluation.report`` reads."""

    name: str
    prediction: str
    reference: str
    conf: Confusion
    crs: str | None = None
    objects: dict | None = None
    errors: dict = field(default_factory=dict)
    map_cell: int = 0
    extra: dict = field(default_factory=dict)


def check_missing(pairs: list[Pair], allow_missing: bool, where: str) -> list[Pair]:
    missing = [p.name for p in pairs if p.prediction is None]
    if missing and not allow_missing:
        raise GeosegError(f"no prediction for {len(missing)} of {len(pairs)} images: {', '.join(missing[:8])}"
                          f"{' ...' if len(missing) > 8 else ''} (--allow-missing skips them)", where)
    if missing:
        log.warning("%s: skipped %d images without a prediction (--allow-missing): %s", where, len(missing),
                    ", ".join(missing[:8]))
    kept = [p for p in pairs if p.prediction is not None]
    if not kept:
        raise GeosegError("no image to score", where)
    return kept


def score_pair(pair: Pair, coding: LabelCoding, read_pred=None, extra=None) -> ImageResult:
    """The confusion matrix of one image (``read_pred`` may recode the prediction, e.g. trainIds)."""
    ref = read_labels(pair.reference, "ground truth")
    pred = read_labels(pair.prediction, "prediction") if read_pred is None else read_pred(pair.prediction)
    check_same_size(pred, ref, pair.prediction, pair.reference)
    cm, bad_ref, bad_pred, per_column = coded_confusion(ref, pred, coding.rows, coding.cols, coding.size)
    if coding.check is not None:
        coding.check(pair.prediction, pred, np.flatnonzero(per_column[:coding.size]), bad_pred)
    if bad_pred:  # name the values (the slow path runs only to write the error)
        check_values(pred, coding.cols < coding.size, pair.prediction, coding.describe)
    if bad_ref:
        check_values(ref, coding.rows <= coding.size, pair.reference, coding.describe)
    conf = Confusion(coding.size)
    conf.px += cm
    result = ImageResult(pair.name, pair.prediction, pair.reference, conf)
    if extra is not None:
        result.extra = extra(pred, ref, pair)
    return result


def score_pairs(pairs: list[Pair], coding: LabelCoding, read_pred=None, extra=None, threads: int | None = None):
    """Every pair's matrix, decoded on a few threads (PNG decoding and bincount release the GIL)."""
    threads = threads or min(4, os.cpu_count() or 1)
    if threads <= 1 or len(pairs) < 2:
        return [score_pair(p, coding, read_pred, extra) for p in pairs]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda p: score_pair(p, coding, read_pred, extra), pairs))


@dataclass(frozen=True)
class ReportSettings:
    """The ``settings`` block of report.json for a benchmark (geoseg evaluate's keys, plus the adapter's)."""

    adapter: str
    options: dict
    ignore: tuple = ()
    aoi: str | None = None
    iou_threshold: float | None = None
    min_reference_px: float | None = None
    grid_size: int | None = None
    class_field: str | None = None


def semantic_report(results: list[ImageResult], coding: LabelCoding, adapter: str, options: dict) -> dict:
    from geoseg.evaluation.report import build_report

    settings = ReportSettings(adapter, options)
    report = build_report(results, coding.classes, settings, outside_counts=True)
    report["settings"].update({"adapter": adapter, **options})
    report["benchmark"] = {"adapter": adapter, **options}
    return report


def publish(report: dict, results, classes: ClassList | None, output, overwrite: bool, markdown=None,
            html=None) -> Path:
    """Write report.json, report.md and report.html into ``output`` (temporary folder, then rename)."""
    import shutil

    from geoseg.io.output import clean_stale, output_dir, tmp_folder

    out = Path(output)
    clean_stale(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise GeosegError("output folder is not empty; pass --overwrite to replace its reports", out)
    with output_dir(out):
        work = tmp_folder(out, "report")
        try:
            if markdown is None:
                from geoseg.evaluation.report import write_reports

                write_reports(report, results, classes, work)
            else:
                from geoseg.evaluation.report import json_text

                (work / "report.json").write_text(json_text(report))
                (work / "report.md").write_text(markdown(report))
                (work / "report.html").write_text(html(report))
            for f in work.iterdir():
                os.replace(f, out / f.name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


__all__ = ["Pair", "LabelCoding", "identity_coding", "score_pairs", "semantic_report", "publish", "check_missing",
           "few"]
