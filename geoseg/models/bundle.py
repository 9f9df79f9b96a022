"""Model bundles: ``model.safetensors`` plus ``geoseg.json``, never a pickle.

A bundle is a directory::

    models/demo/
      geoseg.json        # architecture, encoder, bands, normalisation, classes, tiling, GSD
      model.safetensors  # the state dict

Loading builds the architecture from the JSON (``encoder_weights=None``) and
loads the tensors strictly: a missing, unexpected or mis-shaped tensor is an
error naming it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.classes import ClassList
from geoseg.errors import GeosegError
from geoseg.io.output import clean_stale, respect_umask, tmp_folder
from geoseg.version import __version__

if TYPE_CHECKING:  # torch only where a model is built or saved: reading a bundle's metadata needs none
    import torch
    from torch import nn

META_NAME = "geoseg.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "geoseg-bundle"
FORMAT_VERSION = 1
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


@dataclass(frozen=True)
class ObjectChannels:
    """A semantic bundle's object channels: body, inner border and contact per object class, after the
    class logits (see ``geoseg.training.targets``), and the thresholds that decode them into instances
    (``geoseg.inference.objects.DecodeSettings``, tuned by training)."""

    classes: tuple[int, ...]  # class ids with object channels, in channel order
    border: int = 2  # px, the inner border's width the model was trained with
    contact: int = 3  # px, the contact strip's reach
    decode: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return 3 * len(self.classes)

    def to_json(self) -> dict:
        return {"classes": list(self.classes), "border": self.border, "contact": self.contact,
                "decode": dict(self.decode)}

    @classmethod
    def from_json(cls, data, source: str) -> ObjectChannels:
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
            raise GeosegError("objects must be a mapping with a non-empty list of class ids", source)
        return cls(tuple(int(c) for c in data["classes"]), int(data.get("border", 2)),
                   int(data.get("contact", 3)), dict(data.get("decode") or {}))


@dataclass(frozen=True)
class BundleMeta:
    """Everything needed to rebuild and run a model, as stored in ``geoseg.json``."""

    architecture: str
    encoder: str
    bands: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: ClassList
    tile_size: int = 512
    overlap: int = 32
    gsd: float | None = None
    arch_params: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # training metrics, config, ...
    geoseg_version: str = __version__
    objects: ObjectChannels | None = None  # object channels after the class logits (semantic bundles)

    def __post_init__(self) -> None:
        n = len(self.bands)
        if n == 0 or any(b < 1 for b in self.bands):
            raise GeosegError(f"bands must be 1-based band indexes, got {list(self.bands)}")
        if len(self.mean) != n or len(self.std) != n:
            raise GeosegError(
                f"{n} bands need {n} means and stds, got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise GeosegError("every normalisation std must be positive")
        if not self.classes.is_contiguous():
            raise GeosegError("bundle class ids must be 0..K-1 in order (they index model outputs)")
        check_tiling(self.tile_size, self.overlap)
        if self.objects is not None:
            bad = [c for c in self.objects.classes if not 0 <= c < len(self.classes)]
            if bad or len(set(self.objects.classes)) != len(self.objects.classes):
                raise GeosegError(f"objects.classes must be distinct class ids of the bundle, got "
                                  f"{list(self.objects.classes)}")

    @property
    def out_channels(self) -> int:
        """Model outputs: the class logits, then the object channels."""
        return len(self.classes) + (self.objects.channels if self.objects else 0)

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("classes")
        d.pop("mean")
        d.pop("std")
        d.pop("objects")
        if self.objects is not None:
            d["objects"] = self.objects.to_json()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **d,
            "bands": list(self.bands),
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "classes": self.classes.to_dict()["classes"],
            "ignore_index": self.classes.ignore,
        }

    @classmethod
    def from_json(cls, data: dict, source: str) -> BundleMeta:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise GeosegError(f"not a geoseg bundle description (format must be {FORMAT!r})", source)
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise GeosegError(
                f"bundle format version {data['format_version']} is newer than this geoseg supports"
                f" ({FORMAT_VERSION}); upgrade geoseg",
                source,
            )
        known = {
            "format", "format_version", "architecture", "encoder", "bands", "normalization",
            "classes", "ignore_index", "tile_size", "overlap", "gsd", "arch_params", "extra",
            "geoseg_version", "objects",
        }
        unknown = set(data) - known
        if unknown:
            raise GeosegError(f"unknown key {sorted(unknown)[0]!r} in bundle description", source)
        try:
            norm = data["normalization"]
            classes = ClassList.from_dict(
                {"classes": data["classes"], "ignore": data.get("ignore_index", 255)}, source
            )
            return cls(
                architecture=str(data["architecture"]).lower(),
                encoder=str(data["encoder"]),
                bands=tuple(int(b) for b in data["bands"]),
                mean=tuple(float(v) for v in norm["mean"]),
                std=tuple(float(v) for v in norm["std"]),
                classes=classes,
                tile_size=int(data.get("tile_size", 512)),
                overlap=int(data.get("overlap", 32)),
                gsd=None if data.get("gsd") is None else float(data["gsd"]),
                arch_params=dict(data.get("arch_params") or {}),
                extra=dict(data.get("extra") or {}),
                geoseg_version=str(data.get("geoseg_version", "unknown")),
                objects=None if data.get("objects") is None else ObjectChannels.from_json(data["objects"], source),
            )
        except KeyError as exc:
            raise GeosegError(f"bundle description lacks {exc.args[0]!r}", source) from None
        except GeosegError as exc:
            if exc.path:
                raise
            raise GeosegError(str(exc), source) from None
        except (TypeError, ValueError) as exc:
            raise GeosegError(f"malformed bundle description ({exc})", source) from None


def summarize(meta: BundleMeta) -> list[str]:
    """A bundle's description as a few readable lines (``geoseg model info``)."""
    ex = meta.extra
    classes = ", ".join(f"{c.id} {c.name}" for c in meta.classes)
    lines = [f"architecture  {meta.architecture}, encoder {meta.encoder}"
             + (f" ({meta.arch_params})" if meta.arch_params else ""),
             f"input         bands {list(meta.bands)}"
             + (f", {ex['input']['dtype']}" if ex.get("input", {}).get("dtype") else "")
             + (f", GSD {meta.gsd:.2f} m" if meta.gsd else ", GSD unknown")
             + f"; mean {[round(v, 2) for v in meta.mean]}, std {[round(v, 2) for v in meta.std]}",
             f"classes       {classes}",
             f"tiling        {meta.tile_size} px tiles, {meta.overlap} px overlap"]
    if meta.objects is not None:
        o, names = meta.objects, {c.id: c.name for c in meta.classes}
        d = o.decode
        lines.append(f"objects       {', '.join(names.get(c, str(c)) for c in o.classes)}: body, {o.border} px inner "
                     f"border, {o.contact} px contact -> NAME.instances.gpkg"
                     + (f"; decoding seed {d['seed']}, mask {d['mask']}, min area {d['min_area']} px"
                        if {"seed", "mask", "min_area"} <= d.keys() else ""))
    if ex.get("encoder_weights"):
        w = ex["encoder_weights"]
        lines.append(f"pretrained    {w.get('source') or w.get('file')} ({w.get('mapping')} mapping)")
    cfg = ex.get("train_config") or {}
    if cfg.get("scenes"):
        names = [Path(str(s.get("image", "?"))).name for s in cfg["scenes"]]
        lines.append(f"trained on    {', '.join(names)}")
    for key, label in (("validation", "validation"), ("test", "test (held out)")):
        block = ex.get(key)
        if block and "mask_ap" in block:  # an instance model
            ap, f1 = block.get("mask_ap"), block.get("f1")
            lines.append(f"{label:<13} mask AP {'–' if ap is None else f'{ap:.3f}'}, F1 "
                         f"{'–' if f1 is None else f'{f1:.3f}'} epoch {block.get('epoch')}")
        elif block:
            ious = ", ".join(f"{k} {v:.3f}" for k, v in block.get("iou", {}).items() if v is not None)
            where = f" epoch {block['epoch']}" if "epoch" in block else ""
            ob = block.get("objects") or {}
            objs = (f"; object F1 {ob['f1']:.3f} (TP {ob['tp']}, FP {ob['fp']}, FN {ob['fn']})"
                    if {"f1", "tp", "fp", "fn"} <= ob.keys() else "")
            lines.append(f"{label:<13} IoU {ious}{objs}{where}")
    for line in ex.get("scores", []):  # figures measured on held-out data after training, with their command
        lines.append(f"scored        {line}")
    lines.append(f"geoseg        {meta.geoseg_version}")
    return lines


def check_tiling(tile_size: int, overlap: int) -> None:
    """Tiles must be divisible by 32 and overlap only their direct neighbours."""
    if tile_size < 32 or tile_size % 32:
        raise GeosegError(f"tile size must be a positive multiple of 32, got {tile_size}")
    if not 0 <= overlap <= tile_size // 2:
        raise GeosegError(f"overlap must be between 0 and half the tile size ({tile_size // 2}), got {overlap}")


@dataclass
class Bundle:
    """A loaded bundle: its metadata and an eval-mode model on the CPU."""

    path: Path
    meta: BundleMeta
    model: nn.Module


def is_instance_bundle(meta: BundleMeta) -> bool:
    from geoseg.models.names import is_instance_architecture

    return is_instance_architecture(meta.architecture)


def build_model(meta: BundleMeta) -> nn.Module:
    if is_instance_bundle(meta):  # the transform normalises and the tile size is native: both from the bundle
        from geoseg.models.maskrcnn import create_instance_model

        return create_instance_model(meta.architecture, meta.encoder, meta.in_channels, meta.num_classes,
                                     meta.mean, meta.std, meta.tile_size, meta.arch_params)
    from geoseg.models.registry import create_model, output_stride

    model = create_model(meta.architecture, meta.encoder, meta.in_channels, meta.out_channels, meta.arch_params)
    stride = output_stride(model)
    if meta.tile_size % stride:
        raise GeosegError(f"tile size {meta.tile_size} is not divisible by the encoder's stride {stride}")
    return model


def save_bundle(model: nn.Module, meta: BundleMeta, path: str | os.PathLike, overwrite: bool = False,
                dtype: torch.dtype | None = None) -> Path:
    """Write a bundle atomically (a temporary directory renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise GeosegError("already exists; pass --overwrite to replace it", path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_stale(parent)
        tmp = tmp_folder(parent, path.name)
    except OSError as exc:
        raise GeosegError(f"cannot write here ({exc.strerror})", parent) from None
    try:
        tensors = {}
        for k, v in model.state_dict().items():
            v = v.detach().to("cpu")
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            tensors[k] = v.clone().contiguous()
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": FORMAT})
        (tmp / META_NAME).write_text(json.dumps(meta.to_json(), indent=2) + "\n")
        respect_umask(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def resolve_bundle(spec: str | os.PathLike) -> Path:
    """A bundle folder from a path or a packaged model's name (``buildings-rgb``)."""
    path = Path(spec)
    if path.exists():
        return path
    from geoseg.data import packaged_models

    models = packaged_models()
    if str(spec) in models:
        return models[str(spec)]
    if len(path.parts) == 1 and not path.suffix:
        raise GeosegError(f"no bundle at this path and no packaged model of this name; packaged models: "
                          f"{', '.join(models)} (geoseg model list)", spec)
    raise GeosegError("model bundle not found", spec)


def read_meta(path: str | os.PathLike) -> BundleMeta:
    """Read and validate ``geoseg.json`` of a bundle directory (or a packaged model's name)."""
    path = resolve_bundle(path)
    _refuse_pickle(path)
    meta_path = path / META_NAME
    if not path.exists():
        raise GeosegError("model bundle not found", path)
    if not meta_path.is_file():
        raise GeosegError(f"not a geoseg bundle (no {META_NAME})", path)
    try:
        data = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GeosegError(f"not valid JSON ({exc})", meta_path) from None
    return BundleMeta.from_json(data, str(meta_path))


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Load a bundle; never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_bundle(path)
    meta = read_meta(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise GeosegError(f"bundle has no weights ({WEIGHTS_NAME} is missing)", path)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise GeosegError(f"corrupt weights, not a readable safetensors file ({exc})", weights) from None
    model = build_model(meta)
    _check_state(model, state, weights)
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    model.eval()
    return Bundle(path, meta, model)


def _check_state(model: nn.Module, state: dict, source: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    if shapes:
        k = shapes[0]
        raise GeosegError(
            f"weights do not match geoseg.json: tensor {k} has shape {tuple(state[k].shape)},"
            f" the described model needs {tuple(own[k].shape)}"
            + (f" ({len(shapes)} tensors differ)" if len(shapes) > 1 else ""),
            source,
        )
    if missing:
        raise GeosegError(f"weights do not match geoseg.json: missing tensors {few(missing)}", source)
    if unexpected:
        raise GeosegError(f"weights do not match geoseg.json: unexpected tensors {few(unexpected)}", source)


def _refuse_pickle(path: Path) -> None:
    msg = ("is a pickle checkpoint; geoseg never unpickles (it can run arbitrary code)."
           " Convert it to a bundle: model.safetensors plus geoseg.json")
    if path.is_file():
        if path.suffix.lower() in _PICKLE_SUFFIXES or _looks_pickled(path):
            raise GeosegError(msg, path)
        raise GeosegError("a model bundle is a directory holding model.safetensors and geoseg.json", path)
    if path.is_dir() and not (path / META_NAME).exists():
        pickles = sorted(p for p in path.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
        if pickles:
            raise GeosegError(msg, pickles[0])


def _looks_pickled(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return head[:1] == b"\x80" or head[:2] == b"PK"  # pickle protocol 2+, or torch's zip



def init_bundle(architecture: str, output: str | os.PathLike, *, encoder: str = "resnet34",
                bands: tuple[int, ...] = (1, 2, 3), classes: str | ClassList = "background,building,road,water",
                mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                tile_size: int = 512, overlap: int = 32, gsd: float | None = None, seed: int = 0,
                overwrite: bool = False) -> Path:
    """Write a randomly initialised bundle (``geoseg model init``)."""
    from geoseg.classes import load_classes

    if isinstance(classes, str):
        if classes.endswith((".yaml", ".yml")):
            classes = load_classes(classes)
        else:
            classes = ClassList.from_names(classes.split(","))
    n = len(bands)
    meta = BundleMeta(
        architecture=architecture.lower(), encoder=encoder, bands=tuple(bands),
        mean=tuple(mean) if mean else (0.0,) * n, std=tuple(std) if std else (1.0,) * n,
        classes=classes, tile_size=tile_size, overlap=overlap, gsd=gsd,
    )
    import torch

    torch.manual_seed(seed)
    model = build_model(meta)
    return save_bundle(model, meta, output, overwrite=overwrite)


def record_precision_check(bundle: Path, check: dict) -> None:
    """Merge ``check`` into the bundle's ``extra.precision_check`` (what ``--precision auto`` reads), atomically."""
    from geoseg.io.output import atomic_write_text

    path = Path(bundle) / META_NAME
    data = json.loads(path.read_text())
    data.setdefault("extra", {}).setdefault("precision_check", {}).update(check)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
