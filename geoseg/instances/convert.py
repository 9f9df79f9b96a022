"""``geoseg model import torchvision-maskrcnn``: a user's torchvision Mask R-CNN state dict as a bundle.

The ``.pth`` is read with ``torch.load(weights_only=True)`` (tensors only: no code runs, any other
pickle content is refused) and every key and shape is checked against the model the bundle
describes. ``num_batches_tracked`` counters, which torchvision's frozen batch norms do not have, are
the only keys that may be missing (they are set to 0 and do not change the outputs).
"""

from __future__ import annotations

from pathlib import Path

import torch

from geoseg.classes import ClassList
from geoseg.errors import GeosegError
from geoseg.models.bundle import BundleMeta, build_model, save_bundle
from geoseg.models.pretrained import read_state_dict

FORMATS = ("torchvision-maskrcnn",)


def coco_classes() -> ClassList:
    """torchvision's COCO category list (91 entries with background and the unused ids), read from its
    weights' metadata, which needs no download."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    names = MaskRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
    names = ["background" if n == "__background__" else (f"unused_{i}" if n == "N/A" else n)
             for i, n in enumerate(names)]
    return ClassList.from_names(names, background=False)


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def import_checkpoint(kind: str, weights, output, *, bands: tuple[int, ...], classes: ClassList,
                      backbone: str = "resnet50", mean=None, std=None, tile_size: int = 512, overlap: int = 128,
                      overwrite: bool = False) -> Path:
    if kind not in FORMATS:
        raise GeosegError(f"unknown checkpoint format {kind!r} (valid: {', '.join(FORMATS)})")
    n = len(bands)
    meta = BundleMeta(architecture="maskrcnn", encoder=backbone, bands=tuple(bands),
                      mean=tuple(mean) if mean else (0.0,) * n, std=tuple(std) if std else (1.0,) * n,
                      classes=classes, tile_size=tile_size, overlap=overlap,
                      extra={"imported_from": {"format": kind, "file": Path(weights).name}})
    state = read_state_dict(weights)
    model = build_model(meta)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if shapes:
        k = shapes[0]
        raise GeosegError(f"tensor {k} has shape {tuple(state[k].shape)}, a {backbone} Mask R-CNN with {n} band(s) "
                          f"and {len(classes)} classes needs {tuple(own[k].shape)}"
                          + (f" ({len(shapes)} tensors differ: {_few(shapes)})" if len(shapes) > 1 else ""), weights)
    if unexpected:
        raise GeosegError(f"unexpected tensors for a {backbone} Mask R-CNN: {_few(unexpected)}", weights)
    if missing:
        raise GeosegError(f"missing tensors for a {backbone} Mask R-CNN: {_few(missing)}", weights)
    full = {k: (state[k] if k in state else torch.zeros_like(v)).to(v.dtype) for k, v in own.items()}
    model.load_state_dict(full, strict=True)
    return save_bundle(model, meta, output, overwrite=overwrite)
