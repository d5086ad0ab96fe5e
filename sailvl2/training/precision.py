"""bf16 mixed precision for training on a CPU that multiplies bf16 matrices natively.

On a CPU with AVX512-BF16 or AMX, a bf16 matrix product of the nano model's shapes runs 2.3-2.7x faster than
fp32 (docs/nano-sessions.md, session 15); elsewhere bf16 products are emulated and slower than fp32, so the
recipe flag `cpu_bf16: true` turns autocast on only where it pays. Weights, optimizer state and gradients stay
fp32 (autocast casts the inputs of each matrix product), as on CUDA.

Two exceptions keep the speed-up:
- packed attention runs in fp32 under CPU autocast (`modeling/packed_attention.py`): the CPU flash-attention
  kernel's backward is ~5x slower in bf16 than in fp32 at the nano model's head size;
- Muon's Newton-Schulz iteration runs in bf16 (`training/muon.py`), as the published Muon implementations
  run it on GPUs: it is half of the optimizer step, and the iteration only needs the update's direction.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (Linux), or of `cpuinfo` when given; empty elsewhere."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if platform.system() != "Linux" or not path.is_file():
            return set()
        cpuinfo = path.read_text(encoding="utf-8", errors="replace")
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86: flags; arm64: Features
            return set(value.split())
    return set()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 matrices in hardware (x86 AVX512-BF16 or AMX-BF16)."""
    return any(flag in cpu_flags() for flag in _NATIVE_BF16_FLAGS)


def use_bf16_autocast(device: torch.device, world_size: int, weights_dtype: str, cpu_bf16: bool) -> bool:
    """Whether a training step runs under bf16 autocast: one CUDA process with fp32 weights (FSDP2 runs use its
    mixed-precision policy instead), or a CPU with native bf16 products when the recipe asks for it."""
    if weights_dtype != "float32":
        return False
    if device.type == "cuda":
        return world_size == 1
    return device.type == "cpu" and cpu_bf16 and cpu_has_native_bf16()
