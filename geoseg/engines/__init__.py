"""CPU inference engines behind the predictor: torch, OpenVINO and ONNX Runtime, in fp32, bf16 or fp16.

One registry idiom: ``ENGINES`` and ``PRECISIONS`` by lowercase name, ``auto`` for both. ``auto``
picks an exact (fp32) engine: OpenVINO, else ONNX Runtime, else torch; bf16 only when asked, or when
the bundle records a bf16 check within 0.005 IoU of fp32 *and* the CPU computes bf16 natively (AMX
or AVX-512 BF16, from ``/proc/cpuinfo``). A missing engine package or an architecture an engine
cannot convert falls back to torch with one log line. On CUDA the torch path (bf16 autocast) stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from geoseg.errors import GeosegError

log = logging.getLogger("geoseg")
ENGINES = ("torch", "openvino", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "fp16")
PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime"}
BF16_TOLERANCE = 0.005  # largest IoU change against fp32 for which --precision auto uses bf16
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
    from geoseg.models.maskrcnn import is_instance_architecture

    if engine == "torch":
        return True
    return not is_instance_architecture(architecture)  # Mask R-CNN's detection heads are torch-only here


def _once(key: str, message: str, *args) -> None:
    if key not in _said:
        _said.add(key)
        log.warning(message, *args)


def bf16_validated(meta) -> bool:
    check = (meta.extra or {}).get("precision_check", {}).get("bf16")
    return bool(check) and check.get("iou_change") is not None and abs(check["iou_change"]) <= BF16_TOLERANCE


def resolve(engine: str, precision: str, meta, device_type: str = "cpu") -> Choice:
    """The engine and precision a run uses, with one line for every fallback."""
    from geoseg.engines.cpu import native_bf16

    check_engine(engine, precision)
    if device_type == "cuda":
        if engine not in ("auto", "torch"):
            raise GeosegError(f"--engine {engine} runs on the CPU; on CUDA geoseg runs torch (bf16 autocast)")
        return Choice("torch", "bf16" if precision in ("auto", "bf16") else precision)
    if engine == "auto":
        candidates = [e for e in ("openvino", "onnxruntime") if installed(e) and convertible(meta.architecture, e)]
        if not candidates:
            if not any(installed(e) for e in ("openvino", "onnxruntime")):
                _once("auto-none", "engine auto: neither openvino nor onnxruntime is installed "
                      "(pip install geoseg[openvino]); running torch")
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
        precision = "bf16" if engine == "openvino" and native_bf16() and bf16_validated(meta) else "fp32"
        if precision == "bf16":
            _once("auto-bf16", "precision auto: bf16 (the bundle's bf16 check is within %.3f IoU of fp32 and this "
                  "CPU has native bf16)", BF16_TOLERANCE)
    if engine == "onnxruntime" and precision != "fp32":
        raise GeosegError(f"--precision {precision}: ONNX Runtime's CPU provider runs fp32 only; use --engine "
                          "openvino for bf16 or fp16")
    if engine == "torch" and precision == "fp16":
        raise GeosegError("--precision fp16 on the CPU needs --engine openvino")
    if precision == "bf16" and not native_bf16():
        _once("bf16-slow", "bf16 on a CPU without native bf16 (no amx_bf16 or avx512_bf16 flag) is emulated and "
              "can be far slower than fp32")
    return Choice(engine, precision)
