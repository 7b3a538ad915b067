"""Process-wide settings the ``azr`` command (and the benchmarks) apply before torch starts working.

- **OpenMP threads sleep instead of spinning** while they wait (``OMP_WAIT_POLICY=PASSIVE`` unless set). On a 2-core
  machine with any other busy process, spinning threads made decoding 10x slower (3.5 s instead of 0.33 s per step
  at load 3.6, measured 2026-11-22), and 2x slower with one other busy process (82 against 150 tok/s,
  ``bench/rollout.py``, 2026-12-01). On an idle machine spinning is faster: 250 against 166 tok/s in that benchmark,
  and 7% off a whole self-play step; set ``OMP_WAIT_POLICY=ACTIVE`` yourself on a machine that runs nothing else.
- **glibc keeps freed memory for reuse** instead of handing it back to the kernel after every tensor: a fixed
  mmap threshold (32 MiB) and 1 GiB of retained top pad. By default glibc returns big freed blocks at once, so every
  training step faulted its activations in again: 0.5-1.9 million page faults and 2-8 s of system time per policy
  update of 8 x 384 tokens on SmolLM2-135M (2 cores), against ~0 faults and 4.8-5.4 s instead of 6.0-10.4 s with
  this setting. Set ``AZR_MALLOC_TUNING=0`` to keep glibc's defaults.
- **Freed memory goes back at phase boundaries.** Kept forever, the retained heap made the process hold the union
  of generation's working set (KV caches) and the update's (gradients, activations): 4.99 GB peak on the default
  CPU run with checkpointing. The loop calls :func:`release_freed_memory` after generation and after the update,
  so each phase starts from what is live and faults its pages in once per phase, not once per tensor.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def configure_process() -> None:
    """Apply both settings (idempotent); call before torch allocates anything big."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if os.environ.get("AZR_MALLOC_TUNING", "1") != "0":
        retain_freed_memory()


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory (see the module docstring); False where there is no glibc."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    settings = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 1 << 30))
    return all(mallopt(option, value) == 1 for option, value in settings)


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the kernel (glibc ``malloc_trim(0)``); False where there is no glibc."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def _glibc(name: str) -> Any:
    """A glibc malloc function of this process, or None (not Linux, or musl and other libcs that lack it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
