"""Turn the ``hw`` config into Lightning Trainer arguments.

``accelerator``, ``devices``, ``num_nodes`` and ``strategy`` go to the Trainer as they are.
``precision: auto`` picks bf16-mixed on GPUs that support it and 16-mixed on older GPUs; on a CPU,
bf16-mixed where the processor has native bf16 dot products (AVX512-BF16 or AMX; 1.3x the fp32 step
rate of the demo Whisper in ``benchmarks/cpu_step.py``) and 32-true elsewhere. The world size
(devices x nodes) is what global batch sizes are divided by.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Mapping
from typing import Any

import torch

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def _cuda_usable(accelerator: str) -> bool:
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(hw: Mapping[str, Any]) -> str:
    precision = str(hw.get("precision", "auto"))
    if precision != "auto":
        return precision
    accelerator = str(hw["accelerator"])
    if _cuda_usable(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator in ("auto", "cpu") and cpu_has_native_bf16():
        return "bf16-mixed"
    return "32-true"


def cpu_has_native_bf16() -> bool:
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def devices_per_node(hw: Mapping[str, Any]) -> int:
    devices = hw.get("devices", "auto")
    if isinstance(devices, int):
        return devices
    if isinstance(devices, (list, tuple)) or hasattr(devices, "__len__") and not isinstance(devices, str):
        return len(devices)
    if devices in ("auto", -1, "-1"):
        return torch.cuda.device_count() if _cuda_usable(str(hw["accelerator"])) else 1
    return int(devices)


def world_size(hw: Mapping[str, Any]) -> int:
    """Processes taking part in one optimizer step: devices per node x nodes."""
    return devices_per_node(hw) * int(hw.get("num_nodes", 1))


def trainer_kwargs(hw: Mapping[str, Any]) -> dict[str, Any]:
    """The ``lightning.Trainer`` arguments accelerator, devices, num_nodes, strategy and precision."""
    return {
        "accelerator": hw["accelerator"],
        "devices": hw.get("devices", "auto"),
        "num_nodes": int(hw.get("num_nodes", 1)),
        "strategy": hw.get("strategy", "auto"),
        "precision": resolve_precision(hw),
    }


def reuse_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse instead of unmapping it after every step.

    By default glibc serves each allocation over 128 KiB-32 MiB with its own mmap and returns it with
    munmap on free, so a CPU training step that builds 100 MB of logits pays for hundreds of
    thousands of page faults (measured: 210k per step of the demo Whisper, 40% of its time in the
    kernel). With mmap off and trimming off, freed memory is reused: 1.7x the demo's step rate
    (``benchmarks/cpu_step.py``). Returns False where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        applied = all(
            libc.mallopt(option, value)
            for option, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 64 << 20))
        )
    except (OSError, AttributeError):
        applied = False
    log.info("glibc malloc set to reuse freed memory" if applied else "allocator left as it is (not glibc)")
    return applied
