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
skips the build. Where the CPU has AVX512-BF16 but the compiler did not build the bf16 parts, azr warns: training
then takes PyTorch's attention, 2-4x slower per call there.

Build lock: PyTorch's builder takes a lock file in the build directory and, when it finds one, waits for it to go
away with no time limit and no message; a build killed mid-way leaves it behind. azr holds its own lock
(``flock`` on ``azr-build.lock``, released by the kernel when its holder dies) around every build, so a PyTorch
lock found while no azr process holds azr's is stale: azr says so, removes it and builds. ``azr selfcheck`` shows
the build (:func:`build_info`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import platform
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BuildInfo", "build_info", "native_kernels"]

log = logging.getLogger(__name__)
_DIR = Path(__file__).parent
# One extension; prompt_store.cpp binds the module's functions.
_SOURCES = [_DIR / "prompt_store.cpp", _DIR / "attention.cpp", _DIR / "linear.cpp"]
_HEADERS = [_DIR / "common.h", _DIR / "bf16_gemm.h"]
_TORCH_LOCK = "lock"  # PyTorch's FileBaton in the build directory
_AZR_LOCK = "azr-build.lock"  # azr's flock around a build
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


def build_directory() -> Path:
    """Where this machine's build of the kernels lives (honours ``TORCH_EXTENSIONS_DIR``)."""
    from torch.utils import cpp_extension

    return Path(cpp_extension._get_build_directory(f"azr_kernels_{_cpu_tag()}", False))


def _warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    log.warning(msg)


def stale_lock(root: Path) -> bool:
    """Whether PyTorch's build lock in ``root`` is left over by a killed build: it exists and no azr process holds
    azr's lock (a live azr build holds it for the whole build)."""
    if not (root / _TORCH_LOCK).exists() or not root.is_dir():
        return False
    with open(root / _AZR_LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a build is running now
        fcntl.flock(f, fcntl.LOCK_UN)
    return True


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """Hold azr's lock on ``root`` (waiting for another azr build, with a message); clear a stale PyTorch lock."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / _AZR_LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process is building azr's CPU kernels in %s: waiting for it", root)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if (root / _TORCH_LOCK).exists():
                _warn(
                    f"azr: removed a stale kernel build lock, left by a build that was killed: {root / _TORCH_LOCK} "
                    "(PyTorch would have waited on it forever)"
                )
                (root / _TORCH_LOCK).unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _check_bf16(module: Any) -> None:
    """Warn where the CPU has native bf16 but the compiler did not build the bf16 kernels."""
    import torch

    from azr.precision import native_bf16

    if native_bf16(torch.device("cpu")) and not module.bf16_attention_available():
        _warn(
            "azr: this CPU has AVX512-BF16 but the compiler did not build azr's bf16 kernels (a compiler too old "
            "for -mavx512bf16?); training and prefill use PyTorch's attention, 2-4x slower per call here"
        )


@functools.cache
def native_kernels() -> Any | None:
    """The compiled kernel module (``prompt_store_attention``), or None where it is switched off or cannot be built
    (then a warning says why, once per process)."""
    if os.environ.get("AZR_NATIVE_KERNELS", "1") == "0":
        return None
    try:
        from torch.utils import cpp_extension

        _find_ninja()
        root = build_directory()
        if not any(root.glob("*.so")):
            log.warning("compiling azr's CPU kernels for this machine (once, about 40 s)")
        with _build_lock(root):
            module = cpp_extension.load(
                root.name,
                [str(f) for f in _SOURCES],
                extra_cflags=_FLAGS,
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
    # No compiler, no ninja, no headers, a failed build: decoding still works without the kernel.
    except Exception as e:
        _warn(
            f"azr: could not build the native kernels ({type(e).__name__}: {str(e)[:200]}); "
            "decoding and training use the slower PyTorch paths. Install a C++ compiler and ninja, or set "
            "AZR_NATIVE_KERNELS=0 to skip this build."
        )
        return None
    _check_bf16(module)
    return module


@dataclass(frozen=True)
class BuildInfo:
    """What ``azr selfcheck`` shows of the kernel build."""

    path: Path
    built: bool
    stale_lock: bool
    disabled: bool


def build_info() -> BuildInfo:
    """The build's directory, whether a build is there, whether a stale lock would block the next one."""
    root = build_directory()
    return BuildInfo(
        path=root,
        built=any(root.glob("*.so")),
        stale_lock=stale_lock(root),
        disabled=os.environ.get("AZR_NATIVE_KERNELS", "1") == "0",
    )
