"""Where bfloat16 pays: one answer for the trainer's autocast and the rollout's decode dtype.

bf16 matmuls are fast only where the hardware has them: a CUDA device that supports bf16, or a CPU with AMX-BF16
or AVX512-BF16. Elsewhere (an AVX2 laptop) PyTorch emulates them and bf16 is several times *slower* than fp32.
Measured on this project's 2-core machines (``bench/train_step.py``): one policy update of 8 x 384 tokens took
4.8 s under bf16 autocast against 9.7 s in fp32 on a Sapphire Rapids VM (AMX); on an AVX2 VM one
1024 x 576 x 1536 linear took 1.25 s under autocast against 0.18 s in fp32.
"""

from __future__ import annotations

import functools

import torch

_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matmuls natively (a CUDA device with bf16, a CPU with AMX/AVX512-BF16)."""
    if device.type == "cuda":
        # Not torch.cuda.is_bf16_supported(): it also counts emulation on pre-Ampere GPUs (a V100, a T4), where
        # bf16 is slow and vLLM refuses the dtype. bf16 tensor cores start with compute capability 8.0.
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return any(flag in _cpu_flags() for flag in _CPU_BF16_FLAGS)
    return False


def use_bf16(setting: bool | str, device: torch.device) -> bool:
    """Resolve a bf16 setting: ``"auto"`` means where it is native (:func:`native_bf16`), a bool forces it."""
    if setting == "auto":
        return native_bf16(device)
    return bool(setting)
