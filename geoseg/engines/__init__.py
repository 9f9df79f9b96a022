"""CPU inference engines behind the predictor: torch, OpenVINO and ONNX Runtime, in fp32, bf16, fp16 or int8.

One registry idiom: ``ENGINES`` and ``PRECISIONS`` by lowercase name, ``auto`` for both. ``auto``
picks OpenVINO (a dependency), else ONNX Runtime, else torch, and says nothing about it unless ``-v``.
``--precision auto`` is fp32 unless the bundle records a check of a faster precision and the CPU
has the units for it (from ``/proc/cpuinfo``): int8 when the bundle has a quantized model, its check
changed the foreground IoU by at most 0.005 with at least 99% argmax agreement (and object F1 by at most
-0.01 where measured), and the CPU has
int8 dot products (AVX-512 VNNI, AVX-VNNI or AMX); else bf16 when its check is within 0.005 and the
CPU computes bf16 (AMX or AVX-512 BF16). An architecture an engine cannot convert runs torch (with
one line when that engine was asked for). On CUDA the torch path (bf16 autocast) stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import GeosegError

log = logging.getLogger("geoseg")
ENGINES = ("torch", "openvino", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}
BF16_TOLERANCE = 0.005  # largest IoU change against fp32 for which --precision auto uses bf16 (or int8)
INT8_AGREEMENT = 0.99  # and the least argmax agreement with fp32 for int8
INT8_F1_DROP = 0.01  # and the largest fall of object F1, where the check measured one
_said: set[str] = set()


@dataclass(frozen=True)
class Choice:
    engine: str
    precision: str


def check_engine(engine: str, precision: str) -> None:
    if engine not in ("auto", *ENGINES):
        raise GeosegError(f"unknown engine {engine!r}; choose one of: auto, {', '.join(ENGINES)}")
    if precision not in ("auto", *PRECISIONS):
        raise GeosegError(f"unknown precision {precision!r}; choose one of: auto, {', '.join(PRECISIONS)}")


def installed(engine: str) -> bool:
    if engine == "torch":
        return True
    import importlib.util

    return importlib.util.find_spec(PACKAGES[engine]) is not None


def convertible(architecture: str, engine: str) -> bool:
    """Architectures an engine takes (the others run on torch)."""
    from geoseg.models.names import is_instance_architecture

    if engine == "torch":
        return True
    return not is_instance_architecture(architecture)  # Mask R-CNN's detection heads are torch-only here


def _once(key: str, message: str, *args, level: int = logging.WARNING) -> None:
    if key not in _said:
        _said.add(key)
        log.log(level, message, *args)


def bf16_validated(meta) -> bool:
    check = (meta.extra or {}).get("precision_check", {}).get("bf16")
    return bool(check) and check.get("iou_change") is not None and abs(check["iou_change"]) <= BF16_TOLERANCE


def int8_validated(meta) -> bool:
    """The bundle's recorded int8 check passed (:func:`int8_check_passes`)."""
    return int8_check_passes((meta.extra or {}).get("precision_check", {}).get("int8"))


def int8_check_passes(check: dict | None) -> bool:
    """An int8 check's IoU change (measured against labels, else its bound from the agreement with fp32; see
    :mod:`geoseg.engines.quantize`) at most 0.005, at least 99% argmax agreement, object F1 down by at most 0.01."""
    if not check:
        return False
    change = check.get("iou_change")
    change = check.get("iou_change_bound") if change is None else change
    f1 = check.get("object_f1_change")
    return (change is not None and abs(change) <= BF16_TOLERANCE and (check.get("argmax_agreement") or 0) >= INT8_AGREEMENT
            and (f1 is None or f1 >= -INT8_F1_DROP))


def has_int8_model(bundle, meta, tile: int | None = None) -> bool:
    from geoseg.engines import cache

    if bundle is None or not (Path(bundle) / "model.safetensors").is_file():
        return False
    return cache.find(Path(bundle), "openvino", tile or meta.tile_size, meta.in_channels, "int8").exists()


def resolve(engine: str, precision: str, meta, device_type: str = "cpu", bundle=None) -> Choice:
    """The engine and precision a run uses, with one line for every fallback asked for by name.

    ``bundle``: the bundle's folder, where ``auto`` looks for its int8 model.
    """
    from geoseg.engines.cpu import native_bf16, native_int8

    check_engine(engine, precision)
    if device_type == "cuda":
        if engine not in ("auto", "torch"):
            raise GeosegError(f"--engine {engine} runs on the CPU; on CUDA geoseg runs torch (bf16 autocast)")
        return Choice("torch", "bf16" if precision in ("auto", "bf16") else precision)
    if engine == "auto":
        candidates = [e for e in ("openvino", "onnxruntime") if installed(e) and convertible(meta.architecture, e)]
        if not candidates:
            if not any(installed(e) for e in ("openvino", "onnxruntime")):
                _once("auto-none", "engine auto: neither openvino nor onnxruntime is installed here; running torch",
                      level=logging.INFO)
            engine = "torch"
        else:
            engine = candidates[0]
    elif not installed(engine):
        raise GeosegError(f"--engine {engine} needs the {PACKAGES[engine]} package: pip install geoseg[{engine}]")
    elif not convertible(meta.architecture, engine):
        _once(f"conv-{engine}-{meta.architecture}", "engine %s cannot run %s models; running torch", engine,
              meta.architecture)
        engine = "torch"
    if precision == "auto":
        precision = "fp32"
        if engine == "openvino" and native_int8() and int8_validated(meta) and has_int8_model(bundle, meta):
            precision = "int8"
            log.info("precision auto: int8 (the bundle's int8 check is within %.3f IoU of fp32 and this CPU has "
                     "int8 units)", BF16_TOLERANCE)
        elif engine == "openvino" and native_bf16() and bf16_validated(meta):
            precision = "bf16"
            log.info("precision auto: bf16 (the bundle's bf16 check is within %.3f IoU of fp32 and this CPU has "
                     "native bf16)", BF16_TOLERANCE)
    if precision == "int8" and engine != "openvino":
        raise GeosegError(f"--precision int8 runs on --engine openvino (its quantized model), not {engine}")
    if precision == "int8" and not native_int8():
        _once("int8-slow", "int8 on a CPU without int8 units (no avx512_vnni, avx_vnni or amx_int8 flag) gains "
              "little over fp32")
    if engine == "onnxruntime" and precision != "fp32":
        raise GeosegError(f"--precision {precision}: ONNX Runtime's CPU provider runs fp32 only; use --engine "
                          "openvino for bf16 or fp16")
    if engine == "torch" and precision == "fp16":
        raise GeosegError("--precision fp16 on the CPU needs --engine openvino")
    if precision == "bf16" and not native_bf16():
        _once("bf16-slow", "bf16 on a CPU without native bf16 (no amx_bf16 or avx512_bf16 flag) is emulated and "
              "can be far slower than fp32")
    return Choice(engine, precision)
