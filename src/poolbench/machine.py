"""The machine a run computes on: what it is, which precision it computes natively, and how fast.

What is fast moves from machine to machine (docs/design.md, "Speed facts"): bfloat16 runs 2x to 7x
float32's matmul speed where the hardware has bf16 instructions (AMX, AVX512-BF16, any recent GPU)
and a fraction of it where it has none. So every record says where it ran (`machine_facts`),
`backbone.dtype=auto` resolves per device (`resolve_dtype`), and a job that asks for a precision
its device cannot run natively is told the measured slowdown before it starts (`precision_warning`,
from `matmul_peaks`: measured once per machine and thread count, then read from the cache).

Measured peaks live in `<cache>/machine/peaks-<machine key>.json`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from poolbench.assets import atomic_write_bytes, cache_root
from poolbench.config import Dtype

# The CPU flags that decide what is fast: float32 vector width, and bf16 instructions.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# Either computes bf16 matmuls natively. AVX512-BF16 is measured on an AMD EPYC (Zen 4) at 2.0x
# float32's matmul peak; AMX on a Xeon at 7.0x (docs/design.md).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
TORCH_DTYPES = {Dtype.float32: torch.float32, Dtype.bfloat16: torch.bfloat16}
PEAK_SIZE = 2048  # n of the n x n x n matmul that measures a peak: large enough to be compute-bound
PEAK_REPEATS = 3  # best of


@functools.cache
def cpu() -> tuple[str, tuple[str, ...]]:
    """(model name, the CPU_FLAGS it has) from /proc/cpuinfo; where there is none (not Linux), the
    platform's processor name and no flags, so nothing is assumed native."""
    model, flags = platform.processor() or platform.machine() or "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return model, tuple(flag for flag in CPU_FLAGS if flag in flags)


def gpu_name() -> str | None:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def machine_facts() -> dict[str, Any]:
    """What a record says about where it ran (its `versions` name the software)."""
    model, flags = cpu()
    return {"cpu": model, "cpu_flags": list(flags), "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": gpu_name()}


def native_bf16(device: str) -> bool:
    """Whether `device` ("cpu" or "cuda") computes bfloat16 matmuls in hardware."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(flag in cpu()[1] for flag in NATIVE_BF16_FLAGS)


def resolve_dtype(dtype: Dtype, device: str) -> Dtype:
    """`auto`: bfloat16 where `device` computes it natively, float32 elsewhere; any other dtype as given."""
    if dtype != Dtype.auto:
        return dtype
    return Dtype.bfloat16 if native_bf16(device) else Dtype.float32


def matmul_peak(dtype: torch.dtype, device: str = "cpu", size: int = PEAK_SIZE, repeats: int = PEAK_REPEATS) -> float:
    """GFLOP/s of one size^3 matmul in `dtype` on `device` at the current thread count: best of
    `repeats` after a warm-up."""
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))

    def seconds() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    seconds()  # warm-up
    best = min(seconds() for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def peaks_path(cache_dir: str | Path | None, device: str = "cpu") -> Path:
    """Where this machine's peaks are cached: keyed on what sets them (processor, flags, threads, torch)."""
    machine = [device, *cpu(), gpu_name() if device == "cuda" else None, torch.get_num_threads(), torch.__version__]
    key = hashlib.sha256(json.dumps(machine, default=str).encode()).hexdigest()[:16]
    return cache_root(cache_dir) / "machine" / f"peaks-{key}.json"


def matmul_peaks(cache_dir: str | Path | None, device: str = "cpu") -> dict[str, float]:
    """GFLOP/s per dtype name (float32, bfloat16) on `device`: measured at the first call on a
    machine and thread count (a few seconds), read from the cache after."""
    path = peaks_path(cache_dir, device)
    if path.exists():
        return json.loads(path.read_text())
    peaks = {dtype.value: matmul_peak(torch_dtype, device) for dtype, torch_dtype in TORCH_DTYPES.items()}
    atomic_write_bytes(path, json.dumps(peaks).encode())
    return peaks


def precision_warning(dtype: Dtype, device: str, cache_dir: str | Path | None) -> str | None:
    """None where `device` runs `dtype` natively; else what it costs here, measured (matmul_peaks)."""
    if dtype != Dtype.bfloat16 or native_bf16(device):
        return None
    peaks = matmul_peaks(cache_dir, device)
    where = gpu_name() if device == "cuda" else f"{cpu()[0]}, without {' or '.join(NATIVE_BF16_FLAGS)}"
    return (f"backbone.dtype=bfloat16 on a device without native bf16 ({device}: {where}): its matmuls run at "
            f"{peaks['bfloat16'] / peaks['float32']:.2f}x float32 here ({peaks['bfloat16']:.0f} vs "
            f"{peaks['float32']:.0f} GFLOP/s at {torch.get_num_threads()} threads, measured once per machine). The "
            "results are correct, only slower; backbone.dtype=auto or float32 runs at full speed.")
