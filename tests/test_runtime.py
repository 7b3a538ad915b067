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


def test_configure_process_bounds_the_onednn_kernel_caches_unless_set(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")
    runtime.configure_process()
    assert runtime.os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(runtime.KERNEL_CACHE_CAPACITY)
    assert runtime.os.environ["LRU_CACHE_CAPACITY"] == "7"


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_release_returns_the_retained_heap_to_the_kernel():
    """With the retention settings on, freed heap stays resident until release_freed_memory() trims it."""
    import subprocess

    script = """
from azr import runtime
from azr.training.memory import status_kib
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


_JEMALLOC = runtime.jemalloc_library()


def _run(script: str, **env: str) -> str:
    import os
    import subprocess

    full = {k: v for k, v in os.environ.items() if k not in ("_AZR_REEXEC", "LD_PRELOAD")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=full
    ).stdout.strip()


@pytest.mark.skipif(_JEMALLOC is None, reason="libjemalloc2 not installed")
def test_use_jemalloc_reexecutes_once_with_it_preloaded():
    probe = "from azr import runtime; print(runtime.jemalloc_active())"
    script = f"from azr import runtime; runtime.use_jemalloc(['-c', {probe!r}]); print('not re-executed')"
    assert _run(script, AZR_ALLOCATOR="auto") == "True"
    assert _run(script, AZR_ALLOCATOR="glibc") == "not re-executed"


def test_use_jemalloc_rejects_a_bad_choice_and_a_missing_library(monkeypatch):
    monkeypatch.setattr(runtime.sys, "platform", "linux")
    monkeypatch.setattr(runtime, "jemalloc_active", lambda: False)
    monkeypatch.setenv("AZR_ALLOCATOR", "tcmalloc")
    with pytest.raises(runtime.AzrError, match="auto, jemalloc or glibc"):
        runtime.use_jemalloc([])
    monkeypatch.setenv("AZR_ALLOCATOR", "jemalloc")
    monkeypatch.setenv("AZR_JEMALLOC", "/nonexistent/libjemalloc.so.2")
    with pytest.raises(runtime.AzrError, match="apt install libjemalloc2"):
        runtime.use_jemalloc([])
    monkeypatch.setenv("AZR_ALLOCATOR", "auto")
    runtime.use_jemalloc([])  # auto without the library: glibc, no error


@pytest.mark.skipif(_JEMALLOC is None, reason="libjemalloc2 not installed")
def test_release_purges_jemalloc_arenas():
    script = """
from azr import runtime
from azr.training.memory import status_kib
import os
assert runtime.jemalloc_active()
blocks = [bytearray(1 << 16) for _ in range(4800)]  # 300 MiB in 64 KiB blocks
del blocks
kept = status_kib(os.getpid(), "VmRSS")
assert runtime.release_freed_memory()
print(kept, status_kib(os.getpid(), "VmRSS"))
"""
    kept, after = map(int, _run(script, LD_PRELOAD=_JEMALLOC).split())
    assert kept - after > 50 * 1024, (kept, after)  # KiB: jemalloc hands some back at once, the rest on purge


def test_a_gpu_host_gets_none_of_the_cpu_settings(tmp_path, monkeypatch):
    """On a machine whose driver lists a GPU: no OpenMP or allocator settings (measured for CPU work only), no
    jemalloc re-exec unless asked; hiding the GPUs (CUDA_VISIBLE_DEVICES=-1) makes it a CPU host again."""
    from azr import runtime

    gpus = tmp_path / "gpus"
    (gpus / "0000:01:00.0").mkdir(parents=True)
    monkeypatch.setattr(runtime, "NVIDIA_GPUS", str(gpus))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for key in ("OMP_WAIT_POLICY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY", "AZR_ALLOCATOR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(
        runtime.os, "execve", lambda *a: pytest.fail("re-executed with jemalloc on a GPU host")
    )
    assert runtime.gpu_host()
    runtime.configure_process()
    runtime.use_jemalloc(["-c", "pass"])
    assert "OMP_WAIT_POLICY" not in runtime.os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert not runtime.gpu_host()
    monkeypatch.setattr(runtime, "NVIDIA_GPUS", str(tmp_path / "none"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert not runtime.gpu_host()
