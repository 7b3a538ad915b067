"""Native CPU kernels, compiled once per machine on first use, with a PyTorch path wherever they cannot be built.

One extension, three parts:

- ``prompt_store_attention`` (``prompt_store.cpp``): one decode step's attention over :mod:`azr.rollout.prompt_store`'s
  levels and tails in one call: each shared entry's keys/values are streamed once for all the rows that read them,
  and the parts are merged through their log-sum-exps in the same pass. The PyTorch path spends most of a decode
  step's attention in three fused-attention calls per layer whose fixed costs dwarf the few kilobytes each reads:
  measured on the 2-core AVX512-BF16 box (2026-12-06), one layer of 12 proposal rows 1016-1094 against 340-349 us,
  28 solve rows 1362-1387 against 605-614 us, bf16.
- ``bf16_attention_forward`` / ``bf16_attention_backward`` (``attention.cpp``): training and prefill attention in
  bf16 on AVX512-BF16 dot products, used through :mod:`azr.kernels.prefix_attention` (see there for why and how fast).
- ``bf16_linear`` / ``bf16_pack_linear`` (``linear.cpp``): a few rows times a packed weight, the decode and
  prefill linears of :func:`azr.rollout.linears.packed_linears`.

The last two exist where the compiler targets AVX512-BF16 (``bf16_attention_available()``); elsewhere
their callers keep PyTorch's kernels. Building needs a C++ compiler and ``ninja`` (a dependency of azr); it takes
about 40 s once, into PyTorch's extension cache (``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``),
under a name that includes this CPU's instruction-set flags, since the code is compiled for the CPU it runs on
(``-march=native``). Where the build fails, azr warns once and keeps the PyTorch paths; ``AZR_NATIVE_KERNELS=0``
skips the build.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import warnings
from pathlib import Path
from typing import Any

__all__ = ["native_kernels"]

log = logging.getLogger(__name__)
_DIR = Path(__file__).parent
# One extension; prompt_store.cpp binds the module's functions.
_SOURCES = [_DIR / "prompt_store.cpp", _DIR / "attention.cpp", _DIR / "linear.cpp"]
_HEADERS = [_DIR / "common.h", _DIR / "bf16_gemm.h"]
_FLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp",
    # Let the compiler vectorise float sums (reassociation) without assuming finite values: -inf marks masked keys.
    "-fno-math-errno",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-fno-trapping-math",
]


def _cpu_tag() -> str:
    """A short hash of this CPU's model and instruction-set flags, the source and its path: a build for one CPU never
    loads on another."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "model name", "Features")):
                flags += line
                if line.startswith(("flags", "Features")):
                    break
    except OSError:
        flags = platform.processor()
    # The source's path too: the build rules name it, so two checkouts sharing one build directory would rebuild
    # each other's build at every switch.
    source = b"".join(f.read_bytes() + str(f).encode() for f in _SOURCES + _HEADERS)
    return hashlib.sha256(flags.encode() + source + " ".join(_FLAGS).encode()).hexdigest()[:12]


def _find_ninja() -> None:
    """Put the ``ninja`` that pip installed beside azr on ``PATH`` when none is there (a venv run without being
    activated): PyTorch's extension builder calls it by name."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja  # type: ignore[import-not-found]
    except ImportError:
        return
    os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


@functools.cache
def native_kernels() -> Any | None:
    """The compiled kernel module (``prompt_store_attention``), or None where it is switched off or cannot be built
    (then a warning says why, once per process)."""
    if os.environ.get("AZR_NATIVE_KERNELS", "1") == "0":
        return None
    try:
        from torch.utils import cpp_extension

        _find_ninja()
        name = f"azr_kernels_{_cpu_tag()}"
        root = Path(cpp_extension._get_build_directory(name, False))  # honours TORCH_EXTENSIONS_DIR
        if not any(root.glob("*.so")):
            log.warning("compiling azr's CPU kernels for this machine (once, about 40 s)")
        return cpp_extension.load(
            name, [str(f) for f in _SOURCES], extra_cflags=_FLAGS, extra_ldflags=["-fopenmp"], verbose=False
        )
    # No compiler, no ninja, no headers, a failed build: decoding still works without the kernel.
    except Exception as e:
        msg = (
            f"azr: could not build the native kernels ({type(e).__name__}: {str(e)[:200]}); "
            "decoding and training use the slower PyTorch paths. Install a C++ compiler and ninja, or set "
            "AZR_NATIVE_KERNELS=0 to skip this build."
        )
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        log.warning(msg)
        return None
