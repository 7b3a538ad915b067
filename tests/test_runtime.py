"""Process settings of the azr command: sleeping OpenMP threads and glibc keeping freed memory."""

import platform
import sys

import pytest

from azr import runtime


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_glibc_accepts_the_malloc_settings():
    assert runtime.retain_freed_memory() is True


def test_configure_process_sets_omp_and_respects_the_opt_out(monkeypatch):
    calls = []
    monkeypatch.setattr(runtime, "retain_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("AZR_MALLOC_TUNING", "0")
    runtime.configure_process()
    assert calls == [] and runtime.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("AZR_MALLOC_TUNING", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    runtime.configure_process()
    assert calls == [1] and runtime.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_release_returns_the_retained_heap_to_the_kernel():
    """With the retention settings on, freed heap stays resident until release_freed_memory() trims it."""
    import subprocess

    script = """
from azr import runtime
from azr.memory import status_kib
import os
assert runtime.retain_freed_memory()
blocks = [bytearray(1 << 20) for _ in range(300)]  # 300 MiB of heap (each block below the mmap threshold)
del blocks
kept = status_kib(os.getpid(), "VmRSS")
assert runtime.release_freed_memory()
print(kept, status_kib(os.getpid(), "VmRSS"))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    kept, after = map(int, out.split())
    assert kept - after > 250 * 1024, (kept, after)  # KiB
