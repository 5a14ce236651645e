"""The CPU allocator setting that ``hw.reuse_freed_memory`` turns on."""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


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
