"""The training loop: epochs of chips, validation on held-out blocks, bundles and resumable checkpoints.

Checkpoints never pickle: the model, optimiser tensors and torch RNG state go to
safetensors, everything else (epoch, learning-rate schedule, parameter groups)
to JSON. Each epoch reseeds torch from ``(seed, epoch)`` and draws its chips
from ``(seed, epoch, index)``, so a resumed run ends with the same weights as
an uninterrupted one on the CPU.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F

from geoseg.classes import NODATA
from geoseg.errors import GeosegError
from geoseg.evaluation.metrics import class_scores, confusion, overall_scores
from geoseg.inference.predictor import resolve_device
from geoseg.io.output import output_dir, tmp_folder
from geoseg.io.raster import ground_sample_distance
from geoseg.models import create_model
from geoseg.models.bundle import META_NAME, BundleMeta, save_bundle
from geoseg.models.pretrained import load_encoder_weights
from geoseg.training.checkpoints import CHECKPOINT, jsonable, optimization, save_checkpoint
from geoseg.training.config import TrainConfig, load_config
from geoseg.training.data import ChipFolder, SceneChips, band_statistics, open_scene, read_labels

log = logging.getLogger("geoseg")


def _loss(logits: torch.Tensor, target: torch.Tensor, kind: str, k: int) -> torch.Tensor:
    """The sum of the terms named in ``kind`` (``ce+dice``, ``ce+lovasz``, ...), nodata pixels ignored.

    ``lovasz`` is the Lovász-softmax surrogate of the per-class IoU (Berman et al. 2018), as
    segmentation_models_pytorch implements it, over the whole batch."""
    terms = kind.split("+")
    total = logits.new_zeros(())
    if "ce" in terms:
        total = total + F.cross_entropy(logits, target, ignore_index=NODATA)
    if "dice" in terms:
        valid = (target != NODATA).unsqueeze(1)
        p = torch.softmax(logits, 1) * valid
        t = F.one_hot(target.clamp(0, k - 1), k).permute(0, 3, 1, 2).float() * valid
        inter = (p * t).sum((0, 2, 3))
        dice = (2 * inter + 1.0) / (p.sum((0, 2, 3)) + t.sum((0, 2, 3)) + 1.0)
        total = total + (1 - dice.mean())
    if "lovasz" in terms:
        from segmentation_models_pytorch.losses import LovaszLoss

        total = total + LovaszLoss("multiclass", ignore_index=NODATA)(logits, target)
    return total


def _object_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, weights) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice of each object channel (body, border, contact per class),
    weighted per channel, over the batch's valid (labelled) pixels."""
    t = target.float()
    v = valid.unsqueeze(1).to(logits.dtype)
    n = v.sum().clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * v).sum((0, 2, 3)) / n
    p = torch.sigmoid(logits) * v
    tv = t * v
    dice = 1 - (2 * (p * tv).sum((0, 2, 3)) + 1.0) / (p.sum((0, 2, 3)) + tv.sum((0, 2, 3)) + 1.0)
    w = torch.tensor(list(weights) * (logits.shape[1] // 3), dtype=logits.dtype, device=logits.device)
    return (w * (bce + dice)).sum()


def _pad32(x: np.ndarray) -> tuple[np.ndarray, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % 32, (-w) % 32
    if ph or pw:
        x = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)], mode="reflect")
    return x, h, w


@torch.inference_mode()
def validate(model, sources, cfg: TrainConfig, mean, std, device, objects: list | None = None) -> np.ndarray:
    """Confusion matrix of the model on every held-out block (and validation scene).

    ``objects``: a list that gets each window's object channels and reference instances
    (:class:`geoseg.training.decoding.ObjectWindow`) when the config has ``objects``.
    """
    from geoseg.io.raster import read_window

    k = len(cfg.classes)
    cm = np.zeros((k, k), dtype=np.int64)
    model.eval()
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    for src, windows in sources:
        for win in windows:
            data, valid = read_window(src.info, win, cfg.bands)
            lab = read_labels(src, win, valid)
            x = (data.astype(np.float32) - m) / s
            x[:, ~valid] = 0
            x, h, w = _pad32(x)
            logits = model(torch.from_numpy(np.ascontiguousarray(x))[None].to(device))
            pred = logits[0, :k, :h, :w].argmax(0).cpu().numpy()
            cm += confusion(lab, pred, k, valid=lab != NODATA)
            if objects is not None and cfg.objects is not None:
                from geoseg.training.decoding import ObjectWindow, reference_instances
                from geoseg.vector.labels import read_instances

                probs = torch.sigmoid(logits[0, k:, :h, :w].float()).cpu().numpy()
                probs[:, ~valid] = 0
                ids, _ = read_instances(src.labels, src.grid, win)
                ids[~valid] = 0
                objects.append(ObjectWindow(np.rint(probs * 255).astype(np.uint8),
                                            reference_instances(ids, src.labels.ids, tuple(cfg.objects.classes))))
    return cm


def _check_output(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> None:
    meta = out / META_NAME
    if resume:
        if not (out / CHECKPOINT / "state.json").exists():
            raise GeosegError("has no checkpoint to resume from", out)
        return
    if meta.exists() and not overwrite:
        try:
            old = json.loads(meta.read_text()).get("extra", {}).get("train_config")
        except json.JSONDecodeError:
            old = None
        if old != jsonable(cfg.raw):
            raise GeosegError("holds a different model; pass --overwrite to replace it (or --resume)", out)
    elif out.exists() and any(out.iterdir()) and not meta.exists() and not overwrite:
        raise GeosegError("is not empty and holds no geoseg bundle; pass --overwrite to use it", out)


def train(config: str | Path | TrainConfig, output: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, stop_after: int | None = None) -> Path:
    """Train a bundle into ``output``; returns the bundle path (the best validation epoch).

    ``stop_after`` ends the run after that many epochs, as an interruption would
    (the checkpoint is kept); ``--resume`` then continues it.
    """
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    out = Path(output)
    _check_output(out, cfg, resume, overwrite)
    if out.exists() and overwrite and not resume:
        shutil.rmtree(out)
    with output_dir(out):
        return _train(cfg, out, resume, progress, stop_after)


def _train(cfg: TrainConfig, out: Path, resume: bool, progress: bool, stop_after: int | None) -> Path:
    from geoseg.models.names import is_instance_architecture

    if is_instance_architecture(cfg.model.architecture):
        from geoseg.training.instances import train_instances

        return train_instances(cfg, out, resume, progress, stop_after)
    tc, k = cfg.train, len(cfg.classes)

    if cfg.scenes:
        sources = [open_scene(s, cfg) for s in cfg.scenes]
        val_sources = [(s, s.validation_windows()) for s in sources]
        val_sources += [(v, v.training_windows()) for v in (open_scene(s, cfg, held_out=False)
                                                            for s in cfg.validation.scenes)]
        if resume:
            st = json.loads((out / CHECKPOINT / "state.json").read_text())
            mean, std = tuple(st["mean"]), tuple(st["std"])
        else:
            mean, std = band_statistics(sources, cfg.bands)
        dataset = SceneChips(sources, cfg, mean, std)
        gsd = ground_sample_distance(sources[0].info)
        with rasterio.open(sources[0].info.path) as first:
            input_info = {"dtype": first.dtypes[cfg.bands[0] - 1]}
    else:
        if cfg.data is not None:  # a public benchmark's images and masks, recoded by its adapter
            from geoseg.benchmarks.training import training_set

            d = cfg.data
            bench = training_set(d.adapter, d.root, d.split, d.classes, d.reduce_zero_label)

            def folder(mean=None, std=None, names=None):
                return ChipFolder(None, None, cfg, mean, std, names=names, files=bench.files, lut=bench.lut)
        else:
            ch = cfg.chips
            if ch.coco:
                raise GeosegError("chips.coco (COCO instance chips) trains instance models (model.architecture: "
                                  "maskrcnn); semantic models read images and masks folders", cfg.source)

            def folder(mean=None, std=None, names=None):
                return ChipFolder(ch.images, ch.masks, cfg, mean, std, ch.ignore_index, names=names)
        probe = folder()
        names = probe.names
        n_val = max(1, round(len(names) * cfg.validation.fraction)) if len(names) > 1 else 0
        order = np.random.default_rng(tc.seed).permutation(len(names))
        val_names = [names[i] for i in order[:n_val]]
        train_names = [names[i] for i in order[n_val:]] or names
        mean, std = folder(names=train_names).statistics()
        dataset = folder(mean, std, names=train_names)
        val_sources = [("chips", val_names)]
        gsd = None
        input_info = {"dtype": probe.image_dtype()}

    has_validation = any(len(windows) for _, windows in val_sources)
    if not has_validation:
        log.warning("nothing is held out for validation (no validation blocks or scenes, or a single chip): "
                    "every epoch's score would be NaN, so the last epoch is saved; set validation.fraction, "
                    "validation.holdout or validation.scenes to pick the best epoch on held-out data")
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)
    n_obj = 3 * len(cfg.objects.classes) if cfg.objects else 0
    model = create_model(cfg.model.architecture, cfg.model.encoder, len(cfg.bands), k + n_obj, cfg.model.arch_params)
    provenance = {}
    if cfg.model.encoder_weights:
        provenance = load_encoder_weights(model, cfg.model.encoder_weights, cfg.model.encoder_weights_mapping,
                                          base=Path(cfg.source).parent if cfg.source else None)
        log.warning("encoder %s: pretrained weights from %s (%s mapping, %d tensors%s)", cfg.model.encoder,
                    provenance["source"] or provenance["file"], provenance["mapping"], provenance["tensors"],
                    f", stem adapted to {len(cfg.bands)} band(s)" if provenance["stem_adapted"] else "")
    init = _init_from_bundle(model, cfg) if cfg.model.init_from else None
    if init and not provenance:  # the encoder's pretrained weights came through the bundle fine-tuned from
        provenance = init.pop("encoder_weights", None) or {}
    model.to(device)
    if cfg.model.freeze_encoder:
        model.encoder.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched, start, best = optimization(params, tc, out, model, resume)
    if resume:
        log.info("%s: resuming after epoch %d", out, start)

    meta = BundleMeta(cfg.model.architecture, cfg.model.encoder, cfg.bands, mean, std, cfg.classes,
                      tile_size=cfg.model.tile_size, overlap=cfg.model.overlap, gsd=gsd,
                      arch_params=cfg.model.arch_params)
    metrics_path = out / "metrics.csv"
    header = ["epoch", "train_loss", "val_pixel_accuracy", "val_mean_iou", "lr",
              *[f"val_iou_{c.slug}" for c in cfg.classes]]
    if cfg.objects:  # the epoch is picked by object F1 with thresholds tuned on the same blocks
        header += ["val_object_f1", "val_object_tp", "val_object_fp", "val_object_fn", "decode_seed", "decode_mask",
                   "decode_min_area"]
    if not resume or not metrics_path.exists():
        with open(metrics_path, "w", newline="") as f:
            csv.writer(f).writerow(header)
    from tqdm import tqdm

    for epoch in range(start, tc.epochs):
        torch.manual_seed(tc.seed * 1_000_003 + epoch)
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=tc.batch_size, shuffle=False,
                                             num_workers=tc.workers, drop_last=True,
                                             persistent_workers=False, prefetch_factor=4 if tc.workers else None,
                                             # a forked worker can hang on the OpenMP pool torch already started
                                             multiprocessing_context="spawn" if tc.workers else None)
        model.train()
        if cfg.model.freeze_encoder:  # its BatchNorm statistics stay as loaded too
            model.encoder.eval()
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not progress, leave=False)
        for batch in bar:
            x = batch[0].to(device).contiguous(memory_format=torch.channels_last)
            y = batch[1].to(device)
            opt.zero_grad(set_to_none=True)
            logits = model(x)
            loss = _loss(logits[:, :k], y, tc.loss, k)
            if cfg.objects:
                loss = loss + _object_loss(logits[:, k:], batch[2].to(device), y != NODATA, cfg.objects.weights)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        sched.step()
        windows = [] if cfg.objects else None
        if cfg.scenes:
            cm = validate(model, val_sources, cfg, mean, std, device, windows)
        else:
            cm = _validate_chips(model, val_sources[0][1], dataset, device, k)
        scores, per = overall_scores(cm), class_scores(cm)
        miou = scores["mean_iou"]
        row = [epoch + 1, float(np.mean(losses)) if losses else float("nan"), scores["pixel_accuracy"], miou,
               opt.param_groups[0]["lr"], *[float(v) for v in per["iou"]]]
        if cfg.objects:
            from geoseg.training.decoding import tune_decoding

            decode, obj_scores = tune_decoding(windows)
            row += [obj_scores["f1"], obj_scores["tp"], obj_scores["fp"], obj_scores["fn"], decode.seed, decode.mask,
                    decode.min_area]
        with open(metrics_path, "a", newline="") as f:
            csv.writer(f).writerow(row)
        if has_validation and cfg.objects:
            log.warning("epoch %d/%d: loss %.4f, validation mIoU %.4f, object F1 %.4f (seed %.1f, mask %.1f, "
                        "min area %d px)", epoch + 1, tc.epochs, row[1], miou, obj_scores["f1"], decode.seed,
                        decode.mask, decode.min_area)
        elif has_validation:
            log.warning("epoch %d/%d: loss %.4f, validation mIoU %.4f", epoch + 1, tc.epochs, row[1], miou)
        else:
            log.warning("epoch %d/%d: loss %.4f", epoch + 1, tc.epochs, row[1])
        score = -1.0 if np.isnan(miou) else miou
        if cfg.objects and has_validation:  # object F1 first, mIoU breaks ties
            score = obj_scores["f1"] + 1e-6 * max(score, 0.0)
        # Without validation data the last epoch is the model.
        if score > best or not has_validation or not (out / META_NAME).exists():
            best = max(best, score)
            extra = {"validation": {"epoch": epoch + 1, **scores,
                                    "iou": {c.name: (None if np.isnan(v) else float(v))
                                            for c, v in zip(cfg.classes, per["iou"])}},
                     "train_config": jsonable(cfg.raw)}
            epoch_meta = meta
            if cfg.objects:
                from geoseg.models.bundle import ObjectChannels

                extra["validation"]["objects"] = {**obj_scores, "min_reference_px": 20,
                                                  "tuned_on": "validation blocks"}
                epoch_meta = replace(meta, objects=ObjectChannels(tuple(cfg.objects.classes), cfg.objects.border,
                                                                  cfg.objects.contact, decode.to_dict()))
            if provenance:
                extra["encoder_weights"] = provenance
            if init:
                extra["init_from"] = init
            if input_info.get("dtype"):
                extra["input"] = input_info
            save_bundle(model, replace(epoch_meta, extra=extra), out / ".bundle-new", overwrite=True,
                        dtype=torch.float16 if tc.half_weights else None)
            for f in ("geoseg.json", "model.safetensors"):
                os.replace(out / ".bundle-new" / f, out / f)
            shutil.rmtree(out / ".bundle-new", ignore_errors=True)
        save_checkpoint(out, model, opt, sched, epoch, best, mean, std)
        if stop_after is not None and epoch + 1 >= stop_after:
            return out
    if cfg.scenes and any(s.test for s in sources):
        _score_test_blocks(out, [(s, s.test_windows()) for s in sources if s.test], cfg, device)
    if cfg.scenes and has_validation:
        _record_precision_check(out, cfg)
    return out


def _record_precision_check(out: Path, cfg: TrainConfig) -> None:
    """The checks ``--precision auto`` reads, on the validation blocks: bf16 against fp32 (OpenVINO) where the CPU
    has native bf16, and the int8 model (calibrated on the training blocks; see geoseg.training.quantization).
    Skipped, with the reason recorded, where OpenVINO is missing."""
    import subprocess
    import sys

    from geoseg.engines import installed
    from geoseg.models.bundle import record_precision_check

    if not installed("openvino"):
        record_precision_check(out, {p: {"skipped": "openvino is not installed"} for p in ("bf16", "int8")})
        return
    # In its own process: OpenVINO's thread pools and a training process's DataLoader workers do not mix (a
    # later run with loader workers crashed), and the check's memory is returned when it ends.
    cfg_file = tmp_folder(out, "check") / "config.json"
    cfg_file.write_text(json.dumps({"raw": jsonable(cfg.raw), "source": cfg.source or str(Path.cwd() / "x")}))
    try:
        r = subprocess.run([sys.executable, "-m", "geoseg.training.precision_check", str(out), str(cfg_file)],
                           capture_output=True, text=True)
    finally:
        shutil.rmtree(cfg_file.parent, ignore_errors=True)
    if r.returncode:
        log.warning("precision checks failed (%s); --precision auto keeps fp32 for this bundle",
                    (r.stderr.strip().splitlines() or ["no output"])[-1])
        return
    for line in r.stdout.strip().splitlines()[-2:]:
        log.warning("%s", line)


def precision_check(out: Path, cfg: TrainConfig) -> str:
    """The checks themselves (see _record_precision_check), run in a child process: one line each."""
    from geoseg.engines.cpu import describe, native_bf16
    from geoseg.evaluation.int8 import summary
    from geoseg.models.bundle import record_precision_check
    from geoseg.training.quantization import quantize_on_validation

    if native_bf16():
        lines = [_bf16_check(out, cfg)]
    else:
        record_precision_check(out, {"bf16": {"skipped": f"no native bf16 on {describe()}"}})
        lines = [f"bf16 check skipped: no native bf16 on {describe()}"]
    return "\n".join(lines + [summary(quantize_on_validation(out, cfg))])


def _bf16_check(out: Path, cfg: TrainConfig) -> str:
    from geoseg.engines.cpu import describe
    from geoseg.engines.quantize import normalise_tile
    from geoseg.evaluation.metrics import foreground_iou
    from geoseg.inference.predictor import Predictor
    from geoseg.io.raster import read_window
    from geoseg.models.bundle import read_meta, record_precision_check

    sources = [open_scene(s, cfg) for s in cfg.scenes]
    val_sources = [(s, s.validation_windows()) for s in sources]
    val_sources += [(v, v.training_windows()) for v in (open_scene(s, cfg, held_out=False)
                                                        for s in cfg.validation.scenes)]

    meta = read_meta(out)
    tile = -(-cfg.validation.block_size // 32) * 32
    k = len(cfg.classes)
    cms = {}
    for precision in ("fp32", "bf16"):
        pred = Predictor(out, "cpu", engine="openvino", precision=precision, tile=tile, threads=os.cpu_count())
        cm = np.zeros((k, k), dtype=np.int64)
        for src, windows in val_sources:
            for win in windows:
                data, valid = read_window(src.info, win, cfg.bands)
                lab = read_labels(src, win, valid)
                x = normalise_tile(data, valid, meta.mean, meta.std, tile)
                h, w = data.shape[1:]
                labels = pred.class_logits(x[None])[0, :h, :w, :k].argmax(-1)
                cm += confusion(lab, labels, k, valid=lab != NODATA)
        cms[precision] = cm
    fg = [c.id for c in cfg.classes if c.vectorize]
    a, b = foreground_iou(cms["fp32"], fg), foreground_iou(cms["bf16"], fg)
    change = None if a is None or b is None else b - a
    record_precision_check(out, {"bf16": {"engine": "openvino", "iou_fp32": a, "iou_bf16": b, "iou_change": change,
                           "data": "validation blocks", "cpu": describe()}})
    return ("bf16 check on the validation blocks: foreground IoU "
            f"{'–' if a is None else f'{a:.4f}'} fp32, {'–' if b is None else f'{b:.4f}'} bf16 "
            f"(change {'–' if change is None else f'{change:+.4f}'})")


def _init_from_bundle(model, cfg: TrainConfig) -> dict:
    """Start from another bundle's weights (fine-tuning); its first convolution is adapted to this band count."""
    from safetensors.torch import load_file as load_weights

    from geoseg.models.bundle import WEIGHTS_NAME, read_meta, resolve_bundle
    from geoseg.models.pretrained import fit_tensors

    path = resolve_bundle(cfg.model.init_from)
    src = read_meta(path)
    if (src.architecture, src.encoder) != (cfg.model.architecture.lower(), cfg.model.encoder):
        raise GeosegError(f"model.init_from is a {src.architecture}/{src.encoder} bundle; this config trains "
                          f"{cfg.model.architecture}/{cfg.model.encoder}", path)
    state = load_weights(str(path / WEIGHTS_NAME))
    own = model.state_dict()
    if cfg.objects and src.objects is None:  # object channels added to a class model: its head gains outputs
        state = dict(state)
        for key, t in own.items():
            v = state.get(key)
            if key.startswith("segmentation_head.") and v is not None and v.ndim == t.ndim and \
                    v.shape[0] == len(src.classes) < t.shape[0] and v.shape[1:] == t.shape[1:]:
                state[key] = torch.cat([v.to(t.dtype), t[v.shape[0]:]])
    elif src.objects is not None and not cfg.objects:  # a class model from an object model: the head drops them
        state = dict(state)
        for key, t in own.items():
            v = state.get(key)
            if key.startswith("segmentation_head.") and v is not None and v.ndim == t.ndim and \
                    v.shape[0] == src.out_channels and t.shape[0] == len(src.classes) and v.shape[1:] == t.shape[1:]:
                state[key] = v[: t.shape[0]]
    load, adapted = fit_tensors(own, state, path, "model.init_from: another class count or decoder?")
    model.load_state_dict(load, strict=True)
    log.warning("starting from the weights of %s%s", path.name, f" (stem adapted to {len(cfg.bands)} band(s))"
                if adapted else "")
    return {"bundle": path.name, "stem_adapted": adapted, "sha256": hashlib.sha256(
        (path / WEIGHTS_NAME).read_bytes()).hexdigest(), "encoder_weights": src.extra.get("encoder_weights")}


def _score_test_blocks(out: Path, test_sources, cfg: TrainConfig, device) -> None:
    """Score the saved (best-epoch) bundle on the test blocks and record it in its ``geoseg.json``."""
    from geoseg.models.bundle import load_bundle

    bundle = load_bundle(out)
    model = bundle.model.to(device)
    windows = [] if cfg.objects else None
    cm = validate(model, test_sources, cfg, bundle.meta.mean, bundle.meta.std, device, windows)
    scores, per = overall_scores(cm), class_scores(cm)
    test = {"blocks": sorted([list(b) for s, _ in test_sources for b in s.test]), **scores,
            "iou": {c.name: (None if np.isnan(v) else float(v)) for c, v in zip(cfg.classes, per["iou"])}}
    if cfg.objects and bundle.meta.objects:
        from geoseg.inference.objects import DecodeSettings
        from geoseg.training.decoding import object_scores

        test["objects"] = {**object_scores(windows, DecodeSettings(**bundle.meta.objects.decode)),
                           "min_reference_px": 20}
    meta_path = out / META_NAME
    data = json.loads(meta_path.read_text())
    data.setdefault("extra", {})["test"] = test
    tmp = meta_path.with_name(f".{META_NAME}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, meta_path)
    log.warning("test blocks (never trained on, not used to pick the epoch): %s%s", ", ".join(
        f"{k} IoU {v:.4f}" for k, v in test["iou"].items() if v is not None),
        f", object F1 {test['objects']['f1']:.4f}" if "objects" in test else "")


@torch.inference_mode()
def _validate_chips(model, names, dataset: ChipFolder, device, k: int) -> np.ndarray:
    cm = np.zeros((k, k), dtype=np.int64)
    model.eval()
    for name in names:
        im, m = dataset.load(name)
        x = (im - dataset.mean) / dataset.std
        x, h, w = _pad32(x)
        pred = model(torch.from_numpy(np.ascontiguousarray(x))[None].to(device))[0, :, :h, :w].argmax(0).cpu().numpy()
        cm += confusion(m, pred, k, valid=m != NODATA)
    return cm
