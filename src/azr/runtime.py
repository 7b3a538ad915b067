"""Process-wide settings the ``azr`` command (and the benchmarks) apply before torch starts working.

- **OpenMP threads sleep instead of spinning** while they wait (``OMP_WAIT_POLICY=PASSIVE`` unless set). On a 2-core
  machine with any other busy process, spinning threads made decoding 10x slower (3.5 s instead of 0.33 s per step at
  load 3.6, measured 2026-11-22), and 2x slower with one other busy process (82 against 150 tok/s,
  ``bench/rollout.py``, 2026-12-01). On an idle machine spinning is faster: 250 against 166 tok/s in that benchmark,
  and 7% off a whole self-play step; set ``OMP_WAIT_POLICY=ACTIVE`` yourself on a machine that runs nothing else.
- **glibc keeps freed memory for reuse** (when glibc is the allocator) instead of handing it back to the kernel after
  every tensor: a fixed mmap threshold (32 MiB) and 1 GiB of retained top pad. By default glibc returns big freed
  blocks at once, so every training step faulted its activations in again: 0.5-1.9 million page faults and 2-8 s of
  system time per policy update of 8 x 384 tokens on SmolLM2-135M (2 cores), against ~0 faults and 4.8-5.4 s instead
  of 6.0-10.4 s with this setting. Set ``AZR_MALLOC_TUNING=0`` to keep glibc's defaults.
- **jemalloc when it is installed** (Debian/Ubuntu ``libjemalloc2``; ``scripts/setup.sh`` installs it when it can).
  glibc's heap fragments under the update's mix of tensor sizes: on the default CPU run with checkpointing it held 4.1
  GiB resident for 2.3 GiB in malloc's use plus 0.5 GiB of mapped weights (3 micro-batches of SmolLM2-135M,
  2026-12-06), and lowering its mmap threshold to 256 KiB cut that to 3.2 GiB at 8x the page faults and ~25% more
  update time. Under jemalloc the same update peaked at 3.1 GiB and ran 5% faster. The allocator must be chosen before
  the process starts, so :func:`use_jemalloc` re-executes the ``azr`` command with ``LD_PRELOAD`` once, at start-up.
  ``AZR_ALLOCATOR=glibc`` keeps glibc; ``AZR_ALLOCATOR=jemalloc`` fails when it is missing.
- **oneDNN keeps at most 64 compiled kernels per cache** (``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` and ideep's
  ``LRU_CACHE_CAPACITY``, unless set; both default to 1024). Every new product shape (each micro-batch's length, each
  decode batch size) compiles kernels that the caches keep, ~0.25-1 MiB each: one default update on SmolLM2-135M
  left 751 of them (187 MiB) behind, growing with every step until the caches are full. With 64: 189 of them, 164 MiB
  less after one update, and the same update time within noise (81.4 against 79.7 s, AVX512-BF16, 2026-12-06); a
  micro-batch's or decode step's own kernels (a few dozen shapes) still stay cached.
- **None of it on a GPU host** (an NVIDIA driver with a GPU visible, :func:`gpu_host`): the work runs on the GPU,
  the settings above were measured for CPU training and decoding, and a preloaded jemalloc would sit under CUDA's
  and NCCL's host allocations untested. ``AZR_ALLOCATOR=jemalloc`` still preloads it there.
- **Freed memory goes back at phase boundaries.** Kept forever, the retained heap made the process hold the union of
  generation's working set (KV caches) and the update's (gradients, activations): 4.99 GB peak on the default CPU run
  with checkpointing. The loop calls :func:`release_freed_memory` after generation and after the update, so each phase
  starts from what is live and faults its pages in once per phase, not once per tensor.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from azr.errors import AzrError

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


_JEMALLOC_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)
KERNEL_CACHE_CAPACITY = 64  # compiled oneDNN kernels kept per cache (module docstring)
_ARENAS_ALL = 4096  # jemalloc's MALLCTL_ARENAS_ALL: "arena.4096.purge" purges every arena


def gpu_host() -> bool:
    """Whether an NVIDIA GPU is visible to this process (read from the driver's ``/proc`` entries, without
    importing torch); ``CUDA_VISIBLE_DEVICES`` set empty or to -1 hides them."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1"):
        return False
    gpus = Path(NVIDIA_GPUS)
    return gpus.is_dir() and any(gpus.iterdir())


NVIDIA_GPUS = "/proc/driver/nvidia/gpus"


def configure_process() -> None:
    """Apply the settings (idempotent); call before torch allocates anything big. Nothing on a GPU host."""
    if gpu_host():
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for cache in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):  # read at oneDNN's first use
        os.environ.setdefault(cache, str(KERNEL_CACHE_CAPACITY))
    if os.environ.get("AZR_MALLOC_TUNING", "1") != "0" and not jemalloc_active():
        retain_freed_memory()


def jemalloc_library() -> str | None:
    """Path of an installed ``libjemalloc.so.2`` (or ``$AZR_JEMALLOC``), or None."""
    if explicit := os.environ.get("AZR_JEMALLOC"):
        return explicit if Path(explicit).is_file() else None
    for folder in _JEMALLOC_DIRS:
        if (path := Path(folder) / "libjemalloc.so.2").is_file():
            return str(path)
    return None


def jemalloc_active() -> bool:
    """True when this process's malloc is jemalloc (preloaded)."""
    return _malloc_function("mallctl") is not None


def use_jemalloc(argv: Sequence[str] | None = None) -> None:
    """Re-execute this process (its original command line, or ``python argv...``) with jemalloc preloaded, when
    ``AZR_ALLOCATOR`` (default ``auto``) allows it and it is installed; otherwise return. Call it first thing in a
    command's entry point, never from a library function."""
    choice = os.environ.get("AZR_ALLOCATOR", "auto")
    if choice not in ("auto", "jemalloc", "glibc"):
        raise AzrError(f"AZR_ALLOCATOR={choice!r}: use auto, jemalloc or glibc")
    if choice == "glibc" or not sys.platform.startswith("linux") or jemalloc_active():
        return
    if choice == "auto" and gpu_host():
        return
    library = jemalloc_library()
    if library is None or os.environ.get("_AZR_REEXEC"):  # already tried once: preloading did not take
        if choice == "jemalloc":
            raise AzrError(
                "AZR_ALLOCATOR=jemalloc but libjemalloc.so.2 is not installed (apt install libjemalloc2)"
            )
        return
    preload = " ".join(filter(None, [library, os.environ.get("LD_PRELOAD", "")]))
    env = {**os.environ, "LD_PRELOAD": preload, "_AZR_REEXEC": "1"}
    args = list(sys.orig_argv[1:] if argv is None else argv)
    os.execve(sys.executable, [sys.executable, *args], env)


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory (see the module docstring); False where there is no glibc."""
    mallopt = _malloc_function("mallopt")
    if mallopt is None:
        return False
    settings = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 1 << 30))
    return all(mallopt(option, value) == 1 for option, value in settings)


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the kernel (glibc ``malloc_trim(0)``, or jemalloc's purge of every
    arena); False where neither is there."""
    if (mallctl := _malloc_function("mallctl")) is not None:
        name = f"arena.{_ARENAS_ALL}.purge".encode()
        return mallctl(name, None, None, None, ctypes.c_size_t(0)) == 0
    trim = _malloc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def _malloc_function(name: str) -> Any:
    """A malloc function of this process (glibc's, or jemalloc's when preloaded), or None (not Linux, or a libc
    that lacks it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
