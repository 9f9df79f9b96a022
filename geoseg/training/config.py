"""Training configuration: YAML, validated at the edge, unknown keys named in the error.

Example (``configs/train/atlanta_buildings.yaml``)::

    classes: ../classes/buildings.yaml          # a class-list file, or an inline class list
    bands: [1]
    scenes:
      - image: ../../geoseg/data/atlanta/sample_geotiff.tif
        labels: {path: ../../geoseg/data/atlanta/geotiff_labels.geojson, class_value: building}
    validation: {block_size: 300, holdout: [[0, 2], [1, 2], [2, 2]]}
    model: {architecture: unet, encoder: mobilenet_v2, chip_size: 256}
    sampling: {chips_per_epoch: 256, class_balance: 0.5, min_valid: 0.5}
    augment: {flips: true, rot90: true, brightness: 0.1, contrast: 0.1, scale: 0.25, rotate: 180}
    train: {loss: ce+dice, optimizer: adamw, lr: 0.001, epochs: 30, batch_size: 8, seed: 0}

Relative paths are relative to the config file.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from geoseg.classes import ClassList, load_classes
from geoseg.errors import GeosegError


@dataclass(frozen=True)
class LabelsConfig:
    path: str
    class_field: str | None = None
    class_value: str | None = None  # every feature is this class
    mapping: dict = field(default_factory=dict)  # field value -> class name or id
    buffer_m: dict = field(default_factory=dict)  # class name -> buffer distance per side, in metres, for lines


@dataclass(frozen=True)
class SceneConfig:
    image: str
    labels: LabelsConfig
    # this scene's own validation.holdout / validation.test blocks ([] : none), instead of the config's
    holdout: list | None = None
    test: list | None = None
    weight: float = 1.0  # sampling weight: chips are drawn in proportion to weight x training area


@dataclass(frozen=True)
class ChipsConfig:
    """A folder of image chips and one of masks with the same stems (VOC style), or COCO instance chips."""

    images: str | None = None
    masks: str | None = None
    ignore_index: int = 255
    coco: str | None = None  # instance training: a COCO annotation JSON, images beside it


@dataclass(frozen=True)
class DataConfig:
    """A public benchmark as training data (see geoseg.benchmarks.training)."""

    adapter: str
    root: str
    split: str | None = None
    classes: str | None = None  # folder adapter: the class-list YAML
    reduce_zero_label: bool = False


@dataclass(frozen=True)
class ValidationConfig:
    block_size: int = 256
    fraction: float = 0.2  # of blocks held out, chosen by the seed, when holdout is empty
    holdout: list = field(default_factory=list)  # explicit [row, col] blocks held out
    test: list = field(default_factory=list)  # [row, col] blocks neither trained on nor used to pick the epoch
    scenes: list = field(default_factory=list)  # separate validation scenes (SceneConfig mappings)


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "unet"
    encoder: str = "resnet18"
    encoder_weights: str | None = None  # a weights file, or an installed source (efficientnet-lite0-imagenet)
    encoder_weights_mapping: str | None = None  # timm, torchvision, efficientnet-pytorch (default: the source's)
    init_from: str | None = None  # start from a bundle's weights (path or packaged name; stem adapted to the bands)
    freeze_encoder: bool = False  # train the decoder and head only; the encoder stays as loaded, BatchNorm included
    chip_size: int = 256
    arch_params: dict = field(default_factory=dict)
    tile_size: int = 512
    overlap: int = 32


@dataclass(frozen=True)
class SamplingConfig:
    chips_per_epoch: int = 256
    class_balance: float = 0.5  # share of chips drawn to contain a rare class
    min_valid: float = 0.5  # skip chips with less valid (not nodata) area


@dataclass(frozen=True)
class AugmentConfig:
    flips: bool = True
    rot90: bool = True
    brightness: float = 0.0  # +- share of a standard deviation
    contrast: float = 0.0  # +- relative
    scale: float = 0.0  # zoom by a factor drawn log-uniformly in [1/(1+scale), 1+scale]
    rotate: float = 0.0  # rotate by an angle drawn uniformly in +-rotate degrees (180: any angle)


@dataclass(frozen=True)
class OptimConfig:
    loss: str = "ce+dice"  # terms joined by +: ce, dice, lovasz
    optimizer: str = "adamw"  # adamw, sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine, constant
    epochs: int = 20
    batch_size: int = 8
    seed: int = 0
    device: str = "auto"
    workers: int = 0  # DataLoader worker processes
    half_weights: bool = False  # store the bundle's weights in float16


@dataclass(frozen=True)
class ObjectsConfig:
    """Object channels (body, inner border, contact) for "thing" classes, decoded into instances.

    ``weights``: the loss weights of the three channels (binary cross-entropy plus Dice each);
    ``border``/``contact``: their widths in px (see ``geoseg.training.targets``). Training tunes the
    decoding thresholds for object F1 on the validation blocks and stores them in the bundle.
    """

    classes: list = field(default_factory=list)  # class names (or ids) that get object channels
    border: int = 2
    contact: int = 3
    weights: list = field(default_factory=lambda: [1.0, 0.5, 0.5])


@dataclass(frozen=True)
class TrainConfig:
    classes: ClassList
    bands: tuple[int, ...]
    scenes: tuple[SceneConfig, ...] = ()
    chips: ChipsConfig | None = None
    data: DataConfig | None = None
    validation: ValidationConfig = ValidationConfig()
    model: ModelConfig = ModelConfig()
    sampling: SamplingConfig = SamplingConfig()
    augment: AugmentConfig = AugmentConfig()
    train: OptimConfig = OptimConfig()
    objects: ObjectsConfig | None = None
    source: str = ""
    raw: dict = field(default_factory=dict, repr=False)


def _build(cls, data, where: str, source: str):
    if not isinstance(data, dict):
        raise GeosegError(f"{where} must be a mapping", source)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise GeosegError(f"unknown key {where + '.' if where else ''}{unknown[0]} "
                          f"(allowed: {', '.join(sorted(names))})", source)
    hints = typing.get_type_hints(cls)
    out = {}
    for k, v in data.items():
        t = hints[k]
        if dataclasses.is_dataclass(t) and not isinstance(v, t):
            v = _build(t, v, f"{where}.{k}" if where else k, source)
        elif t in (int, float) and v is not None:
            try:
                v = t(v)
            except (TypeError, ValueError):
                raise GeosegError(f"{where}.{k} must be a number, got {v!r}", source) from None
        out[k] = v
    try:
        return cls(**out)
    except TypeError as exc:
        raise GeosegError(f"{where or 'config'}: {exc}", source) from None


def _objects(raw, classes: ClassList, src: str) -> ObjectsConfig | None:
    """``objects:`` with class names resolved to ids (None when absent)."""
    if raw is None:
        return None
    cfg = _build(ObjectsConfig, raw, "objects", src)
    if not isinstance(cfg.classes, list) or not cfg.classes:
        raise GeosegError("objects.classes must list the classes that get object channels (e.g. [building])", src)
    ids = []
    for c in cfg.classes:
        match = [k for k in classes if k.name == c or k.slug == c or k.id == c]
        if not match:
            raise GeosegError(f"objects.classes: {c!r} is not a class (classes: {', '.join(classes.names)})", src)
        if not match[0].vectorize:
            raise GeosegError(f"objects.classes: {match[0].name} is a background class", src)
        ids.append(match[0].id)
    if len(set(ids)) != len(ids):
        raise GeosegError("objects.classes names a class twice", src)
    w = cfg.weights
    if not (isinstance(w, list) and len(w) == 3 and all(isinstance(v, (int, float)) and v >= 0 for v in w)):
        raise GeosegError(f"objects.weights must be three non-negative numbers (body, border, contact), got {w!r}",
                          src)
    if not (0 <= cfg.border <= 16 and 0 <= cfg.contact <= 16):
        raise GeosegError(f"objects.border and objects.contact must be 0 to 16 px, got {cfg.border} and "
                          f"{cfg.contact}", src)
    return ObjectsConfig(ids, int(cfg.border), int(cfg.contact), [float(v) for v in w])


def _all_bands(raw: dict, rel, src: str) -> list[int]:
    """Without ``bands``: every band of the first image (a scene, or a chip of the chip folder)."""
    import logging

    first = None
    if raw.get("scenes") and isinstance(raw["scenes"][0], dict) and raw["scenes"][0].get("image"):
        first = Path(rel(raw["scenes"][0]["image"]))
    elif isinstance(raw.get("chips"), dict) and raw["chips"].get("images"):
        folder = Path(rel(raw["chips"]["images"]))
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif",
                                                                         ".tiff")) if folder.is_dir() else []
        first = files[0] if files else None
    elif isinstance(raw.get("chips"), dict) and raw["chips"].get("coco"):
        import json

        try:
            ann = Path(rel(raw["chips"]["coco"]))
            first = ann.parent / json.loads(ann.read_text())["images"][0]["file_name"]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            first = None  # the dataset reports the annotation file's problem
    if first is None or not first.exists():
        return [1]  # the scene check names the missing file
    try:
        if first.suffix.lower() in (".tif", ".tiff"):
            import rasterio

            with rasterio.open(first) as ds:
                count = ds.count
        else:
            from PIL import Image

            with Image.open(first) as im:
                count = len(im.getbands())
    except Exception:
        return [1]  # unreadable: the scene check reports it
    logging.getLogger("geoseg").warning("bands not given: training on all %d band%s of %s (bands: %s)", count,
                                        "s" if count != 1 else "", first.name, list(range(1, count + 1)))
    return list(range(1, count + 1))


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise GeosegError("training config not found", path) from None
    except yaml.YAMLError as exc:
        raise GeosegError(f"not valid YAML ({exc.__class__.__name__})", path) from None
    return parse_config(raw, path)


def parse_config(raw: dict, path: Path) -> TrainConfig:
    src = str(path)
    base = path.parent
    if not isinstance(raw, dict):
        raise GeosegError("a training config must be a mapping", src)
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"source", "raw"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise GeosegError(f"unknown key {unknown[0]} (allowed: {', '.join(sorted(known))})", src)

    def rel(p: str) -> str:
        q = Path(p)
        return str(q if q.is_absolute() else (base / q).resolve())

    data = None
    if raw.get("data"):
        d = dict(raw["data"]) if isinstance(raw["data"], dict) else raw["data"]
        if isinstance(d, dict):
            for k in ("root", "classes"):
                if d.get(k):
                    d[k] = rel(d[k])
        data = _build(DataConfig, d, "data", src)
        from geoseg.benchmarks.training import training_set

        bench = training_set(data.adapter, data.root, data.split, data.classes, data.reduce_zero_label)
    if "classes" not in raw and data is None:
        raise GeosegError("needs 'classes' (a class-list file or list)", src)
    c = raw.get("classes")
    if c is None:
        classes = bench.classes  # the benchmark's own class table
    else:
        classes = load_classes(rel(c)) if isinstance(c, str) else ClassList.from_dict(
            c if isinstance(c, dict) else {"classes": c}, src)
    if data is not None and classes.names != bench.classes.names:
        raise GeosegError(f"classes differ from the {data.adapter} adapter's ({', '.join(bench.classes.names)}); "
                          "leave 'classes' out to use them", src)
    if not classes.is_contiguous():
        raise GeosegError("training classes must have ids 0..K-1 in order", src)
    if "bands" not in raw and data is not None:
        first = str(next(iter(bench.files.values()))[0])
        raw = {**raw, "chips": {"images": str(Path(first).parent)}}  # probe the first image for its band count
        bands = _all_bands(raw, rel, src)
        raw = {k: v for k, v in raw.items() if k != "chips"}
    else:
        bands = raw["bands"] if "bands" in raw else _all_bands(raw, rel, src)
    if not isinstance(bands, list) or not bands or not all(isinstance(b, int) and b >= 1 for b in bands):
        raise GeosegError(f"bands must be a list of 1-based band indexes, got {bands!r}", src)

    def scene(d, where):
        if not isinstance(d, dict):
            raise GeosegError(f"{where} must be a mapping with image and labels", src)
        d = dict(d)
        labels = d.get("labels")
        if isinstance(labels, str):
            labels = {"path": labels}
        if isinstance(labels, dict):
            labels = dict(labels)
            if "path" in labels:
                labels["path"] = rel(labels["path"])
            d["labels"] = _build(LabelsConfig, labels, f"{where}.labels", src)
        if "image" in d:
            d["image"] = rel(d["image"])
        sc = _build(SceneConfig, d, where, src)
        if not sc.weight > 0:  # _build has made it a float
            raise GeosegError(f"{where}.weight must be a number above 0, got {sc.weight!r}", src)
        for key in ("holdout", "test"):
            blocks = getattr(sc, key)
            if blocks is not None and (not isinstance(blocks, list) or not all(
                    isinstance(b, list) and len(b) == 2 and all(isinstance(i, int) for i in b) for b in blocks)):
                raise GeosegError(f"{where}.{key} must be a list of [row, col] blocks, got {blocks!r}", src)
        return sc

    scenes = tuple(scene(s, f"scenes[{i}]") for i, s in enumerate(raw.get("scenes") or []))
    chips = None
    if raw.get("chips"):
        ch = dict(raw["chips"])
        for k in ("images", "masks", "coco"):
            if k in ch:
                ch[k] = rel(ch[k])
        chips = _build(ChipsConfig, ch, "chips", src)
        if chips.coco is None and (chips.images is None or chips.masks is None):
            raise GeosegError("chips needs images and masks folders (or coco: an annotation JSON)", src)
    if not scenes and chips is None and data is None:
        raise GeosegError("needs 'scenes' (GeoTIFFs with labels), 'chips' (image and mask folders) or 'data' "
                          "(a benchmark: adapter, root, split)", src)
    val = dict(raw.get("validation") or {})
    val_scenes = [scene(s, f"validation.scenes[{i}]") for i, s in enumerate(val.pop("scenes", []) or [])]
    validation = _build(ValidationConfig, val, "validation", src)
    validation = dataclasses.replace(validation, scenes=val_scenes)
    cfg = TrainConfig(
        classes=classes, bands=tuple(bands), scenes=scenes, chips=chips, data=data, validation=validation,
        model=_build(ModelConfig, raw.get("model") or {}, "model", src),
        sampling=_build(SamplingConfig, raw.get("sampling") or {}, "sampling", src),
        augment=_build(AugmentConfig, raw.get("augment") or {}, "augment", src),
        train=_build(OptimConfig, raw.get("train") or {}, "train", src),
        objects=_objects(raw.get("objects"), classes, src),
        source=src, raw=raw,
    )
    if cfg.objects is not None and (cfg.chips is not None or cfg.data is not None or not cfg.scenes
                                    or cfg.model.architecture.lower() == "maskrcnn"):
        raise GeosegError("objects (object channels) train semantic models on scenes with vector labels: each "
                          "polygon is one object", src)
    terms = cfg.train.loss.split("+")
    if len(set(terms)) != len(terms) or not set(terms) <= {"ce", "dice", "lovasz"}:
        raise GeosegError(f"train.loss must be one or more of ce, dice and lovasz joined by + (ce+dice, "
                          f"ce+lovasz), got {cfg.train.loss!r}", src)
    if cfg.train.optimizer not in ("adamw", "sgd"):
        raise GeosegError(f"train.optimizer must be adamw or sgd, got {cfg.train.optimizer!r}", src)
    if not (0 <= cfg.augment.scale < 4 and 0 <= cfg.augment.rotate <= 180):
        raise GeosegError(f"augment.scale must be in [0, 4) and augment.rotate in [0, 180], got "
                          f"{cfg.augment.scale} and {cfg.augment.rotate}", src)
    if cfg.model.freeze_encoder and not (cfg.model.encoder_weights or cfg.model.init_from):
        raise GeosegError("model.freeze_encoder needs model.encoder_weights or model.init_from: "
                          "an encoder that is not loaded would stay random", src)
    if cfg.model.chip_size % 32:
        raise GeosegError(f"model.chip_size must be a multiple of 32, got {cfg.model.chip_size}", src)
    return cfg
