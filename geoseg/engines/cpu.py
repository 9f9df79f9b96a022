"""What the CPU can do, from ``/proc/cpuinfo`` (never assumed)."""

from __future__ import annotations

import functools
import platform


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def native_bf16() -> bool:
    """bf16 arithmetic in hardware: AMX tiles or AVX-512 BF16 instructions."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def native_int8() -> bool:
    """int8 dot products in hardware: AVX-512 VNNI, AVX-VNNI or AMX (without them int8 gains little over fp32)."""
    return bool({"avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8"} & cpu_flags())


def native_fp16() -> bool:
    """fp16 arithmetic in hardware (AVX-512 FP16 or AMX-FP16)."""
    return bool({"avx512_fp16", "amx_fp16"} & cpu_flags())


def describe() -> str:
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))  # vnni is avx512_vnni/avx_vnni
    return f"{model_name()} ({' '.join(flags) or 'no AVX flags'})"
