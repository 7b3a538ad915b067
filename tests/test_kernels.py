"""The native kernels' build never hangs or degrades in silence: a stale build lock, a compiler without bf16."""

from __future__ import annotations

import fcntl
from types import SimpleNamespace

import pytest

from azr import kernels


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """An empty extension cache under tmp_path and a fake builder that behaves as PyTorch's on a lock file: it
    would wait forever, so here it fails. Yields the build directory; the process's real kernels come back after."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("AZR_NATIVE_KERNELS", raising=False)
    root = kernels.build_directory()
    state = {"bf16": True}

    def load(name, *args, **kwargs):
        assert not (root / "lock").exists(), "PyTorch would wait on this lock forever"
        return SimpleNamespace(bf16_attention_available=lambda: state["bf16"])

    monkeypatch.setattr(cpp_extension, "load", load)
    kernels.native_kernels.cache_clear()
    yield root, state
    kernels.native_kernels.cache_clear()


def test_a_stale_build_lock_is_removed_with_a_warning(fake_build):
    """A build killed mid-way leaves PyTorch's lock file; every later run used to wait on it with no message."""
    root, _ = fake_build
    root.mkdir(parents=True, exist_ok=True)
    (root / "lock").touch()
    assert kernels.stale_lock(root)
    with pytest.warns(RuntimeWarning, match="stale kernel build lock"):
        module = kernels.native_kernels()
    assert module is not None and not (root / "lock").exists()


def test_a_lock_held_by_a_running_build_is_not_stale(fake_build):
    root, _ = fake_build
    root.mkdir(parents=True, exist_ok=True)
    (root / "lock").touch()
    with open(root / "azr-build.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert not kernels.stale_lock(root)
    assert kernels.stale_lock(root)


def test_a_bf16_cpu_whose_compiler_built_no_bf16_kernels_warns(fake_build, monkeypatch):
    """The CPU says AVX512-BF16 but the build has no bf16 kernels: training silently took a slower path."""
    _, state = fake_build
    state["bf16"] = False
    monkeypatch.setattr("azr.precision.native_bf16", lambda device: True)
    with pytest.warns(RuntimeWarning, match="did not build azr's bf16 kernels"):
        assert kernels.native_kernels() is not None


def test_selfcheck_reports_the_build_and_a_stale_lock(fake_build):
    from azr.commands.selfcheck import kernel_rows

    root, _ = fake_build
    assert "not built yet" in dict(kernel_rows())["kernels"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "azr_kernels.so").touch()
    rows = dict(kernel_rows())
    assert rows["kernels"] == f"built, cache {root}" and rows["  bf16 kernels"] == "yes"
    assert "  WARNING" not in rows
    (root / "lock").touch()
    rows = dict(kernel_rows())
    assert "stale build lock" in rows["  WARNING"] and (root / "lock").exists()
