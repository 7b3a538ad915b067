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
