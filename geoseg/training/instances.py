"""Training instance bundles (``model: {architecture: maskrcnn}``) with geoseg's training machinery.

Chips come from georeferenced scenes with vector footprints (each feature one instance, burnt per
chip, objects cut by the chip edge clipped) or from COCO chips (``chips: {coco: annotations.json}``,
e.g. ``geoseg benchmark export coco``). The same spatial-block validation, seeding, augmentation,
``--resume``, safetensors checkpoints and ``metrics.csv`` as semantic training; each epoch is scored
on the held-out blocks (or chips) by mask AP (COCOeval, through the COCO adapter) and SpaceNet F1
(objects matched one-to-one at IoU >= 0.5), and the best mask AP is kept.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from geoseg.errors import GeosegError
from geoseg.inference.predictor import resolve_device
from geoseg.io.raster import ground_sample_distance, read_window
from geoseg.models.bundle import META_NAME, BundleMeta, save_bundle
from geoseg.training.config import TrainConfig
from geoseg.training.data import SceneChips, augment, band_statistics, open_scene
from geoseg.vector.labels import VectorLabels, read_instances

log = logging.getLogger("geoseg")
MIN_PIXELS = 4  # instances smaller than this in a chip are not targets


def targets_from_ids(ids: np.ndarray, classes: dict[int, int]) -> dict:
    """torchvision targets (boxes, labels, masks) from an instance-id map."""
    found = [int(v) for v in np.unique(ids) if v > 0]
    masks, boxes, labels = [], [], []
    for v in found:
        m = ids == v
        if m.sum() < MIN_PIXELS:
            continue
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        labels.append(classes[v])
        masks.append(m)
    h, w = ids.shape
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks).astype(np.uint8)) if masks
            else torch.zeros((0, h, w), dtype=torch.uint8)}


class InstanceChips(SceneChips):
    """Random chips of the training blocks with their footprints as instances (raw pixel values: the model's
    transform normalises)."""

    def __init__(self, sources, cfg: TrainConfig, mean, std) -> None:
        super().__init__(sources, cfg, mean, std, instances=True)

    def __getitem__(self, i: int):
        rng, src, _, data, valid, _, ids = self.draw(i)
        classes = {int(v): int(src.labels.ids[v - 1]) for v in np.unique(ids) if v > 0}
        x = (data.astype(np.float32) - self.mean) / self.std
        x[:, ~valid] = 0
        x, ids = augment(x, ids, self.cfg.augment, rng)
        raw = x * self.std + self.mean
        return torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)), targets_from_ids(ids, classes)


class CocoChips(torch.utils.data.Dataset):
    """COCO chips (``geoseg benchmark export coco`` or any COCO folder): images beside the annotation JSON."""

    def __init__(self, annotations, cfg: TrainConfig, image_ids=None, mean=None, std=None) -> None:
        from geoseg.benchmarks.coco import load_annotations

        self.cfg, self.file = cfg, Path(annotations)
        data = load_annotations(self.file)
        self.images = {im["id"]: im for im in data["images"]}
        self.anns: dict[int, list] = {}
        for a in data["annotations"]:
            self.anns.setdefault(a["image_id"], []).append(a)
        known = {c.id for c in cfg.classes if c.vectorize}
        bad = sorted({a["category_id"] for a in data["annotations"]} - known)
        if bad:
            raise GeosegError(f"category ids {bad[:5]} are not instance classes of the config "
                              f"({', '.join(f'{c.id} {c.name}' for c in cfg.classes if c.vectorize)})", self.file)
        self.ids = list(image_ids) if image_ids is not None else sorted(self.images)
        self.mean = None if mean is None else np.asarray(mean, np.float32)[:, None, None]
        self.std = None if std is None else np.asarray(std, np.float32)[:, None, None]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def path(self, image_id: int) -> Path:
        return self.file.parent / self.images[image_id]["file_name"]

    def load(self, image_id: int) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
        """(raw image (C, h, w) float32, instance ids, classes) of one chip."""
        import rasterio
        from pycocotools import mask as mask_utils

        path = self.path(image_id)
        try:
            with rasterio.open(path) as src:
                im = src.read([b for b in self.cfg.bands]).astype(np.float32)
        except (rasterio.errors.RasterioError, IndexError) as exc:
            raise GeosegError(f"cannot read the chip's bands {list(self.cfg.bands)} ({exc})", path) from None
        h, w = im.shape[1:]
        ids = np.zeros((h, w), dtype=np.int32)
        classes = {}
        for n, a in enumerate(self.anns.get(image_id, []), 1):
            seg = a["segmentation"]
            rles = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, list) or isinstance(seg.get("counts"), list) \
                else seg
            m = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles).astype(bool)
            ids[m] = n
            classes[n] = int(a["category_id"])
        return im, ids, classes

    def statistics(self) -> tuple[tuple, tuple]:
        n, s, ss = 0, 0.0, 0.0
        for i in self.ids:
            im = self.load(i)[0].reshape(len(self.cfg.bands), -1).astype(np.float64)
            n, s, ss = n + im.shape[1], s + im.sum(1), ss + np.square(im).sum(1)
        mean = s / n
        return tuple(map(float, mean)), tuple(float(max(v, 1e-6)) for v in np.sqrt(np.maximum(ss / n - mean**2, 0)))

    def __len__(self) -> int:
        return self.cfg.sampling.chips_per_epoch

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.cfg.train.seed, self.epoch, i])
        im, ids, classes = self.load(self.ids[int(rng.integers(len(self.ids)))])
        c = self.cfg.model.chip_size
        ph, pw = max(0, c - im.shape[1]), max(0, c - im.shape[2])
        if ph or pw:  # small chips are padded with the band means (0 once normalised)
            im = np.concatenate([im, np.broadcast_to(self.mean, (im.shape[0], im.shape[1], pw))], 2) if pw else im
            im = np.concatenate([im, np.broadcast_to(self.mean, (im.shape[0], ph, im.shape[2]))], 1) if ph else im
            ids = np.pad(ids, [(0, ph), (0, pw)])
        y = int(rng.integers(0, im.shape[1] - c + 1))
        x = int(rng.integers(0, im.shape[2] - c + 1))
        im, ids = im[:, y : y + c, x : x + c], ids[y : y + c, x : x + c]
        xn, ids = augment((im - self.mean) / self.std, ids, self.cfg.augment, rng)
        raw = xn * self.std + self.mean
        return torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32)), targets_from_ids(ids, classes)


def _collate(batch):
    return tuple(zip(*batch))


def _mask_polygons(masks: list[np.ndarray]):
    import shapely
    from rasterio import features

    out = []
    for m in masks:
        parts = [shapely.geometry.shape(g) for g, v in features.shapes(m.astype(np.uint8), mask=m) if v]
        out.append(shapely.union_all(parts) if parts else shapely.Polygon())
    return out


def scene_items(sources, cfg: TrainConfig, mean):
    """(raw image, instance ids, classes) of every held-out window of the scenes."""
    for src, windows in sources:
        for win in windows:
            data, valid = read_window(src.info, win, cfg.bands)
            ids, classes = read_instances(src.labels, src.grid, win)
            ids[~valid] = 0
            yield np.where(valid, data.astype(np.float32), np.asarray(mean, np.float32)[:, None, None]), ids, classes


@torch.inference_mode()
def validate(model, items, cfg: TrainConfig, device) -> dict:
    """Mask AP (COCOeval) and SpaceNet F1 of the model on ``(raw image, instance ids, classes)`` items."""
    from pycocotools import mask as mask_utils

    from geoseg.benchmarks.coco import coco_eval
    from geoseg.evaluation.metrics import match_objects

    model.eval()
    images, gts, dts = [], [], []
    tp = fp = fn = 0
    for x, ids, classes in items:
        out = model([torch.from_numpy(np.ascontiguousarray(x)).to(device)])[0]
        image_id = len(images) + 1
        h, w = ids.shape
        images.append({"id": image_id, "height": h, "width": w})
        truth = targets_from_ids(ids, classes)
        gt_masks = [m.numpy().astype(bool) for m in truth["masks"]]
        for m, lab in zip(gt_masks, truth["labels"].tolist()):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            gts.append({"id": len(gts) + 1, "image_id": image_id, "category_id": lab, "iscrowd": 0,
                        "area": float(m.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                        "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}})
        kept = []
        for m, lab, score in zip((out["masks"][:, 0] >= 0.5).cpu().numpy(), out["labels"].tolist(),
                                 out["scores"].tolist()):
            if not m.any():
                continue
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            dts.append({"image_id": image_id, "category_id": lab, "score": score,
                        "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}})
            if score >= 0.5:
                kept.append(m)
        s = match_objects(_mask_polygons(gt_masks), _mask_polygons(kept))
        tp, fp, fn = tp + s.tp, fp + s.fp, fn + s.fn
    model.train()
    cats = [{"id": c.id, "name": c.name} for c in cfg.classes]
    ap = float("nan")
    if gts and dts:
        stats, _, _ = coco_eval({"images": images, "annotations": gts, "categories": cats}, dts, "segm")
        ap = max(stats[0], 0.0)
    elif gts:
        ap = 0.0
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"mask_ap": ap, "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "fp": fp, "fn": fn}


def train_instances(cfg: TrainConfig, out: Path, resume: bool, progress: bool, stop_after: int | None) -> Path:
    from geoseg.models.maskrcnn import create_instance_model
    from geoseg.training.checkpoints import CHECKPOINT, jsonable, optimization, save_checkpoint

    tc = cfg.train
    coco = cfg.chips.coco if cfg.chips is not None else None
    if not cfg.scenes and not coco:
        raise GeosegError("instance training reads scenes with vector footprints (scenes: [...]) or COCO chips "
                          "(chips: {coco: annotations.json})", cfg.source)
    if cfg.augment.scale or cfg.augment.rotate:
        raise GeosegError("augment.scale and augment.rotate are for semantic training; instance training "
                          "augments with flips, 90° turns, brightness and contrast", cfg.source)
    state = json.loads((out / CHECKPOINT / "state.json").read_text()) if resume else None
    if cfg.scenes:
        sources = [open_scene(s, cfg) for s in cfg.scenes]
        bad = [s.info.path for s in sources if not isinstance(s.labels, VectorLabels)]
        if bad:
            raise GeosegError("instance training needs vector labels (each feature one instance)", bad[0])
        val_sources = [(s, s.validation_windows()) for s in sources]
        mean, std = (tuple(state["mean"]), tuple(state["std"])) if state else band_statistics(sources, cfg.bands)
        dataset = InstanceChips(sources, cfg, mean, std)
        has_validation = any(len(w) for _, w in val_sources)
        gsd, first_path = ground_sample_distance(sources[0].info), sources[0].info.path

        def val_items():
            return scene_items(val_sources, cfg, mean)
    else:
        probe = CocoChips(coco, cfg)
        ids = sorted(probe.images)
        n_val = max(1, round(len(ids) * cfg.validation.fraction)) if len(ids) > 1 else 0
        order = np.random.default_rng(tc.seed).permutation(len(ids))
        val_ids, train_ids = [ids[i] for i in order[:n_val]], [ids[i] for i in order[n_val:]] or ids
        mean, std = (tuple(state["mean"]), tuple(state["std"])) if state else CocoChips(coco, cfg,
                                                                                         train_ids).statistics()
        dataset = CocoChips(coco, cfg, train_ids, mean, std)
        has_validation = bool(val_ids)
        gsd, first_path = None, str(probe.path(ids[0]))

        def val_items():
            for i in val_ids:
                yield dataset.load(i)
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)
    m = cfg.model
    model = create_instance_model(m.architecture, m.encoder, len(cfg.bands), len(cfg.classes), mean, std,
                                  m.tile_size, m.arch_params).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched, start, best = optimization(params, tc, out, model, resume)
    import rasterio

    with rasterio.open(first_path) as first:
        dtype = first.dtypes[cfg.bands[0] - 1]
    meta = BundleMeta(m.architecture, m.encoder, cfg.bands, mean, std, cfg.classes, tile_size=m.tile_size,
                      overlap=m.overlap, gsd=gsd, arch_params=m.arch_params)
    metrics_path = out / "metrics.csv"
    if not resume or not metrics_path.exists():
        with open(metrics_path, "w", newline="") as f:
            csv.writer(f).writerow(["epoch", "train_loss", "val_mask_ap", "val_f1", "lr"])
    from tqdm import tqdm

    for epoch in range(start, tc.epochs):
        torch.manual_seed(tc.seed * 1_000_003 + epoch)
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=tc.batch_size, shuffle=False, num_workers=tc.workers,
                                             drop_last=True, collate_fn=_collate,
                                             multiprocessing_context="spawn" if tc.workers else None)
        model.train()
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not progress, leave=False)
        for xs, ts in bar:
            xs = [x.to(device) for x in xs]
            ts = [{k: v.to(device) for k, v in t.items()} for t in ts]
            opt.zero_grad(set_to_none=True)
            loss = sum(model(xs, ts).values())
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        sched.step()
        v = validate(model, val_items(), cfg, device) if has_validation else \
            {"mask_ap": float("nan"), "f1": float("nan")}
        row = [epoch + 1, float(np.mean(losses)) if losses else float("nan"), v["mask_ap"], v["f1"],
               opt.param_groups[0]["lr"]]
        with open(metrics_path, "a", newline="") as f:
            csv.writer(f).writerow(row)
        log.warning("epoch %d/%d: loss %.4f, validation mask AP %.4f, F1 %.4f", epoch + 1, tc.epochs, row[1],
                    v["mask_ap"], v["f1"])
        score = -1.0 if np.isnan(v["mask_ap"]) else v["mask_ap"]
        if score > best or not has_validation or not (out / META_NAME).exists():
            best = max(best, score)
            extra = {"validation": {"epoch": epoch + 1, **{k: (None if isinstance(x, float) and np.isnan(x) else x)
                                                            for k, x in v.items()}},
                     "train_config": jsonable(cfg.raw), "input": {"dtype": dtype}}
            save_bundle(model, replace(meta, extra=extra), out / ".bundle-new", overwrite=True)
            for f in ("geoseg.json", "model.safetensors"):
                os.replace(out / ".bundle-new" / f, out / f)
            shutil.rmtree(out / ".bundle-new", ignore_errors=True)
        save_checkpoint(out, model, opt, sched, epoch, best, mean, std)
        if stop_after is not None and epoch + 1 >= stop_after:
            return out
    return out
